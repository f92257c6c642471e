"""Faults a real deployment meets: `kill -9` of an export mid-encode, two first runs racing on a fresh
home. Each is followed by a successful export, so nothing was left stuck (pool slots, partial files,
orphan FFmpeg)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vexport_pipeline_tests.conftest import make_clip, running_ffmpeg, write_manifest

pytestmark = pytest.mark.slow


def start(manifest: Path, env: dict, out: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("vexport")
    return subprocess.Popen(
        [str(exe), "export", str(manifest), "--json", str(out)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def fresh(tmp_path, media, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = tmp_path / "home"
    return home, {"VEXPORT_HOME": str(home), "VEXPORT_MEDIA_ROOTS": str(media["dir"])}


def quick_manifest(folder: Path, media, export_id: str) -> Path:
    return write_manifest(
        folder,
        {"id": export_id, "source": str(media["av"]), "segments": [{"start": 0, "end": 1}], "targets": [
            {"format": "mp4", "video_codec": "h264", "resolution": "640x360", "crf": 28}
        ]},
        name=f"{export_id}.yaml",
    )  # fmt: skip


def test_kill_9_mid_encode_leaves_no_orphan_and_the_next_export_runs(fresh, media, tmp_path):
    home, env = fresh
    long_src = make_clip(media["dir"] / "long-for-kill.mp4", seconds=30, size="1280x720")
    slow = write_manifest(
        tmp_path,
        {"id": "slow", "source": str(long_src), "targets": [
            {"format": "mp4", "video_codec": "h264", "resolution": "1080p", "crf": 18}
        ]},
        name="slow.yaml",
    )  # fmt: skip
    proc = start(slow, env, tmp_path / "slow.json")
    deadline, partial = time.monotonic() + 240, []
    while time.monotonic() < deadline and not partial:
        time.sleep(0.3)
        partial = list((home / "work").rglob(".*.partial.*")) if (home / "work").exists() else []
        assert proc.poll() is None, proc.stdout.read()
    assert partial, "the encode never started"
    encoders = running_ffmpeg(proc.pid)
    assert encoders
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(encoders, timeout=5)
    assert not alive, "FFmpeg outlived the kill -9 of its export"

    started = time.monotonic()
    nxt = start(quick_manifest(tmp_path, media, "after-kill"), env, tmp_path / "after.json")
    try:
        output, _ = nxt.communicate(timeout=300)
    finally:
        nxt.kill()
    assert nxt.returncode == 0, output
    assert json.loads((tmp_path / "after.json").read_text())["status"] == "delivered"
    assert time.monotonic() - started < 300
    assert not list((home / "work").rglob(".*.partial.*")), "the killed run's partial file was not swept"

    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    try:
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"vexport/export": "slow"}))
            assert [r.status for r in runs] == [dg.DagsterRunStatus.FAILURE]
            assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    finally:
        del os.environ["DAGSTER_HOME"]


def test_two_first_exports_racing_on_a_fresh_home_both_succeed(fresh, media, tmp_path):
    home, env = fresh
    procs = [start(quick_manifest(tmp_path, media, f"race{n}"), env, tmp_path / f"race{n}.json") for n in (1, 2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert "already exists" not in out
    for n in (1, 2):
        assert json.loads((tmp_path / f"race{n}.json").read_text())["status"] == "delivered"


def slow_manifest(folder: Path, media, export_id: str) -> Path:
    long_src = media["dir"] / "long-for-kill.mp4"
    if not long_src.exists():
        make_clip(long_src, seconds=30, size="1280x720")
    return write_manifest(
        folder,
        {"id": export_id, "source": str(long_src), "targets": [
            {"format": "mp4", "video_codec": "h264", "resolution": "1080p", "crf": 18}
        ]},
        name=f"{export_id}.yaml",
    )  # fmt: skip


def assert_clean_and_next_export_delivers(home: Path, env: dict, media, tmp_path: Path) -> None:
    assert not list((home / "work").rglob(".*.partial*")), "a partial file was left behind"
    store = home / "store"
    assert not store.exists() or not list(store.rglob("*.mp4")), "something was delivered"
    assert running_ffmpeg() == []
    nxt = start(quick_manifest(tmp_path, media, "next"), env, tmp_path / "next.json")
    output, _ = nxt.communicate(timeout=300)
    assert nxt.returncode == 0, output
    assert json.loads((tmp_path / "next.json").read_text())["status"] == "delivered"


def test_ffmpeg_killed_mid_encode_fails_the_export_cleanly(fresh, media, tmp_path):
    home, env = fresh
    proc = start(slow_manifest(tmp_path, media, "victim"), env, tmp_path / "victim.json")
    deadline, encoders = time.monotonic() + 240, []
    while time.monotonic() < deadline and not encoders:
        time.sleep(0.3)
        if (home / "work").exists() and list((home / "work").rglob(".*.partial.*")):
            encoders = running_ffmpeg(proc.pid)
    assert encoders, "the encode never started"
    for p in encoders:
        p.kill()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    summary = json.loads((tmp_path / "victim.json").read_text())
    assert summary["status"] == "failed" and "FFmpeg was stopped by SIGKILL" in summary["errors"][0]["message"]
    assert "Traceback" not in output
    assert_clean_and_next_export_delivers(home, env, media, tmp_path)


def export_on_a_small_disk(manifest: Path, out: Path, env: dict) -> subprocess.CompletedProcess:
    """`vexport export` with files capped at 1 MB (RLIMIT_FSIZE): a write past it fails as on a full disk."""
    import resource

    def limit():  # pragma: no cover - runs in the child
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    exe = Path(sys.executable).with_name("vexport")
    return subprocess.run(
        [str(exe), "export", str(manifest), "--json", str(out)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
    )


def test_disk_full_during_encode_fails_the_export_cleanly(fresh, media, tmp_path):
    """The file-size limit stands in for a full disk: FFmpeg's write fails past 1 MB (SIGXFSZ)."""
    home, env = fresh
    proc = export_on_a_small_disk(slow_manifest(tmp_path, media, "toobig"), tmp_path / "toobig.json", env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "toobig.json").read_text())
    assert summary["status"] == "failed" and "SIGXFSZ" in summary["errors"][0]["message"], summary
    assert "Traceback" not in proc.stdout
    assert_clean_and_next_export_delivers(home, env, media, tmp_path)


def test_an_export_waiting_for_the_gpu_slot_names_the_holder_does_not_spin_and_stops_on_ctrl_c(fresh, media, tmp_path):
    home, env = fresh
    holder = start(slow_manifest(tmp_path, media, "holder"), env, tmp_path / "holder.json")
    try:
        deadline = time.monotonic() + 240
        while not ((home / "work").exists() and list((home / "work").rglob(".*.partial.*"))):
            assert time.monotonic() < deadline and holder.poll() is None, "the holder's encode never started"
            time.sleep(0.3)
        log = tmp_path / "waiter.log"
        exe = Path(sys.executable).with_name("vexport")
        with log.open("w") as out:
            waiter = subprocess.Popen(
                [
                    str(exe),
                    "export",
                    str(quick_manifest(tmp_path, media, "waiter")),
                    "--json",
                    str(tmp_path / "w.json"),
                ],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while "waits for a slot" not in log.read_text():
            assert time.monotonic() < deadline and waiter.poll() is None, log.read_text()
            time.sleep(0.3)
        assert "pool 'gpu' (limit 1) is held by export 'holder'" in log.read_text()
        waiting = psutil.Process(waiter.pid)
        before = sum(waiting.cpu_times()[:2])
        time.sleep(5)
        assert sum(waiting.cpu_times()[:2]) - before < 1.0, "the waiting export spins instead of sleeping"

        stopped_at = time.monotonic()
        waiter.send_signal(signal.SIGINT)
        waiter.wait(timeout=30)
        assert time.monotonic() - stopped_at < 10, "Ctrl-C was not answered while waiting for the slot"
        assert waiter.returncode == 1
        summary = json.loads((tmp_path / "w.json").read_text())
        assert summary["status"] == "failed" and summary["errors"][0]["code"] == "interrupted", summary
        assert "Traceback" not in log.read_text() and '  File "' not in log.read_text()
        assert holder.poll() is None, "the holder was disturbed"
        holder.send_signal(signal.SIGINT)  # Ctrl-C mid-encode: FFmpeg stopped, its partial file removed
        holder.communicate(timeout=60)
        assert json.loads((tmp_path / "holder.json").read_text())["errors"][0]["code"] == "interrupted"
    finally:
        holder.kill()
        holder.communicate()
    assert_clean_and_next_export_delivers(home, env, media, tmp_path)


def test_disk_full_during_promotion_delivers_nothing_and_leaves_nothing(fresh, media, tmp_path):
    """Two 0.7 MB clips fit under a 1 MB file-size limit; their 1.4 MB ZIP bundle, written while the
    version is promoted, does not (EFBIG, what a full disk gives as ENOSPC)."""
    import sqlite3

    home, env = fresh
    slow_manifest(tmp_path, media, "unused")  # makes the 30 s source
    manifest = write_manifest(
        tmp_path,
        {"id": "bundled", "source": str(media["dir"] / "long-for-kill.mp4"), "export_type": "clips",
         "segments": [{"start": 0, "end": 1.5}, {"start": 1.5, "end": 3}],
         "targets": [{"format": "mp4", "video_codec": "h264", "resolution": "640x360", "video_bitrate": "4M"}],
         "delivery": {"zip": True}},
        name="bundled.yaml",
    )  # fmt: skip
    proc = export_on_a_small_disk(manifest, tmp_path / "bundled.json", env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "bundled.json").read_text())
    assert [r["size_bytes"] < 1 << 20 for r in summary["renditions"]] == [True, True], "the encodes must fit"
    error = summary["errors"][0]
    assert error["code"] == "storage_failed" and "bundle bundled.zip" in error["message"], summary
    assert "File too large" in error["message"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not [p for p in (home / "store").rglob("*") if p.name != ".staging"], "a part of the version was kept"
    assert not list((home / "work").rglob("*.zip")), "the partial bundle was left behind"
    events = home / "events.sqlite"
    assert not events.exists() or sqlite3.connect(events).execute("SELECT COUNT(*) FROM links").fetchone()[0] == 0
    assert_clean_and_next_export_delivers(home, env, media, tmp_path)
