"""B6 gateway and B7 upload (see bench/README.md): vexport's delivery against what a user would reach for.

B6: signed, counted downloads through the real `vexport serve` vs Starlette's own `StaticFiles` serving the
same files, each in its own uvicorn process (one worker), driven by 50 concurrent clients from this process
with one seeded mix of whole-file GETs and byte ranges. Throughput, time to first byte (under that load, and
of one client alone), the servers' CPU time, errors, and afterwards that the gateway recorded every request.

B7: one file delivered to the S3 emulator (moto's server in its own process) through `S3Store.put` + `commit`
(CRC64NVME of the file, upload, `head_object` verification, the pointer) vs boto3's `upload_file` with
default settings (what `aws s3 cp` does).

run.py imports this module for its BENCHMARKS registry, so nothing here imports run.py: RUNS and CACHE are
read the same way as there, and `alternate` below keeps every run's measures, not only its wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import psutil

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PYTHON = sys.executable
MiB = 1 << 20

CLIENTS = 50
FULL_SHARE = 0.3  # the rest are ranges of 256 KiB to 2 MiB at random offsets
RANGE_BYTES = (256 << 10, 2 * MiB)
SEED = 6
PROBES = 40  # requests of one client alone after the runs: time to first byte without queueing
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

# the competitor of B6: `vexport serve`'s own uvicorn options (one worker), its access log off
STATIC_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from vexport_pipeline.gateway.app import SERVER_OPTIONS
app = Starlette(routes=[Mount("/s", StaticFiles(directory=sys.argv[1]))])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=False, **SERVER_OPTIONS)
"""


# --- helpers -------------------------------------------------------------------------------------


def random_file(mib: int) -> Path:
    """A file of `mib` MiB of random bytes, made once in bench/.cache/random/ (nothing compresses it)."""
    path = CACHE / "random" / f"{mib}MiB.bin"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(MiB))
        partial.rename(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any VEXPORT_* or AWS_* variable, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("VEXPORT_", "AWS_"))}, **extra}


@contextlib.contextmanager
def server(name: str, argv: list[str], env: dict[str, str], port: int) -> Iterator[psutil.Process]:
    """A server process listening on `port` (its output in bench/.cache/logs/NAME.log), stopped on exit."""
    log_path = CACHE / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not start; see {log_path}")
                time.sleep(0.1)
            yield psutil.Process(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_of(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def alternate(contenders: dict[str, Callable[[], dict]], runs: int, show: Callable[[dict], str]) -> dict:
    """Run the contenders in turn (A, B, A, B...) `runs` times; each run returns its measures (`wall_s`,
    `cpu_s`, ...). Returns every run's measures per contender."""
    out: dict[str, list[dict]] = {name: [] for name in contenders}
    for i in range(runs):
        for name, fn in contenders.items():
            r = fn()
            out[name].append(r)
            print(
                f"  run {i + 1}/{runs} {name}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.1f} s CPU, {show(r)}", flush=True
            )
    return out


def times(runs: list[dict]) -> dict:
    """The medians in run.py's `times` shape (its table prints them)."""
    walls = [r["wall_s"] for r in runs]
    return {
        "median_s": round(statistics.median(walls), 3),
        "runs_s": [round(x, 3) for x in walls],
        "median_cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


# --- B6 gateway ----------------------------------------------------------------------------------


def deliver(home: Path, files: list[Path], base_url: str, key: str) -> tuple[Path, list[str], list[str]]:
    """The files delivered as one version of export `bench` (publish + a summary with their SHA-256, as the
    pipeline writes it) and one link each (no download limit). Returns the version's folder, the delivered
    names and the links."""
    from vexport_pipeline.core.delivery.events import EventStore
    from vexport_pipeline.core.delivery.links import LinkPolicy, LinkSigner, mint
    from vexport_pipeline.core.delivery.publish import SUMMARY, publish
    from vexport_pipeline.core.delivery.stores import LocalStore
    from vexport_pipeline.core.files import sha256_file

    store = LocalStore(home / "store")
    store.root.mkdir(parents=True)
    names = [f"bench{i}_{f.stem}.mp4" for i, f in enumerate(files)]
    v = publish(store, "bench", dict(zip(names, files)), bundle=None, work=home)
    paths = [store.local_path(v, n) for n in names]
    renditions = [
        {"target": n, "clip_id": None, "path": str(p), "uri": store.url(v, n), "sha256": sha256_file(p)}
        for n, p in zip(names, paths)
    ]
    store.write_record(v, SUMMARY, json.dumps({"renditions": renditions, "bundles": []}).encode())
    events, signer, policy = EventStore(events_url(home)), LinkSigner(key), LinkPolicy(ttl_s=86400)
    links = [
        mint(events, signer, base_url, export_id="bench", version=v.version, rendition=n, path=str(p), policy=policy)
        for n, p in zip(names, paths)
    ]
    return store.folder(v), names, [link.url for link in links]


def plan(sizes: list[int], n: int) -> list[tuple[int, tuple[int, int] | None]]:
    """`n` requests, the same for both contenders: (file, None for the whole file or an inclusive range)."""
    rng = random.Random(SEED)
    out: list[tuple[int, tuple[int, int] | None]] = []
    for _ in range(n):
        i = rng.randrange(len(sizes))
        if rng.random() < FULL_SHARE:
            out.append((i, None))
        else:
            length = rng.randint(*RANGE_BYTES)
            start = rng.randrange(sizes[i] - length + 1)
            out.append((i, (start, start + length - 1)))
    return out


class _Connection:
    """One client's keep-alive HTTP/1.1 connection, as lean as a load generator's (wrk, oha): a request is
    written whole, the status line and headers parsed, the body read in large pieces and counted, not kept.
    httpx costs 3 to 4 CPU-seconds a GB; on 2 cores that made the client, not the server, the bottleneck,
    and its own queueing most of the time to first byte it measured (StaticFiles: p99 0.5 to 0.8 s)."""

    def __init__(self, host: str, port: int):
        self.host, self.port, self.streams = host, port, None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, float, int]:
        """(status, seconds until the headers arrived, body bytes) of one GET."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        reader, writer = self.streams
        lines = [f"GET {path} HTTP/1.1", f"host: {self.host}:{self.port}", *(f"{k}: {v}" for k, v in headers.items())]
        t0 = time.perf_counter()
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await reader.readuntil(b"\r\n\r\n")
        ttfb = time.perf_counter() - t0
        status_line, *fields = head.decode("latin-1").split("\r\n")
        meta = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
        left, got = int(meta.get("content-length", "0")), 0
        while left > got:
            chunk = await reader.read(min(left - got, 1 << 20))
            if not chunk:
                raise ConnectionError("the server closed the connection mid-body")
            got += len(chunk)
        if meta.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), ttfb, got

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def load(urls: list[str], work: list[tuple[int, tuple[int, int] | None]], clients: int) -> dict:
    """`clients` concurrent clients (each its own address in X-Forwarded-For, one connection each) share
    `work`; time to first byte is the time until a response's headers arrived."""
    from urllib.parse import urlsplit

    todo = iter(work)
    ttfb: list[float] = []
    status: Counter[int] = Counter()
    got, errors = [0], []
    where = [urlsplit(u) for u in urls]

    async def client(c: int) -> None:
        conn = _Connection(where[0].hostname, where[0].port)
        try:
            for i, rng in todo:
                headers = {"user-agent": USER_AGENT, "x-forwarded-for": f"198.51.100.{c + 1}"}
                if rng:
                    headers["range"] = f"bytes={rng[0]}-{rng[1]}"
                try:
                    code, first, n = await conn.get(where[i].path, headers)
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    errors.append(f"{urls[i]} {headers.get('range', '')}: {exc!r}")
                    await conn.close()
                    continue
                ttfb.append(first)
                status[code] += 1
                got[0] += n
                if code != (206 if rng else 200):
                    errors.append(f"{code} for {urls[i]} {headers.get('range', '')}")
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "bytes": got[0], "ttfb": ttfb, "status": status, "errors": errors}


def measure(urls: list[str], work: list, proc: psutil.Process) -> dict:
    """One run of the load against one server: its measures, CPU time that of the server process."""
    cpu, mine = cpu_of(proc), time.process_time()
    r = asyncio.run(load(urls, work, CLIENTS))
    return {**r, "cpu_s": cpu_of(proc) - cpu, "client_cpu_s": time.process_time() - mine}


def figures(runs: list[dict], n: int) -> dict:
    """Throughput at the median wall time (every run does the same work), time to first byte over the
    requests of all runs, errors and statuses of all runs."""
    wall = statistics.median(r["wall_s"] for r in runs)
    ttfb = [x for r in runs for x in r["ttfb"]]
    return {
        "MB_per_s": round(runs[0]["bytes"] / wall / 1e6, 1),
        "requests_per_s": round(n / wall, 1),
        "ttfb_p50_ms": ms(statistics.median(ttfb)),
        "ttfb_p99_ms": ms(statistics.quantiles(ttfb, n=100, method="inclusive")[98]),
        "errors": sum(len(r["errors"]) for r in runs),
        "first_errors": [e for r in runs for e in r["errors"]][:5],
        "status": dict(sum((r["status"] for r in runs), Counter())),
        "server_cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
        "client_cpu_s": round(statistics.median(r["client_cpu_s"] for r in runs), 2),
    }


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def events_url(home: Path) -> str:
    """The gateway's event store: `BENCH_EVENTS_URL` (an empty PostgreSQL database, to measure that deployment),
    else the SQLite file under the home, the default."""
    return os.environ.get("BENCH_EVENTS_URL") or str(home / "events.sqlite")


def recorded(url: str) -> dict:
    from vexport_pipeline.core.delivery.events import EventStore

    df = EventStore(url).requests_frame()
    return {"rows": len(df), "5xx": int((df["status"] >= 500).sum()), "completed_downloads": int(df["completed"].sum())}


def bench_gateway(quick: bool) -> dict:
    """B6: signed, counted downloads through `vexport serve` vs Starlette's StaticFiles, 50 clients."""
    mibs, n = ((2, 8, 16), 150) if quick else ((8, 32, 64), 300)
    files = [random_file(m) for m in mibs]
    sizes = [f.stat().st_size for f in files]
    work = plan(sizes, n)
    expected = sum(sizes[i] if rng is None else rng[1] - rng[0] + 1 for i, rng in work)
    warm = [(i, (0, 1023)) for i in range(len(files))]  # each server opens every file once before the runs
    gw_port, st_port, key = free_port(), free_port(), secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="B6-") as tmp:
        home = Path(tmp) / "home"
        folder, names, links = deliver(home, files, f"http://127.0.0.1:{gw_port}", key)
        urls = {"gateway": links, "StaticFiles": [f"http://127.0.0.1:{st_port}/s/{name}" for name in names]}
        gw_env = clean_env(
            VEXPORT_HOME=str(home),
            VEXPORT_SECRET_KEY=key,
            VEXPORT_PUBLIC_URL=f"http://127.0.0.1:{gw_port}",
            VEXPORT_RATE_LIMIT="0",
            VEXPORT_TRUSTED_PROXIES="127.0.0.1/32",
            **({"VEXPORT_EVENTS_URL": os.environ["BENCH_EVENTS_URL"]} if os.environ.get("BENCH_EVENTS_URL") else {}),
        )
        vexport = str(Path(PYTHON).with_name("vexport"))
        print(f"  {len(files)} files of {', '.join(f'{m} MiB' for m in mibs)}; {n} requests a run", flush=True)
        with (
            server("B6-gateway", [vexport, "serve", "--port", str(gw_port)], gw_env, gw_port) as gw,
            server("B6-staticfiles", [PYTHON, "-c", STATIC_APP, str(folder), str(st_port)], clean_env(), st_port) as st,
        ):
            procs = {"gateway": gw, "StaticFiles": st}
            for name in procs:
                asyncio.run(load(urls[name], warm, len(warm)))
            runs = alternate(
                {name: lambda name=name: measure(urls[name], work, procs[name]) for name in procs},
                RUNS,
                lambda r: f"{r['bytes'] / r['wall_s'] / 1e6:.0f} MB/s, {len(r['errors'])} errors",
            )
            probe = [(i % len(files), (0, 1023)) for i in range(PROBES)]
            alone = {name: sorted(asyncio.run(load(urls[name], probe, 1))["ttfb"]) for name in procs}
        rec = recorded(events_url(home))
    return b6_result(runs, alone, n, expected, len(warm) + PROBES, rec, mibs)


def b6_result(runs: dict, alone: dict, n: int, expected: int, extra: int, rec: dict, mibs: tuple) -> dict:
    fig = {name: figures(r, n) for name, r in runs.items()}
    for name, ttfb in alone.items():
        fig[name] |= {"one_client_ttfb_p50_ms": ms(statistics.median(ttfb)), "one_client_ttfb_max_ms": ms(ttfb[-1])}
    g, s = fig["gateway"], fig["StaticFiles"]
    sent = extra + n * len(runs["gateway"])
    bytes_ok = all(r["bytes"] == expected for rs in runs.values() for r in rs)
    clean = not g["errors"] and not s["errors"] and not rec["5xx"]
    for name, f in fig.items():
        print(
            f"  {name}: {f['MB_per_s']} MB/s, {f['requests_per_s']} req/s, TTFB p50 {f['ttfb_p50_ms']} ms"
            f" p99 {f['ttfb_p99_ms']} ms, {f['errors']} errors, server CPU {f['server_cpu_s']} s a run;"
            f" one client alone: TTFB p50 {f['one_client_ttfb_p50_ms']} ms, max {f['one_client_ttfb_max_ms']} ms",
            flush=True,
        )
    print(f"  gateway recorded {rec['rows']} requests of {sent} sent, {rec['5xx']} 5xx", flush=True)
    return {
        "source_s": 0,  # no media source: run.py's table header wants the key
        "files_mib": list(mibs),
        "requests_per_run": n,
        "clients": CLIENTS,
        "bytes_per_run": expected,
        "times": {name: times(r) for name, r in runs.items()},
        "figures": fig,
        "ratios": {
            "throughput gateway/StaticFiles": ratio(g["MB_per_s"], s["MB_per_s"]),
            "p99 TTFB gateway/StaticFiles": ratio(g["ttfb_p99_ms"], s["ttfb_p99_ms"]),
            "server CPU gateway/StaticFiles": ratio(g["server_cpu_s"], s["server_cpu_s"]),
        },
        "recorded": {**rec, "requests_sent": sent},
        "goals": {
            "throughput gateway/StaticFiles >= 0.8": g["MB_per_s"] / s["MB_per_s"] >= 0.8,
            "gateway p99 TTFB <= 50 ms": g["ttfb_p99_ms"] <= 50,
            "every request recorded, no 5xx": rec["rows"] == sent and clean,
            "bytes received == expected": bytes_ok,
        },
    }


# --- B7 upload -----------------------------------------------------------------------------------


@contextlib.contextmanager
def aws_env(tmp: Path) -> Iterator[None]:
    """The emulator's test credentials in this process's environment for the benchmark only (restored on
    exit), and nothing of a real AWS configuration."""
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
    }
    with mock.patch.dict(os.environ, values):
        for name in (
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
        ):
            os.environ.pop(name, None)
        yield


def empty(client, bucket: str) -> None:
    """Delete every object in the bucket (the emulator keeps them on its disk and in memory)."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


def bench_upload(quick: bool) -> dict:
    """B7: a 1 GiB file (64 MiB quick) to the S3 emulator: S3Store.put + commit vs boto3's upload_file."""
    import boto3

    from vexport_pipeline.core.delivery.s3store import S3Store, crc64nvme_file

    mib = 64 if quick else 1024
    path, bucket, port = random_file(mib), "vexport-bench", free_port()
    size, endpoint = path.stat().st_size, f"http://127.0.0.1:{port}"
    moto_argv = [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        aws_env(Path(tmp)),
        server("B7-moto", moto_argv, clean_env(), port) as moto,
    ):
        client = boto3.session.Session().client("s3", endpoint_url=endpoint)  # boto3's defaults, as `aws s3 cp`
        client.create_bucket(Bucket=bucket)
        store = S3Store(bucket, "vexport", endpoint_url=endpoint)

        def timed(key: str, upload: Callable[[], object]) -> dict:
            wall, cpu, moto_cpu = time.perf_counter(), time.process_time(), cpu_of(moto)
            upload()
            r = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
            r["moto_cpu_s"] = cpu_of(moto) - moto_cpu
            r["size"] = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
            empty(client, bucket)
            return r

        def vexport() -> dict:
            t0 = time.perf_counter()
            crc64nvme_file(path)  # alone, outside the timed delivery (which computes it again)
            checksum_s = time.perf_counter() - t0
            v = store.begin("bench")

            def deliver() -> None:
                store.put(v, path.name, path)
                store.commit(v)

            return {**timed(store.key(v, path.name), deliver), "checksum_s": checksum_s}

        def upload_file() -> dict:
            key = "upload_file/" + path.name
            return timed(key, lambda: client.upload_file(str(path), bucket, key))

        print(f"  {mib} MiB file {path.name}", flush=True)
        runs = alternate(
            {"vexport": vexport, "upload_file": upload_file},
            RUNS,
            lambda r: f"{size / r['wall_s'] / 1e6:.0f} MB/s, emulator {r['moto_cpu_s']:.1f} s CPU",
        )
    return b7_result(runs, size)


def b7_result(runs: dict, size: int) -> dict:
    t = {name: times(r) for name, r in runs.items()}
    v, u = t["vexport"]["median_s"], t["upload_file"]["median_s"]
    checksum = statistics.median(r["checksum_s"] for r in runs["vexport"])
    moto = {name: round(statistics.median(r["moto_cpu_s"] for r in rs), 2) for name, rs in runs.items()}
    sizes_ok = all(r["size"] == size for rs in runs.values() for r in rs)
    print(
        f"  vexport {size / v / 1e6:.0f} MB/s, upload_file {size / u / 1e6:.0f} MB/s;"
        f" CRC64NVME of the file alone {checksum:.2f} s ({size / checksum / 1e9:.1f} GB/s);"
        f" emulator CPU a run: {moto}",
        flush=True,
    )
    return {
        "source_s": 0,  # no media source: run.py's table header wants the key
        "file_bytes": size,
        "times": t,
        "checksum_s": round(checksum, 3),
        "emulator_cpu_s": moto,
        "sizes_match": sizes_ok,
        "ratios": {
            "vexport/upload_file": ratio(v, u),
            "vexport without checksum pass/upload_file": ratio(v - checksum, u),
        },
        "goals": {"vexport/upload_file <= 1.1": v / u <= 1.1, "uploaded sizes match": sizes_ok},
    }
