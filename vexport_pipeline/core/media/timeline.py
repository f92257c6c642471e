"""The resolved timeline: which source ranges make each output clip, and where the keyframes are."""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field, replace

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.spec.composition import Composition
from vexport_pipeline.core.timecode import fmt_clock

from .probe import MediaInfo

# A segment may end this far past the probed duration (container rounding) and is clamped.
END_TOLERANCE = 0.05


@dataclass
class Clip:
    clip_id: str | None
    ranges: list[tuple[float, float]]
    crossfade: float = 0.0
    cuts_on_keyframes: bool = False

    @property
    def duration(self) -> float:
        return round(sum(e - s for s, e in self.ranges) - self.crossfade * (len(self.ranges) - 1), 6)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["duration"] = self.duration
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Clip:
        return cls(
            d["clip_id"], [tuple(r) for r in d["ranges"]], d.get("crossfade", 0.0), d.get("cuts_on_keyframes", False)
        )


@dataclass
class Timeline:
    export_type: str
    clips: list[Clip]
    keyframes_near_cuts: dict[str, list[float]] = field(default_factory=dict)

    @property
    def output_duration(self) -> float:
        return round(sum(c.duration for c in self.clips), 6)

    def to_dict(self) -> dict:
        return {
            "export_type": self.export_type,
            "clips": [c.to_dict() for c in self.clips],
            "keyframes_near_cuts": self.keyframes_near_cuts,
            "output_duration": self.output_duration,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Timeline:
        return cls(d["export_type"], [Clip.from_dict(c) for c in d["clips"]], d.get("keyframes_near_cuts", {}))


def picture_end(info: MediaInfo) -> float:
    """Where the source's pictures end (seconds from its start): its duration, unless its video stream is known to
    end more than a frame before it, as when the audio runs on after the camera stopped (an export of the whole
    source ran to the audio's end with pictures that stop, and failed its own duration check)."""
    v = info.video
    if v is None or not v.duration:
        return info.duration
    end = v.start_time - info.start_time + v.duration
    return round(end, 6) if 0 < end < info.duration - 1.0 / max(v.fps, 1.0) else info.duration


def check_segments(comp: Composition, info: MediaInfo, offset: float = 0.0) -> list[tuple[float, float]]:
    """Segments as (start, end) seconds, refused if they fall outside the source's pictures; with an `offset`
    (`build_timeline`), checked in the source's times and returned in the file's."""
    if offset:
        as_source = replace(info, start_time=info.start_time - offset, duration=info.duration + offset)
        shifted = check_segments(comp, as_source, 0.0)
        return [(round(max(0.0, a - offset), 6), round(max(0.0, b - offset), 6)) for a, b in shifted]
    last = picture_end(info)
    if not comp.segments:
        return [(0.0, last)]
    ends = f"the source ends ({fmt_clock(last)})"
    if last < info.duration:
        ends = f"the source's pictures end ({fmt_clock(last)}; its audio runs on to {fmt_clock(info.duration)})"
    out = []
    for i, seg in enumerate(comp.segments):
        if seg.start >= last:
            raise InputError(
                f"starts at {fmt_clock(seg.start)}, after {ends}", where=f"segments[{i}]", code="segment_out_of_range"
            )
        end = seg.end
        if end > last + END_TOLERANCE:
            raise InputError(
                f"{fmt_clock(seg.start)}-{fmt_clock(seg.end)} ends after {ends}",
                where=f"segments[{i}]",
                code="segment_out_of_range",
            )
        out.append((seg.start, min(end, last)))
    return out


def _near(keyframes: list[float], t: float) -> list[float]:
    i = bisect.bisect_left(keyframes, t)
    return [round(k, 3) for k in keyframes[max(0, i - 1) : i + 1]]


def snap(ranges: list[tuple[float, float]], keyframes: list[float], duration: float) -> list[tuple[float, float]]:
    """Widen each range to keyframes: start at the keyframe at or before it, end at the one at or after it."""
    out = []
    for start, end in ranges:
        i = bisect.bisect_right(keyframes, start + 1e-6)
        j = bisect.bisect_left(keyframes, end - 1e-6)
        out.append((keyframes[i - 1] if i else 0.0, keyframes[j] if j < len(keyframes) else duration))
    merged: list[tuple[float, float]] = []
    for r in out:  # widened ranges may now touch or overlap: join them
        if merged and r[0] <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], r[1]))
        else:
            merged.append(r)
    return merged


def clip_ids(explicit: list[str | None], count: int) -> list[str]:
    """Each clip's id: its own, else `clipNN` by position, skipping any id a segment names (compared without
    case, as file names are on some systems), so two clips never write the same file."""
    taken = {c.lower() for c in explicit if c}
    out, n = [], 0
    for i in range(count):
        if i < len(explicit) and explicit[i]:
            out.append(explicit[i])
            continue
        n = max(n, i)
        while f"clip{n + 1:02d}" in taken:
            n += 1
        out.append(f"clip{n + 1:02d}")
        taken.add(out[-1])
        n += 1
    return out


def build_timeline(
    comp: Composition, info: MediaInfo, keyframes: list[float] | None = None, *, offset: float = 0.0
) -> Timeline:
    """`offset`: how much later than the source `info`'s file starts (a copy of it that lacks the source's earliest
    streams, core/media/conform.py): the composition's times are the source's, the ranges the copy's."""
    ranges = check_segments(comp, info, offset)
    keyframes = keyframes or []
    fps = info.video.fps if info.video else 25.0
    half_frame, last = 0.5 / fps, picture_end(info)
    if comp.snap_to_keyframes and keyframes and comp.export_type != "clips":
        ranges = snap(ranges, keyframes, last)

    def on_key(t: float) -> bool:
        i = bisect.bisect_left(keyframes, t - half_frame)
        return i < len(keyframes) and abs(keyframes[i] - t) <= half_frame

    def clip(clip_id, rs, crossfade=0.0):
        # copyable when every range starts on a keyframe and ends on one (or at the end of the source)
        aligned = all(on_key(s) and (on_key(e) or e >= last - half_frame) for s, e in rs)
        return Clip(clip_id, rs, crossfade, aligned)

    if comp.export_type == "clips":
        ids = clip_ids([s.clip_id for s in comp.segments or []], len(ranges))
        clips = [clip(i, [r]) for i, r in zip(ids, ranges)]
    elif comp.export_type == "single":
        clips = [clip(None, ranges[:1])]
    else:
        clips = [clip(None, ranges, comp.crossfade if len(ranges) > 1 else 0.0)]
    near = {}
    for s, e in ranges:
        near[f"{s:.3f}"] = _near(keyframes, s)
        near[f"{e:.3f}"] = _near(keyframes, e)
    return Timeline(comp.export_type, clips, near)
