"""`vexport batch` and `vexport status --batch` through real CLI processes: a batch with a bad item runs its good
ones here (`--wait`, no daemon) and reports the bad one; a glob of videos is queued for the daemon with the fair
queue's tags; a bad batch file is refused."""

import json
import os
import shutil

import dagster as dg

from vexport_pipeline.core.media.probe import probe
from vexport_pipeline_tests.conftest import vexport, write_manifest

TARGET = {"format": "mp4", "video_codec": "h264", "resolution": "320x180", "crf": 30}


def batch_runs(home, batch_id: str) -> dict[str, dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home.dagster)) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"vexport/batch": batch_id}))
        return {r.tags["vexport/export"]: r for r in runs}


def test_a_batch_runs_its_good_items_and_reports_the_bad_one(home, media, tmp_path):
    folder = tmp_path / "spring"
    write_manifest(folder, {"source": str(media["av"]), "segments": [{"start": 0, "end": 1}]}, name="teaser.yaml")
    write_manifest(folder, {"source": str(media["av"]), "targets": [{**TARGET, "resolution": "5k"}]}, name="bad.yaml")
    batch = {
        "id": "spring",
        "defaults": {"owner": "carol", "priority": 5, "export_type": "single", "targets": [TARGET]},
        "items": ["teaser.yaml", {"id": "cutdown", "source": str(media["av"]), "segments": [{"start": 1, "end": 2.5}]},
                  "bad.yaml"],
    }  # fmt: skip
    res = vexport("batch", write_manifest(folder, batch, name="batch.yaml"), "--wait", "--json")
    assert res.returncode == 1, res.stdout + res.stderr  # launched some, not all
    assert "Traceback" not in res.stderr
    items = {i["item"]: i for i in json.loads(res.stdout)["items"]}
    assert [(i["export_id"], i["status"]) for i in items.values()] == [
        ("teaser", "success"),
        ("cutdown", "success"),
        (None, "refused"),
    ]
    [bad] = items["items[2] (bad.yaml)"]["errors"]
    assert bad["code"] == "manifest_invalid" and "targets[0].resolution: '5k'" in bad["message"]

    for export_id, seconds in (("teaser", 1.0), ("cutdown", 1.5)):
        [rendition] = json.loads((home.store / export_id / "current" / "summary.json").read_text())["renditions"]
        out = probe(rendition["path"])
        assert (out.video.width, out.video.height, out.video.codec) == (320, 180, "h264")
        assert abs((out.video.duration or out.duration) - seconds) < 0.05
    runs = batch_runs(home, "spring")
    assert set(runs) == {"teaser", "cutdown"}
    for run in runs.values():
        assert run.tags["vexport/owner"] == "carol" and run.tags["dagster/priority"] == "5"

    status = vexport("status", "--batch", "spring", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert {k: n for k, n in data["counts"].items() if n} == {"success": 2, "refused": 1}
    assert data["percent"] == 100 and data["done"] and data["total"] == 3
    assert [(i["item"], i["errors"][0]["code"]) for i in data["failed"]] == [
        ("items[2] (bad.yaml)", "manifest_invalid")
    ]
    assert {i["run_id"] for i in data["items"] if i["run_id"]} == {r.run_id for r in runs.values()}


def test_a_videos_glob_is_queued_for_the_daemon_one_run_per_video(home, media, tmp_path):
    folder = tmp_path / "drop"
    (folder / "clips").mkdir(parents=True)
    for name in ("one.mp4", "two.mp4"):
        shutil.copy(media["silent"], folder / "clips" / name)
    (folder / "clips" / "notes.txt").write_text("not a video")
    outside = tmp_path / "elsewhere"  # under no media root
    outside.mkdir()
    shutil.copy(media["silent"], outside / "secret.mp4")
    os.symlink(outside / "secret.mp4", folder / "clips" / "three.mp4")
    batch = {"id": "drop", "videos": "clips/*", "defaults": {"owner": "dave", "targets": [TARGET]}}

    res = vexport("batch", write_manifest(folder, batch, name="batch.yaml"), "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "no Dagster daemon is running" in res.stderr
    data = json.loads(res.stdout)
    assert [(i["item"], i["status"]) for i in data["items"]] == [
        ("videos: clips/one.mp4", "queued"),
        ("videos: clips/three.mp4", "refused"),
        ("videos: clips/two.mp4", "queued"),
    ]
    [escape] = data["failed"][0]["errors"]
    assert escape["code"] == "source_not_allowed" and "outside the allowed media folders" in escape["message"]
    assert data["percent"] == 0 and not data["done"]

    runs = batch_runs(home, "drop")
    assert set(runs) == {"one", "two"}
    with dg.DagsterInstance.from_config(str(home.dagster)) as instance:
        assert set(instance.get_dynamic_partitions("exports")) >= {"one", "two"}
    for export_id, run in runs.items():
        assert run.status == dg.DagsterRunStatus.QUEUED and run.job_name == "export_job"
        assert run.tags["dagster/partition"] == export_id and run.tags["vexport/owner"] == "dave"
        assert run.remote_job_origin.location_name == "vexport"  # workspace.yaml's: the daemon can launch it


def test_a_bad_batch_file_exits_2_and_launches_nothing(home, media, tmp_path):
    path = write_manifest(tmp_path, {"items": [], "defaults": {"targets": [TARGET]}}, name="empty.yaml")
    res = vexport("batch", path)
    assert res.returncode == 2 and "the batch has no items" in res.stderr and "Traceback" not in res.stderr
    assert not (home.root / "batches").exists()
