"""Who is downloading: a request's user agent as browser / OS / device class (ua-parser), and its
client address as a country (iptocc's offline table of Regional Internet Registry allocations).

Nothing here raises on what a client sends: the gateway records every request, however odd its
headers. Device classes a person reads in the metrics:

- ``desktop``: a browser on Windows, macOS, Linux, ChromeOS or a BSD (an iPad asking for the
  desktop site says "Macintosh" and counts here: its user agent cannot tell them apart);
- ``mobile``: phones (iOS, Android phones, Windows Phone, feature phones);
- ``tablet``: iPads, Android and other tablets as ua-parser recognises them;
- ``bot``: crawlers and link-preview fetchers (ua-parser's ``Spider`` device: Googlebot, bingbot,
  Slackbot, WhatsApp, facebookexternalhit, ...) and headless browsers;
- ``tool``: command-line and library HTTP clients (curl, Wget, python-requests, httpx, aiohttp,
  urllib, Go, okhttp, Java, HTTPie, aria2, PowerShell, ...): usually a person or a script fetching
  the file on purpose, so kept apart from crawlers rather than counted as ``bot``;
- ``other``: everything else, including empty or unreadable user agents, TVs and consoles.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import NamedTuple

import iptocc
import ua_parser

MAX_USER_AGENT = 1024  # longer headers are truncated before parsing: real ones are a few hundred bytes
UNKNOWN = "Other"  # ua-parser's own name for a family it does not know
DEVICE_CLASSES = ("desktop", "mobile", "tablet", "bot", "tool", "other")

# HTTP client libraries and command-line tools, matched on ua-parser's browser family and on the start
# of the raw header (ua-parser knows curl or python-requests, not python-httpx or node-fetch)
_TOOL = re.compile(
    r"^(curl|wget|python[- ]|httpx|aiohttp|httpie|aria2|axios|node-fetch|undici|go-http-client|okhttp"
    r"|libwww-perl|java\b|java/|windowspowershell|powershell|apache-httpclient)",
    re.IGNORECASE,
)
_HEADLESS = re.compile(r"headless|phantomjs", re.IGNORECASE)
_MOBILE_OS = {"ios", "android", "windows phone", "kaios", "blackberry os", "symbian os", "firefox os"}
_DESKTOP_OS = {"windows", "mac os x", "macos", "linux", "chrome os", "chromeos", "freebsd", "openbsd", "netbsd"}
_LINUX_DISTROS = {"ubuntu", "debian", "fedora", "red hat", "suse", "opensuse", "arch linux", "linux mint", "gentoo"}


class Client(NamedTuple):
    """A user agent as a person reads it: browser and OS families ("Other" when unknown), device class."""

    browser: str
    os: str
    device: str


OTHER = Client(UNKNOWN, UNKNOWN, "other")


def _device_class(ua: str, browser: str, os_family: str, device: ua_parser.Device | None) -> str:
    if _TOOL.match(browser) or _TOOL.match(ua):
        return "tool"
    family = (device.family if device else "") or ""
    if family == "Spider" or _HEADLESS.search(browser):
        return "bot"
    names = f"{family} {device.brand or ''} {device.model or ''}".lower() if device else ""
    if "tablet" in names or family.startswith("iPad") or "kindle" in names:
        return "tablet"
    os_lower = os_family.lower()
    if (
        os_lower in _MOBILE_OS
        or family.startswith(("iPhone", "iPod"))
        or "smartphone" in names
        or "feature phone" in names
    ):
        return "mobile"
    if os_lower in _DESKTOP_OS or os_lower in _LINUX_DISTROS or os_lower.startswith("windows") or family == "Mac":
        return "desktop"
    return "other"


@lru_cache(maxsize=4096)
def _describe(ua: str) -> Client:
    result = ua_parser.parse(ua)  # the global parser: the fastest resolver installed, with its own cache
    browser = (result.user_agent.family if result.user_agent else None) or UNKNOWN
    os_family = (result.os.family if result.os else None) or UNKNOWN
    return Client(browser, os_family, _device_class(ua, browser, os_family, result.device))


def describe(user_agent: str | None) -> Client:
    """Browser family, OS family and device class of a User-Agent header. Headers over 1 KiB are cut
    to their first 1 KiB; empty, missing or unreadable ones give ``Client("Other", "Other", "other")``."""
    if not isinstance(user_agent, str):
        return OTHER
    ua = user_agent[:MAX_USER_AGENT].strip()
    if not ua:
        return OTHER
    try:
        return _describe(ua)
    except Exception:  # a header is client input: a parser surprise must not cost the request its record
        return OTHER


def normalise_ip(ip: str | None) -> str:
    """The canonical text of an address (IPv6 compressed, lower case), with IPv4-mapped IPv6
    (``::ffff:1.2.3.4``) turned into the IPv4 address and ``[...]`` brackets removed; "" when the
    text is not an IP address at all. Use it before matching ``allow_ips`` networks."""
    from .access import address

    a = address(ip)
    return str(a) if a is not None else ""


@lru_cache(maxsize=65536)
def country(ip: str | None) -> str:
    """ISO 3166-1 alpha-2 code of the country an address is registered to (offline, from RIR
    allocation data: where a block is assigned, not necessarily where it is used); "" for private,
    loopback, link-local, reserved or invalid addresses and for addresses no registry lists."""
    text = normalise_ip(ip)
    if not text:
        return ""
    if not ipaddress.ip_address(text).is_global:
        return ""
    try:
        code = iptocc.country_code(text)
    except Exception:  # the table is compiled in; still, a lookup never breaks a request
        return ""
    return code.upper() if code else ""
