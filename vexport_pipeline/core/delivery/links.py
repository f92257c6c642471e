"""Signed, expiring download links: a row in the event store plus a tamper-proof token naming it.

Tokens are signed with a key ring (itsdangerous): the newest key signs, every key verifies, so a key can
be rotated without breaking live links; dropping an old key from the ring invalidates what it signed.
The token only names the link and its expiry; everything else (revocation, download limits, addresses)
is decided from the link's row at request time, so a link can be revoked one by one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, URLSafeSerializer

from .events import EventStore, LinkRow

MAX_TOKEN = 512  # longer is not one of ours: refused before any signature work


@dataclass(frozen=True)
class Link:
    id: str
    url: str
    expires_at: str  # ISO 8601 UTC

    def to_dict(self) -> dict:
        return {"id": self.id, "url": self.url, "expires_at": self.expires_at}


class LinkSigner:
    """Signed link tokens: the link id and its expiry, tamper-proof. `keys`: oldest first, newest signs."""

    def __init__(self, keys: str | Sequence[str]):
        ring = [keys] if isinstance(keys, str) else [k for k in keys if k]
        if not ring:
            raise ValueError("a link signer needs at least one key")
        self._s = URLSafeSerializer(ring, salt="vexport-download-link")

    def sign(self, link_id: str, expires_at: float) -> str:
        return self._s.dumps({"l": link_id, "e": int(expires_at)})

    def verify(self, token: str, now: float | None = None) -> str:
        """The link id, or ValueError('forged' | 'expired')."""
        if len(token) > MAX_TOKEN:
            raise ValueError("forged")
        try:
            data = self._s.loads(token)
            link_id, expires = str(data["l"]), float(data["e"])
        except (BadSignature, KeyError, TypeError, ValueError):
            raise ValueError("forged") from None
        if (now or time.time()) > expires:
            raise ValueError("expired")
        return link_id


@dataclass(frozen=True)
class LinkPolicy:
    """How long a link lives and who may use it (the composition's `delivery` block, or `links create`)."""

    ttl_s: int
    max_downloads: int | None = None
    allow_ips: tuple[str, ...] = ()
    one_time: bool = False
    countries: tuple[str, ...] = ()
    max_concurrent: int | None = None
    max_rate: int | None = None  # bytes a second per download


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mint(
    events: EventStore,
    signer: LinkSigner,
    base_url: str,
    *,
    export_id: str,
    version: str,
    rendition: str,
    path: str,
    policy: LinkPolicy,
    destination: str = "default",
) -> Link:
    """Record a link to one delivered object (the copy in `destination`) and sign it."""
    now = time.time()
    row = LinkRow(
        uuid.uuid4().hex,
        export_id,
        version,
        rendition,
        path,
        now,
        now + policy.ttl_s,
        policy.max_downloads,
        policy.allow_ips,
        one_time=policy.one_time,
        countries=policy.countries,
        destination=destination,
        max_concurrent=policy.max_concurrent,
        max_rate=policy.max_rate,
    )
    events.add_link(row)
    return Link(row.id, url_for(signer, base_url, row), iso(row.expires_at))


def url_for(signer: LinkSigner, base_url: str, row: LinkRow) -> str:
    return f"{base_url.rstrip('/')}/d/{signer.sign(row.id, row.expires_at)}"


def for_export(store, events: EventStore, signer: LinkSigner, base_url: str, export_id: str, *,
               rendition: str | None, bundle: bool, policy: LinkPolicy, destination: str = "default",
               ) -> tuple[Link, LinkRow]:  # fmt: skip
    """A new link to one file of an export's delivered (current) version: `rendition` by its delivered
    file name or target name, or the ZIP bundle. Refused (InputError) when there is no such file."""
    import json

    from vexport_pipeline.core.errors import InputError

    from .publish import SUMMARY

    v = store.current(export_id)
    data = store.read_record(v, SUMMARY) if v else None
    if not data:
        raise InputError("has no delivered version", where=export_id, code="not_delivered")
    summary = json.loads(data)
    files = {_name(r): r for r in summary.get("renditions", [])}
    bundles = {_name(b): b for b in summary.get("bundles", [])}
    if bundle:
        if not bundles:
            raise InputError("was delivered without a ZIP bundle", where=export_id, code="no_bundle")
        name = next(iter(bundles))
    elif rendition:
        by_target = [
            n for n, r in files.items() if rendition in (r.get("target"), f"{r.get('clip_id')}/{r.get('target')}")
        ]
        name = rendition if rendition in files else by_target[0] if len(by_target) == 1 else None
        if name is None:
            raise InputError(f"no rendition {rendition!r}; one of: {', '.join(files)}", where="--rendition")
    elif len(files) == 1:
        name = next(iter(files))
    else:
        raise InputError(f"name one with --rendition ({', '.join(files)}) or --bundle", where=export_id)
    where = store.local_path(v, name)
    link = mint(events, signer, base_url, export_id=export_id, version=v.version, rendition=name,
                path=str(where) if where else store.url(v, name), policy=policy, destination=destination)  # fmt: skip
    return link, events.link(link.id)


def _name(item: dict) -> str:
    from pathlib import PurePosixPath

    return PurePosixPath(item.get("path") or item.get("uri") or "").name
