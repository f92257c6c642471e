"""The archive tier of delivered versions in S3: the object-store half of the retention job.

A version's media objects (`<prefix>/<export>/<version>/<file>`) move between storage classes in place (a copy
onto the same key with another `StorageClass`; s3transfer's managed copy, so objects over 5 GiB are copied in
parts), and each copy is checked against the CRC64NVME the delivery recorded. The version's JSON records (the
summary, the validation report) stay in the standard class and are never deleted: they are the record. What
retention did to a version is written beside them in `retention.json` (`archived_at` and the class,
`deleted_at`, `restored_at`).

- `archive`: the media to the destination's `archive_class` (GLACIER_IR by default: milliseconds to read,
  90 days minimum storage; GLACIER and DEEP_ARCHIVE cost less and need a restore). The export's `current`
  pointer is removed if it names the version, as for the local archive.
- `delete`: the media objects go; the records and `retention.json` stay.
- `restore`: GLACIER_IR comes straight back to the standard class. GLACIER and DEEP_ARCHIVE need
  `restore_object` first (hours on AWS: 3-5 h Standard for GLACIER, 12 h for DEEP_ARCHIVE), so the first
  call asks for it and says so, and a later call, once S3 reports the temporary copies ready, copies them back
  to the standard class. The pointer is put back when the export has none.

Minimum storage durations (30 days for the IA classes, 90 for GLACIER_IR and GLACIER, 180 for DEEP_ARCHIVE)
are charged even when a version is deleted or restored earlier; the reports say so.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from vexport_pipeline.core.errors import InputError, StorageError

from .destinations import ARCHIVE_CLASSES
from .s3store import ALGORITHM, S3Store, compare_checksum
from .stores import VERSION_ID, ChecksumMismatch, Version

NEEDS_RESTORE = ("GLACIER", "DEEP_ARCHIVE")
MIN_STORAGE_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30, "GLACIER_IR": 90, "GLACIER": 90, "DEEP_ARCHIVE": 180}
STATE = "retention.json"
RESTORE_DAYS = 7  # how long S3 keeps the temporary copy a restore makes; vexport copies it back long before
_RESTORED = re.compile(r'ongoing-request="false"')


@dataclass(frozen=True)
class StoredVersion:
    """One delivered version in the bucket: its media objects (key -> storage class), bytes, retention state."""

    version: Version
    media: dict[str, str]
    bytes: int
    state: dict = field(default_factory=dict)

    @property
    def archived(self) -> bool:
        return any(c in ARCHIVE_CLASSES for c in self.media.values())

    @property
    def deleted(self) -> bool:
        return "deleted_at" in self.state

    @property
    def archive_class(self) -> str | None:
        return next((c for c in self.media.values() if c in ARCHIVE_CLASSES), None)


def _fail(store: S3Store, what: str, key: str, exc: BaseException, where: str) -> StorageError:
    return StorageError(f"could not {what} {store._uri(key)}: {exc}", where=where)


def versions(store: S3Store, export_id: str | None = None) -> list[StoredVersion]:
    """Every version under the store's prefix, or of one export (pointers and stray keys ignored), with its media
    and state."""
    prefix = f"{store.prefix}/" if store.prefix else ""
    listed = f"{store._base(export_id)}/" if export_id else prefix
    found: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}
    try:
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=listed):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(prefix) :].split("/")
                if len(parts) == 3 and VERSION_ID.fullmatch(parts[1]) and parts[2]:
                    cls = obj.get("StorageClass") or "STANDARD"
                    found.setdefault((parts[0], parts[1]), {})[obj["Key"]] = (cls, obj["Size"])
    except (BotoCoreError, ClientError) as exc:
        raise _fail(store, "list", listed, exc, store._uri(listed)) from exc
    out = []
    for (export_id, version), objects in sorted(found.items()):
        v = Version(export_id, version)
        media = {k: c for k, (c, _) in objects.items() if not k.endswith(".json")}
        state = json.loads(store._get_small(store.key(v, STATE), export_id) or b"{}") if _has(objects, STATE) else {}
        out.append(StoredVersion(v, media, sum(size for k, (_, size) in objects.items() if k in media), state))
    return out


def find(store: S3Store, export_id: str, version: str) -> StoredVersion | None:
    """One version of one export (its prefix listed, not the bucket's)."""
    return next((sv for sv in versions(store, export_id) if sv.version.version == version), None)


def _has(objects: dict[str, Any], name: str) -> bool:
    return any(k.endswith("/" + name) for k in objects)


def _write_state(store: S3Store, v: Version, state: dict) -> None:
    store._put_small(store.key(v, STATE), json.dumps(state, sort_keys=True).encode(), v.export_id)


def _move(store: S3Store, key: str, storage_class: str, where: str) -> None:
    """Copy an object onto itself in `storage_class`, then check its bytes are still the ones delivered."""
    try:
        before = store.client.head_object(Bucket=store.bucket, Key=key, ChecksumMode="ENABLED")
        store.client.copy(
            {"Bucket": store.bucket, "Key": key},
            store.bucket,
            key,
            ExtraArgs={
                "StorageClass": storage_class,
                "MetadataDirective": "COPY",
                "ChecksumAlgorithm": ALGORITHM,
                **store._sse_args(),
            },
            Config=store.transfer,
        )
        after = store.client.head_object(Bucket=store.bucket, Key=key, ChecksumMode="ENABLED")
    except (BotoCoreError, ClientError) as exc:
        raise _fail(store, f"move to {storage_class}", key, exc, where) from exc
    if expected := before.get("ChecksumCRC64NVME"):
        try:
            compare_checksum(expected, after, before.get("ContentLength"))
        except (ChecksumMismatch, StorageError) as exc:
            raise StorageError(f"{store._uri(key)} changed in its move to {storage_class}: {exc}", where=where) from exc


def _drop_pointer(store: S3Store, v: Version) -> None:
    if store.current(v.export_id) == v:
        try:
            store.client.delete_object(Bucket=store.bucket, Key=store._pointer(v.export_id))
        except (BotoCoreError, ClientError) as exc:
            raise _fail(store, "remove", store._pointer(v.export_id), exc, v.export_id) from exc


def archive(store: S3Store, sv: StoredVersion, storage_class: str, now: float | None = None) -> None:
    """Move the version's media to `storage_class`; its records stay; `current` no longer names it."""
    if storage_class not in ARCHIVE_CLASSES:
        raise StorageError(f"{storage_class!r} is not an archive class ({', '.join(ARCHIVE_CLASSES)})")
    v = sv.version
    _drop_pointer(store, v)  # first: no reader is sent to an object on its way to a class it cannot read
    for key, cls in sorted(sv.media.items()):
        if cls != storage_class:
            _move(store, key, storage_class, v.export_id)
    state = {k: x for k, x in sv.state.items() if k != "restored_at"}
    _write_state(store, v, {**state, "archived_at": time.time() if now is None else now, "class": storage_class})


def delete(store: S3Store, sv: StoredVersion, now: float | None = None) -> None:
    """Delete the version's media objects; its records stay, with `deleted_at` in `retention.json`."""
    v = sv.version
    _drop_pointer(store, v)
    keys = sorted(sv.media)
    try:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            answer = store.client.delete_objects(Bucket=store.bucket, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                raise StorageError(f"S3 refused to delete {answer['Errors'][0].get('Key')}: {answer['Errors'][0]}")
    except (BotoCoreError, ClientError) as exc:
        raise _fail(store, "delete", store.version_prefix(v), exc, v.export_id) from exc
    _write_state(store, v, {**sv.state, "deleted_at": time.time() if now is None else now})


def restore(store: S3Store, sv: StoredVersion, days: int = RESTORE_DAYS) -> str:
    """Bring an archived version back to the standard class: "restored", or "requested" / "in progress" while
    S3 is still making the temporary copies of GLACIER or DEEP_ARCHIVE objects (run it again later)."""
    v = sv.version
    if sv.deleted or not sv.archived:
        why = "was deleted" if sv.deleted else "is not archived"
        raise InputError(
            f"{v.export_id} {v.version} {why} in {store._uri(store.version_prefix(v))}", code="not_archived"
        )
    waiting = []
    for key, cls in sorted(sv.media.items()):
        if cls in NEEDS_RESTORE and not _ready(store, key, days, v.export_id):
            waiting.append(key)
    if waiting:
        return "in progress" if sv.state.get("restore_requested_at") else _requested(store, sv)
    for key, cls in sorted(sv.media.items()):
        if cls in ARCHIVE_CLASSES:
            _move(store, key, store.storage_class or "STANDARD", v.export_id)
    state = {k: x for k, x in sv.state.items() if k not in ("archived_at", "class", "restore_requested_at")}
    _write_state(store, v, {**state, "restored_at": time.time()})
    if store.current(v.export_id) is None:
        store._put_small(store._pointer(v.export_id), json.dumps({"version": v.version}).encode(), v.export_id)
    return "restored"


def _requested(store: S3Store, sv: StoredVersion) -> str:
    _write_state(store, sv.version, {**sv.state, "restore_requested_at": time.time()})
    return "requested"


def _ready(store: S3Store, key: str, days: int, where: str) -> bool:
    """Whether S3 holds a restored copy of this object; asks for one (Standard retrieval) if none is under way."""
    try:
        restore_header = store.client.head_object(Bucket=store.bucket, Key=key).get("Restore") or ""
        if _RESTORED.search(restore_header):
            return True
        if not restore_header:
            request = {"Days": days, "GlacierJobParameters": {"Tier": "Standard"}}
            store.client.restore_object(Bucket=store.bucket, Key=key, RestoreRequest=request)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
            return False
        raise _fail(store, "restore", key, exc, where) from exc
    except BotoCoreError as exc:
        raise _fail(store, "restore", key, exc, where) from exc
    return False


def early_charge(sv: StoredVersion, now: float) -> str:
    """A note when deleting or restoring now is before the archive class's minimum storage duration."""
    cls, at = sv.state.get("class") or sv.archive_class, sv.state.get("archived_at")
    days = MIN_STORAGE_DAYS.get(cls or "")
    if not days or at is None or now - at >= days * 86400:
        return ""
    return f"; before {cls}'s {days}-day minimum storage: charged as stored {days} days"
