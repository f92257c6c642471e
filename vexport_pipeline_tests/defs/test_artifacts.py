"""The artifact IO manager (VEXPORT_ARTIFACTS): each stage of one export in a different home, as on workers
that share no disk, in one process and without Celery (test_celery.py runs real workers)."""

import pickle

import dagster as dg

from vexport_pipeline.core.artifacts import HomeFile
from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.defs.artifacts import value_key
from vexport_pipeline_tests.defs.test_dagster import materialize, register


def test_each_stage_in_a_home_of_its_own_reads_its_inputs_from_the_store(home, media, tmp_path, monkeypatch):
    store = tmp_path / "artifacts"
    monkeypatch.setenv("VEXPORT_ARTIFACTS", store.as_uri())
    monkeypatch.setenv("VEXPORT_HARDWARE", "off")
    target = {"preset": "web_720p", "quality": "draft", "resolution": "320x180"}
    register(home, media, {"id": "moved", "source": str(media["av"]), "segments": [{"start": 0, "end": 1}],
                           "targets": [target]})  # fmt: skip
    first, second = tmp_path / "first", tmp_path / "second"
    with dg.instance_for_test() as instance:
        monkeypatch.setenv("VEXPORT_HOME", str(first))  # no registry here: the record comes from the store
        assert materialize(instance, "moved", selection=["source", "segments"]).success
        monkeypatch.setenv("VEXPORT_HOME", str(second))  # nor the source: it comes with the `source` record
        result = materialize(instance, "moved", selection=["renditions"])
        assert result.success
        [rendition] = result.output_for_node("renditions")

    assert rendition.path.is_relative_to(second / "work" / "moved") and probe(rendition.path).video.height == 180
    assert (second / "work" / "moved" / "source.mp4").read_bytes() == media["av"].read_bytes()
    assert not (first / "work" / "moved" / "renditions").exists() and not (home.work / "moved").exists()
    # the stored records name files by their place under a home, never by another home's path
    for asset in ("source", "renditions"):
        key = value_key(asset=dg.AssetKey(asset), partition="moved", run_id="", step="", output="", mapping=None)
        data = (store / key).read_bytes()
        assert str(first).encode() not in data and str(second).encode() not in data
    [stored] = pickle.loads((store / "exports/moved/values/renditions.pickle").read_bytes())
    assert stored.path == HomeFile("work/moved/renditions/web_720p.mp4", stored.path.size, stored.path.crc)
