"""Named delivery destinations, read from the YAML file the `VEXPORT_DESTINATIONS` setting names:

```yaml
s3main: {url: s3://bucket/prefix, endpoint_url: https://minio.example:9000, region: eu-west-1,
         storage_class: STANDARD_IA, sse: AES256, serve: redirect}
archive: {url: file:///mnt/archive}
gcs: {url: gs://bucket/prefix, serve: redirect}      # endpoint_url: for a GCS emulator or private endpoint
azure: {url: az://container/prefix}                  # the account: AZURE_STORAGE_CONNECTION_STRING
team: {url: dropbox:///Exports/team}                 # a folder from the Dropbox root; token: DROPBOX_TOKEN
drive: {url: gdrive://Exports/team}                  # a folder in the service account's Drive
```

`default` is always the local store under `VEXPORT_HOME` and cannot be redefined. Credentials never
appear here: they come from each SDK's standard chain (AWS environment variables, profiles, roles;
`GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_CONNECTION_STRING`; `DROPBOX_TOKEN`), read from the
environment when a destination's store is made. Dropbox and Drive cannot presign, so the gateway always
streams their files (`serve: proxy`). `check` proves a destination reachable and writable with a small
probe object.
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
KEYS = ("url", "endpoint_url", "region", "storage_class", "sse", "kms_key_id", "serve", "sources", "archive_class")
ARCHIVE_CLASSES = ("GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")  # where retention moves a version past archive_after
SERVE = ("proxy", "redirect")
SSE = ("AES256", "aws:kms")
# classes whose objects can be downloaded at once (GLACIER and DEEP_ARCHIVE need a restore first)
STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "REDUCED_REDUNDANCY")
# the object stores and file services reached through fsspec (fsspecstore.py): URL scheme -> kind
FSSPEC_SCHEMES = {"gs": "gcs", "az": "azure", "dropbox": "dropbox", "gdrive": "gdrive"}
FSSPEC_KEYS = {"gcs": {"endpoint_url"}, "azure": set(), "dropbox": set(), "gdrive": set()}  # besides url, serve
CREDENTIAL_WORDS = (
    "secret",
    "password",
    "passwd",
    "access_key",
    "account_key",
    "private_key",
    "connection_string",
    "token",
    "credential",
    "api_key",
    "session",
)
STANDARD_CHAINS = (
    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles; GOOGLE_APPLICATION_CREDENTIALS; "
    "AZURE_STORAGE_CONNECTION_STRING; DROPBOX_TOKEN"
)
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
AZ_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class Destination:
    """One place exports are delivered to: the local store, another local folder, an S3 or GCS bucket, an
    Azure container, a Dropbox or Google Drive folder."""

    name: str
    url: str
    kind: str  # "local" | "s3" | "gcs" | "azure" | "dropbox" | "gdrive"
    root: Path | None = None  # local kinds
    bucket: str | None = None  # the S3 or GCS bucket, the Azure container
    prefix: str = ""  # the folder inside it; for Dropbox ("/Exports/team") and Drive ("Exports/team") the whole path
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    kms_key_id: str | None = None
    serve: str = "proxy"  # how the gateway hands out an object store's files: streamed, or a presigned 302
    sources: bool = False  # manifests may name `s3://bucket/prefix/...` sources under it
    archive_class: str = "GLACIER_IR"  # S3: the storage class retention archives to

    def store(self, **s3_options: Any) -> Store:
        """The store behind this destination (`s3_options` go to `S3Store`, e.g. a test's TransferConfig, or
        to `FsspecStore`); credentials are read from the process environment now, by each SDK's chain."""
        if self.kind == "local":
            return LocalStore(self.root)
        if self.kind in FSSPEC_KEYS:
            from .fsspecstore import open_store  # gcsfs, adlfs, ... are loaded only where such a destination is used

            root = f"{self.bucket}/{self.prefix}".rstrip("/") if self.bucket else self.prefix
            return open_store(self.kind, root, env=os.environ, endpoint_url=self.endpoint_url, **s3_options)
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
                f"({STANDARD_CHAINS})"
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
        raise _Problem(
            f"{name}.url: is required (s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, "
            "dropbox:///folder, gdrive://folder or file:///absolute/folder)"
        )
    serve = entry.get("serve") or "proxy"
    if serve not in SERVE:
        raise _Problem(f"{name}.serve: {serve!r} is not one of {', '.join(SERVE)}")
    url = urlsplit(entry["url"])
    if url.scheme == "file":
        return _local(name, entry, url, serve)
    if url.scheme == "s3":
        return _s3(name, entry, url, serve)
    if url.scheme in FSSPEC_SCHEMES:
        return _fsspec(name, entry, url, serve)
    raise _Problem(f"{name}.url: {entry['url']!r} is not an s3://, gs://, az://, dropbox:///, gdrive:// or file:// URL")


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
    _check_endpoint(name, endpoint)
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
    archive_class = entry.get("archive_class", "GLACIER_IR")
    if archive_class not in ARCHIVE_CLASSES:
        raise _Problem(f"{name}.archive_class: {archive_class!r} is not one of {', '.join(ARCHIVE_CLASSES)}")
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
        archive_class=archive_class,
    )


def _check_endpoint(name: str, endpoint: str | None) -> None:
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise _Problem(f"{name}.endpoint_url: must be an http(s):// URL without credentials, not {endpoint!r}")


def _fsspec(name: str, entry: dict, url: Any, serve: str) -> Destination:
    """gs://bucket/prefix, az://container/prefix, dropbox:///folder, gdrive://folder."""
    kind = FSSPEC_SCHEMES[url.scheme]
    extra = sorted(set(entry) - {"url", "serve"} - FSSPEC_KEYS[kind])
    if extra:
        where = "s3:// and gs://" if extra[0] == "endpoint_url" else "s3://"
        hint = " (the BlobEndpoint of AZURE_STORAGE_CONNECTION_STRING names Azurite or another endpoint)"
        raise _Problem(f"{name}.{extra[0]}: applies to {where} destinations only{hint if kind == 'azure' else ''}")
    if "@" in url.netloc or url.query or url.fragment:
        raise _Problem(f"{name}.url: must not carry credentials, a query or a fragment")
    if kind == "dropbox":
        if url.netloc:
            raise _Problem(f"{name}.url: a Dropbox folder is dropbox:///folder (three slashes, from the Dropbox root)")
        bucket, path = None, url.path
    elif kind == "gdrive":
        bucket, path = None, f"{url.netloc}{url.path}"
    else:
        bucket, path = url.netloc, url.path
        pattern, what = (GCS_BUCKET, "bucket") if kind == "gcs" else (AZ_CONTAINER, "container")
        if not pattern.fullmatch(bucket):
            raise _Problem(f"{name}.url: {bucket!r} is not a valid {what} name")
    prefix = path.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise _Problem(f"{name}.url: the path {prefix!r} has an empty, '.' or '..' segment")
    if kind in ("dropbox", "gdrive"):
        if not prefix:
            raise _Problem(f"{name}.url: name a folder, not the whole {'Dropbox' if kind == 'dropbox' else 'Drive'}")
        if serve != "proxy":
            raise _Problem(f"{name}.serve: {url.scheme}:// cannot presign URLs; the gateway streams its files (proxy)")
        prefix = "/" + prefix if kind == "dropbox" else prefix
    _check_endpoint(name, entry.get("endpoint_url"))
    return Destination(
        name, entry["url"], kind, bucket=bucket, prefix=prefix, endpoint_url=entry.get("endpoint_url"), serve=serve
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
