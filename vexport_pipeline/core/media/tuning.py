"""Target quality: find, per target, the CRF that reaches its VMAF target with the fewest bits.

Like Av1an's target-quality mode and per-title encoding: a few short samples spread over the
timeline are encoded at the target's own settings (same encoder, speed and filters) and measured the
way validation measures the rendition (`validation.vmaf.score`, against the source as the encode saw
it), so the search aims at what the gate checks. Two probes, then the CRF is interpolated between
them (or extrapolated along the measured slope). The platform's rate cap stays in the settings, so
the search never goes above it. Results are cached with the renditions, so an unchanged export
searches nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vexport_pipeline.core.files import write_atomically
from vexport_pipeline.core.media.cache import RenditionCache, builder_version
from vexport_pipeline.core.media.probe import MediaInfo
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip, Timeline
from vexport_pipeline.core.spec.presets import EncodeSettings

# CRF bounds per codec: beyond them files only grow (low end) or fall apart (high end).
CRF_RANGE = {"h264": (12, 40), "h265": (14, 42), "vp9": (15, 60), "vp8": (4, 60), "av1": (15, 58)}
# VMAF points per CRF step near the tiers' targets (the prior for the second probe; measured on the corpus).
SLOPE = {"h264": -0.9, "h265": -0.8, "vp9": -0.45, "vp8": -0.55, "av1": -0.45}
CLOSE_ENOUGH = 0.5  # a probe this near the aim is taken as it is
# Aim a little above the target: encoders with threads (x265) do not repeat an encode bit for bit, and a
# rendition must not fall under the floor by the noise between the probe and the final encode.
AIM_MARGIN = 0.5
SAMPLE_S, SAMPLES = 1.0, 3  # three one-second windows spread over the timeline
SCORE_EVERY = 2  # score every other frame of the samples


@dataclass(frozen=True)
class Trial:
    crf: int
    vmaf: float
    kbps: float


@dataclass(frozen=True)
class Tuned:
    settings: EncodeSettings
    trials: tuple[Trial, ...]
    cached: bool = False

    def to_dict(self) -> dict:
        return {
            "label": self.settings.label,
            "crf": self.settings.crf,
            "target": self.settings.vmaf_target,
            "trials": [asdict(t) for t in self.trials],
            "cached": self.cached,
        }


def tunable(s: EncodeSettings) -> bool:
    """CPU encoders with a VMAF target and no explicit CRF or bitrate."""
    return bool(s.vmaf_target) and s.video_codec in CRF_RANGE and not s.encoder.endswith(("_nvenc", "_qsv"))


def sample_clip(timeline: Timeline) -> Clip:
    """Up to three one-second windows at the middle of equal thirds of the output, as source ranges."""
    ranges = [r for clip in timeline.clips for r in clip.ranges]
    total = sum(e - s for s, e in ranges)
    if total <= SAMPLE_S * SAMPLES * 1.5:
        return Clip(None, ranges)  # short: the whole timeline is the sample
    out, base = [], 0.0
    wanted = [total * (k + 0.5) / SAMPLES - SAMPLE_S / 2 for k in range(SAMPLES)]
    for start, end in ranges:
        for at in wanted:
            if base <= at and at + SAMPLE_S <= base + (end - start):
                out.append((start + at - base, start + at - base + SAMPLE_S))
        base += end - start
    return Clip(None, out or ranges[:1])


def _next_crf(s: EncodeSettings, trials: list[Trial]) -> int:
    lo, hi = CRF_RANGE[s.video_codec]
    target = s.vmaf_target + AIM_MARGIN
    if len(trials) == 1:
        t = trials[0]
        step = round((t.vmaf - target) / -SLOPE[s.video_codec])
        guess = t.crf + (step or (1 if t.vmaf > target else -1))
    else:
        a, b = trials[-2], trials[-1]
        slope = (b.vmaf - a.vmaf) / (b.crf - a.crf) if b.crf != a.crf else SLOPE[s.video_codec]
        prior = SLOPE[s.video_codec]
        slope = min(max(slope, prior * 3), prior / 3)  # keep a noisy measurement within reason (negative)
        guess = round(b.crf + (target - b.vmaf) / slope)
    return int(min(max(guess, lo), hi))


def _key(source_sha256: str, sample: Clip, s: EncodeSettings) -> str:
    data = {
        "sample": sample.ranges,
        "settings": {**s.to_dict(), "crf": None, "label": None},
        "src": source_sha256,
        "builder": builder_version(),
        "v": 1,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _probe(source: MediaInfo, sample: Clip, s: EncodeSettings, crf: int, work: Path) -> Trial:
    from vexport_pipeline.core.validation.vmaf import score

    trial = replace(s, crf=crf, label=f"probe_{crf}")
    out = work / f"{s.label}.{crf}.{s.ext}"
    render_clip(source, sample, [trial], [out])
    q = score(out, source, sample, trial, subsample=SCORE_EVERY)
    return Trial(crf, q["vmaf_mean"], round(out.stat().st_size * 8 / sample.duration / 1000, 1))


def tune(
    source: MediaInfo,
    timeline: Timeline,
    s: EncodeSettings,
    *,
    cache: RenditionCache | None = None,
    source_sha256: str | None = None,
) -> Tuned:
    """The settings with the CRF that reaches `s.vmaf_target` on the samples (two or three probes)."""
    if not tunable(s):
        return Tuned(s, ())
    sample = sample_clip(timeline)
    memo = cache.root / "tuning" / f"{_key(source_sha256, sample, s)}.json" if cache and source_sha256 else None
    if memo and memo.exists():
        data = json.loads(memo.read_text())
        return Tuned(replace(s, crf=data["crf"]), tuple(Trial(**t) for t in data["trials"]), cached=True)
    work = Path(tempfile.mkdtemp(prefix="vexport-tune-"))
    try:
        trials = [_probe(source, sample, s, s.crf, work)]
        while abs(trials[-1].vmaf - s.vmaf_target - AIM_MARGIN) > CLOSE_ENOUGH and len(trials) < 3:
            crf = _next_crf(s, trials)
            if crf in {t.crf for t in trials}:
                break
            trials.append(_probe(source, sample, s, crf, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = _choose(s, trials)
    if memo:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(memo, json.dumps({"crf": best, "trials": [asdict(t) for t in trials]}))
    return Tuned(replace(s, crf=best), tuple(trials))


def _choose(s: EncodeSettings, trials: list[Trial]) -> int:
    """Between the two probes that bracket the target, the CRF interpolated to it (rounded towards quality);
    else the highest CRF measured at or above the target, or a last extrapolation."""
    target = s.vmaf_target + AIM_MARGIN
    above = [t for t in trials if t.vmaf >= target - CLOSE_ENOUGH]
    below = [t for t in trials if t.vmaf < target - CLOSE_ENOUGH]
    if above and below:
        a = max(above, key=lambda t: t.crf)
        b = min((t for t in below if t.crf > a.crf), key=lambda t: t.crf, default=None)
        if b is not None and b.vmaf != a.vmaf:
            return max(a.crf, math.floor(a.crf + (a.vmaf - target) * (b.crf - a.crf) / (a.vmaf - b.vmaf)))
        return a.crf
    if above:
        return max(t.crf for t in above)
    return _next_crf(s, trials) if len(trials) > 1 else min(t.crf for t in trials)
