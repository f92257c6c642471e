"""GET|HEAD /d/{token}: check the signed link, its row and the client, then serve the file with byte
ranges (Starlette's FileResponse: 206, multi-range, 416, If-Range), a strong ETag from the content's
SHA-256, If-None-Match, and `Content-Disposition: attachment` with the delivered name. Every request is
recorded; the bytes actually sent decide when a download counts (see `core/delivery/events.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from vexport_pipeline.core.delivery import access, clients
from vexport_pipeline.core.delivery.events import EventStore, LinkRow, Write
from vexport_pipeline.core.delivery.events import Request as Event
from vexport_pipeline.core.delivery.links import LinkSigner
from vexport_pipeline.core.delivery.publish import SUMMARY
from vexport_pipeline.core.errors import StorageError, StoreBusy
from vexport_pipeline.core.files import sha256_file

from .limits import RateLimiter

log = logging.getLogger("vexport.gateway")

# The event store's reads run on threads of their own, not in AnyIO's default pool, which the file reads of every
# response in flight fill under load (FileResponse reads each chunk there): a new request's checks before its first
# byte never queue behind other downloads' bodies.
# Object stores' calls (a HEAD, a presign, each 1 MiB of a proxied body) wait on the network, so they have threads of
# their own too: the default pool is cut to FILE_READERS for local files (see create_app).
_CHECKS, _REMOTE = anyio.CapacityLimiter(8), anyio.CapacityLimiter(40)
FILE_READERS = 4  # threads reading local files for responses (see create_app)
# How `vexport serve` runs the app in uvicorn (B6 runs its competitor with the same): uvicorn must not rewrite the
# peer from X-Forwarded-For (the app reads it, from trusted proxies only); uvloop's event loop (B6's tail latency);
# h11's parser, which caps a request's headers (uvicorn's httptools protocol does not).
SERVER_OPTIONS = {
    "proxy_headers": False,
    "server_header": False,
    "log_level": "warning",
    "loop": "uvloop",
    "http": "h11",
}


async def _check(fn, *args, **kwargs):
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=_CHECKS)


async def _remote(fn, *args, **kwargs):
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=_REMOTE)


class GroupCommit:
    """The event store's writes (download decisions and request records). On SQLite a write that needs no waiting
    is applied at once on the event loop (`EventStore.apply_now`, about 0.3 ms); the others, and every write on
    PostgreSQL, go to one thread that applies all the writes in flight in one transaction a round
    (`EventStore.apply`): a write waits for the round under way at most, then commits with the others that
    arrived meanwhile. Each write a transaction on a thread of its own, 50 clients' writes queued on the SQLite
    write lock and the thread pool and held their first bytes back (B6: p50 0.2 s); each through the thread, a
    hop there and back still cost 14 ms p50, 53 ms p99 under load."""

    CHECKPOINT_EVERY = 200  # writes applied at once between two checkpoints of the WAL (on the thread)

    def __init__(self, events: EventStore):
        self.events = events
        self.pending: list[tuple[asyncio.Future, Write]] = []
        self.lock = threading.Lock()
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="vexport-events")
        self.at_once = 0

    async def __call__(self, name: str, *args, **kwargs):
        write = Write(name, args, kwargs)
        if not self.pending:  # nothing queued before it: it may go first
            done, result = self.events.apply_now(write)
            if done:
                self.at_once += 1
                if self.at_once % self.CHECKPOINT_EVERY == 0:
                    self.thread.submit(self.events.checkpoint)
                if isinstance(result, Exception):
                    raise result
                return result
        future = asyncio.get_running_loop().create_future()
        with self.lock:
            self.pending.append((future, write))
        future.add_done_callback(_retrieved)
        self.thread.submit(self._round)  # a round that finds nothing pending (an earlier one took it) does nothing
        return await asyncio.shield(future)  # a client that goes away does not take its record with it

    def _round(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            results = self.events.apply([w for _, w in batch])
        except Exception as exc:
            results = [exc] * len(batch)
        for (future, _), result in zip(batch, results, strict=True):
            future.get_loop().call_soon_threadsafe(_settle, future, result)


def _retrieved(future: asyncio.Future) -> None:
    """Marks the outcome as seen: a failed write whose request went away is logged here, not as a stray warning."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("an event-store write failed: %s", exc)


def _settle(future: asyncio.Future, result) -> None:
    if future.cancelled():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


@dataclass(frozen=True)
class Gateway:
    events: EventStore
    signer: LinkSigner
    roots: tuple[Path, ...]  # only files inside these are ever served
    trusted_proxies: tuple[access.Network, ...] = ()
    limiter: RateLimiter | None = None
    destinations: dict = field(default_factory=dict)  # name -> Destination: where non-local copies live
    _stores: dict = field(default_factory=dict, repr=False)
    active: dict = field(default_factory=dict, repr=False)  # link id -> downloads being served by this process
    links: dict = field(default_factory=dict, repr=False)  # link id -> (row, when read): see `_link`
    etags: dict = field(default_factory=dict, repr=False)  # (path, size, mtime) -> ETag: see `_etag`

    @cached_property
    def writes(self) -> GroupCommit:
        return GroupCommit(self.events)

    def object_store(self, name: str):
        """The object store of a destination (made once per process), or None for local destinations."""
        dest = self.destinations.get(name)
        if dest is None or dest.kind == "local":
            return None
        if name not in self._stores:
            self._stores[name] = dest.store()
        return self._stores[name]


def create_app(gw: Gateway) -> Starlette:
    async def download(request: Request) -> Response:
        try:
            return await _download(gw, request)
        except StoreBusy as exc:  # another process kept the event store's lock: nothing decided, nothing served
            log.warning("serving %s: %s", request.url.path, exc)
            return _small(503, "busy; try again shortly", **{"retry-after": "10"})
        except Exception:  # never a stack trace to the client
            log.exception("serving %s failed", request.url.path)
            return PlainTextResponse("internal error", status_code=500)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [Route("/d/{token}", download, methods=["GET", "HEAD"]), Route("/healthz", health)]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # FileResponse reads every piece on AnyIO's default threads (40): so many readers kept the interpreter
        # lock from the event loop, and a new request waited for its first byte. B6 (50 clients, files in the page
        # cache, writes applied on the loop): 8 readers p50 7.9 ms, p99 91 ms, 1081 MB/s; 4 readers p50 3.6 ms,
        # p99 48 ms, 1245 MB/s. Four 1 MiB reads at a time still keep an SSD (or a network disk at 5 ms) busy.
        anyio.to_thread.current_default_thread_limiter().total_tokens = FILE_READERS
        yield

    return Starlette(routes=routes, lifespan=lifespan)


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
    link = await _link(gw, link_id, fresh=request.method != "GET" or "if-none-match" in request.headers)
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
    if refusal is None and (store := gw.object_store(link.destination)) is not None:
        return await _serve_object(gw, request, link, store, c, note)
    path = access.inside(Path(link.path), gw.roots) if refusal is None else None
    if refusal is None and path is None:
        refusal = access.Refusal(410, "this file is no longer available")
    if refusal:
        await gw.writes("record", note(refusal.status))
        extra = {"retry-after": "60"} if refusal.status == 429 else {}
        return _small(refusal.status, refusal.reason, **extra)
    return await _serve(gw, request, link, path, c, note)


LINK_ROWS_S = 60.0  # how long a gateway process keeps a link's row


async def _link(gw: Gateway, link_id: str, fresh: bool) -> LinkRow | None:
    """The link's row, read again after LINK_ROWS_S or where `fresh` asks for it. A row never changes but for its
    revocation, which the download decision reads again in its transaction (`start_download`: 'revoked'), so a kept
    row serves the GETs of a player's range requests without a read each, never a revoked link; requests that
    are answered without that decision (HEAD, If-None-Match) read the row."""
    now = time.monotonic()
    kept = gw.links.get(link_id)
    if kept and not fresh and now - kept[1] < LINK_ROWS_S:
        return kept[0]
    link = await _check(gw.events.link, link_id)
    if link is not None and not link.revoked:
        _keep(gw.links, link_id, (link, now))
    return link


def _keep(kept: dict, key, value, limit: int = 10_000) -> None:
    """A per-process memo that never grows past `limit`: emptied when full (the entries are cheap to read again)."""
    if len(kept) >= limit:
        kept.clear()
    kept[key] = value


async def _serve(gw: Gateway, request: Request, link: LinkRow, path: Path, c: _Client, note) -> Response:
    st = path.stat()
    etag, size = await _etag(gw, path, st), st.st_size
    ranges = _ranges(request, etag, size)
    if early := await _before_serving(gw, request, link, c, etag, ranges, note):
        return early
    if busy := await _too_many_at_once(gw, request, link, note):
        return busy
    headers = {"etag": etag, "cache-control": CACHE_CONTROL}
    response = (FileResponse if link.max_rate else _File)(  # held to max_rate: 64 KiB pieces, short pauses
        path, headers=headers, filename=link.rendition, content_disposition_type="attachment", stat_result=st
    )
    return _Counted(response, gw, link, c, etag, ranges, size, note)


async def _too_many_at_once(gw: Gateway, request: Request, link: LinkRow, note) -> Response | None:
    """429 when the link's `max_concurrent` downloads are already being served by this process."""
    if request.method != "GET" or not link.max_concurrent or gw.active.get(link.id, 0) < link.max_concurrent:
        return None
    await gw.writes("record", note(429))
    return _small(429, "too many downloads of this link at once; try again shortly", **{"retry-after": "10"})


CACHE_CONTROL = "private, max-age=0, must-revalidate"


class _File(FileResponse):
    """FileResponse reading 1 MiB at a time (Starlette's is 64 KiB): each read is a hop to a worker thread and
    each piece a trip through the event loop and the counting wrapper, so 16 times fewer of both per byte."""

    chunk_size = 1 << 20


async def _before_serving(gw: Gateway, request: Request, link: LinkRow, c: _Client, etag: str, ranges, note):
    """304 for a client that has this version; else reserve the download (410 used up, 429 busy), or None."""
    if _not_modified(request.headers.get("if-none-match", ""), etag):
        await gw.writes("record", note(304))
        return Response(status_code=304, headers={"etag": etag, "cache-control": CACHE_CONTROL})
    if request.method != "GET" or ranges is None:
        return None
    fresh = "range" not in request.headers
    state = await gw.writes("start_download", link, c.ip, etag, fresh=fresh)
    if state == "revoked":
        gw.links.pop(link.id, None)
        await gw.writes("record", note(410))
        return _small(410, "this link was revoked")
    if state == "used_up":
        await gw.writes("record", note(410))
        return _small(410, "this link has been used up")
    if state == "busy":
        await gw.writes("record", note(429))
        return _small(429, "every download of this link is in progress; try again later", **{"retry-after": "60"})
    return None


def _not_modified(if_none_match: str, etag: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2): `*` matches any current version, and tags compare weakly (`W/"x"` is
    `"x"`), so a client holding this version gets a 304."""
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _disposition(name: str) -> str:
    from urllib.parse import quote

    quoted = quote(name)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != name else f'attachment; filename="{name}"'


async def _serve_object(gw: Gateway, request: Request, link: LinkRow, store, c: _Client, note) -> Response:
    """A copy in an object store: streamed through the gateway (`serve: proxy`, ranges passed on; a
    multi-range request gets the whole file) or a 302 to a presigned URL valid a minute (`serve:
    redirect`; the download then counts when it is handed out, as its bytes never pass here)."""
    from vexport_pipeline.core.delivery.stores import Version

    v = Version(link.export_id, link.version)
    info = await _remote(store.head, v, link.rendition)
    if info is None:
        await gw.writes("record", note(410))
        return _small(410, "this file is no longer available")
    etag = '"' + "".join(ch for ch in (info.checksum or info.etag) if ch.isalnum())[:40] + '"'
    ranges = _ranges(request, etag, info.size)
    if ranges is not None and len(ranges) > 1:
        ranges = [(0, info.size)]
    if early := await _before_serving(gw, request, link, c, etag, ranges, note):
        return early
    if ranges is None:
        await gw.writes("record", note(416))
        return _small(416, "range not satisfiable", **{"content-range": f"bytes */{info.size}"})
    url = None
    if gw.destinations[link.destination].serve == "redirect":
        try:
            url = await _remote(store.presign, v, link.rendition, 60, content_disposition=_disposition(link.rendition))
        except StorageError as exc:  # no signing key (a GCS or Azure store without one): stream it instead
            log.warning("cannot presign %s (%s); streaming it", link.rendition, exc)
    if url:
        full = "range" not in request.headers and request.method == "GET"
        done = full and await gw.writes("served", link, c.ip, etag, [(0, info.size)], info.size)
        await gw.writes("record", note(302, 0, bool(done)))
        return Response(status_code=302, headers={"location": url, "cache-control": "no-store"})
    (start, end), partial = ranges[0], ranges[0] != (0, info.size)
    headers = {"etag": etag, "cache-control": CACHE_CONTROL, "accept-ranges": "bytes",
               "content-disposition": _disposition(link.rendition), "content-length": str(end - start)}  # fmt: skip
    if partial:
        headers["content-range"] = f"bytes {start}-{end - 1}/{info.size}"
    if busy := await _too_many_at_once(gw, request, link, note):
        return busy
    if request.method == "HEAD":
        body = None
    else:
        body = await _remote(store.open_range, v, link.rendition, start, end - 1)
    response = StreamingResponse(
        _chunks(body), status_code=206 if partial else 200, headers=headers,
        media_type=info.content_type or "application/octet-stream",
    )  # fmt: skip
    return _Counted(response, gw, link, c, etag, ranges, info.size, note)


async def _chunks(body):
    """An object's bytes in 1 MiB pieces, read off the event loop; closed when the client goes away."""
    if body is None:
        return
    try:
        while chunk := await _remote(body.read, 1 << 20):
            yield chunk
    finally:
        body.close()


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
        gw.active[link.id] = gw.active.get(link.id, 0) + 1  # taken now, given back when the response ends

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self._send_counted(scope, receive, send)
        finally:
            self.gw.active[self.link.id] -= 1
            if not self.gw.active[self.link.id]:
                del self.gw.active[self.link.id]

    async def _throttle(self, sent: int, started: float) -> None:
        """Hold a download to the link's `max_rate` (bytes a second): sleep until the bytes sent are due."""
        if self.link.max_rate and (ahead := sent / self.link.max_rate - (time.monotonic() - started)) > 0:
            await asyncio.sleep(ahead)

    async def _send_counted(self, scope, receive, send) -> None:
        state = {"status": 0, "body": 0, "done": False, "recorded": False}
        started = time.monotonic()

        async def record() -> None:
            state["recorded"] = True
            try:
                await self.gw.writes("finish", *self._finished(scope["method"], state))
            except StoreBusy as exc:  # the bytes are on their way or sent: the record alone is lost, and said so
                log.error("a response to link %s was not recorded: %s", self.link.id, exc)

        async def counting(message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                length = dict(message.get("headers", [])).get(b"content-length", b"")
                state["length"] = int(length) if length.isdigit() else None
            elif message["type"] == "http.response.body":
                state["body"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False) or state["body"] == state.get("length")
                if state["done"] and not state["recorded"]:  # counted before the last bytes leave: a client
                    await record()  # that has every byte sees the count
            await send(message)
            if message["type"] == "http.response.body":
                await self._throttle(state["body"], started)

        try:
            await self.inner(scope, receive, counting)
        finally:
            if not state["recorded"]:  # the client went away mid-transfer: what was sent still covers its part
                await record()

    def _finished(self, method: str, state: dict) -> tuple:
        """`finish`'s arguments for this response: the request, and the ranges its bytes covered."""
        status, sent, done = state["status"], state["body"], state["done"]
        covered: list[tuple[int, int]] = []
        if method == "GET" and status in (200, 206) and self.ranges:
            if status == 200:
                covered = [(0, sent)]
            elif len(self.ranges) == 1:
                covered = [(self.ranges[0][0], self.ranges[0][0] + sent)]
            elif done:
                covered = self.ranges
        return self.note(status or 499, sent), self.etag, covered, self.size


async def _etag(gw: Gateway, path: Path, st) -> str:
    """The file's ETag: found on a thread once (from the summary, or hashed), then read here."""
    key = (str(path), st.st_size, st.st_mtime_ns)  # a changed file has a new key
    if (etag := gw.etags.get(key)) is None:
        etag = f'"{(await _check(_sha256, key[0]))[:40]}"'
        _keep(gw.etags, key, etag)
    return etag


def _sha256(path: str) -> str:
    """The delivered file's SHA-256: from the version's summary when it names the file, else computed."""
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
