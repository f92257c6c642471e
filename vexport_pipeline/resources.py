"""Typed resources: the Dagster layer's view of configuration. The media core reads plain values."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from .core.events import EventStore, LinkSigner
from .core.settings import Home, MediaPolicy
from .core.store import LocalStore


class VexportResource(dg.ConfigurableResource):
    """Where vexport keeps its state (VEXPORT_HOME) and how links are made."""

    home: str
    media_roots: str = ""
    public_url: str = "http://127.0.0.1:8787"
    encode_timeout_s: int = 6 * 3600

    @property
    def paths(self) -> Home:
        return Home(Path(self.home).expanduser().resolve()).ensure()

    @property
    def policy(self) -> MediaPolicy:
        extra = [Path(p).expanduser().resolve() for p in self.media_roots.split(":") if p]
        return MediaPolicy((self.paths.media.resolve(), *extra))

    def store(self) -> LocalStore:
        return LocalStore(self.paths.store)

    def events(self) -> EventStore:
        return EventStore(self.paths.events_db)

    def signer(self) -> LinkSigner:
        return LinkSigner(self.paths.secret_key())
