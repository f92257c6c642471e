"""`vexport serve` as a client meets it: a delivered MP4 fetched whole, by ranges and by Chromium's
<video>, every limit of a link enforced, every download counted once. Real HTTP on a free port; the
gateway is the real CLI in its own process."""

import asyncio
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from vexport_pipeline.core.delivery.events import EventStore
from vexport_pipeline.core.delivery.links import LinkPolicy, LinkSigner, mint
from vexport_pipeline.core.delivery.publish import SUMMARY, publish
from vexport_pipeline.core.delivery.stores import LocalStore
from vexport_pipeline.core.files import sha256_file
from vexport_pipeline_tests.conftest import vexport

NAME = "teaser__web_720p.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gateway(env: dict, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`vexport serve` in a process of its own, once it answers; (the process, its base URL)."""
    port = port or free_port()
    exe = Path(sys.executable).with_name("vexport")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def site(tmp_path_factory, media):
    """A delivered export (the real MP4 of the media fixture) and a running gateway in front of it."""
    home = tmp_path_factory.mktemp("gw") / "home"
    store = LocalStore(home / "store")
    store.root.mkdir(parents=True)
    v = publish(store, "teaser", {NAME: media["av"]}, bundle=None, work=home)
    path = store.local_path(v, NAME)
    summary = {"renditions": [{"target": "web_720p", "clip_id": None, "path": str(path), "uri": store.url(v, NAME),
                               "sha256": sha256_file(path)}], "bundles": []}  # fmt: skip
    store.write_record(v, SUMMARY, json.dumps(summary).encode())
    port = free_port()
    env = {
        **os.environ,
        "VEXPORT_HOME": str(home),
        "VEXPORT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VEXPORT_TRUSTED_PROXIES": "127.0.0.1/32",  # the tests play several clients through X-Forwarded-For
    }
    proc, base = _gateway(env, port)
    yield {"home": home, "env": env, "base": base, "path": path, "bytes": path.read_bytes(), "v": v, "proc": proc}
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err, err


def link(site, *args) -> dict:
    out = vexport("links", "create", "teaser", "--json", *args, env=site["env"], check=True)
    return json.loads(out.stdout)


def client(ip: str, **headers) -> dict:
    return {"x-forwarded-for": ip, "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0", **headers}


def downloads(site, link_id: str) -> int:
    return EventStore(site["home"] / "events.sqlite").link(link_id).downloads


def test_a_whole_download_is_the_delivered_file_with_its_headers_and_counts_once(site):
    made = link(site)
    assert set(made) >= {"id", "url", "expires_at", "max_downloads", "allow_ips"}
    r = httpx.get(made["url"], headers=client("198.51.100.1"))
    assert r.status_code == 200 and r.content == site["bytes"]
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-type"] == "video/mp4"
    assert r.headers["etag"] == f'"{hashlib.sha256(site["bytes"]).hexdigest()[:40]}"'
    assert r.headers["content-disposition"] == f'attachment; filename="{NAME}"'
    assert downloads(site, made["id"]) == 1
    head = httpx.head(made["url"], headers=client("198.51.100.1"))
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(r.content)
    for held in (r.headers["etag"], f'"other", W/{r.headers["etag"]}', "*"):  # RFC 9110: weak comparison, any
        again = httpx.get(made["url"], headers=client("198.51.100.1", **{"if-none-match": held}))
        assert again.status_code == 304 and again.content == b"", held
    assert httpx.head(made["url"], headers=client("198.51.100.1", **{"if-none-match": '"other"'})).status_code == 200
    assert downloads(site, made["id"]) == 1


def test_a_players_range_requests_count_once_and_an_abandoned_download_not_at_all(site):
    made, data = link(site), site["bytes"]
    size, step = len(data), len(data) // 5 + 1
    for start in range(0, size, step):  # a player fetching the file in pieces, one seek back included
        r = httpx.get(made["url"], headers=client("198.51.100.2", range=f"bytes={start}-{start + step - 1}"))
        assert r.status_code == 206 and r.content == data[start : start + step]
        assert r.headers["content-range"] == f"bytes {start}-{min(start + step, size) - 1}/{size}"
        assert downloads(site, made["id"]) == (1 if start + step >= size else 0)
    httpx.get(made["url"], headers=client("198.51.100.2", range="bytes=0-99"))
    assert downloads(site, made["id"]) == 1

    half = httpx.get(made["url"], headers=client("198.51.100.3", range=f"bytes=0-{size // 2}"))
    assert half.status_code == 206 and downloads(site, made["id"]) == 1  # the second client stopped halfway

    multi = httpx.get(made["url"], headers=client("198.51.100.4", range="bytes=0-9,20-29"))
    assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
    assert data[0:10] in multi.content and data[20:30] in multi.content
    assert httpx.get(made["url"], headers=client("198.51.100.4", range=f"bytes={size}-")).status_code == 416
    stale = httpx.get(made["url"], headers=client("198.51.100.4", range="bytes=0-9", **{"if-range": '"other"'}))
    assert stale.status_code == 200 and stale.content == data  # the file changed for this client: all of it

    rows = (
        sqlite3.connect(site["home"] / "events.sqlite")
        .execute("SELECT status, bytes, completed, browser, os FROM requests WHERE link_id = ?", (made["id"],))
        .fetchall()
    )
    assert [r[0] for r in rows].count(416) == 1 and sum(r[2] for r in rows) == 2  # the If-Range one completed
    assert {(r[3], r[4]) for r in rows} == {("Firefox", "Linux")}


def test_max_downloads_are_reserved_when_a_download_starts_and_used_up_after(site):
    made, size = link(site, "--max-downloads", "1"), len(site["bytes"])
    first = httpx.get(made["url"], headers=client("203.0.113.1", range="bytes=0-999"))
    assert first.status_code == 206
    busy = httpx.get(made["url"], headers=client("203.0.113.2"))
    assert busy.status_code == 429 and busy.headers["retry-after"] == "60"  # the slot is reserved by the first
    rest = httpx.get(made["url"], headers=client("203.0.113.1", range=f"bytes=1000-{size - 1}"))
    assert rest.status_code == 206 and downloads(site, made["id"]) == 1
    used = httpx.get(made["url"], headers=client("203.0.113.2"))
    assert used.status_code == 410 and "used up" in used.text
    seek = httpx.get(made["url"], headers=client("203.0.113.1", range="bytes=0-99"))
    assert seek.status_code == 206  # the client that downloaded it may still seek in it
    assert downloads(site, made["id"]) == 1


def test_many_clients_at_once_get_exactly_the_slots_and_every_request_is_recorded(site):
    """40 clients start a three-download link at the same moment (their decisions are committed together):
    three get the file; each of the others is told the downloads are in progress (429) or, once the three
    have finished, that the link is used up (410)."""
    made, data = link(site, "--max-downloads", "3"), site["bytes"]

    async def everyone() -> list[httpx.Response]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=40), timeout=60) as http:
            return await asyncio.gather(*(http.get(made["url"], headers=client(f"192.0.2.{n + 1}")) for n in range(40)))

    got = asyncio.run(everyone())
    codes = [r.status_code for r in got]
    assert codes.count(200) == 3 and codes.count(429) + codes.count(410) == 37
    assert all(r.content == data for r in got if r.status_code == 200)
    assert downloads(site, made["id"]) == 3
    assert httpx.get(made["url"], headers=client("192.0.2.200")).status_code == 410
    rows = (
        sqlite3.connect(site["home"] / "events.sqlite")
        .execute("SELECT status, completed FROM requests WHERE link_id = ?", (made["id"],))
        .fetchall()
    )
    assert sorted(rows) == sorted([(200, 1)] * 3 + [(c, 0) for c in codes if c != 200] + [(410, 0)])


def test_a_download_waits_for_another_process_holding_the_event_store(site):
    """While another process holds the SQLite write lock, a download's decision cannot be made at once on the
    gateway's event loop: it goes to the writer thread, which waits, and the download then goes ahead."""
    made = link(site)
    other = sqlite3.connect(site["home"] / "events.sqlite", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, other.execute, ["ROLLBACK"])
    release.start()
    t0 = time.monotonic()
    r = httpx.get(made["url"], headers=client("198.51.100.77"), timeout=60)
    release.join()
    assert r.status_code == 200 and r.content == site["bytes"]
    assert time.monotonic() - t0 >= 0.9  # it waited for the lock: neither refused nor served without a decision
    assert downloads(site, made["id"]) == 1
    assert httpx.get(f"{site['base']}/healthz").status_code == 200


@pytest.mark.postgres
def test_two_gateways_on_one_postgresql_event_store_share_a_links_limit(site, pg_url):
    """Two `vexport serve` processes behind one address book (PostgreSQL, VEXPORT_EVENTS_URL): 30 clients spread
    over both at once get exactly the link's two downloads between them, and both record every request."""
    env = {**site["env"], "VEXPORT_EVENTS_URL": pg_url}
    gateways = [_gateway(env), _gateway(env)]
    try:
        out = vexport("links", "create", "teaser", "--json", "--max-downloads", "2", env=env, check=True)
        made = json.loads(out.stdout)
        token = made["url"].rsplit("/", 1)[1]

        async def everyone() -> list[httpx.Response]:
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=30), timeout=60) as http:
                return await asyncio.gather(
                    *(
                        http.get(f"{gateways[n % 2][1]}/d/{token}", headers=client(f"192.0.2.{n + 1}"))
                        for n in range(30)
                    )
                )

        codes = [r.status_code for r in asyncio.run(everyone())]
        assert codes.count(200) == 2 and codes.count(429) + codes.count(410) == 28
        events = EventStore(pg_url)
        assert events.link(made["id"]).downloads == 2
        assert len(events.requests_frame()) == 30
    finally:
        for proc, _ in gateways:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
            assert "Traceback" not in err, err


def test_one_time_links_work_once(site):
    made = link(site, "--one-time")
    assert httpx.get(made["url"], headers=client("203.0.113.9")).status_code == 200
    again = httpx.get(made["url"], headers=client("203.0.113.9"))
    assert again.status_code == 410 and "used up" in again.text


def test_allowed_addresses_and_trusted_proxies(site):
    made = link(site, "--allow-ip", "10.0.0.0/8", "--allow-ip", "2001:db8::/32")
    assert httpx.get(made["url"], headers=client("203.0.113.5")).status_code == 403
    assert httpx.get(made["url"], headers=client("10.1.2.3")).status_code == 200
    assert httpx.get(made["url"], headers=client("::ffff:10.9.9.9")).status_code == 200  # IPv4-mapped
    assert httpx.get(made["url"], headers=client("2001:db8::7")).status_code == 200
    # a client cannot claim an allowed address: only the nearest untrusted hop counts
    spoof = httpx.get(made["url"], headers=client("10.1.2.3, 203.0.113.5"))
    assert spoof.status_code == 403 and "address" in spoof.text


def test_tampered_unknown_expired_and_revoked_links_are_refused_small(site):
    made = link(site)
    token = made["url"].rsplit("/", 1)[1]
    tampered = made["url"][:-3] + ("AAA" if not made["url"].endswith("AAA") else "BBB")
    for url, status in [
        (tampered, 403),
        (f"{site['base']}/d/{'x' * 5000}", 403),
        (f"{site['base']}/d/..%2F..%2Fetc%2Fpasswd", 404),  # decoded to a path no route has
        (f"{site['base']}/d/{token}/../../etc/passwd", 404),
    ]:
        r = httpx.get(url)
        assert r.status_code == status, (url, r.status_code, r.text)
        assert len(r.content) < 200 and "Traceback" not in r.text and "root:" not in r.text

    events = EventStore(site["home"] / "events.sqlite")
    signer = LinkSigner((site["home"] / "secret.key").read_text().strip())
    policy = LinkPolicy(3600)
    unknown = f"{site['base']}/d/{signer.sign('0' * 32, time.time() + 60)}"
    assert httpx.get(unknown).status_code == 404
    outside = mint(events, signer, site["base"], export_id="teaser", version=site["v"].version, rendition="passwd",
                   path="/etc/passwd", policy=policy)  # fmt: skip
    r = httpx.get(outside.url)
    assert r.status_code == 410 and "root:" not in r.text  # a row pointing outside the store is never served

    short = link(site, "--ttl", "1s")
    time.sleep(1.2)
    assert httpx.get(short["url"]).status_code == 410

    assert httpx.get(made["url"]).status_code == 200  # the gateway has read the link's row (and keeps it)
    out = vexport("links", "revoke", made["id"], env=site["env"], check=True)
    assert "revoked" in out.stdout
    for r in [
        httpx.get(made["url"]),
        httpx.get(made["url"], headers={"range": "bytes=0-99"}),
        httpx.head(made["url"]),
        httpx.get(made["url"], headers={"if-none-match": '"anything"'}),
    ]:
        assert r.status_code == 410 and ("revoked" in r.text or r.request.method == "HEAD"), r.request.headers
    assert vexport("links", "revoke", "nope", env=site["env"]).returncode == 2


def test_endless_headers_are_cut_off_and_the_gateway_serves_on(site):
    """A client sending megabytes of headers (slowloris-like memory use) is answered 400 and dropped once its
    headers pass h11's 16 KiB, never read whole (uvicorn's httptools parser has no such cap: the gateway names
    h11); the next client is served."""
    made = link(site)
    path = made["url"].split(site["base"], 1)[1]
    port = int(site["base"].rsplit(":", 1)[1])
    # a small send buffer, so `sent` counts what the gateway took, not what the kernels buffered for it: CI once
    # had 1.04 MiB "sent" into buffers under load, the gateway having stopped reading long before
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())
        sent, answer = 0, b""
        try:
            while sent < 8 << 20 and not answer:
                sock.sendall(b"x-filler: " + b"a" * 4000 + b"\r\n")
                sent += 4012
                sock.setblocking(False)
                try:
                    answer = sock.recv(4096)
                except BlockingIOError:
                    pass
                sock.setblocking(True)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # dropped, or no longer read, while we were still sending: also a refusal
        sock.settimeout(5)
        try:
            answer += sock.recv(4096)
        except (TimeoutError, ConnectionResetError, OSError):
            pass
    assert sent < 1 << 20, sent  # refused within the first MiB, not after reading all 8
    assert not answer or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert httpx.get(made["url"]).status_code == 200 and downloads(site, made["id"]) == 1


def test_a_rate_limited_link_is_slow_and_a_busy_one_says_try_later(site):
    """--max-rate holds each download to its bytes a second; --max-concurrent refuses a second download
    while one is served (429), and takes the next once it ended."""
    import threading

    size = len(site["bytes"])
    rate = max(16 * 1024, size // 2)  # the whole file in about two seconds
    made = link(site, "--max-rate", str(rate), "--max-concurrent", "1")
    assert made["max_rate"] == rate and made["max_concurrent"] == 1
    got: dict = {}

    def slow() -> None:
        started = time.monotonic()
        got["response"] = httpx.get(made["url"], headers=client("192.0.2.50"), timeout=60)
        got["took"] = time.monotonic() - started

    first = threading.Thread(target=slow)
    first.start()
    time.sleep(0.5)
    busy = httpx.get(made["url"], headers=client("192.0.2.51"))
    first.join()
    assert busy.status_code == 429 and busy.headers["retry-after"] == "10"
    assert got["response"].content == site["bytes"]
    assert got["took"] >= 0.8 * size / rate  # a load slows it further, never speeds it up
    assert httpx.get(made["url"], headers=client("192.0.2.51")).status_code == 200  # the slot came back


def test_every_link_of_an_export_is_revoked_at_once(site):
    a, b = link(site), link(site)
    out = vexport("links", "revoke", "--export", "teaser", "--version", site["v"].version, env=site["env"], check=True)
    assert "revoked" in out.stdout
    for made in (a, b):
        r = httpx.get(made["url"])
        assert r.status_code == 410 and "revoked" in r.text
    assert vexport("links", "revoke", env=site["env"]).returncode == 2
    assert vexport("links", "revoke", "--export", "nothing", env=site["env"]).returncode == 2
    bad = vexport("links", "create", "teaser", "--max-rate", "fast", env=site["env"])
    assert bad.returncode == 2 and "--max-rate" in bad.stderr


def test_links_list_and_metrics_show_the_counts(site):
    made = link(site, "--max-downloads", "5")
    for ip in ("192.0.2.10", "192.0.2.11"):
        assert httpx.get(made["url"], headers=client(ip)).status_code == 200
    listed = json.loads(vexport("links", "list", "teaser", "--json", env=site["env"], check=True).stdout)
    row = next(r for r in listed if r["id"] == made["id"])
    assert row["downloads"] == 2 and row["max_downloads"] == 5
    data = json.loads(vexport("metrics", "teaser", "--json", env=site["env"], check=True).stdout)
    [rend] = [r for r in data["renditions"] if r["name"] == NAME]
    assert rend["downloads"] >= 2 and rend["bytes_served"] >= 2 * len(site["bytes"])
    assert vexport("metrics", "nothing-here", env=site["env"]).returncode == 2
    bad = vexport("links", "create", "teaser", "--ttl", "2y", env=site["env"])
    assert bad.returncode == 2 and "--ttl" in bad.stderr


@pytest.mark.browser
def test_chromium_plays_the_delivered_file_through_the_gateway_and_it_counts_once(site):
    from playwright.sync_api import sync_playwright

    from vexport_pipeline.core.validation.playback import CHROMIUM_ARGS, chromium

    exe = chromium()
    if not exe:
        pytest.fail("chromium is needed (make test installs it)")
    made = link(site)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{site['base']}/healthz")
            played = page.evaluate(
                """async (src) => {
                  const v = document.createElement('video');
                  v.muted = true; v.src = src; document.body.appendChild(v);
                  await new Promise((ok, bad) => { v.onended = ok; v.onerror = () => bad(new Error('error'));
                                                    v.play(); setTimeout(() => bad(new Error('timeout')), 30000); });
                  return {duration: v.duration, time: v.currentTime, width: v.videoWidth};
                }""",
                made["url"],
            )
        finally:
            browser.close()
    assert played["width"] == 640 and played["time"] == pytest.approx(played["duration"], abs=0.1)
    assert downloads(site, made["id"]) == 1


def test_a_gateway_kept_waiting_by_the_event_store_answers_503_not_500(tmp_path, monkeypatch):
    """In-process (the wait shortened): when another process keeps the SQLite event store locked past the wait,
    a download is refused with 503 and Retry-After, small, and nothing is served; once free, it is served."""
    from vexport_pipeline.core.delivery import events as ev
    from vexport_pipeline.gateway.app import Gateway, create_app

    monkeypatch.setattr(ev, "BUSY_S", 0.3)
    root = tmp_path / "store"
    root.mkdir()
    (root / "f.mp4").write_bytes(b"x" * 1000)
    events, signer = EventStore(tmp_path / "events.sqlite"), LinkSigner("k" * 32)
    made = mint(events, signer, "http://test", export_id="e", version="v", rendition="f.mp4",
                path=str(root / "f.mp4"), policy=LinkPolicy(3600))  # fmt: skip
    app = create_app(Gateway(events, signer, roots=(root,)))

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.get(made.url.removeprefix("http://test"))

    other = sqlite3.connect(tmp_path / "events.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    busy = asyncio.run(get())
    assert busy.status_code == 503 and busy.headers["retry-after"] == "10" and len(busy.content) < 100
    other.execute("ROLLBACK")
    ok = asyncio.run(get())
    assert ok.status_code == 200 and ok.content == b"x" * 1000
