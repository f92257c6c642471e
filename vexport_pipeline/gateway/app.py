"""GET|HEAD /d/{token}: check the signed link, its row and the client, then serve the file with byte
ranges (Starlette's FileResponse: 206, multi-range, 416, If-Range), a strong ETag from the content's
SHA-256, If-None-Match, and `Content-Disposition: attachment` with the delivered name. Every request is
recorded; the bytes actually sent decide when a download counts (see `core/delivery/events.py`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from vexport_pipeline.core.delivery import access, clients
from vexport_pipeline.core.delivery.events import EventStore, LinkRow
from vexport_pipeline.core.delivery.events import Request as Event
from vexport_pipeline.core.delivery.links import LinkSigner
from vexport_pipeline.core.delivery.publish import SUMMARY
from vexport_pipeline.core.files import sha256_file

from .limits import RateLimiter

log = logging.getLogger("vexport.gateway")


@dataclass(frozen=True)
class Gateway:
    events: EventStore
    signer: LinkSigner
    roots: tuple[Path, ...]  # only files inside these are ever served
    trusted_proxies: tuple[access.Network, ...] = ()
    limiter: RateLimiter | None = None


def create_app(gw: Gateway) -> Starlette:
    async def download(request: Request) -> Response:
        try:
            return await _download(gw, request)
        except Exception:  # never a stack trace to the client
            log.exception("serving %s failed", request.url.path)
            return PlainTextResponse("internal error", status_code=500)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [Route("/d/{token}", download, methods=["GET", "HEAD"]), Route("/healthz", health)]
    return Starlette(routes=routes)


def _small(status: int, reason: str, **headers: str) -> Response:
    return PlainTextResponse(reason + "\n", status_code=status, headers={"cache-control": "no-store", **headers})


@dataclass
class _Client:
    ip: str
    country: str
    ua: clients.Client
    user_agent: str
    referrer: str


def _client(gw: Gateway, request: Request) -> _Client:
    peer = request.client.host if request.client else ""
    ip = access.client_address(peer, request.headers.get("x-forwarded-for"), gw.trusted_proxies)
    ua = request.headers.get("user-agent", "")[:1024]
    return _Client(ip, clients.country(ip), clients.describe(ua), ua, request.headers.get("referer", "")[:500])


async def _download(gw: Gateway, request: Request) -> Response:
    c = _client(gw, request)
    if gw.limiter and (wait := gw.limiter.wait(f"ip:{c.ip}")):
        return _small(429, "too many requests from your address", **{"retry-after": str(wait)})
    try:
        link_id = gw.signer.verify(request.path_params["token"])
    except ValueError as exc:
        return _small(410, "this link has expired") if str(exc) == "expired" else _small(403, "invalid link")
    link = await run_in_threadpool(gw.events.link, link_id)
    if link is None:
        return _small(404, "unknown link")

    def note(status: int, sent: int = 0, completed: bool = False) -> Event:
        return Event(
            link, request.method, status, sent, request.headers.get("range", ""), completed, c.ip, c.country,
            c.ua.browser, c.ua.os, c.ua.device, c.referrer, c.user_agent,
        )  # fmt: skip

    refusal = access.refuse(link, c.ip, c.country)
    if refusal is None and gw.limiter and (wait := gw.limiter.wait(f"link:{link.id}")):
        refusal = access.Refusal(429, "too many requests for this link")
    path = access.inside(Path(link.path), gw.roots) if refusal is None else None
    if refusal is None and path is None:
        refusal = access.Refusal(410, "this file is no longer available")
    if refusal:
        await run_in_threadpool(gw.events.record, note(refusal.status))
        extra = {"retry-after": "60"} if refusal.status == 429 else {}
        return _small(refusal.status, refusal.reason, **extra)
    return await _serve(gw, request, link, path, c, note)


async def _serve(gw: Gateway, request: Request, link: LinkRow, path: Path, c: _Client, note) -> Response:
    etag = await run_in_threadpool(_etag, path)
    headers = {"etag": etag, "cache-control": "private, max-age=0, must-revalidate"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        await run_in_threadpool(gw.events.record, note(304))
        return Response(status_code=304, headers=headers)
    size = path.stat().st_size
    ranges = _ranges(request, etag, size)
    if request.method == "GET" and ranges is not None:
        fresh = "range" not in request.headers
        state = await run_in_threadpool(gw.events.start_download, link, c.ip, etag, fresh=fresh)
        if state == "used_up":
            await run_in_threadpool(gw.events.record, note(410))
            return _small(410, "this link has been used up")
        if state == "busy":
            await run_in_threadpool(gw.events.record, note(429))
            return _small(429, "every download of this link is in progress; try again later", **{"retry-after": "60"})
    response = FileResponse(path, headers=headers, filename=link.rendition, content_disposition_type="attachment")
    return _Counted(response, gw, link, c, etag, ranges, size, note)


def _ranges(request: Request, etag: str, size: int) -> list[tuple[int, int]] | None:
    """The byte ranges this request will be served (None: it will be refused as malformed or unsatisfiable,
    which FileResponse answers itself). Starlette's own parser, so both agree."""
    header, if_range = request.headers.get("range"), request.headers.get("if-range")
    if header is None or (if_range is not None and if_range != etag):
        return [(0, size)]
    try:
        return FileResponse._parse_range_header(header, size) or [(0, size)]
    except Exception:  # MalformedRangeHeader / RangeNotSatisfiable: 400 / 416 from FileResponse
        return None


class _Counted(Response):
    """Serves `inner` and counts the body bytes that really left, then records the request and the ranges
    covered (only what was sent: an abandoned download covers only its part)."""

    def __init__(self, inner: FileResponse, gw, link, c, etag, ranges, size, note):
        self.inner, self.gw, self.link, self.c, self.etag = inner, gw, link, c, etag
        self.ranges, self.size, self.note = ranges, size, note
        self.background = None

    async def __call__(self, scope, receive, send) -> None:
        state = {"status": 0, "body": 0, "done": False, "recorded": False}

        async def record() -> None:
            state["recorded"] = True
            await run_in_threadpool(self._record, scope["method"], state)

        async def counting(message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["body"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if state["done"]:  # counted before the last bytes leave: a client that has them sees the count
                    await record()
            await send(message)

        try:
            await self.inner(scope, receive, counting)
        finally:
            if not state["recorded"]:  # the client went away mid-transfer: what was sent still covers its part
                await record()

    def _record(self, method: str, state: dict) -> None:
        status, sent, done = state["status"], state["body"], state["done"]
        covered: list[tuple[int, int]] = []
        if method == "GET" and status in (200, 206) and self.ranges:
            if status == 200:
                covered = [(0, sent)]
            elif len(self.ranges) == 1:
                covered = [(self.ranges[0][0], self.ranges[0][0] + sent)]
            elif done:
                covered = self.ranges
        completed = bool(covered) and self.gw.events.served(self.link, self.c.ip, self.etag, covered, self.size)
        self.gw.events.record(self.note(status or 499, sent, completed))


def _etag(path: Path) -> str:
    st = path.stat()
    return f'"{_sha256(str(path), st.st_size, st.st_mtime_ns)[:40]}"'


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The delivered file's SHA-256: from the version's summary when it names the file, else computed
    once (the cache key changes if the file does)."""
    summary = Path(path).with_name(SUMMARY)
    if summary.is_file() and summary.stat().st_size < 10 << 20:
        try:
            data = json.loads(summary.read_text())
            for item in [*data.get("renditions", []), *data.get("bundles", [])]:
                if item.get("sha256") and Path(item.get("path") or item.get("uri") or "").name == Path(path).name:
                    return item["sha256"]
        except (ValueError, OSError, AttributeError):
            pass
    return sha256_file(Path(path))
