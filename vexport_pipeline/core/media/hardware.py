"""Hardware encoders: found by trying a tiny encode, never by the presence of a GPU (H100/H200-class
GPUs have no NVENC). Quality tiers map to each family's constant-quality mode."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vexport_pipeline.core.errors import EncodeError
from vexport_pipeline.core.settings import ffmpeg_exe
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


def detect(codecs=tuple(CANDIDATES)) -> tuple[dict[str, str | None], list[Trial]]:
    """The first working hardware encoder per codec (or None), and every trial with its reason."""
    found: dict[str, str | None] = {}
    trials: list[Trial] = []
    for codec in codecs:
        found[codec] = None
        for name in CANDIDATES.get(codec, []):
            t = try_encoder(name)
            trials.append(t)
            if t.works:
                found[codec] = name
                break
    return found, trials


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
