"""The event store (SQLite under VEXPORT_HOME): the links handed out, every request made through them, and
the download sessions that decide when a download counts.

A download counts once, when the bytes served to one client for one link cover the whole file (the union
of its ranges, per ETag): a video player's dozens of range requests count once, an abandoned download not
at all. A link's `max_downloads` slot is reserved when a client starts a download and released when the
session is abandoned (no request for `ABANDON_S`), so concurrent clients can never exceed the limit.
Several gateway processes may write at once: each decision is one `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

ABANDON_S = 600.0  # a started download with no request for this long gives its slot back

MIGRATIONS = [
    """
CREATE TABLE IF NOT EXISTS links (
  id TEXT PRIMARY KEY, export_id TEXT NOT NULL, version TEXT NOT NULL, rendition TEXT NOT NULL,
  path TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
  max_downloads INTEGER, allow_ips TEXT, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS downloads (
  id INTEGER PRIMARY KEY AUTOINCREMENT, link_id TEXT NOT NULL, export_id TEXT NOT NULL,
  rendition TEXT NOT NULL, at REAL NOT NULL, bytes INTEGER NOT NULL DEFAULT 0, client_ip TEXT, status INTEGER);
CREATE INDEX IF NOT EXISTS downloads_export ON downloads(export_id);
""",
    """
ALTER TABLE links ADD COLUMN one_time INTEGER NOT NULL DEFAULT 0;
ALTER TABLE links ADD COLUMN countries TEXT NOT NULL DEFAULT '';
ALTER TABLE links ADD COLUMN revoked_at REAL;
CREATE INDEX IF NOT EXISTS links_export ON links(export_id);
CREATE TABLE requests (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, link_id TEXT NOT NULL, export_id TEXT NOT NULL,
  version TEXT NOT NULL, rendition TEXT NOT NULL, method TEXT NOT NULL, status INTEGER NOT NULL,
  bytes INTEGER NOT NULL DEFAULT 0, range TEXT NOT NULL DEFAULT '', completed INTEGER NOT NULL DEFAULT 0,
  client_ip TEXT NOT NULL DEFAULT '', country TEXT NOT NULL DEFAULT '', browser TEXT NOT NULL DEFAULT '',
  os TEXT NOT NULL DEFAULT '', device TEXT NOT NULL DEFAULT '', referrer TEXT NOT NULL DEFAULT '',
  user_agent TEXT NOT NULL DEFAULT '');
CREATE INDEX requests_export ON requests(export_id);
CREATE INDEX requests_link ON requests(link_id);
INSERT INTO requests(at, link_id, export_id, version, rendition, method, status, bytes, completed, client_ip)
  SELECT d.at, d.link_id, d.export_id, COALESCE(l.version, ''), d.rendition, 'GET', COALESCE(d.status, 200),
         d.bytes, 1, COALESCE(d.client_ip, '')
  FROM downloads d LEFT JOIN links l ON l.id = d.link_id;
DROP TABLE downloads;
CREATE TABLE sessions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, link_id TEXT NOT NULL, client TEXT NOT NULL, etag TEXT NOT NULL,
  started_at REAL NOT NULL, last_at REAL NOT NULL, covered TEXT NOT NULL DEFAULT '[]',
  completed INTEGER NOT NULL DEFAULT 0);
CREATE INDEX sessions_link ON sessions(link_id, client, etag);
""",
    """
ALTER TABLE links ADD COLUMN destination TEXT NOT NULL DEFAULT 'default';
""",
    """
CREATE TABLE daily (
  day TEXT NOT NULL, export_id TEXT NOT NULL, rendition TEXT NOT NULL, downloads INTEGER NOT NULL,
  requests INTEGER NOT NULL, bytes_served INTEGER NOT NULL, unique_clients INTEGER NOT NULL,
  PRIMARY KEY (day, export_id, rendition));
""",
]


@dataclass(frozen=True)
class LinkRow:
    id: str
    export_id: str
    version: str
    rendition: str
    path: str
    created_at: float
    expires_at: float
    max_downloads: int | None = None
    allow_ips: tuple[str, ...] = ()
    revoked: bool = False
    one_time: bool = False
    countries: tuple[str, ...] = ()
    destination: str = "default"  # the named destination whose copy the link serves
    downloads: int = field(default=0, compare=False)  # completed downloads so far (read, never written)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "export_id": self.export_id,
            "version": self.version,
            "rendition": self.rendition,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "max_downloads": self.max_downloads,
            "allow_ips": list(self.allow_ips),
            "countries": list(self.countries),
            "one_time": self.one_time,
            "revoked": self.revoked,
            "destination": self.destination,
            "downloads": self.downloads,
        }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


_LINK_COLUMNS = (
    "id, export_id, version, rendition, path, created_at, expires_at, max_downloads, allow_ips, revoked,"
    " one_time, countries, destination,"
    " (SELECT COUNT(*) FROM sessions s WHERE s.link_id = links.id AND s.completed = 1)"
)


_local = threading.local()


@contextmanager
def _kept(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Use the thread's kept connection (not closed after use), rolling back what an error left open."""
    try:
        yield db
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(p for p in (text or "").split(",") if p)


def _link(row) -> LinkRow:
    *head, allow, revoked, one_time, countries, destination, downloads = row
    return LinkRow(*head, _split(allow), bool(revoked), bool(one_time), _split(countries), destination, downloads)


@dataclass(frozen=True)
class Request:
    """One request through the gateway, as recorded."""

    link: LinkRow
    method: str
    status: int
    bytes: int = 0
    range: str = ""
    completed: bool = False
    client_ip: str = ""
    country: str = ""
    browser: str = ""
    os: str = ""
    device: str = ""
    referrer: str = ""
    user_agent: str = ""


class EventStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _kept(self._connect()) as db:
            self._migrate(db)

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection, opened once (a gateway makes several calls per request). WAL lets
        readers run beside the writer; `synchronous=NORMAL` is safe with WAL against a crash of the
        process (a power cut may lose the last commits) and saves an fsync per transaction."""
        key = (os.getpid(), str(self.path))
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            inode = None  # not made yet: sqlite3 creates it
        db, known = getattr(_local, "dbs", {}).get(key, (None, None))
        if db is None or inode is None or inode != known:  # new, or the file was replaced: open it again
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are explicit
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            _local.__dict__.setdefault("dbs", {})[key] = (db, os.stat(self.path).st_ino)
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait and find it done
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for n, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";\n")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {n}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with _kept(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # links

    def add_link(self, row: LinkRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO links(id, export_id, version, rendition, path, created_at, expires_at, max_downloads,"
                " allow_ips, revoked, one_time, countries, destination) VALUES (?,?,?,?,?,?,?,?,?,0,?,?,?)",
                (
                    row.id,
                    row.export_id,
                    row.version,
                    row.rendition,
                    row.path,
                    row.created_at,
                    row.expires_at,
                    row.max_downloads,
                    ",".join(row.allow_ips),
                    int(row.one_time),
                    ",".join(row.countries),
                    row.destination,
                ),
            )

    def link(self, link_id: str) -> LinkRow | None:
        with _kept(self._connect()) as db:
            row = db.execute(f"SELECT {_LINK_COLUMNS} FROM links WHERE id = ?", (link_id,)).fetchone()
        return _link(row) if row else None

    def links(self, export_id: str) -> list[LinkRow]:
        with _kept(self._connect()) as db:
            rows = db.execute(
                f"SELECT {_LINK_COLUMNS} FROM links WHERE export_id = ? ORDER BY created_at, rendition", (export_id,)
            ).fetchall()
        return [_link(r) for r in rows]

    def revoke(self, link_id: str | None = None, *, export_id: str | None = None, version: str | None = None) -> int:
        """Revoke one link, or every link of an export (or of one of its versions). Returns how many."""
        where, args = ("id = ?", [link_id]) if link_id else ("export_id = ?", [export_id])
        if version:
            where, args = where + " AND version = ?", [*args, version]
        with self._tx() as db:
            return db.execute(
                f"UPDATE links SET revoked = 1, revoked_at = ? WHERE revoked = 0 AND {where}", (time.time(), *args)
            ).rowcount

    # downloads

    def start_download(self, link: LinkRow, client: str, etag: str, *, fresh: bool, now: float | None = None) -> str:
        """Join or open this client's download session; 'ok', 'used_up' (every slot completed) or 'busy'
        (the free slots are reserved by downloads in progress). `fresh`: a request from the first byte
        without a Range, which after a completed download is a new download rather than a seek."""
        now = now or time.time()
        with self._tx() as db:
            mine = _session(db, link, client, etag)
            if mine and (not mine[2] or not fresh):
                db.execute("UPDATE sessions SET last_at = ? WHERE id = ?", (now, mine[0]))
                return "ok"
            limit = 1 if link.one_time else link.max_downloads
            if limit is not None:
                done, open_ = db.execute(
                    "SELECT COALESCE(SUM(completed), 0), COALESCE(SUM(completed = 0 AND last_at > ?), 0)"
                    " FROM sessions WHERE link_id = ?",
                    (now - ABANDON_S, link.id),
                ).fetchone()
                if done >= limit:
                    return "used_up"
                if done + open_ >= limit:
                    return "busy"
            db.execute(
                "INSERT INTO sessions(link_id, client, etag, started_at, last_at) VALUES (?,?,?,?,?)",
                (link.id, client, etag, now, now),
            )
            return "ok"

    def served(self, link: LinkRow, client: str, etag: str, ranges: list[tuple[int, int]], size: int) -> bool:
        """Add the byte ranges just served to the client's session; True if this completed the download."""
        with self._tx() as db:
            return _cover(db, link, client, etag, ranges, size)

    def record(self, r: Request) -> None:
        with self._tx() as db:
            _insert(db, r)

    def finish(self, r: Request, etag: str, ranges: list[tuple[int, int]], size: int) -> bool:
        """`served` and `record` of one response in one transaction (one commit per request); the request is
        recorded as completing the download if its ranges did."""
        with self._tx() as db:
            done = bool(ranges) and _cover(db, r.link, r.client_ip, etag, ranges, size)
            _insert(db, replace(r, completed=done))
            return done

    def record_download(self, link_id: str, *, bytes_sent: int, client_ip: str = "", status: int = 200) -> None:
        """A whole download, recorded directly (imports, tests); the gateway records through `record`."""
        link = self.link(link_id)
        if link is None:
            raise KeyError(link_id)
        self.record(Request(link, "GET", status, bytes_sent, completed=True, client_ip=client_ip))

    # analytics

    def save_daily(self, daily: pd.DataFrame) -> int:
        """Keep the daily rollup (analytics.daily_rollup's columns): replaced whole, in one transaction."""
        cols = ["day", "export_id", "rendition", "downloads", "requests", "bytes_served", "unique_clients"]
        rows = [
            tuple(int(v) if i > 2 else str(v) for i, v in enumerate(r)) for r in daily[cols].itertuples(index=False)
        ]
        with self._tx() as db:
            db.execute("DELETE FROM daily")
            db.executemany(f"INSERT INTO daily({', '.join(cols)}) VALUES (?,?,?,?,?,?,?)", rows)
        return len(rows)

    def daily_frame(self) -> pd.DataFrame:
        with _kept(self._connect()) as db:
            return pd.read_sql_query("SELECT * FROM daily ORDER BY day, export_id, rendition", db)

    def requests_frame(self, export_id: str | None = None) -> pd.DataFrame:
        where, args = ("WHERE export_id = ?", (export_id,)) if export_id else ("", ())
        with _kept(self._connect()) as db:
            return pd.read_sql_query(f"SELECT * FROM requests {where} ORDER BY at", db, params=args)

    def links_frame(self, export_id: str | None = None) -> pd.DataFrame:
        where, args = ("WHERE export_id = ?", (export_id,)) if export_id else ("", ())
        with _kept(self._connect()) as db:
            return pd.read_sql_query(
                "SELECT id, export_id, version, rendition, created_at, expires_at, max_downloads, revoked"
                f" FROM links {where} ORDER BY created_at",
                db,
                params=args,
            )

    def downloads_frame(self, export_id: str | None = None) -> pd.DataFrame:
        """One row per (export, rendition) that has links: downloads, bytes and the last download."""
        query = """
            SELECT l.export_id, l.rendition, COALESCE(SUM(r.completed), 0) AS downloads,
                   COALESCE(SUM(r.bytes), 0) AS bytes, MAX(CASE WHEN r.completed = 1 THEN r.at END) AS last_download
            FROM (SELECT DISTINCT export_id, rendition FROM links {where}) l
            LEFT JOIN requests r ON r.export_id = l.export_id AND r.rendition = l.rendition
                 AND r.status BETWEEN 200 AND 299
            GROUP BY l.export_id, l.rendition ORDER BY l.export_id, l.rendition"""
        where, args = ("WHERE export_id = ?", (export_id,)) if export_id else ("", ())
        with _kept(self._connect()) as db:
            df = pd.read_sql_query(query.format(where=where), db, params=args)
        df["last_download"] = pd.to_datetime(df["last_download"], unit="s", utc=True)
        return df


def _session(db: sqlite3.Connection, link: LinkRow, client: str, etag: str) -> tuple | None:
    """The client's latest download session of this link: (id, covered, completed)."""
    return db.execute(
        "SELECT id, covered, completed FROM sessions WHERE link_id = ? AND client = ? AND etag = ?"
        " ORDER BY id DESC LIMIT 1",
        (link.id, client, etag),
    ).fetchone()


def _cover(db, link: LinkRow, client: str, etag: str, ranges: list[tuple[int, int]], size: int) -> bool:
    row = _session(db, link, client, etag)
    if row is None or row[2]:
        return False
    covered = merge([*map(tuple, json.loads(row[1])), *ranges])
    done = covered == [(0, size)]
    db.execute(
        "UPDATE sessions SET covered = ?, completed = ?, last_at = ? WHERE id = ?",
        (json.dumps(covered), int(done), time.time(), row[0]),
    )
    return done


def _insert(db, r: Request) -> None:
    db.execute(
        "INSERT INTO requests(at, link_id, export_id, version, rendition, method, status, bytes, range,"
        " completed, client_ip, country, browser, os, device, referrer, user_agent)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            time.time(), r.link.id, r.link.export_id, r.link.version, r.link.rendition, r.method, r.status, r.bytes,
            r.range[:200], int(r.completed), r.client_ip, r.country, r.browser[:100], r.os[:100], r.device[:100],
            r.referrer[:500], r.user_agent[:500],
        ),
    )  # fmt: skip


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of half-open byte ranges [start, end), sorted and merged."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
