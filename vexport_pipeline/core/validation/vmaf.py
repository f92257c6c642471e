"""Objective quality: VMAF (pinned models), PSNR and SSIM, in one FFmpeg process that decodes the
source timeline and the rendition once.

The figure the tiers are judged on measures what the encode controls: the rendition against the
clip's own timeline of the source brought to the rendition's size, rate and fit by the encode's own
filter chain (`reference`), picture area only. Beside it, as information, the full-reference figure
against the source at its own size (the rendition upscaled, bicubic), on every third scored frame.
Frame subsampling by default (quick); every frame on request."""

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
from vexport_pipeline.core.spec.presets import VMAF_TOLERANCE, EncodeSettings

from .reference import (
    VMAF_4K_MODEL,
    VMAF_MODEL,
    as_sdr_tv,
    model_for,
    rendition_picture,
    same_picture,
    scaled_reference,
)

SUBSAMPLE = 10
SOURCE_SIZE_EVERY = 3  # the informational source-size figure scores every 3rd of the scored frames


def floor(s: EncodeSettings) -> float | None:
    """The mean VMAF a rendition must reach: its target less the tolerance (None: no promise made)."""
    return s.vmaf_target - VMAF_TOLERANCE if s.vmaf_target else None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _graph(rendition: Path, source: MediaInfo, clip: Clip, s: EncodeSettings, sub: int, logs: tuple[Path, Path]):
    size = (source.video.display_width, source.video.display_height)
    w, h = size[0] - size[0] % 2, size[1] - size[1] % 2
    src = clip_video(Path(source.path), clip).filter_multi_output("split", 2)
    dist = ffmpeg.input(f"file:{rendition}", protocol_whitelist="file").video.filter_multi_output("split", 2)
    at_size = ffmpeg.filter(
        [rendition_picture(dist[0], s, size), scaled_reference(src[0], s, size)],
        "libvmaf",
        model=f"version={model_for(s)}",
        n_threads=2,
        n_subsample=sub,
        feature="name=psnr|name=float_ssim",
        log_fmt="json",
        log_path=str(logs[0]),
    )
    full_ref = ffmpeg.filter(
        [
            as_sdr_tv(dist[1].filter("scale", w, h, flags="bicubic").filter("setpts", "PTS-STARTPTS")),
            as_sdr_tv(src[1].filter("fps", fps=s.fps).filter("scale", w, h).filter("setpts", "PTS-STARTPTS")),
        ],
        "libvmaf",
        model=f"version={VMAF_4K_MODEL if min(w, h) >= 2160 else VMAF_MODEL}",
        n_threads=2,
        n_subsample=sub * SOURCE_SIZE_EVERY,
        log_fmt="json",
        log_path=str(logs[1]),
    )
    if not same_picture(size, s):  # cropped, padded or blurred: the source-size figure would compare apples to pears
        return ffmpeg.output(at_size, "-", f="null")
    return ffmpeg.merge_outputs(ffmpeg.output(at_size, "-", f="null"), ffmpeg.output(full_ref, "-", f="null"))


def score(
    rendition: Path,
    source: MediaInfo,
    clip: Clip,
    s: EncodeSettings,
    *,
    full: bool = False,
    subsample: int | None = None,
    timeout: float = 6 * 3600,
) -> dict:
    """{'model', 'vmaf_mean', 'vmaf_p5', 'vmaf_min', 'psnr_mean', 'ssim_mean', 'frames', 'per_frame',
    'vmaf_source_size', ...}."""
    sub = 1 if full else (subsample or SUBSAMPLE)
    with tempfile.TemporaryDirectory(prefix="vexport-vmaf-") as tmp:
        logs = (Path(tmp) / "vmaf.json", Path(tmp) / "vmaf_source.json")
        graph = _graph(rendition, source, clip, s, sub, logs)
        argv = graph.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(cmd=ffmpeg_exe())
        proc = capture(argv, timeout=timeout)
        if proc.returncode != 0 or not logs[0].exists():
            raise ProcessingError(
                f"libvmaf failed: {proc.stderr.strip()[-500:]}", where=str(rendition), code="quality_failed"
            )
        data = json.loads(logs[0].read_text())
        at_source = json.loads(logs[1].read_text())["pooled_metrics"]["vmaf"]["mean"] if logs[1].exists() else None
    frames = [f["metrics"] for f in data["frames"]]
    vmaf = [f["vmaf"] for f in frames]
    rate = float(Fraction(s.fps))
    return {
        "model": model_for(s),
        "reference": "source at the rendition's size, rate and fit (picture area)",
        "subsample": sub,
        "frames": len(frames),
        "vmaf_mean": round(sum(vmaf) / len(vmaf), 2),
        "vmaf_p5": round(_percentile(vmaf, 0.05), 2),
        "vmaf_min": round(min(vmaf), 2),
        "psnr_mean": round(sum(f["psnr_y"] for f in frames) / len(frames), 2),
        "ssim_mean": round(sum(f["float_ssim"] for f in frames) / len(frames), 4),
        "vmaf_source_size": round(at_source, 2) if at_source is not None else None,
        "per_frame": [
            (round(f["frameNum"] / rate, 3) if "frameNum" in f else None, m["vmaf"])
            for f, m in zip(data["frames"], frames)
        ],
    }
