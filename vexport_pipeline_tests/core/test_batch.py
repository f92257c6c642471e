"""Batch manifests without Dagster: what a bad batch file is refused for (exit 2, the field named), items that
escape the batch's folder refused one by one while the others are admitted, and the aggregate of a batch's runs."""

import json
import os
import re

import pytest

from vexport_pipeline.core import batch
from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.settings import current

TARGET = {"format": "mp4", "video_codec": "h264", "resolution": "320x180", "crf": 30}


def refusal(tmp_path, text: str, name: str = "batch.yaml") -> InputError:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as exc:
        batch.load(path)
    assert exc.value.exit_code == 2 and exc.value.where == str(path)
    return exc.value


def test_a_bad_batch_file_is_refused_naming_the_field(tmp_path):
    typo = refusal(tmp_path, "itmes: [a.yaml]\n")
    assert typo.code == "batch_invalid" and "itmes: unknown key (did you mean 'items'?)" in str(typo)
    shared = refusal(tmp_path, "defaults: {taregts: []}\nitems: [a.yaml]\n")
    assert "defaults: 'taregts' is not a composition field" in str(shared)
    own = refusal(tmp_path, "defaults: {source: a.mp4}\nitems: [a.yaml]\n")
    assert "defaults: 'source' cannot be shared" in str(own)
    both = refusal(tmp_path, "items: [a.yaml]\nvideos: clips\n")
    assert "either `items:`" in str(both)
    assert "id:" in str(refusal(tmp_path, "id: ../x\nitems: [a.yaml]\n"))
    assert refusal(tmp_path, "- a.yaml\n").code == "batch_invalid"  # a list, not a mapping
    assert refusal(tmp_path, "items: [a.yaml, a.yaml]\nitems: []\n").code == "manifest_invalid"  # a key twice
    assert refusal(tmp_path, '{"items": []}', name="batch.json").code == "batch_empty"
    nothing = refusal(tmp_path, "videos: 'clips/*.mp4'\n")
    assert nothing.code == "batch_empty" and "'clips/*.mp4' holds no video" in str(nothing)


def test_items_that_escape_are_refused_alone_and_the_good_one_is_admitted(home, media, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.yaml").write_text(json.dumps({"source": str(media["av"]), "targets": [TARGET]}))
    folder = tmp_path / "b"
    folder.mkdir()
    os.symlink(outside / "x.yaml", folder / "link.yaml")
    spec = {
        "defaults": {"owner": "erin", "targets": [TARGET], "export_type": "single"},
        "items": [
            "../outside/x.yaml",
            "link.yaml",
            {"id": "good", "source": str(media["av"]), "segments": [{"start": 0, "end": 1}]},
            {"id": "good", "source": str(media["av"])},  # the same id twice in one batch
            42,
        ],
    }
    (folder / "batch.yaml").write_text(json.dumps(spec))
    plan = batch.load(folder / "batch.yaml", now=0)
    assert re.fullmatch(r"batch-19700101-000000-[0-9a-f]{4}", plan.id), plan.id
    out = batch.admit_all(plan, home, current().policy, busy=lambda _: None)
    assert [o.status for o in out] == ["refused", "refused", "admitted", "refused", "refused"]
    for o in out[:2]:
        assert o.errors[0]["code"] == "source_not_allowed" and o.item in o.errors[0]["message"]
        assert "outside the allowed media folders" in o.errors[0]["message"]
    assert out[2].record.composition.owner == "erin" and out[2].record.composition.targets[0].resolution == "320x180"
    assert out[3].errors[0]["code"] == "export_id_busy" and "items[2]" in out[3].errors[0]["message"]
    assert out[4].errors[0]["code"] == "batch_item_invalid"
    assert (home.registry / "good.json").exists()


def test_a_made_up_batch_id_is_new_each_launch_and_leaves_room_for_its_items_ids(home, media, tmp_path):
    """Two launches of one file in one second are two batches (the second overwrote the first's record and its
    items' ids were taken); a long file name still gives every inline item an id of its own (they were cut to
    63 characters, all alike, and every item after the first was refused as busy)."""
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "media").symlink_to(media["av"].parent)
    item = {"source": str(media["av"]), "segments": [{"start": 0, "end": 1}]}
    spec = {"defaults": {"targets": [TARGET], "export_type": "single"}, "items": [item] * 3}
    path = folder / ("spring-campaign-2026-all-regions-final-approved-cut-v2" + ".yaml")
    path.write_text(json.dumps(spec))
    first, second = batch.load(path, now=0), batch.load(path, now=0)
    assert first.id != second.id and all(len(p.id) <= batch.MAX_ID for p in (first, second))
    out = batch.admit_all(first, home, current().policy, busy=lambda _: None)
    assert [o.status for o in out] == ["admitted"] * 3, [o.errors for o in out if o.errors]
    assert len({o.export_id for o in out}) == 3 and out[2].export_id == f"{first.id}-3"
    assert "id:" in str(refusal(tmp_path, f"id: {'a' * (batch.MAX_ID + 1)}\nitems: [a.yaml]\n"))


def test_the_aggregate_counts_each_status_and_an_ended_run_counts_whole(home):
    record = {
        "id": "b1",
        "file": "/x/batch.yaml",
        "created_at": 1.0,
        "items": [
            {"item": "items[0]", "export_id": "a", "status": "admitted", "errors": []},
            {"item": "items[1]", "export_id": "b", "status": "admitted", "errors": []},
            {"item": "items[2]", "export_id": "c", "status": "admitted", "errors": []},
            {"item": "items[3]", "export_id": "d", "status": "admitted", "errors": []},
            {"item": "items[4]", "export_id": None, "status": "refused", "errors": [{"code": "x", "message": "y"}]},
        ],
    }
    failed = [{"code": "encode_failed", "message": "renditions.encode[c0]: FFmpeg exited 1"}]
    runs = {
        "a": batch.RunState("r1", "started", "encoding", 50.0),
        "b": batch.RunState("r2", "success", "done", 100.0),
        "c": batch.RunState("r3", "failure", "encoding", 30.0, failed),
    }
    data = batch.aggregate(record, runs)
    assert {k: v for k, v in data["counts"].items() if v} == {"pending": 1, "started": 1, "success": 1, "failure": 1,
                                                               "refused": 1}  # fmt: skip
    assert data["percent"] == (50 + 100 + 100 + 0) / 4 and not data["done"]
    assert [(i["item"], i["errors"]) for i in data["failed"]] == [
        ("items[2]", failed),
        ("items[4]", record["items"][4]["errors"]),
    ]
    assert batch.exit_code(data, waited=False) == 1 and batch.exit_code(data, waited=True) == 1
    ok = batch.aggregate(
        {**record, "items": record["items"][:2]}, {**runs, "a": batch.RunState("r1", "success", "done", 100.0)}
    )
    assert ok["done"] and ok["percent"] == 100 and batch.exit_code(ok, waited=True) == 0
    none = batch.aggregate({**record, "items": record["items"][4:]}, {})
    assert batch.exit_code(none, waited=False) == 2  # no item valid
    batch.save(home, batch.Plan("b1", home.root / "batch.yaml", {}, [], False), [])
    assert batch.read(home, "b1")["id"] == "b1"
    for unknown in ("nope", "../compositions/b1", "b1\n"):
        with pytest.raises(InputError) as exc:
            batch.read(home, unknown)
        assert exc.value.code == "batch_unknown" and exc.value.exit_code == 2
