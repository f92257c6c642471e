"""Typed resources: the Dagster layer's view of configuration. The media core reads plain values."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from vexport_pipeline.core.delivery.events import EventStore, LinkSigner
from vexport_pipeline.core.delivery.stores import LocalStore
from vexport_pipeline.core.settings import Home, MediaPolicy


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


class EncoderResource(dg.ConfigurableResource):
    """Which video encoders renditions use: `auto` tries the hardware encoders (NVENC, QSV) with a tiny
    encode and uses one that works, falling back to the CPU per clip; `off` always uses the CPU."""

    hardware: str = "auto"
    chunk_seconds: int = 120  # clips longer than 1.5x this are encoded in keyframe-aligned chunks; 0 turns chunking off

    def choose(self, settings: list) -> tuple[list, dict]:
        from dataclasses import replace as _replace

        from vexport_pipeline.core.media.hardware import detect

        if self.hardware != "auto":
            return settings, {"hardware": "off"}
        codecs = sorted({s.video_codec for s in settings if s.video_codec in ("h264", "h265", "av1")})
        found, trials = detect(tuple(codecs))
        chosen = [_replace(s, encoder=found[s.video_codec]) if found.get(s.video_codec) else s for s in settings]
        report = {t.encoder: t.reason for t in trials}
        return chosen, {"hardware": ", ".join(f"{k}: {v}" for k, v in report.items()) or "no hardware-capable codec"}
