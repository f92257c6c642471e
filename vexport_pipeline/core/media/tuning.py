"""Target quality: find, per target, the CRF that reaches its VMAF target with the fewest bits.

Like Av1an's target-quality mode and per-title encoding: a few short samples spread over the
timeline are encoded at the target's own settings (same encoder, speed and filters) and measured the
way validation measures the rendition (`validation.vmaf.score`, against the source as the encode saw
it), so the search aims at what the gate checks. The platform's rate cap stays in the settings, so the
search never goes above it. Results are cached with the renditions, so an unchanged export searches
nothing.

What keeps it cheap (B5 in bench/README.md):
- The first probe starts where the calibration says the target lies on typical content (`START`), moved by
  what earlier searches of the same export measured (`tune_all`: a ladder's renditions share the content,
  so the second and later searches usually take one probe).
- A probe is taken as it is anywhere in its `Band` around the target; else the CRF is interpolated
  between probes (or extrapolated along the measured slope), three probes at most (a fourth between two that
  straddle the band).
- A short single clip is its own sample, and its probe is encoded exactly as the rendition will be and put
  in the rendition cache: the probe the search settles on is the rendition, not encoded again.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vexport_pipeline.core.files import sha256_file
from vexport_pipeline.core.media.cache import RenditionCache, builder_version
from vexport_pipeline.core.media.probe import MediaInfo
from vexport_pipeline.core.media.render import can_copy, render_clip
from vexport_pipeline.core.media.timeline import Clip, Timeline
from vexport_pipeline.core.spec.presets import EncodeSettings

# CRF bounds per codec: beyond them files only grow (low end) or fall apart (high end). AV1 and VP9 go down to 4: the
# master tier (VMAF 96) on a dark scene needed less than 15 (VP9 at 15 scored 93.4, every frame measured). AV1 goes
# up to SVT-AV1's last, 63: screen text at 720p scored 91.2 (low) and 94.6 (medium) at 58, over 86 and 91, and
# 81.6 and 89.7 at 63.
CRF_RANGE = {"h264": (12, 40), "h265": (14, 42), "vp9": (4, 60), "vp8": (4, 60), "av1": (4, 63)}
# How fast quality falls as the CRF rises: ln(100 - VMAF) grows about linearly with the CRF (on the corpus, x264
# 0.14 per step from VMAF 86 to 97, VP9 0.063), so the search predicts and interpolates on that scale, where VMAF
# points per step would shrink near the top. The prior until two probes measure the clip's own slope.
LOG_SLOPE = {"h264": 0.13, "h265": 0.115, "vp9": 0.064, "vp8": 0.045, "av1": 0.064}
# Near VMAF 100 the scores saturate and the scale stretches: one extrapolated jump from a probe scoring over
# SATURATED moves at most MAX_JUMP on it (a grainy clip at 98.8 would otherwise jump 24 VP9 steps for 8).
SATURATED, MAX_JUMP = 96.0, 0.5
# A probe is taken as it is anywhere in its band. Where the probe is the rendition itself (measured exactly as
# validation will, so nothing can move it), the band is the promise: 1.5 either side of the target (the floor is
# VMAF_TOLERANCE, 2.0, under it). A sample's band sits lower: a timeline encoded whole scores over its samples
# encoded alone at the same CRF (the encoder's lookahead over the whole, and the rest of the timeline), by 0.7 to
# 1.7 VMAF on 20 s clips (photographs in motion at 1080p with x264, film grain at 720p with VP9) and 0.76 to 2.81
# on B5L's eight renditions (2026-12-07; median 1.2). A sample taken at its band's bottom still puts the file over
# the floor where the lift is -0.5 or more; at its middle, a typical file lands 0.7 over the target.
ACCEPT_BELOW, ACCEPT_ABOVE = 1.5, 1.5
SAMPLE_BELOW, SAMPLE_ABOVE = 1.5, 0.5
SAMPLE_S, SAMPLES = 1.0, 3  # three one-second windows spread over the timeline
WHOLE_UP_TO = SAMPLE_S * SAMPLES * 2.5  # shorter timelines are their own sample (the probe becomes the file)
# The CRF that reaches a target on typical content (median over the B5 corpus, 720p from 1080p, every frame scored;
# VP8's CRF is its finest quantizer), at targets 86, 91 and 94; other targets are interpolated, or extrapolated
# along the end segments. The low tier's faster encoder presets need more bits at a given CRF, so its CRF is not
# always higher than the medium tier's.
START = {
    "h264": (26.5, 26.5, 23.0),
    "h265": (31.0, 27.5, 25.0),
    "vp9": (46.0, 41.0, 36.5),
    "vp8": (42.5, 35.5, 25.0),
    "av1": (55.0, 49.0, 41.0),
}
START_AT = (86.0, 91.0, 94.0)
# START holds at 720p. A bigger picture reaches a target at a higher CRF: on B5L's two 20 s clips (photographs in
# motion, film grain; 1080p sources) x264 found 1080p 0.23 and 0.25 easier than 720p on the deficit scale, about
# 0.2 per doubling of the pixels (2 CRF steps at 1080p). Taken within SIZE_SPAN doublings of 720p (1080p is 1.17;
# nothing was measured beyond).
SIZE_STEP, SIZE_SPAN = 0.2, 1.2
# How strongly each codec's offset follows the content's (least squares against x264's over the B5 corpus, 12 clip x
# tier pairs, 2026-12-07): where one codec finds content harder than typical, SVT-AV1 finds it about 2.5 times as
# hard on the deficit scale (the dark clip's high tier: x264 +0.84, AV1 +2.09), x265 1.4 times, on every clip. VP9
# fitted 1.4 as well, but only the dark clip says so (0.3 on photographs): at 1.4 its first search on B5L's two clips
# took a probe more than at 1.0. A codec's first search in a ladder starts from the other codecs' offsets brought to
# its own scale.
GAIN = {"h264": 1.0, "h265": 1.4, "vp9": 1.0, "vp8": 1.0, "av1": 2.5}
PROBES = 3  # probes a search takes, and one more when two of them straddle the band


@dataclass(frozen=True)
class Trial:
    crf: int
    vmaf: float
    kbps: float


@dataclass(frozen=True)
class Band:
    """The VMAF a search takes as it is; it aims at the middle."""

    lo: float
    hi: float

    @property
    def aim(self) -> float:
        return (self.lo + self.hi) / 2

    def __contains__(self, vmaf: float) -> bool:
        return self.lo <= vmaf <= self.hi


def band(s: EncodeSettings, exact: bool = False) -> Band:
    """The band a probe is taken in. `exact`: the probe is the rendition (a short single clip), measured as validation
    will; else a sample, which the whole file scores over."""
    if exact:
        return Band(s.vmaf_target - ACCEPT_BELOW, s.vmaf_target + ACCEPT_ABOVE)
    return Band(s.vmaf_target - SAMPLE_BELOW, s.vmaf_target + SAMPLE_ABOVE)


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
    """Up to three one-second windows at the middle of equal thirds of the output, as source ranges. A short
    timeline is its own sample: its one clip as it is (crossfade included), else all of its ranges."""
    ranges = [r for clip in timeline.clips for r in clip.ranges]
    total = sum(e - s for s, e in ranges)
    if total <= WHOLE_UP_TO:
        return timeline.clips[0] if len(timeline.clips) == 1 else Clip(None, ranges)
    out, base = [], 0.0
    wanted = [total * (k + 0.5) / SAMPLES - SAMPLE_S / 2 for k in range(SAMPLES)]
    for start, end in ranges:
        for at in wanted:
            if base <= at and at + SAMPLE_S <= base + (end - start):
                out.append((start + at - base, start + at - base + SAMPLE_S))
        base += end - start
    return Clip(None, out or ranges[:1])


def start_crf(s: EncodeSettings) -> float:
    """The CRF that reaches `s.vmaf_target` on typical content (`START`, piecewise linear in the target), at the
    target's picture size (`SIZE_STEP`)."""
    crfs, at, target = START[s.video_codec], START_AT, s.vmaf_target
    k = 0 if target <= at[1] else 1
    doublings = min(max(math.log2(max(s.width * s.height, 1) / (1280 * 720)), -SIZE_SPAN), SIZE_SPAN)
    at_720p = crfs[k] + (target - at[k]) * (crfs[k + 1] - crfs[k]) / (at[k + 1] - at[k])
    return at_720p + SIZE_STEP * doublings / LOG_SLOPE[s.video_codec]


def deficit(vmaf: float) -> float:
    """ln(100 - VMAF): the scale on which quality changes linearly with the CRF."""
    return math.log(max(100.0 - vmaf, 0.05))


def crf_towards(codec: str, crf: float, vmaf: float, want: float, slope: float | None = None) -> float:
    """The CRF at which content that scored `vmaf` at `crf` is expected to score `want`."""
    return crf + (deficit(want) - deficit(vmaf)) / (slope or LOG_SLOPE[codec])


def offset(s: EncodeSettings, trial: Trial) -> float:
    """How much harder than typical content this content is, on the deficit scale (negative: easier)."""
    return deficit(trial.vmaf) - deficit(s.vmaf_target) - LOG_SLOPE[s.video_codec] * (trial.crf - start_crf(s))


def _clamp(s: EncodeSettings, crf: float) -> int:
    lo, hi = CRF_RANGE[s.video_codec]
    return int(min(max(round(crf), lo), hi))


def first_crf(s: EncodeSettings, harder: float = 0.0, goal: Band | None = None) -> int:
    """Where the search starts: the typical CRF for the target, moved by how much harder the content measured."""
    aim = deficit((goal or band(s)).aim) - deficit(s.vmaf_target)
    return _clamp(s, start_crf(s) + (aim - harder) / LOG_SLOPE[s.video_codec])


def _next_crf(s: EncodeSettings, trials: list[Trial], goal: Band, prior: float | None = None) -> int:
    """One probe: along the prior slope (`prior`: this content's, measured by an earlier search with the same
    codec; else the codec's), at least one step towards the aim (at most `MAX_JUMP` from a saturated score).
    More: along the slope the last two measured (kept within a factor of three of the prior)."""
    aim, b, prior = goal.aim, trials[-1], prior or LOG_SLOPE[s.video_codec]
    if len(trials) == 1:
        guess = crf_towards(s.video_codec, b.crf, b.vmaf, aim, prior)
        step = 1 if b.vmaf > aim else -1
        jump = max(1, abs(round(guess - b.crf)))
        if b.vmaf > SATURATED:
            jump = min(jump, math.ceil(MAX_JUMP / prior))
        return _clamp(s, b.crf + step * jump)
    a = trials[-2]
    slope = _slope(a, b, prior) if b.crf != a.crf else prior
    return _clamp(s, crf_towards(s.video_codec, b.crf, b.vmaf, aim, slope))


def _slope(a: Trial, b: Trial, prior: float) -> float:
    """The slope of ln(100 - VMAF) in the CRF between two probes, kept within a factor of three of `prior`."""
    return min(max((deficit(b.vmaf) - deficit(a.vmaf)) / (b.crf - a.crf), prior / 3), prior * 3)


def measured_slope(s: EncodeSettings, trials: tuple[Trial, ...]) -> float | None:
    """The slope between a search's last two probes, for later searches of the same content (None: fewer than two
    probes at different CRFs, or scores too saturated to tell)."""
    if len(trials) < 2 or trials[-1].crf == trials[-2].crf or max(trials[-1].vmaf, trials[-2].vmaf) > SATURATED:
        return None
    return _slope(trials[-2], trials[-1], LOG_SLOPE[s.video_codec])


def _key(source_sha256: str, sample: Clip, s: EncodeSettings) -> str:
    data = {
        "sample": sample.ranges,
        "settings": {**s.to_dict(), "crf": None, "label": None},
        "src": source_sha256,
        "builder": builder_version(),
        "v": 5,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _probe(source: MediaInfo, sample: Clip, s: EncodeSettings, crf: int, work: Path, keep: tuple) -> Trial:
    """Encode and score the sample at `crf`. With `keep` (a cache and the source's sha256) the sample is the
    whole rendition, so the file goes into the rendition cache under the key its final encode will ask for, and
    its score where validation will look for it."""
    from vexport_pipeline.core.validation.vmaf import Scores, score

    trial = replace(s, crf=crf, label=f"probe_{crf}")
    out = work / f"{s.label}.{crf}.{s.ext}"
    cache, sha = keep or (None, None)
    render_clip(source, sample, [trial], [out], cache=cache, source_sha256=sha)
    q = score(out, source, sample, trial, extras=bool(keep))  # the frames validation scores
    if keep:  # validation takes this score instead of measuring the file again
        Scores(cache, sha).keep(sha256_file(out), sample, trial, q)
    return Trial(crf, q["vmaf_mean"], round(out.stat().st_size * 8 / sample.duration / 1000, 1))


def tune(
    source: MediaInfo,
    timeline: Timeline,
    s: EncodeSettings,
    *,
    cache: RenditionCache | None = None,
    source_sha256: str | None = None,
    harder: float = 0.0,
    slope: float | None = None,
) -> Tuned:
    """The settings with the CRF that reaches `s.vmaf_target` on the samples (one to four probes), starting
    from `first_crf(s, harder)` and moving along `slope` (this content's, where an earlier search measured it)."""
    if not tunable(s) or all(can_copy(source, clip, s) for clip in timeline.clips):
        return Tuned(s, ())  # a stream copy is the same file at any CRF: nothing to search
    sample = sample_clip(timeline)
    whole = len(timeline.clips) == 1 and sample is timeline.clips[0]
    keep = (cache, source_sha256) if whole and cache and source_sha256 else ()
    goal = band(s, exact=bool(keep))
    memo = f"tuning/{_key(source_sha256, sample, s)}.json" if cache and source_sha256 else None
    if memo and (kept := cache.get_record(memo)):
        data = json.loads(kept)
        return Tuned(replace(s, crf=data["crf"]), tuple(Trial(**t) for t in data["trials"]), cached=True)
    work = Path(tempfile.mkdtemp(prefix="vexport-tune-"))
    try:
        trials = [_probe(source, sample, s, first_crf(s, harder, goal), work, keep)]
        while trials[-1].vmaf not in goal and len(trials) < PROBES + bool(pair := _bracket(trials, goal)):
            if pair:  # interpolated between the two that straddle the band, never on one of them
                a, b = pair
                crf = min(max(_next_crf(s, [a, b], goal, slope), a.crf + 1), b.crf - 1)
            else:
                crf = _next_crf(s, trials, goal, slope)
            if crf in {t.crf for t in trials}:
                break
            trials.append(_probe(source, sample, s, crf, work, keep))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = _choose(s, trials, goal)
    if memo:
        cache.put_record(memo, json.dumps({"crf": best, "trials": [asdict(t) for t in trials]}).encode())
    return Tuned(replace(s, crf=best), tuple(trials))


def tune_all(
    source: MediaInfo,
    timeline: Timeline,
    settings: list[EncodeSettings],
    *,
    cache: RenditionCache | None = None,
    source_sha256: str | None = None,
) -> list[Tuned]:
    """`tune` for each of an export's targets, smallest picture first: every search starts from what the
    earlier ones measured of this content (`_prior`), so a ladder's later renditions usually need one probe."""
    order = sorted(range(len(settings)), key=lambda i: settings[i].width * settings[i].height)
    found: dict[int, Tuned] = {}
    done: list[tuple[EncodeSettings, Tuned]] = []
    for i in order:
        s = settings[i]
        harder, slope = _prior(s, done) if tunable(s) else (0.0, None)  # ProRes and such are not searched
        found[i] = tuned = tune(
            source, timeline, s, cache=cache, source_sha256=source_sha256, harder=harder, slope=slope
        )
        done += [(s, tuned)] if tuned.trials else []
    return [found[i] for i in range(len(settings))]


def _prior(s: EncodeSettings, done: list[tuple[EncodeSettings, Tuned]]) -> tuple[float, float | None]:
    """What the earlier searches of an export measured of its content, for the next one: how much harder than
    typical it is (`offset` on the deficit scale), and the slope the latest search with the same codec measured.

    The offset is taken as codec plus variant (size, rate, fit, tier): the latest search with the same codec,
    moved by what another codec measured between that search's variant and this one (the median over such
    codecs; on the B5 corpus a tier's step moved x264, x265 and VP9 alike on that scale, while one codec's offset
    says little of another's: on the dark clip VP9 and AV1 need far lower CRFs, against typical, than x264). With
    no such codec, the same codec's offset as it is; with no search of the same codec, the median over the codecs
    that searched this variant, else over all, each brought to this codec's scale (`GAIN`)."""
    offsets = {(p.video_codec, _variant(p)): offset(p, t.trials[-1]) for p, t in done}
    same = [(p, t) for p, t in done if p.video_codec == s.video_codec]
    if same:
        slopes = [k for p, t in reversed(same) if (k := measured_slope(p, t.trials))]
        was, now = _variant(same[-1][0]), _variant(s)
        steps = [o - offsets[c, was] for (c, v), o in offsets.items() if v == now and (c, was) in offsets]
        return offsets[s.video_codec, was] + _median(steps), (slopes[0] if slopes else None)
    here = [o / GAIN[c] for (c, v), o in offsets.items() if v == _variant(s)]
    everywhere = [o / GAIN[c] for (c, _), o in offsets.items()]
    return GAIN[s.video_codec] * _median(here or everywhere), None


def _variant(s: EncodeSettings) -> tuple:
    """What a target asks for beside its codec: its picture, rate and tier."""
    return (s.width, s.height, s.fps, s.fit, s.quality, s.vmaf_target)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


def _bracket(trials: list[Trial], goal: Band) -> tuple[Trial, Trial] | None:
    """The tightest pair of probes on either side of the band (the highest CRF over it, the lowest under it), with
    room between them: one more probe, interpolated between the two, is worth its encode (keeping the one over
    instead cost AV1 high on the dark clip 24 Mb/s at CRF 4 for VMAF 96.2)."""
    over = [t for t in trials if t.vmaf > goal.hi]
    under = [t for t in trials if t.vmaf < goal.lo]
    if not over or not under:
        return None
    a, b = max(over, key=lambda t: t.crf), min(under, key=lambda t: t.crf)
    return (a, b) if b.crf - a.crf > 1 else None


def _choose(s: EncodeSettings, trials: list[Trial], goal: Band) -> int:
    """The last probe if it was taken as it is; else the highest CRF measured at or above the band (a measured
    promise, and the probe's file is the rendition: an interpolated CRF between two probes was measured to land
    under the floor, VP8 at 1080p on flat animation, 83.6 for 86); else a last extrapolation."""
    if trials[-1].vmaf in goal:
        return trials[-1].crf
    above = [t for t in trials if t.vmaf >= goal.lo]
    if above:
        return max(t.crf for t in above)
    return _next_crf(s, trials, goal) if len(trials) > 1 else min(t.crf for t in trials)
