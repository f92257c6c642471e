"""Every `VEXPORT_*` variable, read in one place into one typed, frozen `Settings`.

`current()` parses the environment once and hands back the same object until a `VEXPORT_*` variable
changes (tests change them; a process normally never does). Nothing else in the package reads
`os.environ` for vexport's own settings.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from vexport_pipeline.core.errors import ConfigError

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8787"
DEPLOYMENTS = ("local", "production")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
EXECUTORS = ("multiprocess", "inprocess", "k8s", "celery")  # defs/placement.py builds each
# A Kubernetes step's pod (docs/deployment.md): the label NVIDIA's GPU operator (GPU feature discovery) puts on GPU
# nodes; 8 cores encode a 120 s chunk of a 1080p ladder in 2.5-6 minutes, and 6Gi should hold a 4K ladder's
# FFmpeg with the threads of a 16-core node (docs/deployment.md, docs/capacity.md).
GPU_SELECTOR = (("nvidia.com/gpu.present", "true"),)
K8S_CPU, K8S_MEMORY = "8", "6Gi"
CPU_QUANTITY, MEMORY_QUANTITY = r"\d+(\.\d+)?m?", r"\d+(\.\d+)?([KMGT]i?)?"


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None


def _int(env: dict, name: str, default: int) -> int:
    try:
        return int(env.get(name) or default)
    except ValueError:
        raise ConfigError(f"{env[name]!r} is not a whole number", where=name) from None


HARDWARE_ENCODER = re.compile(r"^(h264|hevc|av1)_(nvenc|qsv)$")


def _float(env: dict, name: str, default: float) -> float:
    try:
        return float(env.get(name) or default)
    except ValueError:
        raise ConfigError(f"{env[name]!r} is not a number", where=name) from None


def _doc(meaning: str, default: str = "(none)") -> dict:
    return {"meaning": meaning, "default": default}


@dataclass(frozen=True)
class Settings:
    """vexport's configuration. Each field is one `VEXPORT_*` variable (the name is in its metadata)."""

    home: Path = field(
        metadata={"env": "VEXPORT_HOME", **_doc("embedded state: instance, inbox, work, store", "./.vexport")}
    )
    media_roots: tuple[Path, ...] = field(
        default=(), metadata={"env": "VEXPORT_MEDIA_ROOTS", **_doc("extra folders (`:`) manifests may read media from")}
    )
    deployment: Literal["local", "production"] = field(
        default="local", metadata={"env": "VEXPORT_DEPLOYMENT", **_doc("`production` refuses unsafe defaults", "local")}
    )
    secret_key: str | None = field(
        default=None,
        repr=False,
        metadata={"env": "VEXPORT_SECRET_KEY", **_doc("key that signs links (shared by hosts)")},
    )
    old_secret_keys: tuple[str, ...] = field(
        default=(),
        repr=False,
        metadata={"env": "VEXPORT_OLD_SECRET_KEYS", **_doc("retired signing keys (`,`) whose links still work")},
    )
    trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata={"env": "VEXPORT_TRUSTED_PROXIES", **_doc("proxies (CIDRs, `,`) whose X-Forwarded-For is believed")},
    )
    rate_limit: int = field(
        default=600,
        metadata={"env": "VEXPORT_RATE_LIMIT", **_doc("gateway requests a minute per client and per link", "600")},
    )
    public_url: str = field(
        default=DEFAULT_PUBLIC_URL, metadata={"env": "VEXPORT_PUBLIC_URL", **_doc("base of links", DEFAULT_PUBLIC_URL)}
    )
    ffmpeg: str | None = field(
        default=None, metadata={"env": "VEXPORT_FFMPEG", **_doc("FFmpeg to run", "imageio-ffmpeg")}
    )
    hardware: str = field(  # auto, off, or the encoders a deployment's GPU workers have (h264_nvenc,hevc_nvenc)
        default="auto", metadata={"env": "VEXPORT_HARDWARE", **_doc("try NVENC/QSV encoders", "auto")}
    )
    chunk_seconds: int = field(
        default=120, metadata={"env": "VEXPORT_CHUNK_SECONDS", **_doc("chunk length of long clips; 0 off", "120")}
    )
    repeatable_chunks: str = field(  # auto: on where chunks may run on several workers (celery, k8s)
        default="auto",
        metadata={"env": "VEXPORT_REPEATABLE_CHUNKS", **_doc("chunks encoded bit-for-bit repeatable", "auto")},
    )
    inbox_min_age: float = field(
        default=2.0, metadata={"env": "VEXPORT_INBOX_MIN_AGE", **_doc("seconds a dropped file is left alone", "2")}
    )
    inbox_tick_s: float = field(
        default=1.5, metadata={"env": "VEXPORT_INBOX_TICK_S", **_doc("seconds a sensor tick takes files", "1.5")}
    )
    max_segments: int = field(
        default=500, metadata={"env": "VEXPORT_MAX_SEGMENTS", **_doc("segments one composition may have", "500")}
    )
    max_targets: int = field(
        default=32, metadata={"env": "VEXPORT_MAX_TARGETS", **_doc("targets one composition may have", "32")}
    )
    max_work_gpx: float = field(
        default=10000.0,
        metadata={"env": "VEXPORT_MAX_WORK", **_doc("work budget of one export, gigapixels encoded", "10000")},
    )
    webhooks: tuple[str, ...] = field(
        default=(),
        metadata={"env": "VEXPORT_WEBHOOKS", **_doc("URLs (`,`) told of delivered, failed and canceled exports")},
    )
    webhook_secret: str | None = field(
        default=None,
        repr=False,
        metadata={"env": "VEXPORT_WEBHOOK_SECRET", **_doc("HMAC key of webhook signatures", "the link key")},
    )
    destinations_file: Path | None = field(
        default=None, metadata={"env": "VEXPORT_DESTINATIONS", **_doc("YAML of named delivery destinations")}
    )
    presets_file: Path | None = field(default=None, metadata={"env": "VEXPORT_PRESETS", **_doc("YAML of user presets")})
    owners_file: Path | None = field(
        default=None,
        metadata={"env": "VEXPORT_OWNERS", **_doc("YAML of per-owner limits: concurrent runs, exports an hour, quota")},
    )
    brands_file: Path | None = field(default=None, metadata={"env": "VEXPORT_BRANDS", **_doc("YAML of brand rules")})
    default_profile_file: Path | None = field(
        default=None, metadata={"env": "VEXPORT_DEFAULT_PROFILE", **_doc("composition for bare videos", "web_720p")}
    )
    chromium: str | None = field(
        default=None, metadata={"env": "VEXPORT_CHROMIUM", **_doc("browser for playback checks")}
    )
    postgres_url: str | None = field(
        default=None, repr=False, metadata={"env": "VEXPORT_POSTGRES_URL", **_doc("Dagster storage (production)")}
    )
    events_url: str | None = field(
        default=None,
        repr=False,
        metadata={
            "env": "VEXPORT_EVENTS_URL",
            **_doc("event store: postgresql+psycopg2://... (production)", "SQLite at $VEXPORT_HOME/events.sqlite"),
        },
    )
    executor: str = field(
        default="multiprocess",
        metadata={
            "env": "VEXPORT_EXECUTOR",
            **_doc("how a launched run executes its steps: " + ", ".join(EXECUTORS), "multiprocess"),
        },
    )
    # Celery workers (docs/deployment.md): steps hand each other files through the artifact store (core/artifacts.py)
    artifacts: str | None = field(
        default=None,
        metadata={
            "env": "VEXPORT_ARTIFACTS",
            **_doc("store steps hand files through: file:///folder, s3://bucket/prefix", "(none): the home"),
        },
    )
    artifacts_endpoint_url: str | None = field(
        default=None, metadata={"env": "VEXPORT_ARTIFACTS_ENDPOINT_URL", **_doc("S3 endpoint of the artifact store")}
    )
    celery_broker: str = field(
        default=DEFAULT_BROKER,
        metadata={"env": "VEXPORT_CELERY_BROKER", **_doc("Celery's broker and result backend", DEFAULT_BROKER)},
    )
    # Kubernetes (docs/deployment.md): the pod of every step run by the k8s_job_executor (defs/placement.py)
    k8s_gpu_selector: tuple[tuple[str, str], ...] = field(
        default=GPU_SELECTOR,
        metadata={
            "env": "VEXPORT_K8S_GPU_SELECTOR",
            **_doc("node labels (`k=v`, `,`) that GPU encode steps run on", "nvidia.com/gpu.present=true"),
        },
    )
    k8s_cpu: str = field(default=K8S_CPU, metadata={"env": "VEXPORT_K8S_CPU", **_doc("cores a step requests", K8S_CPU)})
    k8s_memory: str = field(
        default=K8S_MEMORY,
        metadata={"env": "VEXPORT_K8S_MEMORY", **_doc("memory a step requests and may not exceed", K8S_MEMORY)},
    )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        deployment = env.get("VEXPORT_DEPLOYMENT") or "local"
        if deployment not in DEPLOYMENTS:
            raise ConfigError(f"{deployment!r} is not one of {', '.join(DEPLOYMENTS)}", where="VEXPORT_DEPLOYMENT")
        hardware = env.get("VEXPORT_HARDWARE") or "auto"
        if hardware not in ("auto", "off") and not all(HARDWARE_ENCODER.match(e) for e in hardware.split(",")):
            raise ConfigError(
                f"{hardware!r} is not auto, off or a list of hardware encoders (h264_nvenc,hevc_nvenc,av1_nvenc and"
                " the _qsv ones)",
                where="VEXPORT_HARDWARE",
            )
        settings = cls(
            home=_path(env.get("VEXPORT_HOME")) or (Path.cwd() / ".vexport").resolve(),
            media_roots=tuple(_path(p) for p in env.get("VEXPORT_MEDIA_ROOTS", "").split(os.pathsep) if p),
            deployment=deployment,
            secret_key=env.get("VEXPORT_SECRET_KEY") or None,
            old_secret_keys=tuple(k.strip() for k in env.get("VEXPORT_OLD_SECRET_KEYS", "").split(",") if k.strip()),
            trusted_proxies=_cidrs(env.get("VEXPORT_TRUSTED_PROXIES", "")),
            rate_limit=_int(env, "VEXPORT_RATE_LIMIT", 600),
            public_url=(env.get("VEXPORT_PUBLIC_URL") or DEFAULT_PUBLIC_URL).rstrip("/"),
            ffmpeg=env.get("VEXPORT_FFMPEG") or None,
            hardware=hardware,
            chunk_seconds=_int(env, "VEXPORT_CHUNK_SECONDS", 120),
            repeatable_chunks=_choice(env, "VEXPORT_REPEATABLE_CHUNKS", ("auto", "on", "off")),
            inbox_min_age=_float(env, "VEXPORT_INBOX_MIN_AGE", 2.0),
            inbox_tick_s=_float(env, "VEXPORT_INBOX_TICK_S", 1.5),
            max_segments=_int(env, "VEXPORT_MAX_SEGMENTS", 500),
            max_targets=_int(env, "VEXPORT_MAX_TARGETS", 32),
            max_work_gpx=_float(env, "VEXPORT_MAX_WORK", 10000.0),
            destinations_file=_path(env.get("VEXPORT_DESTINATIONS")),
            webhooks=_urls(env.get("VEXPORT_WEBHOOKS", "")),
            webhook_secret=env.get("VEXPORT_WEBHOOK_SECRET") or None,
            presets_file=_path(env.get("VEXPORT_PRESETS")),
            owners_file=_path(env.get("VEXPORT_OWNERS")),
            brands_file=_path(env.get("VEXPORT_BRANDS")),
            default_profile_file=_path(env.get("VEXPORT_DEFAULT_PROFILE")),
            chromium=env.get("VEXPORT_CHROMIUM") or None,
            postgres_url=env.get("VEXPORT_POSTGRES_URL") or None,
            events_url=_events_url(env.get("VEXPORT_EVENTS_URL") or None),
            executor=_choice(env, "VEXPORT_EXECUTOR", EXECUTORS),
            artifacts=_artifacts(env.get("VEXPORT_ARTIFACTS") or None),
            artifacts_endpoint_url=env.get("VEXPORT_ARTIFACTS_ENDPOINT_URL") or None,
            celery_broker=env.get("VEXPORT_CELERY_BROKER") or DEFAULT_BROKER,
            k8s_gpu_selector=_gpu_selector(env.get("VEXPORT_K8S_GPU_SELECTOR")),
            k8s_cpu=_quantity(env, "VEXPORT_K8S_CPU", K8S_CPU, CPU_QUANTITY),
            k8s_memory=_quantity(env, "VEXPORT_K8S_MEMORY", K8S_MEMORY, MEMORY_QUANTITY),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Production refuses what only makes sense on one machine: a per-host random signing key. A sensor tick
        with no time to take a file would never take one."""
        if self.inbox_tick_s <= 0:
            raise ConfigError(f"{self.inbox_tick_s:g} must be above 0 seconds", where="VEXPORT_INBOX_TICK_S")
        if self.deployment == "production" and not self.secret_key:
            raise ConfigError(
                "VEXPORT_DEPLOYMENT=production needs VEXPORT_SECRET_KEY: without it every host mints its own key and a"
                " link signed on one worker fails on another",
                where="VEXPORT_SECRET_KEY",
            )

    @property
    def chunks_repeatable(self) -> bool:
        """Whether chunks are encoded so any worker makes the same bytes (x264 on one thread): by default where
        they may run on several workers. Off, one machine's chunks use all its cores."""
        if self.repeatable_chunks == "auto":
            return self.executor in ("celery", "k8s")
        return self.repeatable_chunks == "on"

    @property
    def paths(self) -> Home:
        return Home(self.home)

    @property
    def policy(self) -> MediaPolicy:
        return MediaPolicy((self.paths.media.resolve(), *self.media_roots))

    @property
    def ffmpeg_exe(self) -> str:
        if self.ffmpeg:
            return shutil.which(self.ffmpeg) or self.ffmpeg
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()

    @staticmethod
    def variables() -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting: the README's table."""
        return [(f.metadata["env"], f.metadata["default"], f.metadata["meaning"]) for f in fields(Settings)]


def _events_url(url: str | None) -> str | None:
    """A PostgreSQL (or SQLite) URL; the event store parses the rest when it connects."""
    if url and not url.startswith(("postgresql://", "postgresql+psycopg2://", "sqlite:///")):
        raise ConfigError(
            "is not postgresql+psycopg2://user:password@host/db (or sqlite:///file)", where="VEXPORT_EVENTS_URL"
        )
    return url


def _gpu_selector(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return GPU_SELECTOR
    pairs = [p.strip().partition("=") for p in text.split(",") if p.strip()]
    if not pairs or any(not k.strip() or not eq or not v.strip() for k, eq, v in pairs):
        raise ConfigError(f"{text!r} is not node labels key=value[,key=value...]", where="VEXPORT_K8S_GPU_SELECTOR")
    return tuple((k.strip(), v.strip()) for k, _, v in pairs)


def _quantity(env: dict, name: str, default: str, pattern: str) -> str:
    value = env.get(name) or default
    if not re.fullmatch(pattern, value):
        raise ConfigError(f"{value!r} is not a Kubernetes quantity like {default!r}", where=name)
    return value


def _choice(env: dict, name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or choices[0]
    if value not in choices:
        raise ConfigError(f"{value!r} is not one of {', '.join(choices)}", where=name)
    return value


def _artifacts(url: str | None) -> str | None:
    return artifacts_url(url) if url else None


def artifacts_url(url: str) -> str:
    """`url` if it names an artifact store (core/artifacts.py): `file:///absolute/folder` or `s3://bucket[/prefix]`."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "file" and not parts.netloc and parts.path.startswith("/") and parts.path != "/":
        return url
    if parts.scheme == "s3" and parts.netloc and "\\" not in url:
        return url
    raise ConfigError(f"{url!r} is not file:///absolute/folder or s3://bucket/prefix", where="VEXPORT_ARTIFACTS")


def _urls(text: str) -> tuple[str, ...]:
    from urllib.parse import urlsplit

    out = []
    for url in (u.strip() for u in text.split(",")):
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ConfigError(f"{url!r} is not an http(s):// URL without credentials", where="VEXPORT_WEBHOOKS")
        out.append(url)
    return tuple(out)


def _cidrs(text: str) -> tuple[str, ...]:
    import ipaddress

    out = []
    for c in (c.strip() for c in text.split(",")):
        if not c:
            continue
        try:
            out.append(str(ipaddress.ip_network(c, strict=False)))
        except ValueError:
            raise ConfigError(f"{c!r} is not an IP address or CIDR network", where="VEXPORT_TRUSTED_PROXIES") from None
    return tuple(out)


_destinations: dict[tuple, dict] = {}


def destinations(settings: Settings | None = None) -> dict:
    """The named delivery destinations (`default` = the local store), read once per file version."""
    from vexport_pipeline.core.delivery.destinations import load_destinations

    settings = settings or current()
    path = settings.destinations_file
    try:
        stamp = path.stat().st_mtime_ns if path else None
    except OSError:
        stamp = None  # load_destinations names the missing file
    key = (path, settings.paths.store, stamp)
    if key not in _destinations:
        _destinations[key] = load_destinations(path, settings.paths.store)
    return _destinations[key]


def signing_keys(settings: Settings) -> list[str]:
    """The link-signing key ring, oldest first: retired keys still verify, the newest signs."""
    return [*settings.old_secret_keys, settings.secret_key or settings.paths.local_secret_key()]


_current: tuple[tuple, Settings] | None = None


def current() -> Settings:
    """The settings of this process, parsed once per distinct `VEXPORT_*` environment."""
    global _current
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("VEXPORT_")))
    if _current is None or _current[0] != key:
        _current = (key, Settings.from_env())
    return _current[1]


@dataclass(frozen=True)
class Home:
    """The `VEXPORT_HOME` tree: instance, inbox, registry, work area, delivery store, events."""

    root: Path

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

    def local_secret_key_file(self) -> Path:
        """The random signing key of a local deployment (mode 0600), made on first use."""
        self.local_secret_key()
        return self.root / "secret.key"

    def local_secret_key(self) -> str:
        path = self.root / "secret.key"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                return path.read_text().strip()
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


@dataclass(frozen=True)
class MediaPolicy:
    """Which folders a manifest may read media from: the home's media folder and `VEXPORT_MEDIA_ROOTS`."""

    roots: tuple[Path, ...] = ()


def ffmpeg_exe() -> str:
    """`VEXPORT_FFMPEG`, else the static FFmpeg shipped by imageio-ffmpeg."""
    return current().ffmpeg_exe
