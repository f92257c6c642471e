"""Signed webhooks: the summary JSON of a delivered, failed or canceled export POSTed to the URLs in
`VEXPORT_WEBHOOKS`, signed with HMAC-SHA256 so a receiver can tell it came from this deployment:

    X-Vexport-Signature: sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>
    X-Vexport-Timestamp: <unix seconds>     (a receiver refuses old ones: no replays)
    X-Vexport-Event: export.delivered | export.failed | export.canceled

Only configured URLs are ever called (never one from a manifest); each delivery is retried with
exponential backoff and jitter on connection errors and 5xx answers, not on 4xx."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger("vexport")
EVENTS = ("export.delivered", "export.failed", "export.canceled")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str, *, max_age_s: float = 300) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= max_age_s
    return fresh and hmac.compare_digest(signature(secret, timestamp, body), header)


@dataclass(frozen=True)
class Sent:
    url: str
    status: int | None  # the last HTTP status, None when it never connected
    attempts: int
    ok: bool


def post(url: str, event: str, payload: dict, secret: str, *, attempts: int = 4, backoff_s: float = 1.0,
         timeout_s: float = 10.0) -> Sent:  # fmt: skip
    """POST one signed event, retried (1 s, 2 s, 4 s, with jitter) while the receiver fails or is away."""
    body = json.dumps(payload, sort_keys=True).encode()
    status = None
    for attempt in range(1, attempts + 1):
        stamp = str(int(time.time()))
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "content-type": "application/json",
                "user-agent": "vexport-webhook/1",
                "x-vexport-event": event,
                "x-vexport-timestamp": stamp,
                "x-vexport-signature": signature(secret, stamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # only configured URLs
                return Sent(url, response.status, attempt, True)
        except urllib.error.HTTPError as exc:
            status = exc.code
            if exc.code < 500 and exc.code != 429:
                return Sent(url, status, attempt, False)  # the receiver refused it: retrying will not help
        except (urllib.error.URLError, OSError) as exc:
            log.warning("webhook %s: %s (attempt %d)", url, exc, attempt)
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
    return Sent(url, status, attempts, False)
