"""`vexport list`, `status`, `cancel` and `reexport` through real CLI processes: history after a delivered and a
refused export, the status of a delivered one, canceling a running `vexport export` (nothing left behind, the
run canceled, the next export delivers), re-exporting from the stored composition, unknown ids."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vexport_pipeline.core import history
from vexport_pipeline.core.history import StepEvent
from vexport_pipeline_tests.cli.test_faults import fresh, slow_manifest
from vexport_pipeline_tests.conftest import running_ffmpeg, write_manifest

__all__ = ["fresh"]  # the fixture, imported for these tests

EXE = str(Path(sys.executable).with_name("vexport"))


def vexport(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


def manifest(folder: Path, media, export_id: str, owner: str, **extra) -> Path:
    return write_manifest(
        folder,
        {"id": export_id, "owner": owner, "source": str(media["av"]), "segments": [{"start": 0, "end": 1}],
         "targets": [{"format": "mp4", "video_codec": "h264", "resolution": "640x360", "crf": 28}], **extra},
        name=f"{export_id}.yaml",
    )  # fmt: skip


def slow(folder: Path, media, export_id: str, owner: str) -> Path:
    src = slow_manifest(folder, media, "unused")  # makes the 30 s 720p source once
    data = {"id": export_id, "owner": owner, "source": str(media["dir"] / "long-for-kill.mp4"), "targets": [
        {"format": "mp4", "video_codec": "h264", "resolution": "1080p", "crf": 18}]}  # fmt: skip
    assert src.exists()
    return write_manifest(folder, data, name=f"{export_id}.yaml")


@pytest.mark.slow
def test_cancel_then_list_status_reexport_and_unknown_ids(fresh, media, tmp_path):
    """A running `vexport export` is canceled (nothing left, the run canceled), the next export delivers; the
    history shows both, `status` the delivered one, `reexport` runs it again."""
    home, env = fresh
    log = (tmp_path / "victim.log").open("w")  # not a pipe: a full pipe nobody reads would stall its interrupt
    cmd = [EXE, "export", str(slow(tmp_path, media, "victim", "bob")), "--json", str(tmp_path / "victim.json")]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not ((home / "work").exists() and list((home / "work").rglob(".*.partial.*"))):
        assert time.monotonic() < deadline and proc.poll() is None, "the encode never started"
        time.sleep(0.3)
    encoders = running_ffmpeg(proc.pid)
    running = json.loads(vexport(env, "status", "victim", "--json").stdout)
    assert running["status"] == "started" and running["stage"] == "encoding" and running["percent"] < 100

    began = time.monotonic()
    res = vexport(env, "cancel", "victim", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    took = time.monotonic() - began
    assert proc.poll() is not None, f"the export still runs after `vexport cancel` returned ({took:.1f} s)"
    proc.wait(timeout=15)
    log.close()
    output = (tmp_path / "victim.log").read_text()
    assert took < 30, f"`vexport cancel` took {took:.1f} s (it waits up to 10 s for the process)"
    print(f"vexport cancel took {took:.1f} s: {res.stdout}")
    _, alive = psutil.wait_procs(encoders, timeout=5)
    assert not alive, "FFmpeg outlived the cancel"
    summary = json.loads((tmp_path / "victim.json").read_text())
    assert summary["status"] == "failed" and summary["errors"][0]["code"] == "interrupted", summary
    assert "Traceback" not in output
    assert not list((home / "work").rglob(".*.partial*")), "a partial file was left behind"
    assert not (home / "store").exists() or not list((home / "store").rglob("*.mp4")), "something was delivered"
    after = json.loads(vexport(env, "status", "victim", "--json").stdout)
    assert after["status"] == "canceled" and after["summary"] is None
    assert vexport(env, "cancel", "victim").returncode == 2  # nothing running any more

    ok = vexport(env, "export", str(manifest(tmp_path, media, "good", "alice")), timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    check_history(env)
    check_status_and_reexport(home, env)
    again = manifest(tmp_path, media, "victim", "bob")
    resubmit = vexport(env, "export", str(again), "--json", str(tmp_path / "again.json"), timeout=300)
    assert resubmit.returncode == 0, resubmit.stdout + resubmit.stderr  # the canceled export's id works again
    assert json.loads((tmp_path / "again.json").read_text())["status"] == "delivered"
    assert running_ffmpeg() == []


def check_history(env: dict) -> None:
    out = vexport(env, "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    assert rows["good"]["status"] == "success" and rows["good"]["owner"] == "alice"
    assert rows["good"]["version"] and rows["good"]["delivered"] == "delivered"
    assert set(rows["good"]) >= {"id", "owner", "status", "run_id", "version", "registered_at"}
    assert rows["victim"]["status"] == "canceled" and rows["victim"]["owner"] == "bob"
    assert rows["victim"]["version"] is None
    assert [r["id"] for r in json.loads(vexport(env, "list", "--json", "--owner", "bob").stdout)] == ["victim"]
    assert [r["id"] for r in json.loads(vexport(env, "list", "--json", "--status", "success").stdout)] == ["good"]
    table = vexport(env, "list", "--since", "1h", "--limit", "1", "--page", "2").stdout
    assert "victim" in table and "canceled" in table and "good" not in table and "page 2 of 2" in table


def check_status_and_reexport(home: Path, env: dict) -> None:
    status = vexport(env, "status", "good", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["status"] == "success" and data["stage"] == "done" and data["percent"] == 100
    assert data["steps_done"] == data["steps_total"] > 5  # the mapped encode steps counted once, as they ran
    assert data["summary"]["status"] == "delivered" and data["started"] and data["ended"]
    first = data["run_id"]

    again = vexport(env, "reexport", "good", "--json", str(home / "again.json"), timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((home / "again.json").read_text())
    assert summary["status"] == "delivered" and summary["export_id"] == "good"
    assert json.loads(vexport(env, "status", "good", "--json").stdout)["run_id"] != first  # a new run

    for args in (("status", "nope"), ("cancel", "nope"), ("reexport", "nope")):
        res = vexport(env, *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "nope" in res.stdout + res.stderr and "Traceback" not in res.stderr
    gone = {**env, "DAGSTER_HOME": str(home / "no-such-folder")}
    for args in (("list",), ("status", "good"), ("cancel", "good")):  # a mistyped DAGSTER_HOME: said, not a trace
        res = vexport(gone, *args)
        assert res.returncode == 2 and "DAGSTER_HOME" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_progress_moves_through_the_stages_and_ends_at_100():
    plan = [StepEvent("start", "source"), StepEvent("success", "source"), StepEvent("start", "segments")]
    assert history.progress(plan, "started", 8).stage == "planning"
    encoding = plan + [
        StepEvent("success", "segments"),
        StepEvent("start", "renditions.plan_encodes"),
        StepEvent("output", "renditions.plan_encodes", job="a"),
        StepEvent("output", "renditions.plan_encodes", job="b"),
        StepEvent("success", "renditions.plan_encodes"),
        StepEvent("start", "renditions.encode[a]"),
        StepEvent("progress", "renditions.encode[a]", 50.0, "a"),
    ]
    half = history.progress(encoding, "started", 8)
    assert half.stage == "encoding" and 10 < half.percent < 85
    more = history.progress(encoding + [StepEvent("progress", "renditions.encode[a]", 100.0, "a")], "started", 8)
    assert more.percent > half.percent
    validating = encoding + [StepEvent("success", "renditions.encode[a]"), StepEvent("start", "validation_report")]
    assert history.progress(validating, "started", 8).stage == "validating"
    assert history.progress(validating, "success", 8).percent == 100
    assert history.Progress(percent=20.0).advance(30.0).percent == 30.0  # never backwards
    assert history.eta(5.0, 30.0) is None  # planning: the pace says nothing yet
    assert history.eta(50.0, 30.0) == 30.0 and history.eta(75.0, 60.0) == 20.0 and history.eta(100.0, 9.0) is None


def test_rows_filters_and_pages():
    records = {"a": {"owner": "x", "registered_at": 100.0}, "b": {"owner": "y", "registered_at": 200.0}}
    runs = {"a": history.RunInfo("r1", "success", 100.0, 101.0, 102.0, "x", "cli")}
    rows = history.rows(records, runs, lambda e: ("v1", "delivered") if e == "a" else (None, None))
    assert [r.id for r in rows] == ["b", "a"] and rows[1].version == "v1" and rows[0].status == "registered"
    assert [r.id for r in history.select(rows, owner="x")] == ["a"]
    assert [r.id for r in history.select(rows, status="SUCCESS")] == ["a"]
    assert [r.id for r in history.select(rows, since="1m", now=230.0)] == ["b"]
    assert [r.id for r in history.page(rows, 1, 2)] == ["a"]
