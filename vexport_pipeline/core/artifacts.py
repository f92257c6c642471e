"""Work products by key, so that steps on different machines hand each other files without sharing a disk.

A step's output names files under its own `VEXPORT_HOME` (the work area, the content cache). Before it is
handed on, each such file is put in the artifact store under a key that says whose it is and what it is, and
the record keeps the file's place under the home with its size and checksum (`HomeFile`). The step that reads
the record on another worker gets each file back under its own home, downloading only what it does not
already have with the same checksum.

Keys: `exports/<export_id>/<path under the export's work folder>` (`exports/x/renditions/web.mp4`, stages are
the work folder's own subfolders), `cache/<path under the content cache>`, `exports/<export_id>/values/...`
for the records themselves and `exports/<export_id>/registration.json` for the composition as registered.

Two backends behind `open_store`: a local folder (`file:///shared/artifacts`) and S3-compatible storage
(`s3://bucket/prefix`). A file's checksum is its full-object CRC64NVME, the one S3 computes and checks on
upload too (`core/delivery/s3store.py`). Files are streamed, never read whole into memory.
"""

from __future__ import annotations

import base64
import functools
import os
import stat
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path, PurePath, PurePosixPath
from urllib.parse import urlsplit

from vexport_pipeline.core.errors import StorageError
from vexport_pipeline.core.files import write_atomically
from vexport_pipeline.core.settings import artifacts_url, current

TRAVELLING = ("work", "cache")  # the parts of a home whose files are handed between workers
RESERVED = ("values", "registration.json")  # keys under exports/<id>/ that are not files of the work area
BLOCK = 8 * 1024 * 1024


class KeyRefused(StorageError):
    """A key or a path that would leave the store or the home: a bug or a hostile record, never retried."""

    default_code = "artifact_refused"
    transient = False


def check_key(key: str) -> str:
    """`key` if it is a relative, normalized POSIX path (no `.`, `..`, empty parts, backslashes or NULs)."""
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise KeyRefused(f"refusing artifact key {key!r}", where="VEXPORT_ARTIFACTS")
    return key


def file_key(rel: str) -> str:
    """The key of a file of the home, from its place under the home: `work/<id>/...` -> `exports/<id>/...`."""
    parts = check_key(rel).split("/")
    if parts[0] == "work" and len(parts) > 2 and parts[2] not in RESERVED:
        return "/".join(["exports", *parts[1:]])
    if parts[0] == "cache" and len(parts) > 1:
        return rel
    raise KeyRefused(f"{rel!r} is not a file of the work area or the content cache", where="VEXPORT_ARTIFACTS")


def registration_key(export_id: str) -> str:
    return check_key(f"exports/{export_id}/registration.json")


@functools.lru_cache(maxsize=4096)
def _checksum(path: str, size: int, mtime_ns: int, inode: int) -> str:
    from vexport_pipeline.core.delivery.s3store import crc64nvme_file

    return crc64nvme_file(Path(path))


def checksum(path: Path) -> str:
    """The file's CRC64NVME (base64, as S3 reports it), computed once per file version in a process: every step
    that loads the source checks the same large file."""
    st = os.stat(path)
    return _checksum(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _verified_copy(read, dest: Path, expected: str | None) -> None:
    """Stream `read` (a file object) into a hidden file beside `dest`, checking its CRC64NVME on the way, then
    rename it into place: `dest` is the whole verified file or unchanged."""
    from awscrt import checksums

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:6]}.partial")
    crc = 0
    try:
        with open(tmp, "wb") as out:
            while block := read(BLOCK):
                crc = checksums.crc64nvme(block, crc)
                out.write(block)
        got = base64.b64encode(crc.to_bytes(8, "big")).decode()
        if expected and got != expected:
            raise StorageError(f"{dest.name}: the copy's CRC64NVME {got} is not {expected}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Entry:
    """A key the store holds, its size and when it was last written (epoch seconds)."""

    key: str
    size: int
    mtime: float


class ArtifactStore(ABC):
    """Files and small records by key."""

    url: str

    @abstractmethod
    def entries(self, prefix: str) -> Iterator[Entry]:
        """Every key under the folder `prefix` (`exports/x/`, `cache/`), for retention."""

    @abstractmethod
    def remove(self, keys: list[str]) -> None:
        """Delete `keys`; one already gone is no error."""

    @abstractmethod
    def put(self, key: str, src: Path, crc: str) -> None:
        """Store the file `src` (whose CRC64NVME is `crc`) under `key`, replacing what was there."""

    @abstractmethod
    def get(self, key: str, dest: Path, crc: str | None = None) -> bool:
        """Download `key` to `dest`, verified against `crc` (else the store's own checksum); False if absent."""

    @abstractmethod
    def has(self, key: str, crc: str) -> bool:
        """Whether `key` holds a file with this CRC64NVME (then `put` is not needed)."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """A small record, whole or not at all."""

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """A small record, or None."""

    def put_new(self, key: str, src: Path, crc: str) -> bool:
        """`put` unless the store already holds these bytes; True if it uploaded."""
        if self.has(key, crc):
            return False
        self.put(key, src, crc)
        return True


class FolderStore(ArtifactStore):
    """A local (or mounted) folder: `root/<key>`."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()

    def path(self, key: str) -> Path:
        """Where `key` lives; refused if a symlink inside the store would take it elsewhere."""
        p = self.root / check_key(key)
        inside = p.parent.resolve()
        if not inside.is_relative_to(self.root) or p.is_symlink():
            raise KeyRefused(f"{key!r} leads out of the store through a symlink", where=self.url)
        return p

    def put(self, key: str, src: Path, crc: str) -> None:
        with open(src, "rb") as f:
            _verified_copy(f.read, self.path(key), crc)

    def get(self, key: str, dest: Path, crc: str | None = None) -> bool:
        src = self.path(key)
        if not src.is_file():
            return False
        with open(src, "rb") as f:
            _verified_copy(f.read, dest, crc)
        return True

    def has(self, key: str, crc: str) -> bool:
        p = self.path(key)
        return p.is_file() and checksum(p) == crc

    def write(self, key: str, data: bytes) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(p, data)

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def entries(self, prefix: str) -> Iterator[Entry]:
        top = self.path(prefix.rstrip("/"))
        for dirpath, _dirs, names in os.walk(top):  # os.walk does not follow a symlinked folder
            for name in names:
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):  # a file: not a symlink, FIFO or socket planted in the store
                    yield Entry(Path(full).relative_to(self.root).as_posix(), st.st_size, st.st_mtime)

    def remove(self, keys: list[str]) -> None:
        for key in keys:
            p = self.path(key)
            p.unlink(missing_ok=True)
            for folder in p.parents:  # and the folders it leaves empty, up to the store's root
                if folder == self.root or any(folder.iterdir()):
                    break
                folder.rmdir()


class S3ArtifactStore(ArtifactStore):
    """An S3 (or MinIO, R2, moto) bucket under `prefix`; credentials from boto3's standard chain. Uploads carry
    their CRC64NVME (S3 refuses bytes that differ), are checked again afterwards, and large files go in parts."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client=None):
        import boto3
        from botocore.config import Config

        from vexport_pipeline.core.delivery.s3store import CLIENT_CONFIG

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config = CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"})) if endpoint_url else CLIENT_CONFIG
        self.client = client or boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    def _fail(self, what: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"could not {what} {self.url}/{key}: {exc}", where="VEXPORT_ARTIFACTS")

    def _or_none(self, key: str, call):
        """`call()`, with a missing object answered as None and any other failure as the store's error."""
        from botocore.exceptions import BotoCoreError, ClientError

        from vexport_pipeline.core.delivery.s3store import _is_missing

        try:
            return call()
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._fail("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from exc

    def _head(self, key: str) -> dict | None:
        return self._or_none(
            key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        )

    def put(self, key: str, src: Path, crc: str) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        from vexport_pipeline.core.delivery.s3store import ALGORITHM, VIDEO_TRANSFER, compare_checksum
        from vexport_pipeline.core.delivery.stores import ChecksumMismatch

        args, full = {"ChecksumAlgorithm": ALGORITHM, "ChecksumCRC64NVME": crc}, self._key(key)
        try:
            self.client.upload_file(str(src), self.bucket, full, ExtraArgs=args, Config=VIDEO_TRANSFER)
            compare_checksum(crc, self._head(key) or {}, src.stat().st_size)
        except (BotoCoreError, ClientError, Boto3Error, StorageError, ChecksumMismatch) as exc:
            raise self._fail("upload", key, exc) from exc

    def get(self, key: str, dest: Path, crc: str | None = None) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        head = self._head(key)
        if head is None:
            return False
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            with body:
                _verified_copy(body.read, dest, crc or head.get("ChecksumCRC64NVME"))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("download", key, exc) from exc
        return True

    def has(self, key: str, crc: str) -> bool:
        head = self._head(key)
        return bool(head) and head.get("ChecksumCRC64NVME") == crc

    def write(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from vexport_pipeline.core.delivery.s3store import ALGORITHM

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumAlgorithm=ALGORITHM)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("write", key, exc) from exc

    def read(self, key: str) -> bytes | None:
        return self._or_none(key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def entries(self, prefix: str) -> Iterator[Entry]:
        from botocore.exceptions import BotoCoreError, ClientError

        start = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/")) + "/"
        )
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield Entry(obj["Key"][start:], obj["Size"], obj["LastModified"].timestamp())
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix, exc) from exc

    def remove(self, keys: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (BotoCoreError, ClientError) as exc:
                raise self._fail("delete", keys[i], exc) from exc
            if errors := answer.get("Errors"):
                raise self._fail("delete", errors[0].get("Key", ""), RuntimeError(errors[0].get("Message", "")))


def open_store(url: str, endpoint_url: str | None = None) -> ArtifactStore:
    parts = urlsplit(artifacts_url(url))
    if parts.scheme == "file":
        return FolderStore(Path(parts.path))
    return S3ArtifactStore(parts.netloc, parts.path, endpoint_url or None)


def configured() -> ArtifactStore | None:
    """The store `VEXPORT_ARTIFACTS` names, or None: then every step runs against one home."""
    s = current()
    return open_store(s.artifacts, s.artifacts_endpoint_url) if s.artifacts else None


# ---- records: the files they name travel with them -----------------------------------------------------


@dataclass(frozen=True)
class HomeFile:
    """A file a record names, as it travels: its place under the home, size and CRC64NVME."""

    rel: str  # POSIX, under the home: work/<export>/... or cache/...
    size: int
    crc: str
    text: bool = False  # the record held it as a str (MediaInfo.path), not a Path


def _map(value, fn):
    """`value` with `fn` applied to every str, path and HomeFile inside it (dataclass fields, lists, tuples,
    dict values); what `fn` leaves alone keeps its identity, so an unchanged record is not copied."""
    if isinstance(value, str | PurePath | HomeFile):
        return fn(value)
    if is_dataclass(value) and not isinstance(value, type):
        changed = {}
        for f in fields(value):
            old = getattr(value, f.name)
            new = _map(old, fn)
            if new is not old:
                if not f.init:
                    raise TypeError(f"{type(value).__name__}.{f.name} names a file but cannot be replaced")
                changed[f.name] = new
        return replace(value, **changed) if changed else value
    if type(value) in (list, tuple):
        items = [_map(v, fn) for v in value]
        return type(value)(items) if any(a is not b for a, b in zip(items, value)) else value
    if type(value) is dict:
        items = {k: _map(v, fn) for k, v in value.items()}
        return items if any(items[k] is not value[k] for k in value) else value
    return value


def _under(home: Path, value: str | PurePath) -> str | None:
    """The POSIX place of `value` under the travelling part of `home` (by its name, not through symlinks: the
    work area links the source in), or None."""
    p = os.path.normpath(os.fspath(value))
    if not os.path.isabs(p):
        return None
    try:
        rel = PurePosixPath(Path(p).relative_to(home))
    except ValueError:
        return None
    return str(rel) if len(rel.parts) > 1 and rel.parts[0] in TRAVELLING else None


def detach(value, home: Path, store: ArtifactStore) -> tuple[object, list[HomeFile]]:
    """`value` with every file of the home it names put in the store and replaced by its `HomeFile`; strings
    that are not existing files stay strings, a `Path` that is not a file is refused."""
    home, sent = Path(home).resolve(), []

    def put(v):
        rel = _under(home, v) if not isinstance(v, HomeFile) else None
        if rel is None:
            return v
        p = home / rel
        if not p.is_file():
            if isinstance(v, str):
                return v
            raise StorageError(f"{p} is not a file, so it cannot be handed to another worker", where=rel)
        f = HomeFile(rel, p.stat().st_size, checksum(p), isinstance(v, str))
        store.put_new(file_key(rel), p, f.crc)
        sent.append(f)
        return f

    return _map(value, put), sent


def local_place(home: Path, rel: str) -> Path:
    """Where `rel` goes under `home`; refused if it would leave the home (`..`, absolute, or a symlinked
    folder that points elsewhere)."""
    home = Path(home).resolve()
    file_key(rel)  # a checked key of a travelling file
    p = home / rel
    if not p.parent.resolve().is_relative_to(home):
        raise KeyRefused(f"{rel!r} leads out of {home} through a symlink", where=str(home))
    return p


def attach(value, home: Path, store: ArtifactStore) -> tuple[object, list[HomeFile]]:
    """`value` with every `HomeFile` back as a path under this `home`; a file already here with the same size
    and checksum is used as it is, any other is downloaded. Returns (value, the files downloaded)."""
    fetched = []

    def get(v):
        if not isinstance(v, HomeFile):
            return v
        p = local_place(home, v.rel)
        if not (p.is_file() and p.stat().st_size == v.size and checksum(p) == v.crc):
            if not store.get(file_key(v.rel), p, v.crc):
                raise StorageError(f"{store.url}/{file_key(v.rel)} is missing", where=v.rel)
            fetched.append(v)
        return str(p) if v.text else p

    return _map(value, get), fetched
