"""`source: s3://bucket/key`: fetched into the cache before anything else reads it, then treated as any
local source (probed, checked, refused the same way). Only buckets (and prefixes) of destinations marked
`sources: true` in VEXPORT_DESTINATIONS may be read, so a manifest cannot make vexport fetch anything
else. The download is ranged and parallel (boto3's transfer manager), capped in size before it starts,
and verified against the store's full-object checksum (CRC64NVME) or, for single-part objects without
one, the MD5 in the ETag; a copy already in the cache for the same object version is reused."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path, PurePosixPath

from vexport_pipeline.core.errors import InputError, StorageError

MAX_SOURCE_BYTES = 200 * 1024**3  # 200 GiB: a whole-day 4K master, not a disk filler
SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


def parse(uri: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://` URI, refusing empty, `.`/`..` or over-long keys."""
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    parts = key.split("/")
    if not bucket or not key or len(key) > 1024 or any(p in ("", ".", "..") for p in parts) or "\0" in key:
        raise InputError(f"{uri[:200]!r} is not s3://bucket/key", where="source", code="source_not_allowed")
    return bucket, key


def allowing(dests: dict, bucket: str, key: str):
    """The destination whose bucket and prefix allow reading this object as a source, if one does."""
    for d in dests.values():
        inside = not d.prefix or key.startswith(d.prefix.rstrip("/") + "/")
        if d.kind == "s3" and d.sources and d.bucket == bucket and inside:
            return d
    return None


def fetch(uri: str, dests: dict, cache: Path, max_bytes: int = MAX_SOURCE_BYTES) -> Path:
    """The object as a local file in `cache` (downloaded and verified once per object version)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse(uri)
    dest = allowing(dests, bucket, key)
    if dest is None:
        raise InputError(
            f"{uri[:200]!r} is not under a destination that allows sources (set `sources: true` on it in"
            " VEXPORT_DESTINATIONS)",
            where="source",
            code="source_not_allowed",
        )
    client = dest.store().client
    try:
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        missing = exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
        if missing:
            raise InputError(f"{uri} does not exist", where="source", code="source_missing") from None
        raise StorageError(f"could not read {uri}: {exc}", where="source") from exc
    except BotoCoreError as exc:
        raise StorageError(f"could not reach {uri}: {exc}", where="source") from exc
    size = head["ContentLength"]
    if size > max_bytes:
        raise InputError(
            f"{uri} is {size / 1e9:.1f} GB, over the {max_bytes / 1e9:.0f} GB a source may be",
            where="source",
            code="source_too_big",
        )
    tag = hashlib.sha256(f"{bucket}/{key}\0{head.get('ETag')}\0{size}".encode()).hexdigest()[:32]
    suffix = PurePosixPath(key).suffix
    target = cache / "s3" / tag / ("source" + (suffix.lower() if SAFE_SUFFIX.fullmatch(suffix) else ""))
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}")
    try:
        _download(client, bucket, key, tmp, uri)
        _verify(tmp, head, size, uri)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _download(client, bucket: str, key: str, tmp: Path, uri: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from vexport_pipeline.core.delivery.s3store import VIDEO_TRANSFER

    try:
        client.download_file(bucket, key, str(tmp), Config=VIDEO_TRANSFER)
    except (BotoCoreError, ClientError, OSError) as exc:
        raise StorageError(f"could not download {uri}: {exc}", where="source") from exc


def _verify(path: Path, head: dict, size: int, uri: str) -> None:
    from vexport_pipeline.core.delivery.s3store import crc64nvme_file

    got = path.stat().st_size
    if got != size:
        raise StorageError(f"{uri}: downloaded {got} bytes, the store says {size}", where="source")
    crc, etag = head.get("ChecksumCRC64NVME"), (head.get("ETag") or "").strip('"')
    if crc and (head.get("ChecksumType") or "FULL_OBJECT") == "FULL_OBJECT":
        mine = crc64nvme_file(path)
        if mine != crc:
            raise StorageError(f"{uri}: downloaded bytes have CRC64NVME {mine}, the store says {crc}", where="source")
    elif re.fullmatch(r"[0-9a-f]{32}", etag) and not head.get("SSEKMSKeyId"):
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            while block := f.read(8 << 20):
                md5.update(block)
        if md5.hexdigest() != etag:
            raise StorageError(
                f"{uri}: downloaded bytes have MD5 {md5.hexdigest()}, the ETag says {etag}", where="source"
            )
