"""Delivery stores. A version of an export is staged file by file (`put`), published whole by
`commit` (the version appears in one step and `current` switches last), and never changed after,
except for records written next to the files once it is public (`write_record`: the summary, which
names links that can only exist for a committed version). A reader never sees a partial version.

`LocalStore` (folders under `VEXPORT_HOME/store`) is the embedded default; object stores implement
the same interface.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from vexport_pipeline.core.errors import StorageError
from vexport_pipeline.core.files import link_or_copy


@dataclass(frozen=True)
class Version:
    export_id: str
    version: str


class Store(ABC):
    """Where delivered exports live."""

    @abstractmethod
    def begin(self, export_id: str) -> Version:
        """A new, invisible version to `put` files into."""

    @abstractmethod
    def put(self, v: Version, name: str, src: Path) -> None:
        """Stage one file of an uncommitted version."""

    @abstractmethod
    def commit(self, v: Version) -> None:
        """Publish the staged version whole and make it `current`."""

    @abstractmethod
    def abort(self, v: Version) -> None:
        """Drop an uncommitted version; nothing of it stays visible."""

    @abstractmethod
    def current(self, export_id: str) -> Version | None:
        """The version readers get, if any."""

    @abstractmethod
    def url(self, v: Version, name: str) -> str:
        """Where a delivered object lives (`file://...`, `s3://...`)."""

    @abstractmethod
    def write_record(self, v: Version, name: str, data: bytes) -> None:
        """Write a small record (the summary) atomically into a committed version."""

    @abstractmethod
    def read_record(self, v: Version, name: str) -> bytes | None:
        """A record of a committed version, or None."""

    def local_path(self, v: Version, name: str) -> Path | None:
        """A local file a user can open, where the store has one."""
        return None


def _check_name(name: str, where: str) -> None:
    if Path(name).name != name or name.startswith(".") or not name:
        raise StorageError(f"refusing file name {name!r}", where=where)


class LocalStore(Store):
    """`root/<export>/<version>/<files>`, `root/<export>/current` a symlink switched atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _staging(self, v: Version) -> Path:
        return self.root / ".staging" / f"{v.export_id}-{v.version}"

    def folder(self, v: Version) -> Path:
        return self.root / v.export_id / v.version

    def begin(self, export_id: str) -> Version:
        v = Version(export_id, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6])
        self._staging(v).mkdir(parents=True)
        return v

    def put(self, v: Version, name: str, src: Path) -> None:
        _check_name(name, v.export_id)
        try:
            link_or_copy(Path(src), self._staging(v) / name)
        except OSError as exc:
            raise StorageError(f"could not stage {name} in {self.root}: {exc}", where=v.export_id) from exc

    def commit(self, v: Version) -> None:
        final = self.folder(v)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self._staging(v), final)
            link_tmp = final.parent / f".current-{uuid.uuid4().hex[:6]}"
            os.symlink(v.version, link_tmp)
            os.replace(link_tmp, final.parent / "current")
        except OSError as exc:
            self.abort(v)
            raise StorageError(f"could not promote into {self.root}: {exc}", where=v.export_id) from exc

    def abort(self, v: Version) -> None:
        shutil.rmtree(self._staging(v), ignore_errors=True)

    def current(self, export_id: str) -> Version | None:
        link = self.root / export_id / "current"
        return Version(export_id, os.readlink(link)) if link.is_symlink() and link.exists() else None

    def url(self, v: Version, name: str) -> str:
        return "file://" + str(self.folder(v) / name)

    def local_path(self, v: Version, name: str) -> Path:
        return self.folder(v) / name

    def write_record(self, v: Version, name: str, data: bytes) -> None:
        _check_name(name, v.export_id)
        target = self.folder(v) / name
        tmp = target.with_name(f".{name}.{uuid.uuid4().hex[:6]}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"could not write {name}: {exc}", where=v.export_id) from exc

    def read_record(self, v: Version, name: str) -> bytes | None:
        path = self.folder(v) / name
        return path.read_bytes() if path.is_file() else None


VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ChecksumMismatch(Exception):
    """The store holds other bytes than the local file (retried by uploading the file again)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What an object store says about one delivered object (the gateway serves from it)."""

    key: str
    size: int
    etag: str
    checksum: str | None  # "crc64nvme:<base64>", "md5:<hex>", ... where the store reports one
    content_type: str | None


class ObjectStore(Store):
    """What S3 and the fsspec stores share: `<base>/<export>/<version>/<name>` keys, a small `current`
    pointer object naming the version (written last by `commit`), records as small objects."""

    @abstractmethod
    def _base(self, export_id: str) -> str:
        """Where an export's versions and pointer live."""

    @abstractmethod
    def _uri(self, key: str) -> str:
        """A key as a URI a person reads (`s3://bucket/key`)."""

    @abstractmethod
    def _put_small(self, key: str, data: bytes, where: str | None = None) -> None: ...

    @abstractmethod
    def _get_small(self, key: str, where: str | None) -> bytes | None: ...

    def version_prefix(self, v: Version) -> str:
        """The key prefix of a version's objects, ending in `/`."""
        if not VERSION_ID.fullmatch(v.version):
            raise StorageError(f"refusing version id {v.version!r}", where=v.export_id)
        return f"{self._base(v.export_id)}/{v.version}/"

    def key(self, v: Version, name: str) -> str:
        _check_name(name, v.export_id)
        return self.version_prefix(v) + name

    def _pointer(self, export_id: str) -> str:
        return f"{self._base(export_id)}/current"

    def current(self, export_id: str) -> Version | None:
        data = self._get_small(self._pointer(export_id), export_id)
        if data is None:
            return None
        try:
            v = Version(export_id, json.loads(data)["version"])
            self.version_prefix(v)
        except (ValueError, KeyError, TypeError, StorageError) as exc:
            raise StorageError(
                f"{self._uri(self._pointer(export_id))} is not a version pointer", where=export_id
            ) from exc
        return v

    def url(self, v: Version, name: str) -> str:
        return self._uri(self.key(v, name))

    def write_record(self, v: Version, name: str, data: bytes) -> None:
        self._put_small(self.key(v, name), data, v.export_id)

    def read_record(self, v: Version, name: str) -> bytes | None:
        return self._get_small(self.key(v, name), v.export_id)
