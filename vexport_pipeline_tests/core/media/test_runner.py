import time

import dagster as dg
import psutil
import pytest

from vexport_pipeline.core.errors import EncodeError
from vexport_pipeline.core.media.runner import ProgressParser, run_ffmpeg
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline_tests.conftest import running_ffmpeg


def ffmpeg_children() -> list:
    return running_ffmpeg()


def long_encode(out):
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-nostats",
        "-progress",
        "pipe:1",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=1280x720:r=30:d=120",
        "-c:v",
        "libx264",
        "-preset",
        "slow",
        "-y",
        str(out),
    ]


def test_progress_parser_reports_percent_speed_and_a_forward_only_eta():
    p = ProgressParser(duration=10.0)
    got = []
    for t, speed in [(1, 1.0), (2, 0.5), (5, 2.0)]:
        for line in [f"out_time_us={t * 1_000_000}", "fps=30.0", f"speed={speed}x", "progress=continue"]:
            if (x := p.feed(line)) is not None:
                got.append(x)
    assert [g.percent for g in got] == [10.0, 20.0, 50.0]
    etas = [g.eta for g in got]
    assert all(b <= a for a, b in zip(etas, etas[1:]))
    for line in ["out_time_us=N/A", "progress=continue"]:
        x = p.feed(line)
    assert x.percent == 50.0  # N/A keeps the last position
    done = p.feed("progress=end")
    assert done.done and done.percent == 100.0 and done.eta == 0.0


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, dg.DagsterExecutionInterruptedError])
def test_interrupt_terminates_ffmpeg_and_removes_the_partial_file(tmp_path, interrupt):
    out = tmp_path / ".x.partial.mp4"
    seen = []

    def on_progress(p):
        seen.append(p)
        if out.exists() and out.stat().st_size > 0:
            raise interrupt()

    with pytest.raises(interrupt):
        run_ffmpeg(long_encode(out), duration=120, outputs=[out], on_progress=on_progress)
    assert seen, "progress was reported before the interrupt"
    assert not out.exists()
    time.sleep(0.2)
    assert ffmpeg_children() == []


def test_failed_encode_raises_with_ffmpeg_message_and_leaves_nothing(tmp_path):
    out = tmp_path / "x.mp4"
    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-progress",
        "pipe:1",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=d=1",
        "-c:v",
        "no_such_encoder",
        "-y",
        str(out),
    ]
    with pytest.raises(EncodeError) as exc:
        run_ffmpeg(argv, duration=1, outputs=[out])
    assert "no_such_encoder" in str(exc.value) or "Unknown encoder" in str(exc.value)
    assert not out.exists() and ffmpeg_children() == []


def test_timeout_kills_the_encode(tmp_path):
    out = tmp_path / "t.mp4"
    with pytest.raises(EncodeError, match="timed out"):
        run_ffmpeg(long_encode(out), duration=120, outputs=[out], timeout=1.0)
    assert not out.exists() and ffmpeg_children() == []


@pytest.mark.parametrize("how", ["run_ffmpeg", "capture"])
def test_kill_9_of_vexport_takes_its_ffmpeg_with_it(tmp_path, how):
    """SIGKILL runs no `finally`: the kernel's parent-death signal must stop the encode instead."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "orphan.mp4"
    call = (
        f"run_ffmpeg({long_encode(out)!r}, duration=120, outputs=[{str(out)!r}])"
        if how == "run_ffmpeg"
        else f"capture({long_encode(out)!r})"
    )
    script = f"from vexport_pipeline.core.media.runner import run_ffmpeg, capture\n{call}\n"
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        kids = []
        while time.monotonic() < deadline and not kids:
            time.sleep(0.2)
            kids = [p for p in psutil.Process(parent.pid).children() if "ffmpeg" in p.name()]
        assert kids, "FFmpeg never started"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(kids, timeout=5)
        assert not alive, f"FFmpeg {[p.pid for p in alive]} outlived a kill -9 of vexport"
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()


def test_interrupted_parallel_checks_stop_their_ffmpeg():
    """The validation's worker threads: an interrupt of the waiting caller kills their FFmpeg at once."""
    import os
    import signal
    import threading

    from vexport_pipeline.core.media.runner import capture
    from vexport_pipeline.core.validation.export import in_parallel

    started = threading.Event()

    def job(n):
        started.set()
        return capture(long_encode("/dev/null")[:-2] + ["-f", "null", "-"], timeout=60).returncode

    def interrupt_soon():
        started.wait(10)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: it wakes the caller blocked on the pool

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # earlier tests may have replaced it
    try:
        threading.Thread(target=interrupt_soon, daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            in_parallel(job, range(4))
        assert time.monotonic() - t0 < 15
    finally:
        signal.signal(signal.SIGINT, previous)
    time.sleep(0.2)
    assert ffmpeg_children() == []


def test_ffmpeg_messages_reach_people_without_memory_addresses_or_repeats():
    """libvmaf's refusal as it reached an export's summary (2026-12-08), and a decoder's repeated complaint."""
    from vexport_pipeline.core.media.runner import said

    stderr = (
        "[Parsed_libvmaf_15 @ 0x7f0b34009d40] input width must match.\n"
        "[Parsed_libvmaf_15 @ 0x7f0b34009d40] input height must match.\n"
        "[fc#0 @ 0x555e8dc95000] Error reinitializing filters!\n"
        "[h264 @ 0x5574d9a5a8c0] mmco: unref short failure\n"
        "[h264 @ 0x5574d9a5a8c1] mmco: unref short failure\n"
        "    Last message repeated 3 times\n"
    )
    assert said(stderr) == (
        "[Parsed_libvmaf_15] input width must match.\n[Parsed_libvmaf_15] input height must match.\n"
        "[fc#0] Error reinitializing filters!\n[h264] mmco: unref short failure"
    )
    assert said("") == "no message" and said("x" * 50 + "\nend", limit=3) == "end"
