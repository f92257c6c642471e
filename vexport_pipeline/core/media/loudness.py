"""Two-pass loudness normalization (EBU R128 via FFmpeg's loudnorm).

Pass 1 measures the clip's joined audio; pass 2 (inside the encode) applies the measured values with
`linear=true`. loudnorm silently falls back to dynamic mode when a linear gain would break the
true-peak target, so we predict which mode applies and record it with the measurement."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import ffmpeg

from vexport_pipeline.core.errors import EncodeError
from vexport_pipeline.core.settings import ffmpeg_exe

from .runner import capture

TARGET_LRA = 11.0


@dataclass(frozen=True)
class LoudnessPlan:
    target_i: float
    target_tp: float
    measured_i: float
    measured_tp: float
    measured_lra: float
    measured_thresh: float
    offset: float

    @property
    def linear(self) -> bool:
        """loudnorm keeps linear gain only if the gained true peak stays under the target and LRA fits."""
        return (
            self.measured_tp + (self.target_i - self.measured_i) <= self.target_tp and self.measured_lra <= TARGET_LRA
        )

    @property
    def mode(self) -> str:
        return "linear" if self.linear else "dynamic"

    def filter_args(self) -> dict:
        return {
            "i": self.target_i,
            "tp": self.target_tp,
            "lra": TARGET_LRA,
            "measured_i": self.measured_i,
            "measured_tp": self.measured_tp,
            "measured_lra": self.measured_lra,
            "measured_thresh": self.measured_thresh,
            "offset": self.offset,
            "linear": "true",
        }

    def to_dict(self) -> dict:
        return {**asdict(self), "mode": self.mode}


def parse_loudnorm_json(stderr: str) -> dict:
    start, end = stderr.rfind("{"), stderr.rfind("}")
    if start < 0 or end < start:
        raise EncodeError("loudnorm printed no measurement", where="loudness pass 1")
    try:
        return json.loads(stderr[start : end + 1])
    except json.JSONDecodeError:
        raise EncodeError("loudnorm printed an unreadable measurement", where="loudness pass 1") from None


def measure(audio_stream, target_i: float, target_tp: float) -> LoudnessPlan:
    """Pass 1 on an ffmpeg-python audio stream (the clip's joined audio): measure, write nothing."""
    graph = ffmpeg.output(
        audio_stream.filter("loudnorm", i=target_i, tp=target_tp, lra=TARGET_LRA, print_format="json"), "-", f="null"
    ).global_args("-hide_banner", "-nostdin", "-nostats")
    argv = graph.compile(cmd=ffmpeg_exe())
    proc = capture(argv)
    if proc.returncode != 0:
        raise EncodeError(f"loudness measurement failed: {proc.stderr.strip()[-1000:]}", where="loudness pass 1")
    m = parse_loudnorm_json(proc.stderr)
    num = lambda k: max(-99.0, float(m[k])) if m[k] not in ("-inf", "inf") else -99.0
    try:
        return LoudnessPlan(
            target_i,
            target_tp,
            num("input_i"),
            num("input_tp"),
            num("input_lra"),
            num("input_thresh"),
            float(m["target_offset"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EncodeError(f"loudnorm measurement is incomplete ({exc})", where="loudness pass 1") from None
