"""The S3 (and S3-compatible: MinIO, R2, moto) delivery store.

Layout: `<prefix>/<export>/<version>/<files>` and a small pointer object `<prefix>/<export>/current`
(`{"version": ...}`) written last by `commit`. A version's objects are uploaded as they are `put`, but
nothing reads them until the pointer names that version, so a reader never sees a partial version; a
failed delivery is deleted whole (objects and unfinished multipart uploads) and the pointer is untouched.

Every file carries a full-object CRC64NVME checksum, computed from the local file, sent with the upload
(S3 refuses the object if its bytes differ) and compared afterwards with what the store reports
(`head_object(ChecksumMode="ENABLED")`); `commit` checks every object again before the pointer moves.
Credentials come only from boto3's standard chain (environment, profiles, instance roles).
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from awscrt import checksums as crt_checksums
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from vexport_pipeline.core.errors import StorageError

from .stores import ChecksumMismatch, ObjectInfo, ObjectStore, Version, _check_name

log = logging.getLogger("vexport.delivery")

MiB = 1024 * 1024
ALGORITHM = "CRC64NVME"

# Video files are hundreds of MiB to many GiB. 64 MiB parts keep a 600 GiB file under S3's 10,000-part
# limit (s3transfer grows the part size beyond that), make few requests per file, and bound what a dropped
# connection costs: botocore retries one part, not the file. Files below 64 MiB go in one PUT. Eight
# parts in flight fill a multi-gigabit link from one process; parts are read from disk as they are sent,
# so memory stays small. "classic" keeps s3transfer's own threads (the CRT client is picked only on some
# EC2 instance types and handles custom endpoints and checksums differently).
VIDEO_TRANSFER = TransferConfig(
    multipart_threshold=64 * MiB,
    multipart_chunksize=64 * MiB,
    max_concurrency=8,
    preferred_transfer_client="classic",
)

# botocore's own retries (per request, adaptive client-side rate limiting on throttling); SigV4 always,
# also for presigned URLs, which botocore would otherwise still sign with SigV2 for S3.
CLIENT_CONFIG = Config(signature_version="s3v4", retries={"max_attempts": 10, "mode": "adaptive"})

# A whole object that failed (a checksum mismatch, a dropped connection after botocore's retries, a
# digest refused by S3) is uploaded again from the start, this many times in all, with backoff.
OBJECT_ATTEMPTS = 3
RETRY_CODES = {
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "RequestTimeout",
    "InternalError",
    "SlowDown",
    "ServiceUnavailable",
}
SSE_MODES = ("AES256", "aws:kms")


def crc64nvme_file(path: Path, chunk: int = 8 * MiB) -> str:
    """The CRC64NVME of a file, base64 of its 8 big-endian bytes (as S3 reports `ChecksumCRC64NVME`)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = crt_checksums.crc64nvme(block, crc)
    return base64.b64encode(crc.to_bytes(8, "big")).decode()


def compare_checksum(expected: str, head: dict[str, Any], size: int | None = None) -> None:
    """Raise `ChecksumMismatch` unless `head` (a `head_object(ChecksumMode="ENABLED")` response) reports a
    full-object CRC64NVME equal to `expected` (and, when given, the same size); a store that reports no
    CRC64NVME at all cannot be verified and is a `StorageError`."""
    got = head.get("ChecksumCRC64NVME")
    if not got:
        raise StorageError("the store reports no CRC64NVME checksum for the object, so it cannot be verified")
    kind = head.get("ChecksumType") or "FULL_OBJECT"  # single PUTs may omit it; they are full-object
    if kind != "FULL_OBJECT" or "-" in got:
        raise ChecksumMismatch(f"the store reports a {kind} checksum {got}, not a full-object one")
    if got != expected:
        raise ChecksumMismatch(f"the store reports CRC64NVME {got}, the local file has {expected}")
    if size is not None and head.get("ContentLength") not in (None, size):
        raise ChecksumMismatch(f"the store holds {head.get('ContentLength')} bytes, the local file has {size}")


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ClientError anywhere in the exception's chain (boto3 wraps upload errors)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return "InternalError" if status >= 500 and err.get("Code") not in RETRY_CODES else err.get("Code")
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def retryable(exc: BaseException) -> bool:
    """Whether uploading the whole object again may succeed."""
    if isinstance(exc, ChecksumMismatch | BotoConnectionError | HTTPClientError):
        return True
    return _error_code(exc) in RETRY_CODES


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3Store(ObjectStore):
    """A delivery store in an S3 bucket under `prefix`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        storage_class: str | None = None,
        sse: str | None = None,
        kms_key_id: str | None = None,
        transfer: TransferConfig | None = None,
        attempts: int = OBJECT_ATTEMPTS,
        backoff: float = 1.0,
        client: Any = None,
    ):
        if sse not in (None, *SSE_MODES):
            raise StorageError(f"sse must be one of {', '.join(SSE_MODES)}, not {sse!r}", where=f"s3://{bucket}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.storage_class = storage_class
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.transfer = transfer or VIDEO_TRANSFER
        self.attempts = max(1, attempts)
        self.backoff = backoff
        # with a custom endpoint (MinIO, R2, moto) path-style addressing works everywhere; AWS picks its own
        config = CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"})) if endpoint_url else CLIENT_CONFIG
        self.client = client or boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self.checksums: dict[tuple[Version, str], str] = {}  # verified "crc64nvme:<base64>" of every put
        self._staged: dict[Version, dict[str, tuple[str, int]]] = {}  # name -> (checksum, size)

    # keys ---------------------------------------------------------------------------------------------

    def _base(self, export_id: str) -> str:
        _check_name(export_id, export_id)
        return f"{self.prefix}/{export_id}" if self.prefix else export_id

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _sse_args(self) -> dict[str, str]:
        args = {"ServerSideEncryption": self.sse} if self.sse else {}
        if self.sse == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def upload_args(self, name: str, checksum: str) -> dict[str, str]:
        """`ExtraArgs` of one file's upload: its full-object checksum (s3transfer sends it with a single PUT,
        or makes a multipart upload of type FULL_OBJECT and sends it on completion), class, encryption."""
        args = {"ChecksumAlgorithm": ALGORITHM, "ChecksumCRC64NVME": checksum, **self._sse_args()}
        args["ContentType"] = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        return args

    # the Store interface ------------------------------------------------------------------------------

    def begin(self, export_id: str) -> Version:
        v = Version(export_id, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6])
        self.version_prefix(v)
        self._staged[v] = {}
        return v

    def put(self, v: Version, name: str, src: Path) -> str:
        """Upload one file of an uncommitted version and verify it; returns its "crc64nvme:<base64>"."""
        key = self.key(v, name)
        for attempt in range(1, self.attempts + 1):
            try:
                checksum, size = self._upload_once(Path(src), key)
                break
            except (ChecksumMismatch, StorageError, BotoCoreError, ClientError, Boto3Error, OSError) as exc:
                if isinstance(exc, StorageError) or not retryable(exc) or attempt == self.attempts:
                    raise self._failure(exc, f"could not upload {name} to {self._uri(key)}", v, attempt) from exc
                time.sleep(self.backoff * 2 ** (attempt - 1))
        self._staged.setdefault(v, {})[name] = (checksum, size)
        self.checksums[(v, name)] = f"crc64nvme:{checksum}"
        return self.checksums[(v, name)]

    def _failure(self, exc: BaseException, what: str, v: Version, attempt: int) -> StorageError:
        if isinstance(exc, StorageError):
            return StorageError(f"{what}: {exc.message}", where=v.export_id)
        tries = f" (after {attempt} attempts)" if attempt > 1 else ""
        return StorageError(f"{what}{tries}: {exc}", where=v.export_id)

    def _upload_once(self, src: Path, key: str) -> tuple[str, int]:
        try:
            checksum, size = crc64nvme_file(src), src.stat().st_size
        except OSError as exc:  # a missing or unreadable local file: uploading again cannot help
            raise StorageError(f"cannot read {src}: {exc.strerror or exc}") from exc
        self.client.upload_file(
            str(src),
            self.bucket,
            key,
            ExtraArgs=self.upload_args(key.rsplit("/", 1)[-1], checksum),
            Config=self.transfer,
        )
        try:
            compare_checksum(checksum, self._head_raw(key), size)
        except (ChecksumMismatch, StorageError):
            self._delete_quietly(key)
            raise
        return checksum, size

    def _head_raw(self, key: str) -> dict[str, Any]:
        return self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")

    def commit(self, v: Version) -> None:
        """Check every uploaded object again (present, same size, same checksum), then move the pointer."""
        try:
            for name, (checksum, size) in sorted(self._staged.get(v, {}).items()):
                key = self.key(v, name)
                try:
                    compare_checksum(checksum, self._head_raw(key), size)
                except ClientError as exc:
                    what = "is missing" if _is_missing(exc) else f"cannot be checked: {exc}"
                    raise StorageError(f"{self._uri(key)} {what}", where=v.export_id) from exc
                except (ChecksumMismatch, StorageError) as exc:
                    raise StorageError(f"{self._uri(key)} changed after upload: {exc}", where=v.export_id) from exc
            self._put_small(self._pointer(v.export_id), json.dumps({"version": v.version}).encode())
        except (StorageError, BotoCoreError, ClientError) as exc:
            self.abort(v)
            if isinstance(exc, StorageError):
                raise
            pointer = self._uri(self._pointer(v.export_id))
            raise StorageError(f"could not publish {pointer}: {exc}", where=v.export_id) from exc
        self._staged.pop(v, None)

    def abort(self, v: Version) -> None:
        """Delete every object under the version's prefix and abort its unfinished multipart uploads.
        Best effort, as `LocalStore.abort`: what a failed abort leaves is never visible (no pointer names it)."""
        self._staged.pop(v, None)
        prefix = self.version_prefix(v)
        try:
            self._abort_uploads(prefix)
            self._delete_prefix(prefix)
        except (BotoCoreError, ClientError) as exc:  # the caller is already reporting the failure that led here
            log.warning("could not clean up %s: %s", self._uri(prefix), exc)

    def _abort_uploads(self, prefix: str) -> None:
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
            for up in page.get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])

    def _delete_prefix(self, prefix: str) -> None:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:  # a page holds at most 1000 keys, DeleteObjects' limit
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def _delete_quietly(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError):
            pass

    def local_path(self, v: Version, name: str) -> Path | None:
        return None

    # small objects ------------------------------------------------------------------------------------

    def _put_small(self, key: str, data: bytes, where: str | None = None) -> None:
        """One PUT: S3 makes an object visible whole or not at all."""
        content_type = mimetypes.guess_type(key)[0] or "application/json"  # the pointer and the summary: JSON
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                ChecksumAlgorithm=ALGORITHM,
                **self._sse_args(),
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not write {self._uri(key)}: {exc}", where=where) from exc

    def _get_small(self, key: str, where: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise StorageError(f"could not read {self._uri(key)}: {exc}", where=where) from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not read {self._uri(key)}: {exc}", where=where) from exc

    # for a download gateway ---------------------------------------------------------------------------

    def presign(self, v: Version, name: str, seconds: int = 60, *, content_disposition: str | None = None) -> str:
        """A SigV4 presigned GET URL of a delivered object, valid `seconds`."""
        params = {"Bucket": self.bucket, "Key": self.key(v, name)}
        if content_disposition:
            params["ResponseContentDisposition"] = content_disposition
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(seconds))

    def head(self, v: Version, name: str) -> ObjectInfo | None:
        """Size, ETag and verified checksum of a delivered object, or None if it is not there."""
        key = self.key(v, name)
        try:
            h = self._head_raw(key)
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and _is_missing(exc):
                return None
            raise StorageError(f"could not read {self._uri(key)}: {exc}", where=v.export_id) from exc
        crc = h.get("ChecksumCRC64NVME")
        return ObjectInfo(key, h["ContentLength"], h["ETag"], crc and f"crc64nvme:{crc}", h.get("ContentType"))

    def open_range(self, v: Version, name: str, start: int | None = None, end: int | None = None) -> Any:
        """A stream of the object's bytes `start..end` (inclusive, as HTTP ranges), or all of it; `.read()`,
        `.iter_chunks()` and `.close()` as botocore's StreamingBody."""
        key = self.key(v, name)
        ranged = start is not None or end is not None
        extra = {"Range": f"bytes={start or 0}-{'' if end is None else end}"} if ranged else {}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not read {self._uri(key)}: {exc}", where=v.export_id) from exc

    def probe(self) -> None:
        """Write, read back and delete a small object under the prefix; a StorageError says what failed."""
        key = (f"{self.prefix}/" if self.prefix else "") + f".vexport-probe-{uuid.uuid4().hex}"
        body = uuid.uuid4().bytes
        self._put_small(key, body)
        try:
            back = self._get_small(key, self._uri(key))
            if back != body:
                raise StorageError(f"{self._uri(key)} read back other bytes than were written")
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (BotoCoreError, ClientError) as exc:
                raise StorageError(f"could not delete {self._uri(key)}: {exc}") from exc
