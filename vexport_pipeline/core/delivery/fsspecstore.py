"""One delivery store for Google Cloud Storage, Azure Blob, Dropbox and Google Drive, over fsspec (gcsfs,
adlfs, dropboxdrivefs, gdrive-fsspec).

Layout, as the S3 store: `<root>/<export>/<version>/<files>` and a small pointer object `<root>/<export>/current`
(`{"version": ...}`) written last by `commit`. A version's files are uploaded as they are `put`, but nothing
reads them until the pointer names that version, so a reader never sees a partial version; a failed delivery
is removed whole (its version prefix) and the pointer is untouched. On GCS, Azure and Dropbox one upload
replaces the pointer in one step. Google Drive cannot replace a file in place (a second upload of a name adds a
second file of that name), so there the old pointer is deleted and the new one written just after: a reader in
that instant sees no current version, never a partial one.

Every uploaded file is verified (`put`): its size, and a checksum the store computed itself where the backend
reports one, compared with the same hash of the local file: GCS `md5Hash` (`crc32c` for objects without one),
Azure `content_md5` (set by the service on single-request uploads), Dropbox `content_hash` (its SHA-256 of
4 MiB blocks). Where the backend reports none (Azure blobs uploaded in blocks, Google Drive through
gdrive-fsspec, the in-memory filesystem), the object is read back and its SHA-256 compared with the local file's.
`commit` checks every file again (present, same size, same reported hash where there is one) before the pointer
moves.

Credentials come only from each SDK's standard chain, never from manifests or the destinations file:
Google's application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, the metadata server;
anonymous when `STORAGE_EMULATOR_HOST` names an emulator, as google-cloud-storage does),
`AZURE_STORAGE_CONNECTION_STRING` (or `AZURE_STORAGE_ACCOUNT_NAME` with a key, SAS or Azure AD credential, as
adlfs reads them), `DROPBOX_TOKEN` (or `DROPBOX_REFRESH_TOKEN` with `DROPBOX_APP_KEY` and
`DROPBOX_APP_SECRET`), and a service account's JSON key file in `GOOGLE_APPLICATION_CREDENTIALS` for Drive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import mimetypes
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vexport_pipeline.core.errors import StorageError

from .stores import ChecksumMismatch, ObjectInfo, ObjectStore, Version, _check_name

log = logging.getLogger("vexport.delivery")

MiB = 1024 * 1024
OBJECT_ATTEMPTS = 3  # a whole file that failed to verify or lost its connection is uploaded again, this often in all
DROPBOX_BLOCK = 4 * MiB


@dataclass(frozen=True)
class Backend:
    """What differs between the fsspec backends; everything else is the same code."""

    scheme: str  # of the URLs `url` gives
    content_type_arg: str | None = None  # the upload keyword that sets the object's Content-Type
    sign_disposition_arg: str | None = None  # `fs.sign`'s keyword for Content-Disposition; None: cannot presign
    make_folders: bool = False  # a folder must exist before a file is written into it
    replace_by_delete: bool = False  # writing a name again adds a second file: delete the old one first


BACKENDS = {
    "gcs": Backend("gs", content_type_arg="content_type", sign_disposition_arg="response_disposition"),
    "azure": Backend("az", content_type_arg="content_settings", sign_disposition_arg="content_disposition"),
    "dropbox": Backend("dropbox"),
    "gdrive": Backend("gdrive", make_folders=True, replace_by_delete=True),
    "memory": Backend("memory"),
}


# hashes -------------------------------------------------------------------------------------------------------


def _b64_hex(value: Any) -> str:
    return base64.b64decode(value).hex()


def reported_hash(info: Mapping[str, Any]) -> tuple[str, str] | None:
    """The content hash the backend computed itself for an object, as (algorithm, lowercase hex), from its
    `fs.info` entry: GCS `md5Hash` / `crc32c` (base64), Azure `content_settings.content_md5` (bytes), Dropbox
    `content_hash`, Drive `md5Checksum`; None where it reports none."""
    if info.get("md5Hash"):
        return "md5", _b64_hex(info["md5Hash"])
    if info.get("crc32c"):
        return "crc32c", _b64_hex(info["crc32c"])
    settings = info.get("content_settings") or {}
    md5 = settings.get("content_md5") if isinstance(settings, Mapping) else getattr(settings, "content_md5", None)
    if md5:
        return "md5", bytes(md5).hex()
    if isinstance(info.get("content_hash"), str):
        return "dropbox", info["content_hash"].lower()
    if isinstance(info.get("md5Checksum"), str):
        return "md5", info["md5Checksum"].lower()
    return None


class _DropboxHash:
    """Dropbox's content hash: SHA-256 of the concatenated SHA-256 digests of every 4 MiB block."""

    def __init__(self) -> None:
        self._outer, self._block, self._filled = hashlib.sha256(), hashlib.sha256(), 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = view[: DROPBOX_BLOCK - self._filled]
            self._block.update(take)
            self._filled += len(take)
            view = view[len(take) :]
            if self._filled == DROPBOX_BLOCK:
                self._outer.update(self._block.digest())
                self._block, self._filled = hashlib.sha256(), 0

    def hexdigest(self) -> str:
        outer = self._outer.copy()
        if self._filled:
            outer.update(self._block.digest())
        return outer.hexdigest()


class _Crc32c:
    def __init__(self) -> None:
        import google_crc32c  # installed with gcsfs (google-cloud-storage); only GCS reports CRC32C

        self._crc = google_crc32c.Checksum()

    def update(self, data: bytes) -> None:
        self._crc.update(data)

    def hexdigest(self) -> str:
        return self._crc.digest().hex()


def hasher(algorithm: str) -> Any:
    """A fresh hash object (`update`, `hexdigest`) of "md5", "sha256", "crc32c" or "dropbox"."""
    if algorithm == "dropbox":
        return _DropboxHash()
    if algorithm == "crc32c":
        return _Crc32c()
    return hashlib.new(algorithm)


def file_digest(path: Path, algorithm: str, chunk: int = 8 * MiB) -> str:
    """The hex digest of a local file."""
    h = hasher(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _is_missing(exc: BaseException) -> bool:
    """A not-found answer: FileNotFoundError from most backends, a path lookup error from the Dropbox SDK."""
    if isinstance(exc, FileNotFoundError):
        return True
    error = getattr(exc, "error", None)  # dropbox.exceptions.ApiError
    try:
        return bool(error.is_path() and error.get_path().is_not_found())
    except AttributeError:
        return False


def _retryable(exc: BaseException) -> bool:
    """Whether uploading the whole file again may succeed (the SDKs already retry single requests)."""
    return isinstance(exc, ChecksumMismatch | ConnectionError | TimeoutError)


class _RangeReader:
    """At most `length` bytes of an open fsspec file (`read`, `iter_chunks`, `close`, as botocore's body)."""

    def __init__(self, f: Any, length: int | None):
        self._f, self._left = f, length

    def read(self, n: int = -1) -> bytes:
        if self._left is not None:
            n = self._left if n is None or n < 0 else min(n, self._left)
            if n <= 0:
                return b""
        data = self._f.read(n)
        if self._left is not None:
            self._left -= len(data)
        return data

    def iter_chunks(self, chunk_size: int = MiB):
        while chunk := self.read(chunk_size):
            yield chunk

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FsspecStore(ObjectStore):
    """A delivery store in an fsspec filesystem `fs` under the path `root` ("bucket/prefix" for GCS,
    "container/prefix" for Azure, "/folder" for Dropbox, "folder" for Drive)."""

    def __init__(self, fs: Any, root: str, *, kind: str, attempts: int = OBJECT_ATTEMPTS, backoff: float = 1.0) -> None:
        if kind not in BACKENDS:
            raise StorageError(f"unknown fsspec store kind {kind!r}; one of {', '.join(BACKENDS)}")
        self.fs = fs
        self.kind = kind
        self.backend = BACKENDS[kind]
        self.root = root.rstrip("/")
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.checksums: dict[tuple[Version, str], str] = {}  # verified "<algorithm>:<hex>" of every put
        self._staged: dict[Version, dict[str, tuple[str, int]]] = {}  # name -> (checksum, size)

    # paths ------------------------------------------------------------------------------------------------

    def _base(self, export_id: str) -> str:
        _check_name(export_id, export_id)
        return f"{self.root}/{export_id}"

    def folder(self, v: Version) -> str:
        """A version's folder (the key prefix without its trailing `/`, as fsspec names folders)."""
        return self.version_prefix(v).rstrip("/")

    def _uri(self, path: str) -> str:
        return f"{self.backend.scheme}://{path}"

    def _type_args(self, name: str, default: str = "application/octet-stream") -> dict[str, Any]:
        content_type = mimetypes.guess_type(name)[0] or default
        if self.backend.content_type_arg == "content_settings":
            return {"content_settings": {"content_type": content_type}}
        return {self.backend.content_type_arg: content_type} if self.backend.content_type_arg else {}

    # the Store interface ----------------------------------------------------------------------------------

    def begin(self, export_id: str) -> Version:
        v = Version(export_id, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6])
        prefix = self.folder(v)
        if self.backend.make_folders:
            self._call(lambda: self.fs.makedirs(prefix, exist_ok=True), f"could not create {self._uri(prefix)}", v)
        self._staged[v] = {}
        return v

    def put(self, v: Version, name: str, src: Path) -> str:
        """Upload one file of an uncommitted version and verify it; returns its "<algorithm>:<hex>" checksum
        (the backend's own hash where it reports one, else "sha256:" of the bytes read back)."""
        path, src = self.key(v, name), Path(src)
        what = f"could not upload {name} to {self._uri(path)}"
        try:
            size = src.stat().st_size
        except OSError as exc:  # a missing or unreadable local file: uploading again cannot help
            raise StorageError(f"{what}: cannot read {src}: {exc.strerror or exc}", where=v.export_id) from exc
        for attempt in range(1, self.attempts + 1):
            try:
                checksum = self._upload_once(src, path, name, size)
                break
            except Exception as exc:  # every SDK has errors of its own; the message says what failed
                if not _retryable(exc) or attempt == self.attempts:
                    tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                    raise StorageError(f"{what}{tries}: {exc}", where=v.export_id) from exc
                time.sleep(self.backoff * 2 ** (attempt - 1))
        self._staged.setdefault(v, {})[name] = (checksum, size)
        self.checksums[(v, name)] = checksum
        return checksum

    def _upload_once(self, src: Path, path: str, name: str, size: int) -> str:
        if self.backend.replace_by_delete:
            self._delete_quietly(path)
        self.fs.put_file(str(src), path, **self._type_args(name))
        try:
            return self._verify(src, path, size)
        except Exception:
            self._delete_quietly(path)
            raise

    def _verify(self, src: Path, path: str, size: int) -> str:
        info = self._info(path)
        if info.get("size") != size:
            raise ChecksumMismatch(f"the store holds {info.get('size')} bytes, the local file has {size}")
        reported = reported_hash(info)
        if reported:
            algorithm, remote = reported
            local = file_digest(src, algorithm)
            what = f"the store reports {algorithm} {remote}"
        else:  # nothing reported: read the object back
            algorithm, remote, local = "sha256", self._remote_digest(path, "sha256"), file_digest(src, "sha256")
            what = f"the bytes read back have sha256 {remote}"
        if remote != local:
            raise ChecksumMismatch(f"{what}, the local file has {local}")
        return f"{algorithm}:{local}"

    def _info(self, path: str) -> dict[str, Any]:
        self.fs.invalidate_cache(path)  # listings cached by the filesystem must not answer for a new object
        return self.fs.info(path)

    def _remote_digest(self, path: str, algorithm: str) -> str:
        h = hasher(algorithm)
        with self.fs.open(path, "rb") as f:
            while block := f.read(8 * MiB):
                h.update(block)
        return h.hexdigest()

    def commit(self, v: Version) -> None:
        """Check every uploaded file again (present, same size, same reported hash where the backend reports
        one), then write the pointer."""
        try:
            for name, (checksum, size) in sorted(self._staged.get(v, {}).items()):
                self._recheck(v, name, checksum, size)
            self._put_small(self._pointer(v.export_id), json.dumps({"version": v.version}).encode(), v.export_id)
        except StorageError:
            self.abort(v)
            raise
        self._staged.pop(v, None)

    def _recheck(self, v: Version, name: str, checksum: str, size: int) -> None:
        path = self.key(v, name)
        try:
            info = self._info(path)
        except Exception as exc:
            what = "is missing" if _is_missing(exc) else f"cannot be checked: {exc}"
            raise StorageError(f"{self._uri(path)} {what}", where=v.export_id) from exc
        reported = reported_hash(info)
        if info.get("size") != size:
            raise StorageError(f"{self._uri(path)} changed after upload: {info.get('size')} bytes", where=v.export_id)
        if reported and checksum.split(":", 1)[0] == reported[0] and checksum != ":".join(reported):
            raise StorageError(
                f"{self._uri(path)} changed after upload: {reported[0]} {reported[1]}", where=v.export_id
            )

    def abort(self, v: Version) -> None:
        """Remove everything under the version's prefix. Best effort, as `LocalStore.abort`: what a failed
        abort leaves is never visible (no pointer names it)."""
        self._staged.pop(v, None)
        prefix = self.folder(v)
        try:
            self.fs.invalidate_cache(prefix)
            if self.fs.exists(prefix):
                self.fs.rm(prefix, recursive=True)
        except Exception as exc:  # the caller is already reporting the failure that led here
            if not _is_missing(exc):
                log.warning("could not clean up %s: %s", self._uri(prefix), exc)
        finally:
            self.fs.invalidate_cache(prefix)

    def _call(self, fn: Any, what: str, v: Version | None = None) -> Any:
        try:
            return fn()
        except Exception as exc:
            raise StorageError(f"{what}: {exc}", where=v.export_id if v else None) from exc

    def _put_small(self, path: str, data: bytes, where: str | None = None) -> None:
        """One upload: GCS, Azure and Dropbox make the object visible whole or not at all."""
        try:
            if self.backend.make_folders:
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            if self.backend.replace_by_delete:
                self._delete_quietly(path)
            self.fs.pipe_file(path, data, **self._type_args(path, "application/json"))
        except Exception as exc:
            raise StorageError(f"could not write {self._uri(path)}: {exc}", where=where) from exc
        finally:
            self.fs.invalidate_cache(path)

    def _get_small(self, path: str, where: str | None) -> bytes | None:
        try:
            self.fs.invalidate_cache(path)
            return self.fs.cat_file(path)
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise StorageError(f"could not read {self._uri(path)}: {exc}", where=where) from exc

    def _delete_quietly(self, path: str) -> None:
        try:
            self.fs.invalidate_cache(path)
            if self.fs.exists(path):
                self.fs.rm_file(path)
        except Exception as exc:
            log.debug("could not delete %s: %s", self._uri(path), exc)
        finally:
            self.fs.invalidate_cache(path)

    # for a download gateway -------------------------------------------------------------------------------

    def head(self, v: Version, name: str) -> ObjectInfo | None:
        """Size, ETag, the backend's own checksum and Content-Type of a delivered object, or None if it is
        not there."""
        path = self.key(v, name)
        try:
            info = self._info(path)
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise StorageError(f"could not read {self._uri(path)}: {exc}", where=v.export_id) from exc
        if info.get("type") == "directory":
            return None
        reported = reported_hash(info)
        settings = info.get("content_settings")
        content_type = info.get("contentType") or getattr(settings, "get", lambda _: None)("content_type")
        tag = info.get("etag") or info.get("rev") or info.get("version") or info.get("generation")
        if not tag:  # no version tag (the in-memory filesystem): size and creation time
            tag = f"{info.get('size')}-{info.get('created') or info.get('mtime') or ''}"
        checksum = f"{reported[0]}:{reported[1]}" if reported else None
        content_type = content_type or mimetypes.guess_type(name)[0]
        return ObjectInfo(path, int(info["size"]), str(tag).strip('"'), checksum, content_type)

    def open_range(self, v: Version, name: str, start: int | None = None, end: int | None = None) -> Any:
        """A stream of the object's bytes `start..end` (inclusive, as HTTP ranges), or all of it; `.read()`,
        `.iter_chunks()` and `.close()` as botocore's StreamingBody."""
        path = self.key(v, name)
        try:
            f = self.fs.open(path, "rb")
        except Exception as exc:
            raise StorageError(f"could not read {self._uri(path)}: {exc}", where=v.export_id) from exc
        try:
            if start:
                f.seek(start)
        except Exception as exc:
            f.close()
            raise StorageError(f"could not read {self._uri(path)}: {exc}", where=v.export_id) from exc
        return _RangeReader(f, None if end is None else max(0, end - (start or 0) + 1))

    def presign(self, v: Version, name: str, seconds: int = 60, *, content_disposition: str | None = None) -> str:
        """A signed GET URL of a delivered object valid `seconds` (GCS V4 signing with a service account's
        key; Azure a read-only SAS from the account key). Dropbox and Drive have none: a StorageError says
        so, and the gateway streams the file instead."""
        path = self.key(v, name)
        arg = self.backend.sign_disposition_arg
        if arg is None:
            raise StorageError(f"{self.kind} cannot hand out presigned URLs; the gateway streams {name} (proxy)")
        extra = {arg: content_disposition} if content_disposition else {}
        return self._call(
            lambda: self.fs.sign(path, expiration=int(seconds), **extra), f"could not sign {self._uri(path)}", v
        )

    def probe(self) -> None:
        """Write, read back and delete a small object under the root; a StorageError says what failed."""
        path = f"{self.root}/.vexport-probe-{uuid.uuid4().hex}"
        body = f"vexport probe {uuid.uuid4().hex}".encode()
        self._put_small(path, body)
        try:
            back = self._get_small(path, self._uri(path))
            if back != body:
                raise StorageError(f"{self._uri(path)} read back other bytes than were written")
        finally:
            self._call(lambda: self.fs.rm_file(path), f"could not delete {self._uri(path)}")
            self.fs.invalidate_cache(path)


# the filesystems, with credentials from each SDK's standard chain --------------------------------------------


def filesystem(kind: str, *, env: Mapping[str, str], endpoint_url: str | None = None) -> Any:
    """The fsspec filesystem of a destination kind. `env` is the environment the caller read (the process's);
    each SDK's own chain takes its credentials from there and from its usual files, never from our settings."""
    try:
        return _FILESYSTEMS[kind](env, endpoint_url)
    except StorageError:
        raise
    except Exception as exc:  # no credentials, a malformed connection string, ...
        raise StorageError(f"cannot connect to {kind}: {type(exc).__name__}: {exc}") from exc


def _gcs(env: Mapping[str, str], endpoint_url: str | None) -> Any:
    import gcsfs

    emulator = env.get("STORAGE_EMULATOR_HOST")
    if emulator and not emulator.startswith(("http://", "https://")):
        emulator = "http://" + emulator
    # application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server), or none at
    # all against an emulator, as google-cloud-storage does
    token = "anon" if emulator else "google_default"
    return gcsfs.GCSFileSystem(token=token, endpoint_url=endpoint_url or emulator or None)


def _azure(env: Mapping[str, str], endpoint_url: str | None) -> Any:
    import adlfs

    conn, account = env.get("AZURE_STORAGE_CONNECTION_STRING"), env.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not conn and not account:
        raise StorageError(
            "Azure Blob needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with a key, SAS "
            "token or Azure AD credential in the environment"
        )
    # with only an account name, adlfs reads AZURE_STORAGE_ACCOUNT_KEY / _SAS_TOKEN / _CLIENT_ID ... itself,
    # and falls back to DefaultAzureCredential
    return adlfs.AzureBlobFileSystem(connection_string=conn or None, account_name=account or None)


def _dropbox(env: Mapping[str, str], endpoint_url: str | None) -> Any:
    from dropboxdrivefs import DropboxDriveFileSystem

    if env.get("DROPBOX_TOKEN"):
        return DropboxDriveFileSystem(token=env["DROPBOX_TOKEN"])
    if env.get("DROPBOX_REFRESH_TOKEN") and env.get("DROPBOX_APP_KEY"):
        import dropbox

        client = dropbox.Dropbox(
            oauth2_refresh_token=env["DROPBOX_REFRESH_TOKEN"],
            app_key=env["DROPBOX_APP_KEY"],
            app_secret=env.get("DROPBOX_APP_SECRET"),
        )
        client.check_and_refresh_access_token()
        return DropboxDriveFileSystem(client=client)
    raise StorageError(
        "Dropbox needs DROPBOX_TOKEN, or DROPBOX_REFRESH_TOKEN with DROPBOX_APP_KEY (and DROPBOX_APP_SECRET), "
        "in the environment"
    )


def _gdrive(env: Mapping[str, str], endpoint_url: str | None) -> Any:
    from gdrive_fsspec import GoogleDriveFileSystem

    key_file = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not key_file:
        raise StorageError("Google Drive needs a service account's JSON key file in GOOGLE_APPLICATION_CREDENTIALS")
    return GoogleDriveFileSystem(token="service_account", creds=key_file)


_FILESYSTEMS = {"gcs": _gcs, "azure": _azure, "dropbox": _dropbox, "gdrive": _gdrive}


def open_store(
    kind: str, root: str, *, env: Mapping[str, str], endpoint_url: str | None = None, **options: Any
) -> FsspecStore:
    """The store of a GCS, Azure, Dropbox or Drive destination (`options` go to `FsspecStore`)."""
    return FsspecStore(filesystem(kind, env=env, endpoint_url=endpoint_url), root, kind=kind, **options)
