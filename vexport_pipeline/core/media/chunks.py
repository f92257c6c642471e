"""Encode jobs for a timeline: whole clips (one process, every target), or, for long clips, keyframe-
aligned chunks that separate workers encode in parallel and a join step puts back together without
re-encoding. Pure planning: no FFmpeg runs here."""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, replace

from vexport_pipeline.core.spec.presets import EncodeSettings, fit_size_cap

from .probe import MediaInfo
from .timeline import Clip, Timeline

MIN_CHUNK_S = 2.0


@dataclass
class EncodeJob:
    key: str  # Dagster mapping key: letters, digits and underscores
    clip_index: int
    chunk_index: int | None  # None: the whole clip
    clip: Clip
    targets: list[int]  # indices into the export's settings

    def to_dict(self) -> dict:
        d = asdict(self)
        d["clip"] = self.clip.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncodeJob:
        return cls(d["key"], d["clip_index"], d["chunk_index"], Clip.from_dict(d["clip"]), list(d["targets"]))


def split_range(start: float, end: float, keyframes: list[float], chunk_s: float) -> list[tuple[float, float]]:
    """Cut [start, end) at the source keyframes nearest to every chunk_s seconds."""
    cuts = [start]
    target = start + chunk_s
    while target < end - MIN_CHUNK_S:
        i = bisect.bisect_left(keyframes, target)
        near = min((k for k in keyframes[max(0, i - 1) : i + 1]), key=lambda k: abs(k - target), default=None)
        if near is not None and cuts[-1] + MIN_CHUNK_S <= near <= end - MIN_CHUNK_S:
            cuts.append(near)
        target += chunk_s
    cuts.append(end)
    return list(zip(cuts, cuts[1:]))


def chunkable(s: EncodeSettings, clip: Clip) -> bool:
    """Chunks are joined by stream copy, so every chunk must be rate-controlled on its own: CRF targets
    only (bitrate and size-capped targets need the whole clip for their two passes)."""
    return not s.video_bitrate and not clip.crossfade


def chunk_settings(s: EncodeSettings, repeatable: bool = False) -> EncodeSettings:
    """A chunk is video only (the audio is encoded once, at the join) and carries no size cap of its own;
    `repeatable`: encoded so that any worker makes the same bytes (a cluster's chunks)."""
    return replace(s, audio_encoder=None, audio_codec=None, silent_audio=False, limits={}, repeatable=repeatable)


def plan_jobs(
    timeline: Timeline,
    settings: list[EncodeSettings],
    source: MediaInfo,
    keyframes: list[float],
    chunk_s: float | None,
    copyable=lambda s, clip: False,
) -> list[EncodeJob]:
    jobs: list[EncodeJob] = []
    for ci, clip in enumerate(timeline.clips):
        fitted = [fit_size_cap(s, clip.duration) for s in settings]
        split = [i for i, s in enumerate(fitted) if chunkable(s, clip) and not copyable(s, clip)]
        pieces = [p for a, b in clip.ranges for p in split_range(a, b, keyframes, chunk_s)] if chunk_s else []
        if chunk_s and split and clip.duration > 1.5 * chunk_s and len(pieces) > 1:
            for k, piece in enumerate(pieces):
                jobs.append(EncodeJob(f"c{ci}_k{k}", ci, k, Clip(clip.clip_id, [piece]), split))
            rest = [i for i in range(len(settings)) if i not in split]
        else:
            rest = list(range(len(settings)))
        if rest:
            jobs.append(EncodeJob(f"c{ci}_all", ci, None, clip, rest))
    return jobs
