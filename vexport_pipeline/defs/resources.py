"""One resource per external system: the home tree, the encoders, the delivery store, the event
store and the link signer. Their values come from `Settings` when the definitions are built; the
media core below them reads plain values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg

from vexport_pipeline.core.artifacts import ArtifactStore, open_store
from vexport_pipeline.core.delivery.events import EventStore
from vexport_pipeline.core.delivery.links import LinkSigner
from vexport_pipeline.core.delivery.stores import LocalStore, Store
from vexport_pipeline.core.media.cache import RenditionCache
from vexport_pipeline.core.settings import Home, MediaPolicy, Settings
from vexport_pipeline.core.spec.presets import EncodeSettings
from vexport_pipeline.defs.artifacts import ArtifactIOManager


class HomeResource(dg.ConfigurableResource):
    """Where vexport keeps its state (`VEXPORT_HOME`), which folders sources may come from, and the artifact
    store (`VEXPORT_ARTIFACTS`) that steps on workers with homes of their own hand files through."""

    root: str
    media_roots: list[str] = []
    artifacts: str = ""
    artifacts_endpoint_url: str = ""

    def artifact_store(self) -> ArtifactStore | None:
        return open_store(self.artifacts, self.artifacts_endpoint_url) if self.artifacts else None

    def rendition_cache(self) -> RenditionCache:
        """The content cache of this home, shared through the artifact store when there is one."""
        return RenditionCache(self.paths.cache, self.artifact_store())

    @property
    def paths(self) -> Home:
        return Home(Path(self.root).expanduser().resolve()).ensure()

    @property
    def policy(self) -> MediaPolicy:
        return MediaPolicy((self.paths.media.resolve(), *(Path(p).expanduser().resolve() for p in self.media_roots)))


class EncoderResource(dg.ConfigurableResource):
    """Which video encoders renditions use: `auto` tries the hardware encoders (NVENC, QSV) with a tiny
    encode and uses one that works, falling back to the CPU per clip; `off` always uses the CPU."""

    hardware: str = "auto"
    chunk_seconds: int = 120  # clips longer than 1.5x this are encoded in keyframe-aligned chunks; 0 turns chunking off
    repeatable_chunks: bool = False  # chunks make the same bytes on any worker (x264 on one thread)
    timeout_s: int = 6 * 3600

    def choose(self, settings: list[EncodeSettings]) -> tuple[list[EncodeSettings], str]:
        """The settings with a working hardware encoder swapped in where one exists, and what was tried. With a
        list of encoders (a cluster whose GPU workers have them, while this step may run on a CPU worker), those
        are used without a trial here: the job goes to the `gpu` queue, and a failing encoder there still falls
        back to the CPU per clip."""
        from vexport_pipeline.core.media.hardware import declared, detect

        if self.hardware == "off":
            return settings, "off"
        codecs = sorted({s.video_codec for s in settings if s.video_codec in ("h264", "h265", "av1")})
        if self.hardware != "auto":
            found = declared(self.hardware, codecs)
            chosen = [replace(s, encoder=found[s.video_codec]) if found.get(s.video_codec) else s for s in settings]
            return chosen, f"declared for the GPU workers: {self.hardware}"
        found, trials = detect(tuple(codecs))
        chosen = [replace(s, encoder=found[s.video_codec]) if found.get(s.video_codec) else s for s in settings]
        return chosen, ", ".join(f"{t.encoder}: {t.reason}" for t in trials) or "no hardware-capable codec"


class StoreResource(dg.ConfigurableResource):
    """The delivery destinations: `default` is the local store under the home; others (S3 buckets, more
    folders) come from the VEXPORT_DESTINATIONS file."""

    root: str
    destinations_file: str = ""

    def destinations(self) -> dict:
        from vexport_pipeline.core.delivery.destinations import load_destinations

        return load_destinations(Path(self.destinations_file) if self.destinations_file else None, Path(self.root))

    def get(self, name: str = "default") -> Store:
        return LocalStore(Path(self.root)) if name == "default" else self.destinations()[name].store()


class EventsResource(dg.ConfigurableResource):
    """The event store: links handed out and the downloads made through them."""

    path: str  # the SQLite file under the home
    url: str = ""  # VEXPORT_EVENTS_URL (as an EnvVar, so the UI never shows its password): PostgreSQL

    def get(self) -> EventStore:
        return EventStore(self.url or Path(self.path))


class LinksResource(dg.ConfigurableResource):
    """Signs download links; every host must share the key (`VEXPORT_SECRET_KEY`)."""

    public_url: str
    secret_key: str = ""  # wired to the VEXPORT_SECRET_KEY variable, so the UI never shows the key
    key_file: str = ""  # local deployments without a shared key: the random key kept under the home
    old_keys: str = ""  # VEXPORT_OLD_SECRET_KEYS (as an EnvVar too): retired keys, still verified

    def signer(self) -> LinkSigner:
        key = self.secret_key or Path(self.key_file).read_text().strip()
        return LinkSigner([*(k.strip() for k in self.old_keys.split(",") if k.strip()), key])


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    paths = settings.paths
    home = HomeResource(
        root=str(paths.root),
        media_roots=[str(p) for p in settings.media_roots],
        artifacts=settings.artifacts or "",
        artifacts_endpoint_url=settings.artifacts_endpoint_url or "",
    )
    # without an artifact store, Dagster's default IO manager keeps step outputs in this instance's folder
    io_manager = (
        {"io_manager": ArtifactIOManager(home=home.root, url=home.artifacts, endpoint_url=home.artifacts_endpoint_url)}
        if settings.artifacts
        else {}
    )
    return {
        **io_manager,
        "home": home,
        "encoders": EncoderResource(
            hardware=settings.hardware,
            chunk_seconds=settings.chunk_seconds,
            repeatable_chunks=settings.chunks_repeatable,
        ),
        "store": StoreResource(root=str(paths.store), destinations_file=str(settings.destinations_file or "")),
        "events": EventsResource(
            path=str(paths.events_db), url=dg.EnvVar("VEXPORT_EVENTS_URL") if settings.events_url else ""
        ),
        "links": LinksResource(
            public_url=settings.public_url,
            old_keys=dg.EnvVar("VEXPORT_OLD_SECRET_KEYS") if settings.old_secret_keys else "",
            **(
                {"secret_key": dg.EnvVar("VEXPORT_SECRET_KEY")}
                if settings.secret_key
                else {"key_file": str(paths.local_secret_key_file())}
            ),
        ),
    }
