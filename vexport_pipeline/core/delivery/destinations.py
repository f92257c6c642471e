"""Named delivery destinations, read from the YAML file the `VEXPORT_DESTINATIONS` setting names:

```yaml
s3main: {url: s3://bucket/prefix, endpoint_url: https://minio.example:9000, region: eu-west-1,
         storage_class: STANDARD_IA, sse: AES256, serve: redirect}
archive: {url: file:///mnt/archive}
```

`default` is always the local store under `VEXPORT_HOME` and cannot be redefined. Credentials never
appear here: they come from each SDK's standard chain (AWS environment variables, profiles, roles).
`check` proves a destination reachable and writable with a small probe object.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from vexport_pipeline.core.errors import ConfigError, VexportError

from .stores import LocalStore, Store

MAX_FILE_BYTES = 64 * 1024
DEFAULT = "default"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
KEYS = ("url", "endpoint_url", "region", "storage_class", "sse", "kms_key_id", "serve", "sources")
SERVE = ("proxy", "redirect")
SSE = ("AES256", "aws:kms")
# classes whose objects can be downloaded at once (GLACIER and DEEP_ARCHIVE need a restore first)
STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "REDUCED_REDUNDANCY")
NOT_YET = {"gs": "Google Cloud Storage", "az": "Azure Blob", "dropbox": "Dropbox", "gdrive": "Google Drive"}
CREDENTIAL_WORDS = ("secret", "password", "passwd", "access_key", "token", "credential", "api_key", "session")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class Destination:
    """One place exports are delivered to: the local store, another local folder or an S3 bucket."""

    name: str
    url: str
    kind: str  # "local" | "s3"
    root: Path | None = None  # local kinds
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    kms_key_id: str | None = None
    serve: str = "proxy"  # how the gateway hands out an object store's files: streamed, or a presigned 302
    sources: bool = False  # manifests may name `s3://bucket/prefix/...` sources under it

    def store(self, **s3_options: Any) -> Store:
        """The store behind this destination (`s3_options` go to `S3Store`, e.g. a test's TransferConfig)."""
        if self.kind == "local":
            return LocalStore(self.root)
        from .s3store import S3Store  # boto3 is loaded only where an S3 destination is used

        return S3Store(
            self.bucket,
            self.prefix,
            endpoint_url=self.endpoint_url,
            region=self.region,
            storage_class=self.storage_class,
            sse=self.sse,
            kms_key_id=self.kms_key_id,
            **s3_options,
        )


def load_destinations(path: Path | None, local_root: Path) -> dict[str, Destination]:
    """`default` (the local store at `local_root`) and every destination the file at `path` names."""
    out = {DEFAULT: Destination(DEFAULT, "file://" + str(local_root), "local", root=Path(local_root))}
    if path is None:
        return out
    data = _read_yaml(Path(path))
    if data is None:
        return out
    if not isinstance(data, dict):
        raise ConfigError(
            f"must be a mapping of destination names to settings, not {type(data).__name__}", where=str(path)
        )
    problems: list[str] = []
    for name, entry in data.items():
        try:
            out[str(name)] = _destination(name, entry)
        except _Problem as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems), where=str(path))
    return out


def _read_yaml(path: Path) -> Any:
    """The file's YAML, read safely: a regular file (a FIFO or device would block or never end), at most
    `MAX_FILE_BYTES`, UTF-8, plain data only (`yaml.safe_load`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except OSError as exc:
        raise ConfigError(f"cannot open the destinations file: {exc.strerror or exc}", where=str(path)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("the destinations file is not a regular file", where=str(path))
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"the destinations file is over {MAX_FILE_BYTES // 1024} KiB", where=str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"the destinations file is over {MAX_FILE_BYTES // 1024} KiB", where=str(path))
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the destinations file is not UTF-8 text: {exc}", where=str(path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"the destinations file is not valid YAML{at}: {problem}", where=str(path)) from exc


class _Problem(Exception):
    """One thing wrong with one destination; all of them are reported together."""


def _destination(name: Any, entry: Any) -> Destination:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise _Problem(f"{name!r}: a destination name must match [a-z0-9][a-z0-9_-]{{0,31}}")
    if name == DEFAULT:
        raise _Problem("default: is always the local store under VEXPORT_HOME and cannot be redefined")
    if not isinstance(entry, dict):
        raise _Problem(f"{name}: must be a mapping with at least `url`, not {type(entry).__name__}")
    for key in entry:
        if any(word in str(key).lower().replace("-", "_") for word in CREDENTIAL_WORDS):
            raise _Problem(
                f"{name}.{key}: credentials are not accepted here; they come from the SDK's standard chain "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles)"
            )
        if key not in KEYS:
            raise _Problem(f"{name}.{key}: unknown key; allowed: {', '.join(KEYS)}")
    for key, value in entry.items():
        if key == "sources":
            if not isinstance(value, bool):
                raise _Problem(f"{name}.sources: must be true or false, not {value!r}")
        elif value is not None and not isinstance(value, str):
            raise _Problem(f"{name}.{key}: must be a string, not {type(value).__name__}")
    if not entry.get("url"):
        raise _Problem(f"{name}.url: is required (s3://bucket/prefix or file:///absolute/folder)")
    serve = entry.get("serve") or "proxy"
    if serve not in SERVE:
        raise _Problem(f"{name}.serve: {serve!r} is not one of {', '.join(SERVE)}")
    url = urlsplit(entry["url"])
    if url.scheme in NOT_YET:
        raise _Problem(
            f"{name}.url: {url.scheme}:// ({NOT_YET[url.scheme]}) is not supported yet; use s3:// or file://"
        )
    if url.scheme == "file":
        return _local(name, entry, url, serve)
    if url.scheme == "s3":
        return _s3(name, entry, url, serve)
    raise _Problem(f"{name}.url: {entry['url']!r} is not an s3:// or file:// URL")


def _local(name: str, entry: dict, url: Any, serve: str) -> Destination:
    extra = sorted(set(entry) - {"url", "serve", "sources"})
    if extra:
        raise _Problem(f"{name}.{extra[0]}: applies to s3:// destinations only")
    if url.netloc not in ("", "localhost") or not url.path.startswith("/") or url.query or url.fragment:
        raise _Problem(f"{name}.url: a file:// URL must name an absolute folder, as file:///srv/exports")
    if ".." in Path(url.path).parts:
        raise _Problem(f"{name}.url: must not contain '..'")
    if serve != "proxy":
        raise _Problem(f"{name}.serve: a local folder is always streamed by the gateway (proxy)")
    return Destination(name, entry["url"], "local", root=Path(url.path))


def _s3(name: str, entry: dict, url: Any, serve: str) -> Destination:
    if "@" in url.netloc or url.query or url.fragment:
        raise _Problem(f"{name}.url: must be s3://bucket/prefix, without credentials, query or fragment")
    if not BUCKET.fullmatch(url.netloc):
        raise _Problem(f"{name}.url: {url.netloc!r} is not a valid bucket name")
    prefix = url.path.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise _Problem(f"{name}.url: the prefix {prefix!r} has an empty, '.' or '..' segment")
    endpoint = entry.get("endpoint_url")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise _Problem(f"{name}.endpoint_url: must be an http(s):// URL without credentials, not {endpoint!r}")
    region = entry.get("region")
    if region and not REGION.fullmatch(region):
        raise _Problem(f"{name}.region: {region!r} is not a region name")
    storage_class = entry.get("storage_class")
    if storage_class and storage_class not in STORAGE_CLASSES:
        raise _Problem(
            f"{name}.storage_class: {storage_class!r} is not one of {', '.join(STORAGE_CLASSES)} "
            "(archive classes cannot be downloaded without a restore)"
        )
    sse = entry.get("sse")
    if sse and sse not in SSE:
        raise _Problem(f"{name}.sse: {sse!r} is not one of {', '.join(SSE)}")
    if entry.get("kms_key_id") and sse != "aws:kms":
        raise _Problem(f"{name}.kms_key_id: needs sse: aws:kms")
    return Destination(
        name,
        entry["url"],
        "s3",
        bucket=url.netloc,
        prefix=prefix,
        endpoint_url=endpoint,
        region=region,
        storage_class=storage_class,
        sse=sse,
        kms_key_id=entry.get("kms_key_id"),
        serve=serve,
        sources=bool(entry.get("sources")),
    )


def check(dest: Destination, **s3_options: Any) -> tuple[bool, str]:
    """Whether `dest` is reachable and writable: a small probe object is written, read back and deleted."""
    try:
        if dest.kind == "local":
            _probe_folder(dest.root)
        else:
            dest.store(**s3_options).probe()
    except (VexportError, OSError) as exc:
        return False, f"{dest.name}: {dest.url} is not writable: {exc}"
    except Exception as exc:  # an SDK error the store did not expect (bad endpoint, DNS): report, never crash
        return False, f"{dest.name}: {dest.url} is not reachable: {type(exc).__name__}: {exc}"
    return True, f"{dest.name}: {dest.url} is reachable and writable"


def _probe_folder(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".vexport-probe-{uuid.uuid4().hex}"
    body = uuid.uuid4().bytes
    try:
        probe.write_bytes(body)
        if probe.read_bytes() != body:
            raise OSError(f"{probe} read back other bytes than were written")
    finally:
        probe.unlink(missing_ok=True)
