"""Who may download through a link, decided from the link's row and the client: pure rules the gateway
applies (and tests check) without HTTP. Refusals are small: a status and a reason a person can read."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

from .events import LinkRow

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Refusal:
    status: int  # 403 not for you, 404 unknown, 410 no longer, 429 not now
    reason: str


def networks(cidrs: list[str] | tuple[str, ...], where: str = "allow_ips") -> tuple[Network, ...]:
    """CIDR strings as networks (a bare address is a /32 or /128); ValueError names the bad one."""
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{where}: {c!r} is not an IP address or CIDR network") from None
    return tuple(out)


def address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as the IPv4 it is, `[...]` brackets and a `%zone`
    dropped, or None if it is not one."""
    text = ip.strip() if isinstance(ip, str) else ""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        a = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the nearest address in
    `X-Forwarded-For` (read from the right) that is not itself a trusted proxy. A client cannot spoof it
    by sending its own header: an untrusted peer's header is ignored."""
    current = address(peer)
    if current is None:
        return ""
    hops = [h for h in (forwarded_for or "").split(",") if h.strip()][-20:]
    while _in(current, trusted) and hops:
        nxt = address(hops.pop())
        if nxt is None:
            break
        current = nxt
    return str(current)


def _in(a, nets: tuple[Network, ...]) -> bool:
    return any(a.version == n.version and a in n for n in nets)


def refuse(link: LinkRow, client_ip: str, country: str, now: float | None = None) -> Refusal | None:
    """Why this client may not use this link now, or None. Limits on downloads are decided when a
    download starts (the event store reserves the slot), not here."""
    if link.revoked:
        return Refusal(410, "this link was revoked")
    if (now or time.time()) > link.expires_at:
        return Refusal(410, "this link has expired")
    if link.allow_ips:
        a = address(client_ip)
        if a is None or not _in(a, networks(link.allow_ips)):
            return Refusal(403, "this link cannot be used from your address")
    if link.countries and country.upper() not in link.countries:
        return Refusal(403, "this link cannot be used from your country")
    return None


def inside(path: Path, roots: tuple[Path, ...]) -> Path | None:
    """`path` resolved, if it is a regular file inside one of the store roots (never anything else)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_file() or not any(real.is_relative_to(r.resolve()) for r in roots):
        return None
    return real
