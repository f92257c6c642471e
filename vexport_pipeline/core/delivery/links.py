"""Signed, expiring download links: a row in the event store plus a tamper-proof token naming it."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, URLSafeSerializer

from .events import EventStore, LinkRow


@dataclass(frozen=True)
class Link:
    id: str
    url: str
    expires_at: str  # ISO 8601 UTC

    def to_dict(self) -> dict:
        return {"url": self.url, "expires_at": self.expires_at}


class LinkSigner:
    """Signed link tokens (itsdangerous): the link id and its expiry, tamper-proof."""

    def __init__(self, secret: str):
        self._s = URLSafeSerializer(secret, salt="vexport-download-link")

    def sign(self, link_id: str, expires_at: float) -> str:
        return self._s.dumps({"l": link_id, "e": int(expires_at)})

    def verify(self, token: str, now: float | None = None) -> str:
        """The link id, or ValueError if the token is forged or expired."""
        try:
            data = self._s.loads(token)
        except BadSignature:
            raise ValueError("invalid link signature") from None
        if (now or time.time()) > data["e"]:
            raise ValueError("link expired")
        return data["l"]


@dataclass(frozen=True)
class LinkPolicy:
    """How long a link lives and who may use it (from the composition's `delivery` block)."""

    ttl_s: int
    max_downloads: int | None = None
    allow_ips: tuple[str, ...] = ()


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
) -> Link:
    """Record a link to one delivered object and sign it."""
    now = time.time()
    row = LinkRow(uuid.uuid4().hex, export_id, version, rendition, path, now, now + policy.ttl_s)
    events.add_link(row, max_downloads=policy.max_downloads, allow_ips=list(policy.allow_ips))
    iso = datetime.fromtimestamp(row.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Link(row.id, f"{base_url.rstrip('/')}/d/{signer.sign(row.id, row.expires_at)}", iso)
