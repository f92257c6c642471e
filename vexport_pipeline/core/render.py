"""Render one clip to all of its targets in one FFmpeg process, then probe what was written."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .cache import RenditionCache, rendition_key
from .commands import build_clip_command
from .presets import EncodeSettings
from .probe import MediaInfo
from .runner import Progress, RunResult, run_ffmpeg
from .settings import ffmpeg_exe
from .timeline import Clip


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def partial_path(final: Path) -> Path:
    """Where FFmpeg writes before the file is complete; same folder, so the rename is atomic."""
    return final.with_name(f".{final.stem}.partial{final.suffix}")


@dataclass
class ClipRender:
    clip: Clip
    paths: list[Path]
    argv: list[str]  # empty when every target came from the cache
    run: Optional[RunResult]
    cached: list[bool]

    @property
    def wall_s(self) -> float:
        return self.run.wall_s if self.run else 0.0


def render_clip(
    source: MediaInfo,
    clip: Clip,
    settings: list[EncodeSettings],
    finals: list[Path],
    *,
    on_progress: Optional[Callable[[Progress], None]] = None,
    timeout: Optional[float] = None,
    loudness: Optional[tuple[float, float]] = None,
    cache: Optional[RenditionCache] = None,
    source_sha256: Optional[str] = None,
) -> ClipRender:
    """Encode `clip` to every target not already in the cache, in one FFmpeg process; files appear
    under their final names only when all are done."""
    for p in finals:
        p.parent.mkdir(parents=True, exist_ok=True)
    keys = [rendition_key(source_sha256, clip, s, loudness) if cache and source_sha256 else None for s in settings]
    cached = [bool(k and cache.fetch(k, s.ext, f)) for k, s, f in zip(keys, settings, finals)]
    todo = [i for i, hit in enumerate(cached) if not hit]
    argv: list[str] = []
    run = None
    if todo:
        partials = [partial_path(finals[i]) for i in todo]
        argv = build_clip_command(
            ffmpeg_exe(), Path(source.path), clip, [settings[i] for i in todo], partials,
            source_has_audio=source.has_audio, loudness=loudness,
        )
        where = f"clip {clip.clip_id}" if clip.clip_id else "timeline"
        run = run_ffmpeg(argv, duration=clip.duration, outputs=partials, on_progress=on_progress, timeout=timeout, where=where)
        for i, part in zip(todo, partials):
            os.replace(part, finals[i])
            if keys[i]:
                cache.store(keys[i], settings[i].ext, finals[i])
    return ClipRender(clip, finals, argv, run, cached)
