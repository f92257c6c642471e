"""Objective quality: VMAF (pinned models), PSNR and SSIM, in one FFmpeg process that decodes the
source timeline and the rendition once.

The figure the tiers are judged on measures what the encode controls: the rendition against the
clip's own timeline of the source brought to the rendition's size, rate and fit by the encode's own
filter chain (`reference`), picture area only. Beside it, as information, the full-reference figure
against the source at its own size (the rendition upscaled, bicubic), on every 7th scored frame; a rendition
at the source's size has it already (its own figure).
Frame subsampling by default (quick, `stride`); every frame on request."""

from __future__ import annotations

import hashlib
import json
import tempfile
from fractions import Fraction
from pathlib import Path

import ffmpeg

from vexport_pipeline.core.errors import ProcessingError
from vexport_pipeline.core.media.cache import RenditionCache, rendition_key
from vexport_pipeline.core.media.commands import clip_video
from vexport_pipeline.core.media.probe import MediaInfo
from vexport_pipeline.core.media.runner import capture, said
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.presets import VMAF_TOLERANCE, EncodeSettings

from .reference import (
    VMAF_4K_MODEL,
    VMAF_MODEL,
    as_sdr_tv,
    model_for,
    on_frame_grid,
    rendition_picture,
    same_picture,
    scaled_reference,
)

# Which frames are scored (quick): every Nth, N odd and prime to the periods of encoders' frame patterns (B-frame
# groups of 2 to 5, hierarchical and alt-ref groups of 8 and 16), which a stride sharing a factor with one samples
# unevenly: on the B5 corpus every 10th frame scored up to 6.4 VMAF over every frame (VP9 with alt-ref frames, and
# x265's groups of 5), every 3rd 4.1 over (x264 `veryfast`, groups of 3). The sparsest stride that still scores
# MIN_SCORED frames: short clips are scored on every frame.
STRIDES, MIN_SCORED = (11, 7), 20
SOURCE_SIZE_EVERY = 7  # the informational source-size figure scores every 7th of the scored frames (prime to them)
MIN_SIDE = 64  # libvmaf's wavelet scales need this much picture: a 16x16 source's figure failed the whole pass


class Scores:
    """Scores kept by content in the rendition cache (`quality/...`, shared between workers with it): a file's
    figures against one clip of one source, so a file measured once (the target-quality search's probe that
    became the rendition) is not measured again by validation. A kept score serves any request that scores the
    same or fewer frames."""

    def __init__(self, cache: RenditionCache, source_sha256: str):
        self.cache, self.source_sha256 = cache, source_sha256

    def _rel(self, file_sha256: str, clip: Clip, s: EncodeSettings) -> str:
        """The file's bytes and the reference it was scored against (what keys a rendition: source, clip, settings,
        FFmpeg build)."""
        key = hashlib.sha256(f"{file_sha256}:{rendition_key(self.source_sha256, clip, s)}".encode()).hexdigest()
        return f"quality/{key[:2]}/{key}.json"

    def recall(self, file_sha256: str, clip: Clip, s: EncodeSettings, subsample: int) -> dict | None:
        try:
            kept = json.loads(self.cache.get_record(self._rel(file_sha256, clip, s)) or b"null")
        except ValueError:
            return None
        return kept if isinstance(kept, dict) and kept.get("subsample", subsample + 1) <= subsample else None

    def keep(self, file_sha256: str, clip: Clip, s: EncodeSettings, scored: dict) -> None:
        self.cache.put_record(self._rel(file_sha256, clip, s), json.dumps(scored).encode())


def floor(s: EncodeSettings) -> float | None:
    """The mean VMAF a rendition must reach: its target less the tolerance (None: no promise made)."""
    return s.vmaf_target - VMAF_TOLERANCE if s.vmaf_target else None


def stride(clip: Clip, s: EncodeSettings) -> int:
    """Score every this many frames of `clip` at the rendition's rate (quick measurement; the full one is 1)."""
    frames = clip.duration * float(Fraction(s.fps))
    return next((k for k in STRIDES if frames / k >= MIN_SCORED), 1)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _vmaf(dist, ref, model: str, sub: int, log: Path, features: bool):
    kw = {"feature": "name=psnr|name=float_ssim"} if features else {}
    return ffmpeg.filter(
        [dist, ref], "libvmaf", model=f"version={model}", n_threads=2, n_subsample=sub, log_fmt="json",
        log_path=str(log), **kw,
    )  # fmt: skip


def _source_size(source: MediaInfo) -> tuple[tuple[int, int], int, int]:
    """The source's picture size, and that size made even (what the source-size figure compares at)."""
    size = (source.video.display_width, source.video.display_height)
    return size, size[0] - size[0] % 2, size[1] - size[1] % 2


def _at_source(source: MediaInfo, s: EncodeSettings, extras: bool) -> str | None:
    """How a rendition's source-size figure is had: `own` (the rendition is the source's size, so its own figure
    is that figure), `pass` (a pass of its own, the rendition upscaled), None (not asked for; or a crop, pad or
    blur, where a source-size figure compares apples to pears)."""
    size, w, h = _source_size(source)
    if not extras or not same_picture(size, s) or min(w, h) < MIN_SIDE:
        return None
    return "own" if (s.width, s.height) == (w, h) else "pass"


def _graph(
    items: list[tuple[Path, EncodeSettings]], source: MediaInfo, clip: Clip, subs: list[int], logs: list, extras: bool,
    how: list[str | None],
):  # fmt: skip
    """One FFmpeg process for every rendition of one clip: the source timeline is decoded once and split to
    each rendition's reference (and, where `how` says `pass`, the source-size figure: `_at_source`)."""
    size, w, h = _source_size(source)
    whole = [way == "pass" for way in how]
    src = clip_video(Path(source.path), clip).filter_multi_output("split", len(items) + sum(whole))
    refs, outs = iter(range(len(items) + sum(whole))), []
    for (rendition, s), full, (log, source_log), sub in zip(items, whole, logs, subs):
        dist = ffmpeg.input(f"file:{rendition}", protocol_whitelist="file").video
        dist = dist.filter_multi_output("split", 2) if full else [dist]
        pair = [rendition_picture(dist[0], s, size), scaled_reference(src[next(refs)], s, size)]
        outs.append(ffmpeg.output(_vmaf(*pair, model_for(s), sub, log, extras), "-", f="null"))
        if full:
            up = as_sdr_tv(on_frame_grid(dist[1].filter("scale", w, h, flags="bicubic"), s))
            ref = as_sdr_tv(on_frame_grid(src[next(refs)].filter("fps", fps=s.fps).filter("scale", w, h), s))
            model = VMAF_4K_MODEL if min(w, h) >= 2160 else VMAF_MODEL
            outs.append(ffmpeg.output(_vmaf(up, ref, model, sub * SOURCE_SIZE_EVERY, source_log, False), "-", f="null"))
    return ffmpeg.merge_outputs(*outs)


def score(
    rendition: Path,
    source: MediaInfo,
    clip: Clip,
    s: EncodeSettings,
    *,
    full: bool = False,
    subsample: int | None = None,
    extras: bool = True,
    timeout: float = 6 * 3600,
) -> dict:
    """{'model', 'vmaf_mean', 'vmaf_p5', 'vmaf_min', 'psnr_mean', 'ssim_mean', 'frames', 'per_frame',
    'vmaf_source_size', ...}, on every `subsample`th frame (default: `stride`; `full`: every frame). Without
    `extras` (a search's probe of a sample: only its VMAF decides anything) no PSNR, SSIM or source-size figure
    (None), for half the time."""
    return score_clip([(rendition, s)], source, clip, full=full, subsample=subsample, extras=extras, timeout=timeout)[0]


def score_clip(
    items: list[tuple[Path, EncodeSettings]],
    source: MediaInfo,
    clip: Clip,
    *,
    full: bool = False,
    subsample: int | None = None,
    extras: bool = True,
    timeout: float = 6 * 3600,
) -> list[dict]:
    """`score` for every rendition of one clip in one pass over one decode of the source timeline."""
    subs = [1 if full else (subsample or stride(clip, s)) for _, s in items]
    where = str(items[0][0]) if len(items) == 1 else f"{len(items)} renditions of {Path(source.path).name}"
    with tempfile.TemporaryDirectory(prefix="vexport-vmaf-") as tmp:
        logs = [(Path(tmp) / f"vmaf{n}.json", Path(tmp) / f"vmaf{n}_source.json") for n in range(len(items))]
        how = [_at_source(source, s, extras) for _, s in items]
        graph = _graph(items, source, clip, subs, logs, extras, how)
        argv = graph.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(cmd=ffmpeg_exe())
        proc = capture(argv, timeout=timeout)
        if proc.returncode != 0 or not all(log.exists() for log, _ in logs):
            raise ProcessingError(f"libvmaf failed: {said(proc.stderr, 500)}", where=where, code="quality_failed")
        return [_result(*log, s, sub, way == "own") for log, (_, s), sub, way in zip(logs, items, subs, how)]


def _mean(frames: list[dict], metric: str, digits: int) -> float | None:
    return round(sum(f[metric] for f in frames) / len(frames), digits) if metric in frames[0] else None


def _result(log: Path, source_log: Path, s: EncodeSettings, sub: int, own: bool) -> dict:
    """The figures of one rendition; `own`: it is the source's size, so its figure is also the source-size one."""
    data = json.loads(log.read_text())
    frames = [f["metrics"] for f in data["frames"]]
    vmaf = [f["vmaf"] for f in frames]
    mean = sum(vmaf) / len(vmaf)
    if own:
        at_source = mean
    elif source_log.exists():
        at_source = json.loads(source_log.read_text())["pooled_metrics"]["vmaf"]["mean"]
    else:
        at_source = None
    rate = float(Fraction(s.fps))
    return {
        "model": model_for(s),
        "reference": "source at the rendition's size, rate and fit (picture area)",
        "subsample": sub,
        "frames": len(frames),
        "vmaf_mean": round(mean, 2),
        "vmaf_p5": round(_percentile(vmaf, 0.05), 2),
        "vmaf_min": round(min(vmaf), 2),
        "psnr_mean": _mean(frames, "psnr_y", 2),
        "ssim_mean": _mean(frames, "float_ssim", 4),
        "vmaf_source_size": round(at_source, 2) if at_source is not None else None,
        "per_frame": [
            (round(f["frameNum"] / rate, 3) if "frameNum" in f else None, m["vmaf"])
            for f, m in zip(data["frames"], frames)
        ],
    }
