"""Content-addressed rendition cache: a rendition is keyed by what determines its bytes (the source's
sha256, its timeline, the resolved encode settings, loudness target and the FFmpeg build), so an
unchanged export is never encoded twice."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from pathlib import Path

from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.presets import EncodeSettings

from .runner import capture
from .timeline import Clip

CACHE_VERSION = 2


@functools.lru_cache(maxsize=1)
def builder_version() -> str:
    """A hash of the code that turns settings into FFmpeg commands: changing how files are made
    invalidates every cached rendition, with no version to remember to bump."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("commands.py", "render.py", "loudness.py", "../spec/presets.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


# Settings that only label or judge a rendition; they do not change its bytes.
NOT_IN_KEY = {"label", "limits", "uncertain"}


@functools.lru_cache(maxsize=4)
def encoder_version(exe: str) -> str:
    out = capture([exe, "-hide_banner", "-version"], timeout=30).stdout
    return out.splitlines()[0] if out else exe


def rendition_key(source_sha256: str, clip: Clip, settings: EncodeSettings, loudness: tuple | None = None) -> str:
    data = {
        "v": CACHE_VERSION,
        "source": source_sha256,
        "ranges": [[round(s, 6), round(e, 6)] for s, e in clip.ranges],
        "crossfade": clip.crossfade,
        "settings": {k: v for k, v in settings.to_dict().items() if k not in NOT_IN_KEY},
        "loudness": list(loudness) if loudness else None,
        "ffmpeg": encoder_version(ffmpeg_exe()),
        "builder": builder_version(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class RenditionCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str, ext: str) -> Path:
        return self.root / key[:2] / f"{key}.{ext}"

    def fetch(self, key: str, ext: str, dest: Path) -> bool:
        """Place a cached rendition at `dest` (hard link, else copy); False on a miss."""
        src = self.path(key, ext)
        if not src.exists():
            return False
        _place(src, dest)
        return True

    def store(self, key: str, ext: str, src: Path) -> None:
        dst = self.path(key, ext)
        if dst.exists():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{uuid.uuid4().hex}.{ext}")
        _place(src, tmp)
        os.replace(tmp, dst)


def _place(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:6]}")
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
