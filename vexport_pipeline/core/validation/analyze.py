"""One decoding pass over a file for everything that needs the decoded content: frame count and
decode errors, EBU R128 loudness and true peak, black stretches and silences (with their times).
Plus a demux-only look at the video timestamps (constant frame rate or not)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import av

from vexport_pipeline.core.media.probe import SAFE_OPTIONS
from vexport_pipeline.core.media.runner import capture
from vexport_pipeline.core.settings import ffmpeg_exe

BLACK = "blackdetect=d=0.5:pix_th=0.10"
SILENCE = "silencedetect=n=-50dB:d=1"
_DECODE_ERROR = re.compile(r"error while decoding|corrupt|invalid nal|missing picture|concealing|decode_slice", re.I)


@dataclass
class Analysis:
    frames: int = 0
    decode_errors: list[str] = field(default_factory=list)
    integrated_lufs: float | None = None
    lra_lu: float | None = None
    true_peak_dbtp: float | None = None
    black: list[tuple[float, float]] = field(default_factory=list)
    silence: list[tuple[float, float]] = field(default_factory=list)


def _pairs(text: str, kind: str) -> list[tuple[float, float]]:
    if kind == "black":
        return [(float(a), float(b)) for a, b in re.findall(r"black_start:(-?[\d.]+) black_end:(-?[\d.]+)", text)]
    starts = [float(x) for x in re.findall(r"silence_start: (-?[\d.]+)", text)]
    ends = [float(x) for x in re.findall(r"silence_end: (-?[\d.]+)", text)]
    return list(zip(starts, ends + [float("nan")] * (len(starts) - len(ends))))


def analyze(path: Path, *, has_video: bool = True, has_audio: bool = True, timeout: float = 6 * 3600) -> Analysis:
    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-progress",
        "pipe:1",
        "-protocol_whitelist",
        "file",
        "-i",
        f"file:{path}",
    ]
    if has_video:
        argv += ["-map", "0:v:0", "-vf", BLACK]
    if has_audio:
        argv += ["-map", "0:a:0", "-af", f"ebur128=peak=true,{SILENCE}"]
    argv += ["-f", "null", "-"]
    proc = capture(argv, timeout=timeout)
    out = Analysis()
    frames = re.findall(r"^frame=(\d+)", proc.stdout, re.M)
    out.frames = int(frames[-1]) if frames else 0
    # the file's own name is left out of the search: an export named `corrupt-ts` failed every rendition
    lines = [ln.replace(str(path), "") for ln in proc.stderr.splitlines()]
    out.decode_errors = [ln.strip() for ln in lines if _DECODE_ERROR.search(ln)][:20]
    if proc.returncode != 0:
        out.decode_errors.append(
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        )
    summary = proc.stderr.rpartition("Summary:")[2]
    for key, attr in (("I", "integrated_lufs"), ("LRA", "lra_lu"), ("Peak", "true_peak_dbtp")):
        m = re.search(rf"{key}:\s+(-?[\d.]+|-inf)", summary)
        if m and m.group(1) != "-inf":
            setattr(out, attr, float(m.group(1)))
    out.black = _pairs(proc.stderr, "black")
    out.silence = _pairs(proc.stderr, "silence")
    return out


def frame_intervals(path: Path) -> set[int]:
    """The distinct gaps between consecutive video timestamps, in stream ticks (demux only)."""
    with av.open(str(path), options=SAFE_OPTIONS) as c:
        stream = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(stream) if p.pts is not None)
    return {b - a for a, b in zip(pts, pts[1:])}
