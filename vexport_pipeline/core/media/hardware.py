"""Hardware encoders: found by trying a tiny encode, never by the presence of a GPU (H100/H200-class
GPUs have no NVENC). Quality tiers map to each family's constant-quality mode."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from vexport_pipeline.core.errors import EncodeError
from vexport_pipeline.core.files import write_atomically
from vexport_pipeline.core.settings import current, ffmpeg_exe
from vexport_pipeline.core.spec.presets import EncodeSettings

from .runner import capture

CANDIDATES = {
    "h264": ["h264_nvenc", "h264_qsv"],
    "h265": ["hevc_nvenc", "hevc_qsv"],
    "av1": ["av1_nvenc", "av1_qsv"],
}


@dataclass(frozen=True)
class Trial:
    encoder: str
    works: bool
    reason: str


@functools.lru_cache(maxsize=32)
def try_encoder(encoder: str, exe: str | None = None) -> Trial:
    """Encode 4 frames of 256x144 to nowhere; a working encoder exits 0."""
    argv = [
        exe or ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=256x144:r=25:d=0.2",
        "-frames:v",
        "4",
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        encoder,
        "-f",
        "null",
        "-",
    ]
    try:
        proc = capture(argv, timeout=60)
    except EncodeError as exc:
        if exc.code != "encode_timeout":
            raise
        return Trial(encoder, False, "timed out")
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return Trial(
        encoder,
        proc.returncode == 0,
        "ok" if proc.returncode == 0 else (lines[0] if lines else f"exit {proc.returncode}"),
    )


# Trials are kept per host, so an export does not spend a second on them every time: the answer holds while
# the machine (hostname and boot time: a new driver or card means a reboot) and the FFmpeg binary stay the same,
# and for a day at most.
TRIALS_TTL_S = 24 * 3600


def _host_key(exe: str) -> str:
    st = Path(exe).stat()
    return f"{socket.gethostname()}|{psutil.boot_time():.0f}|{exe}|{st.st_size}|{st.st_mtime_ns}"


class _HostTrials:
    """The trials this host made, in `VEXPORT_HOME/hardware.json`; anything unreadable counts as not made."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.key, self.trials = path, _host_key(ffmpeg_exe()), {}
        try:
            data = json.loads(path.read_text()) if path else {}
            if data.get("host") == self.key and time.time() - data.get("made", 0) < TRIALS_TTL_S:
                self.trials = {name: Trial(**t) for name, t in data["trials"].items()}
        except (OSError, ValueError, TypeError, KeyError):
            pass
        self.made = len(self.trials)

    def get(self, encoder: str) -> Trial:
        if encoder not in self.trials:
            self.trials[encoder] = try_encoder(encoder)
        return self.trials[encoder]

    def save(self) -> None:
        if self.path and len(self.trials) > self.made:
            data = {"host": self.key, "made": time.time(), "trials": {n: asdict(t) for n, t in self.trials.items()}}
            with contextlib.suppress(OSError):  # a read-only home: the trials are simply made again next time
                write_atomically(self.path, json.dumps(data, indent=1))


def detect(codecs=tuple(CANDIDATES), cache: Path | None = None) -> tuple[dict[str, str | None], list[Trial]]:
    """The first working hardware encoder per codec (or None), and every trial with its reason. `cache`
    (default `VEXPORT_HOME/hardware.json`) keeps the trials of this host."""
    host = _HostTrials(cache or current().paths.root / "hardware.json")
    found: dict[str, str | None] = {}
    trials: list[Trial] = []
    for codec in codecs:
        found[codec] = None
        for name in CANDIDATES.get(codec, []):
            t = host.get(name)
            trials.append(t)
            if t.works:
                found[codec] = name
                break
    host.save()
    return found, trials


def declared(encoders: str, codecs) -> dict[str, str | None]:
    """The first of a comma-separated list of encoders (VEXPORT_HARDWARE) per codec, as `detect` answers."""
    names = encoders.split(",")
    return {c: next((n for n in CANDIDATES.get(c, []) if n in names), None) for c in codecs}


def hardware_args(s: EncodeSettings) -> dict:
    """Constant quality with the tier's cap, in each family's terms."""
    if s.encoder.endswith("_nvenc"):
        a = {
            "preset": "p5",
            "tune": "hq",
            "rc": "vbr",
            "b:v": s.video_bitrate or 0,
            "maxrate": s.maxrate,
            "bufsize": s.bufsize,
        }
        if not s.video_bitrate:
            a["cq"] = s.crf
        if s.video_codec == "h264":
            a.update({"profile:v": "high", "bf": 2})
        return a
    if s.encoder.endswith("_qsv"):
        a = {"preset": "medium", "maxrate": s.maxrate, "bufsize": s.bufsize}
        a.update({"b:v": s.video_bitrate} if s.video_bitrate else {"global_quality": s.crf})
        return a
    return {}
