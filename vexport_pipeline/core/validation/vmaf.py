"""Objective quality against the source: VMAF (pinned model), PSNR and SSIM in one libvmaf pass.

The reference is the clip's own timeline of the source (same cuts and transitions as the encode),
brought to the rendition's frame rate; the rendition is upscaled (bicubic) to the reference size and
both timelines start at zero. Frame subsampling by default (quick); full scoring on request.
Renditions whose picture geometry differs from the source (cropped, padded, blurred fill) are not
comparable frame to frame and are skipped with that reason."""

from __future__ import annotations

import json
import tempfile
from fractions import Fraction
from pathlib import Path

import ffmpeg

from vexport_pipeline.core.errors import ProcessingError
from vexport_pipeline.core.media.commands import clip_video
from vexport_pipeline.core.media.probe import MediaInfo
from vexport_pipeline.core.media.runner import capture
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.presets import EncodeSettings

VMAF_MODEL = "vmaf_v0.6.1"  # scores of different models are not comparable: always reported with the name
SUBSAMPLE = 10
# mean VMAF a tier must reach (draft: no floor)
TIER_MIN_VMAF = {"master": 95.0, "high": 93.0, "standard": 90.0, "medium": 85.0, "low": 75.0}


def comparable(source: MediaInfo, s: EncodeSettings) -> str | None:
    """None if the rendition shows the same picture as the source; else why not."""
    w, h = source.video.display_width, source.video.display_height
    if abs(w * s.height - h * s.width) > max(w, h):
        return f"picture reframed ({s.fit}) from {w}x{h} to {s.width}x{s.height}"
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def score(
    rendition: Path,
    source: MediaInfo,
    clip: Clip,
    s: EncodeSettings,
    *,
    full: bool = False,
    threads: int = 2,
    timeout: float = 6 * 3600,
) -> dict:
    """{'model', 'vmaf_mean', 'vmaf_p5', 'vmaf_min', 'psnr_mean', 'ssim_mean', 'frames', 'per_frame': [...]}."""
    w, h = source.video.display_width, source.video.display_height
    w, h = w - w % 2, h - h % 2
    ref = (
        clip_video(Path(source.path), clip)
        .filter("fps", fps=s.fps)
        .filter("scale", w, h)
        .filter("setpts", "PTS-STARTPTS")
        .filter("format", "yuv420p")
    )
    dist = (
        ffmpeg.input(f"file:{rendition}", protocol_whitelist="file")
        .video.filter("scale", w, h, flags="bicubic")
        .filter("setpts", "PTS-STARTPTS")
        .filter("format", "yuv420p")
    )
    with tempfile.TemporaryDirectory(prefix="vexport-vmaf-") as tmp:
        log = Path(tmp) / "vmaf.json"
        scored = ffmpeg.filter(
            [dist, ref],
            "libvmaf",
            model=f"version={VMAF_MODEL}",
            n_threads=threads,
            n_subsample=1 if full else SUBSAMPLE,
            feature="name=psnr|name=float_ssim",
            log_fmt="json",
            log_path=str(log),
        )
        argv = (
            ffmpeg.output(scored, "-", f="null")
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
            .compile(cmd=ffmpeg_exe())
        )
        proc = capture(argv, timeout=timeout)
        if proc.returncode != 0 or not log.exists():
            raise ProcessingError(
                f"libvmaf failed: {proc.stderr.strip()[-500:]}", where=str(rendition), code="quality_failed"
            )
        data = json.loads(log.read_text())
    frames = [f["metrics"] for f in data["frames"]]
    vmaf = [f["vmaf"] for f in frames]
    rate = float(Fraction(s.fps))
    return {
        "model": VMAF_MODEL,
        "subsample": 1 if full else SUBSAMPLE,
        "frames": len(frames),
        "vmaf_mean": round(sum(vmaf) / len(vmaf), 2),
        "vmaf_p5": round(_percentile(vmaf, 0.05), 2),
        "vmaf_min": round(min(vmaf), 2),
        "psnr_mean": round(sum(f["psnr_y"] for f in frames) / len(frames), 2),
        "ssim_mean": round(sum(f["float_ssim"] for f in frames) / len(frames), 4),
        "per_frame": [
            (round(f["frameNum"] / rate, 3) if "frameNum" in f else None, m["vmaf"])
            for f, m in zip(data["frames"], frames)
        ],
    }
