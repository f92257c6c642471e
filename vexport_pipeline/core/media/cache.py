"""Content-addressed rendition cache: a rendition is keyed by what determines its bytes (the source's
sha256, its timeline, the resolved encode settings, loudness target and the FFmpeg build), so an
unchanged export is never encoded twice."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from vexport_pipeline.core.artifacts import ArtifactStore, checksum
from vexport_pipeline.core.files import place_atomically, write_atomically
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.presets import BUILTIN_FILE, EncodeSettings

from .runner import capture
from .timeline import Clip

CACHE_VERSION = 2


# The modules whose code decides the bytes of a rendition (settings -> FFmpeg commands -> files), and
# the built-in preset data they read.
BUILDER_MODULES = (
    "vexport_pipeline.core.media.commands",
    "vexport_pipeline.core.media.conform",  # what the source's sound is read as, where its format changes
    "vexport_pipeline.core.media.hardware",
    "vexport_pipeline.core.media.render",
    "vexport_pipeline.core.media.loudness",
    "vexport_pipeline.core.spec.presets",
)


class _Normalize(ast.NodeTransformer):
    """Drop what does not change behaviour: imports (they move with the modules) and docstrings."""

    def visit_Import(self, node):
        return None

    visit_ImportFrom = visit_Import

    def generic_visit(self, node):
        node = super().generic_visit(node)
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = body[1:]
        return node


def builder_fingerprint(sources: Sequence[str], preset_data: str) -> str:
    """A hash of what the code does and what the presets say, not how either is written: each module's
    syntax tree without imports, docstrings, comments, formatting or line numbers, and the preset YAML
    as the data it parses to. Pure: source texts in, hash out."""
    h = hashlib.sha256()
    for text in sources:
        h.update(ast.dump(_Normalize().visit(ast.parse(text)), include_attributes=False).encode())
        h.update(b"\0")
    h.update(json.dumps(yaml.safe_load(preset_data), sort_keys=True).encode())
    return h.hexdigest()[:16]


def builder_sources() -> list[str]:
    """The source text of every builder module, as imported."""
    return [inspect.getsource(importlib.import_module(name)) for name in BUILDER_MODULES]


@functools.lru_cache(maxsize=1)
def builder_version() -> str:
    """The fingerprint of the command-building code and the built-in presets: changing how files are made
    invalidates every cached rendition, with no version to remember to bump; moving or reformatting does not."""
    return builder_fingerprint(builder_sources(), BUILTIN_FILE.read_text())


# Settings that only label or judge a rendition; they do not change its bytes.
NOT_IN_KEY = {"label", "limits", "uncertain", "notes"}


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
    """`root/<key[:2]>/<key>.<ext>` on this host; with a `shared` artifact store, the same entries under
    `cache/...` there too, so a rendition encoded by one worker is a hit on every other."""

    def __init__(self, root: Path, shared: ArtifactStore | None = None):
        self.root = Path(root)
        self.shared = shared

    def path(self, key: str, ext: str) -> Path:
        return self.root / key[:2] / f"{key}.{ext}"

    def _shared_key(self, key: str, ext: str) -> str:
        return f"cache/{key[:2]}/{key}.{ext}"

    def fetch(self, key: str, ext: str, dest: Path) -> bool:
        """Place a cached rendition at `dest` (hard link, else copy); False on a miss."""
        src = self.path(key, ext)
        if not src.exists() and not (self.shared and self.shared.get(self._shared_key(key, ext), src)):
            return False
        place_atomically(src, dest)
        return True

    def put_record(self, rel: str, data: bytes) -> None:
        """A small record (the search's result, a kept score) at `root/rel`, and in the shared store, so every
        worker finds it."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
        if self.shared:
            self.shared.write(f"cache/{rel}", data)

    def get_record(self, rel: str) -> bytes | None:
        """A record `put_record` wrote here or on another worker (then kept here too), or None."""
        path = self.root / rel
        try:
            return path.read_bytes()
        except OSError:
            data = self.shared.read(f"cache/{rel}") if self.shared else None
        if data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
        return data

    def store(self, key: str, ext: str, src: Path) -> None:
        dst = self.path(key, ext)
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            place_atomically(src, dst)
        if self.shared:
            self.shared.put_new(self._shared_key(key, ext), dst, checksum(dst))
