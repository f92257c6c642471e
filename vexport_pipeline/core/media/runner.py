"""The one place FFmpeg runs: argv in, progress out; terminates FFmpeg on any exit path
(errors, KeyboardInterrupt, Dagster's DagsterExecutionInterruptedError) and deletes partial outputs.
On Linux every FFmpeg also gets SIGKILL from the kernel when the thread that started it dies, so a
`kill -9` of vexport (which runs no `finally`) leaves no orphan encoding on."""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vexport_pipeline.core.errors import EncodeError

log = logging.getLogger("vexport.ffmpeg")
PR_SET_PDEATHSIG = 1
_live: dict[subprocess.Popen, str] = {}  # running FFmpeg -> name of the thread that started it
_scripts: dict[subprocess.Popen, Path] = {}  # a long filter graph's file, removed when its FFmpeg ends
_live_lock = threading.Lock()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


LONG_GRAPH = 32 * 1024  # a filter graph longer than this goes through a file (one argument may not pass 128 KiB)


def _graph_file(argv: list[str]) -> tuple[list[str], Path | None]:
    """`-filter_complex GRAPH` as `-/filter_complex FILE` when the graph is long (hundreds of segments):
    Linux refuses a single argument over 128 KiB ('Argument list too long')."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-filter_complex" and len(argv[i + 1]) > LONG_GRAPH:
            fd, name = tempfile.mkstemp(prefix="vexport-graph-", suffix=".txt")
            with os.fdopen(fd, "w") as f:
                f.write(argv[i + 1])
            return [*argv[:i], "-/filter_complex", name, *argv[i + 2 :]], Path(name)
    return argv, None


def _popen(argv: list[str], **kw) -> subprocess.Popen:
    argv, script = _graph_file(argv)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            **kw,
        )
    except BaseException:
        if script:
            script.unlink(missing_ok=True)
        raise
    with _live_lock:
        _live[proc] = threading.current_thread().name
        if script:
            _scripts[proc] = script
    return proc


def _forget(proc: subprocess.Popen) -> None:
    with _live_lock:
        _live.pop(proc, None)
        script = _scripts.pop(proc, None)
    if script:
        script.unlink(missing_ok=True)


def stop_started_by(thread_prefix: str) -> None:
    """Kill every FFmpeg still running that a thread named `thread_prefix...` started (a worker pool's
    children, when the caller waiting on the pool is interrupted)."""
    with _live_lock:
        procs = [p for p, name in _live.items() if name.startswith(thread_prefix)]
    for p in procs:
        if p.poll() is None:
            p.kill()


@dataclass
class Progress:
    percent: float
    out_time: float
    fps: float
    speed: float
    eta: float | None
    done: bool = False


class ProgressParser:
    """Turns `-progress` key=value blocks into Progress; the ETA only moves forward (never up)."""

    def __init__(self, duration: float):
        self.duration = max(duration, 1e-6)
        self.block: dict[str, str] = {}
        self.started = time.monotonic()
        self.last_eta: float | None = None
        self.out_time = 0.0

    def feed(self, line: str) -> Progress | None:
        key, _, value = line.strip().partition("=")
        if not key:
            return None
        self.block[key] = value
        if key != "progress":
            return None
        block, self.block = self.block, {}
        try:  # N/A early on: keep the last known position
            out_time = max(self.out_time, int(block.get("out_time_us") or block.get("out_time_ms") or "") / 1e6)
        except ValueError:
            out_time = self.out_time
        self.out_time = out_time
        done = value == "end"
        if done:
            out_time = self.duration
        percent = min(100.0, 100.0 * out_time / self.duration)
        fps = _float(block.get("fps"))
        speed = _float((block.get("speed") or "").rstrip("x"))
        elapsed = time.monotonic() - self.started
        eta = None
        if done:
            eta = 0.0
        elif out_time > 0:
            eta = elapsed * (self.duration - out_time) / out_time
            if self.last_eta is not None:
                eta = min(eta, self.last_eta)
        if eta is not None:
            self.last_eta = eta
        return Progress(round(percent, 1), out_time, fps, speed, eta, done)


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else 0.0
    except ValueError:
        return 0.0


@dataclass
class RunResult:
    wall_s: float
    stderr_tail: str
    argv: list[str] = None  # type: ignore[assignment]


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        try:
            Path(p).unlink()
        except FileNotFoundError:
            pass


def run_ffmpeg(
    argv: list[str],
    *,
    duration: float,
    outputs: Iterable[Path] = (),
    on_progress: Callable[[Progress], None] | None = None,
    timeout: float | None = None,
    where: str = "ffmpeg",
) -> RunResult:
    """Run FFmpeg to completion. On failure or interruption the process is terminated (then killed)
    and every file in `outputs` is removed, so nothing half-written survives."""
    outputs = [Path(p) for p in outputs]
    log.info("running: %s", shlex.join(argv))
    started = time.monotonic()
    stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
    proc = _start(argv, where)
    reader = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr), daemon=True)
    reader.start()
    ok = False
    try:
        _follow(proc, ProgressParser(duration), on_progress, started, timeout, where)
        rc = proc.wait()
        reader.join(timeout=5)
        _check(rc, "".join(stderr_tail), outputs, where)
        ok = True
        return RunResult(time.monotonic() - started, "".join(stderr_tail), argv)
    finally:
        _stop(proc, reader)
        if not ok:
            _remove(outputs)


def _start(argv: list[str], where: str) -> subprocess.Popen:
    try:
        return _popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    except OSError as exc:
        raise EncodeError(
            f"cannot run {argv[0]}: {exc.strerror or exc}", where=where, code="ffmpeg_unavailable"
        ) from None


def _follow(
    proc: subprocess.Popen,
    parser: ProgressParser,
    on_progress: Callable[[Progress], None] | None,
    started: float,
    timeout: float | None,
    where: str,
) -> None:
    """Read `-progress` blocks until FFmpeg closes its output; past `timeout` seconds, give up."""
    for line in proc.stdout:
        progress = parser.feed(line)
        if progress and on_progress:
            on_progress(progress)
        if timeout and time.monotonic() - started > timeout:
            raise EncodeError(f"timed out after {timeout:.0f} s", where=where, code="encode_timeout")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_SIGNAL_CAUSES = {
    "SIGXFSZ": " (a file grew past the size limit: the disk or quota is full, or ulimit -f)",
    "SIGKILL": " (killed: out of memory, or by an operator)",
    "SIGSEGV": " (FFmpeg crashed, perhaps on damaged input)",
}


_ADDRESS = re.compile(r"^\[(?P<who>[^\]@]+?)(?: @ 0x[0-9a-f]+)?\] ")  # "[h264 @ 0x55d0...] ", FFmpeg's prefix


def said(stderr: str, limit: int = 2000) -> str:
    """FFmpeg's messages as a person reads them: without the memory addresses it prefixes each line with, each line
    once, the last `limit` characters; "no message" where it said nothing."""
    lines: list[str] = []
    for line in stderr.strip().splitlines():
        line = _ADDRESS.sub(lambda m: f"[{m['who'].strip()}] ", line.strip())
        if line and line not in lines and not line.startswith("Last message repeated"):
            lines.append(line)
    return "\n".join(lines)[-limit:] or "no message"


def _check(rc: int, stderr: str, outputs: list[Path], where: str) -> None:
    if rc < 0:  # killed by a signal: say which, and what usually sends it
        name = signal_name(-rc)
        why = _SIGNAL_CAUSES.get(name, "")
        raise EncodeError(f"FFmpeg was stopped by {name}{why}: {said(stderr, 500)}", where=where)
    if rc != 0:
        raise EncodeError(f"FFmpeg exited with code {rc}: {said(stderr)}", where=where)
    missing = [str(p) for p in outputs if not p.exists() or p.stat().st_size == 0]
    if missing:
        raise EncodeError(f"FFmpeg wrote no output for {', '.join(missing)}", where=where)


def _stop(proc: subprocess.Popen, reader: threading.Thread) -> None:
    """Terminate FFmpeg if it still runs (then kill it), and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _forget(proc)
    reader.join(timeout=2)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            try:
                stream.close()
            except OSError:
                pass


def capture(argv: list[str], *, timeout: float = 6 * 3600) -> subprocess.CompletedProcess:
    """Run a short FFmpeg job whose printed output is the result (measurements, trials, thumbnails).
    Logged like every command; `subprocess.run` kills the child if we are interrupted. A timeout or an
    FFmpeg that cannot be started is an EncodeError (`encode_timeout`, `ffmpeg_unavailable`)."""
    log.info("running: %s", shlex.join(argv))
    try:
        proc = _popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise EncodeError(
            f"cannot run {argv[0]}: {exc.strerror or exc}", where=Path(argv[0]).name, code="ffmpeg_unavailable"
        ) from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        raise EncodeError(f"timed out after {timeout:.0f} s", where=Path(argv[0]).name, code="encode_timeout") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _forget(proc)
