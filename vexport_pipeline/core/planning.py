"""Planning an export: everything that can be known from the composition and the probe is checked
before any encode starts, by `vexport export`, `vexport submit`, the inbox sensor and the `source`
asset alike. A target that is sure to fail its platform's firm limits is refused (exit 2) naming the
target, the limit and the value; limits marked uncertain are left to validation, which only warns.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vexport_pipeline.core import owners
from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.media.probe import MediaInfo, check_decodable_to, timestamp_jumps
from vexport_pipeline.core.media.timeline import Timeline, build_timeline
from vexport_pipeline.core.settings import current
from vexport_pipeline.core.spec.composition import Composition
from vexport_pipeline.core.spec.presets import EncodeSettings, PresetBook, fit_size_cap, h264_level_rate, unique_labels
from vexport_pipeline.core.timecode import fmt_clock

# The least video bitrate a platform could accept for a picture (bits per pixel per frame). Below it a
# size cap cannot be met at any bitrate worth encoding.
MIN_BITS_PER_PIXEL = 0.005


@dataclass(frozen=True)
class Plan:
    targets: tuple[EncodeSettings, ...]
    labels: tuple[str, ...]
    timeline: Timeline


def _firm(s: EncodeSettings, key: str) -> bool:
    return key in s.limits and key not in s.uncertain


def _duration_problems(where: str, s: EncodeSettings, timeline: Timeline) -> list[str]:
    out = []
    for clip in timeline.clips:
        what = f"clip {clip.clip_id} lasts" if clip.clip_id else "the output lasts"
        if _firm(s, "min_duration") and clip.duration < s.limits["min_duration"] - 1e-3:
            out.append(
                f"{where}: {what} {clip.duration:.2f} s, under {s.label}'s {s.limits['min_duration']} s "
                "minimum (min_duration)"
            )
        if _firm(s, "max_duration") and clip.duration > s.limits["max_duration"] + 1e-3:
            out.append(
                f"{where}: {what} {clip.duration:.2f} s, over {s.label}'s {s.limits['max_duration']} s "
                "maximum (max_duration)"
            )
    return out


def _picture_problems(where: str, s: EncodeSettings) -> list[str]:
    out, aspect, fps = [], s.width / s.height, float(Fraction(s.fps))
    if _firm(s, "min_aspect") and aspect < s.limits["min_aspect"] - 1e-3:
        out.append(
            f"{where}: {s.width}x{s.height} (aspect {aspect:.3f}) is narrower than {s.label}'s "
            f"{s.limits['min_aspect']:.3f} (min_aspect); set a resolution the platform takes, with fit"
        )
    if _firm(s, "max_aspect") and aspect > s.limits["max_aspect"] + 1e-3:
        out.append(
            f"{where}: {s.width}x{s.height} (aspect {aspect:.3f}) is wider than {s.label}'s "
            f"{s.limits['max_aspect']:.3f} (max_aspect); set a resolution the platform takes, with fit"
        )
    if _firm(s, "max_fps") and fps > s.limits["max_fps"] + 0.01:
        out.append(f"{where}: {fps:g} fps is above {s.label}'s {s.limits['max_fps']} fps maximum (max_fps); set fps")
    if _firm(s, "min_fps") and fps < s.limits["min_fps"] - 0.01:
        out.append(f"{where}: {fps:g} fps is below {s.label}'s {s.limits['min_fps']} fps minimum (min_fps); set fps")
    return out


def _size_problems(where: str, s: EncodeSettings, timeline: Timeline) -> list[str]:
    if not _firm(s, "max_file_bytes") or s.video_codec == "prores":
        return []
    floor = MIN_BITS_PER_PIXEL * s.width * s.height * float(Fraction(s.fps))
    for clip in timeline.clips:
        try:
            capped = fit_size_cap(s, clip.duration)
        except InputError as exc:
            return [f"{where}: {exc.message} (max_file_bytes)"]
        if capped.video_bitrate and capped.video_bitrate < floor:
            cap = s.limits["max_file_bytes"]
            return [
                f"{where}: {clip.duration:.1f} s at {s.width}x{s.height} cannot fit under {s.label}'s "
                f"{cap / 1e6:.0f} MB cap at a watchable bitrate ({capped.video_bitrate / 1e3:.0f} kb/s, under "
                f"{floor / 1e3:.0f} kb/s) (max_file_bytes); cut it shorter or lower the resolution"
            ]
    return []


MIN_FPS, MAX_FPS = 1, 240
MAX_OUTPUT_PIXELS = 8192 * 4352


def _range_problems(where: str, s: EncodeSettings) -> list[str]:
    """What only the source decides: `fps: source` and `resolution: source` must land in range."""
    out, fps = [], float(Fraction(s.fps))
    if not MIN_FPS <= fps <= MAX_FPS:
        out.append(f"{where}.fps: {fps:g} fps (from {s.fps}) is outside {MIN_FPS}-{MAX_FPS}; set fps")
    if s.width * s.height > MAX_OUTPUT_PIXELS or max(s.width, s.height) > 8192:
        out.append(f"{where}.resolution: {s.width}x{s.height} is larger than encoders take (8192x4352); set a size")
    return out


def _work_problem(targets: list[EncodeSettings], timeline: Timeline) -> list[str]:
    """The export's size in gigapixels encoded, against the budget (VEXPORT_MAX_WORK)."""
    seconds = sum(c.duration for c in timeline.clips)
    gpx = sum(s.width * s.height * float(Fraction(s.fps)) for s in targets) * seconds / 1e9
    budget = current().max_work_gpx
    if gpx <= budget:
        return []
    return [
        f"targets: {len(targets)} target(s) over {seconds:.1f} s of output are {gpx:,.4g} gigapixels to encode, over"
        f" the work budget of {budget:,.4g} (VEXPORT_MAX_WORK); split the export or raise the budget"
    ]


def plan_export(comp: Composition, info: MediaInfo, book: PresetBook | None = None, *, offset: float = 0.0) -> Plan:
    """Resolve every target against the source and refuse the composition, listing every problem,
    if any target is sure to fail. Nothing is encoded or written. `offset`: as `build_timeline`'s."""
    book = book or PresetBook.load()
    timeline = build_timeline(comp, info, offset=offset)
    targets, problems = [], []
    for i, t in enumerate(comp.targets):
        where = f"targets[{i}]"
        s = book.resolve(t, info, where)
        problems += _duration_problems(where, s, timeline)
        problems += _range_problems(where, s)
        problems += _picture_problems(where, s)
        problems += _size_problems(where, s, timeline)
        targets.append(s)
    problems += _work_problem(targets, timeline)
    if problems:
        raise InputError(
            "the export is sure to fail, nothing was started:\n  " + "\n  ".join(problems),
            where=comp.id,
            code="plan_refused",
        )
    owners.check_quota(current().paths, comp.owner, estimate_bytes(targets, timeline))
    return Plan(tuple(targets), tuple(unique_labels(targets)), timeline)


# ProRes data rates in bits per pixel per frame, from Apple's ProRes white paper (1080p29.97: proxy 45 Mb/s,
# LT 102, 422 147, HQ 220, 4444 330, 4444 XQ 500)
PRORES_BITS_PER_PIXEL = {"proxy": 0.73, "lt": 1.65, "standard": 2.37, "hq": 3.54, "4444": 5.31, "4444xq": 8.05}


def estimate_bytes(targets: list[EncodeSettings], timeline: Timeline) -> int:
    """What the export will store, estimated from above (the quota is checked against it): every file at its
    target's peak bitrate (`maxrate`, the bitrate, else the H.264 level's ceiling for its size and rate; ProRes
    at its profile's nominal rate, which a very detailed picture can pass a little) or its platform's size cap
    where that is smaller, for the whole of its clip. Quality-driven encodes usually land well under their
    peak, so the files delivered are smaller than this."""
    total = 0.0
    for s in targets:
        if s.video_codec == "prores":
            video = PRORES_BITS_PER_PIXEL[s.profile or "hq"] * s.width * s.height * float(s.rate)
        else:
            video = s.maxrate or s.video_bitrate or h264_level_rate(s.width, s.height, s.rate)
        audio = s.audio_bitrate or (s.sample_rate * 24 * s.channels if s.audio_codec == "pcm" else 0)
        cap = s.limits.get("max_file_bytes")
        for clip in timeline.clips:
            size = (video + audio) * clip.duration / 8
            total += min(size, cap) if cap else size
    return int(total)


def plan_checked(comp: Composition, info: MediaInfo, book: PresetBook | None = None) -> Plan:
    """`plan_export`, then the source read where the plan needs it: a file whose data stops before the last
    selected second (truncated after its index) is refused as bad media before anything is encoded."""
    plan = plan_export(comp, info, book)
    ranges = [r for clip in plan.timeline.clips for r in clip.ranges]
    for before, after in timestamp_jumps(info):
        if any(start < after and end > before for start, end in ranges):
            raise InputError(
                f"{Path(info.path).name}: the timestamps jump from {fmt_clock(before)} to {fmt_clock(after)} (a gap of"
                f" {after - before:.0f} s with no pictures); the source has a discontinuity, so pick segments on one"
                " side of it",
                where="source",
                code="media_discontinuity",
            )
    end = max(end for _, end in ranges)
    if info.video and info.video.duration:  # pictures may stop before the audio does: that is not damage
        end = min(end, info.video.duration)
    check_decodable_to(info, end)
    return plan


def source_notes(s: EncodeSettings, info: MediaInfo) -> list[str]:
    """What the plan allows but a user should know: upscaling, a frame rate raised above the source's."""
    v, notes = info.video, []
    if v is None:
        return notes
    sw, sh = v.display_width, v.display_height
    grow = (max if s.fit == "crop" else min)(s.width / sw, s.height / sh)
    if grow > 1.01:
        notes.append(f"upscaled {grow:.2f}x from the {sw}x{sh} source to {s.width}x{s.height}")
    if float(Fraction(s.fps)) > v.fps * 1.01:
        notes.append(f"frame rate raised from the source's {v.fps:g} to {float(Fraction(s.fps)):g} fps")
    return notes
