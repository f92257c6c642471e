"""Where things live and which binaries run. Read from `VEXPORT_*` variables at call time."""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default.resolve()


@dataclass(frozen=True)
class Home:
    """The `VEXPORT_HOME` tree: instance, inbox, registry, work area, delivery store, events."""

    root: Path

    @classmethod
    def from_env(cls) -> Home:
        return cls(_env_path("VEXPORT_HOME", Path.cwd() / ".vexport"))

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def registry(self) -> Path:
        return self.root / "compositions"

    @property
    def media(self) -> Path:
        return self.root / "media"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def events_db(self) -> Path:
        return self.root / "events.sqlite"

    def ensure(self) -> Home:
        for p in (self.root, self.inbox, self.registry, self.media, self.work, self.store):
            p.mkdir(parents=True, exist_ok=True)
        return self

    def secret_key(self) -> str:
        """`VEXPORT_SECRET_KEY`, or a random key kept (mode 0600) under the home."""
        if key := os.environ.get("VEXPORT_SECRET_KEY"):
            return key
        path = self.root / "secret.key"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


@dataclass(frozen=True)
class MediaPolicy:
    """Which folders a manifest may read media from (`VEXPORT_MEDIA_ROOTS`, os.pathsep-separated)."""

    roots: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, home: Home | None = None) -> MediaPolicy:
        home = home or Home.from_env()
        extra = [
            Path(p).expanduser().resolve() for p in os.environ.get("VEXPORT_MEDIA_ROOTS", "").split(os.pathsep) if p
        ]
        return cls(tuple([home.media.resolve(), *extra]))


def ffmpeg_exe() -> str:
    """`VEXPORT_FFMPEG`, else the static FFmpeg shipped by imageio-ffmpeg."""
    if exe := os.environ.get("VEXPORT_FFMPEG"):
        found = shutil.which(exe) or exe
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def public_url() -> str:
    return os.environ.get("VEXPORT_PUBLIC_URL", "http://127.0.0.1:8787").rstrip("/")
