"""The event store: the links handed out, every request made through them, and the download sessions
that decide when a download counts. One schema on SQLAlchemy Core: SQLite under VEXPORT_HOME by default,
PostgreSQL (`VEXPORT_EVENTS_URL`) when several gateway hosts share it.

A download counts once, when the bytes served to one client for one link cover the whole file (the union
of its ranges, per ETag): a video player's dozens of range requests count once, an abandoned download not
at all. A link's `max_downloads` slot is reserved when a client starts a download and released when the
session is abandoned (no request for `ABANDON_S`), so concurrent clients can never exceed the limit.

Several gateway processes may write at once. Each decision is one transaction that holds the link: on
SQLite every write transaction is `BEGIN IMMEDIATE` (one writer at a time, across processes); on
PostgreSQL the decisions about one link (`start_download`, `served`, `finish`) take a transaction-scoped
advisory lock on it, so they run one after another while other links go on in parallel.

Migrations: `schema_version` holds the version. An empty database is created whole from `METADATA` at
`SCHEMA_VERSION`; an SQLite file made before SQLAlchemy (versioned by `PRAGMA user_version` 0..4) is
brought up by its historical scripts (`MIGRATIONS`) in place; later changes are `UPGRADES` steps written
for both databases. The migration runs under the same locks (an advisory lock on PostgreSQL), so
processes that meet a new database at once wait for the first to finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from vexport_pipeline.core.errors import ConfigError, StoreBusy

if TYPE_CHECKING:  # pandas only where frames are read (analytics): the gateway and the CLI start without it
    import pandas as pd

ABANDON_S = 600.0  # a started download with no request for this long gives its slot back

# The SQLite history before SQLAlchemy, one script per `PRAGMA user_version` step: kept verbatim to bring
# old files up in place (never run on PostgreSQL; an empty database is made from METADATA instead).
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


SCHEMA_VERSION = 5  # the schema METADATA describes; UPGRADES[n] leads from n - 1 to n

METADATA = sa.MetaData()
_TIME = sa.Double()  # epoch seconds: 8-byte floats on both databases (PostgreSQL's REAL would be 4 bytes)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid alias must be INTEGER


def _zero() -> sa.TextClause:
    return sa.text("0")


LINKS = sa.Table(
    "links",
    METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("export_id", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("rendition", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("expires_at", _TIME, nullable=False),
    sa.Column("max_downloads", sa.Integer),
    sa.Column("allow_ips", sa.Text),
    sa.Column("revoked", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("one_time", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("countries", sa.Text, nullable=False, server_default=""),
    sa.Column("revoked_at", _TIME),
    sa.Column("destination", sa.Text, nullable=False, server_default="default"),
    sa.Column("max_concurrent", sa.Integer),  # downloads of the link at once (per gateway process)
    sa.Column("max_rate", sa.BigInteger),  # bytes a second per download
    sa.Index("links_export", "export_id"),
)
REQUESTS = sa.Table(
    "requests",
    METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", _TIME, nullable=False),
    sa.Column("link_id", sa.Text, nullable=False),
    sa.Column("export_id", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("rendition", sa.Text, nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False, server_default=_zero()),
    sa.Column("range", sa.Text, nullable=False, server_default=""),
    sa.Column("completed", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("client_ip", sa.Text, nullable=False, server_default=""),
    sa.Column("country", sa.Text, nullable=False, server_default=""),
    sa.Column("browser", sa.Text, nullable=False, server_default=""),
    sa.Column("os", sa.Text, nullable=False, server_default=""),
    sa.Column("device", sa.Text, nullable=False, server_default=""),
    sa.Column("referrer", sa.Text, nullable=False, server_default=""),
    sa.Column("user_agent", sa.Text, nullable=False, server_default=""),
    sa.Index("requests_export", "export_id"),
    sa.Index("requests_link", "link_id"),
    sqlite_autoincrement=True,
)
SESSIONS = sa.Table(
    "sessions",
    METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("link_id", sa.Text, nullable=False),
    sa.Column("client", sa.Text, nullable=False),
    sa.Column("etag", sa.Text, nullable=False),
    sa.Column("started_at", _TIME, nullable=False),
    sa.Column("last_at", _TIME, nullable=False),
    sa.Column("covered", sa.Text, nullable=False, server_default="[]"),
    sa.Column("completed", sa.Integer, nullable=False, server_default=_zero()),
    sa.Index("sessions_link", "link_id", "client", "etag"),
    sqlite_autoincrement=True,
)
DAILY = sa.Table(
    "daily",
    METADATA,
    sa.Column("day", sa.Text, primary_key=True),
    sa.Column("export_id", sa.Text, primary_key=True),
    sa.Column("rendition", sa.Text, primary_key=True),
    sa.Column("downloads", sa.Integer, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("bytes_served", sa.BigInteger, nullable=False),
    sa.Column("unique_clients", sa.Integer, nullable=False),
)
VERSION = sa.Table("schema_version", METADATA, sa.Column("version", sa.Integer, nullable=False))


# Schema changes after SCHEMA_VERSION 4, for both databases: {n: step from n - 1 to n} (Core DDL or
# dialect-neutral SQL on the migrating connection). Change METADATA to match and bump SCHEMA_VERSION; the
# tests check that a migrated database and a new one have the same tables, columns and indexes.
def _limits_per_download(db: sa.Connection) -> None:
    db.exec_driver_sql("ALTER TABLE links ADD COLUMN max_concurrent INTEGER")
    db.exec_driver_sql("ALTER TABLE links ADD COLUMN max_rate BIGINT")


UPGRADES: dict[int, Callable[[sa.Connection], None]] = {5: _limits_per_download}


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
    max_concurrent: int | None = None  # downloads at once, per gateway process
    max_rate: int | None = None  # bytes a second per download
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
            "max_concurrent": self.max_concurrent,
            "max_rate": self.max_rate,
            "downloads": self.downloads,
        }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _total(column) -> sa.ColumnElement:
    """SUM as a whole number on both databases (PostgreSQL sums BIGINT into NUMERIC), 0 when empty."""
    return sa.cast(sa.func.coalesce(sa.func.sum(column), 0), sa.BigInteger)


_COMPLETED = (  # a link's completed downloads, correlated with the links row it is selected beside
    sa.select(sa.func.count())
    .select_from(SESSIONS)
    .where(SESSIONS.c.link_id == LINKS.c.id, SESSIONS.c.completed == 1)
    .scalar_subquery()
)
_LINK = sa.select(
    *(LINKS.c[name] for name in ("id", "export_id", "version", "rendition", "path", "created_at", "expires_at")),
    *(LINKS.c[name] for name in ("max_downloads", "allow_ips", "revoked", "one_time", "countries", "destination")),
    LINKS.c.max_concurrent,
    LINKS.c.max_rate,
    _COMPLETED,
)

# The gateway's statements, built once with bind parameters: a request then costs no statement building and
# no cache-key work, only the compiled-statement cache lookup.
_S = SESSIONS.c
_LINK_BY_ID = _LINK.where(LINKS.c.id == sa.bindparam("link_id"))
_SESSION = (  # a client's latest download session of a link: (id, covered, completed)
    sa.select(_S.id, _S.covered, _S.completed)
    .where(_S.link_id == sa.bindparam("link_id"), _S.client == sa.bindparam("client"), _S.etag == sa.bindparam("etag"))
    .order_by(_S.id.desc())
    .limit(1)
)
_IN_PROGRESS = sa.case((sa.and_(_S.completed == 0, _S.last_at > sa.bindparam("alive_after")), 1), else_=0)
_SLOTS = (  # (completed downloads, downloads in progress) of a link: the slots `max_downloads` counts
    sa.select(_total(_S.completed), _total(_IN_PROGRESS)).where(_S.link_id == sa.bindparam("link_id"))
)
_REVOKED = sa.select(LINKS.c.revoked).where(LINKS.c.id == sa.bindparam("link_id"))  # None: no such link
_TOUCH = SESSIONS.update().where(_S.id == sa.bindparam("sid")).values(last_at=sa.bindparam("now"))
_COVER = (
    SESSIONS.update()
    .where(_S.id == sa.bindparam("sid"))
    .values(covered=sa.bindparam("new_covered"), completed=sa.bindparam("done"), last_at=sa.bindparam("now"))
)
_NEW_SESSION, _NEW_REQUEST, _NEW_LINK = SESSIONS.insert(), REQUESTS.insert(), LINKS.insert()


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(p for p in (text or "").split(",") if p)


def _link(row) -> LinkRow:
    *head, allow, revoked, one_time, countries, destination, concurrent, rate, downloads = row
    return LinkRow(
        *head, _split(allow), bool(revoked), bool(one_time), _split(countries), destination, concurrent, rate, downloads
    )


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
    """The event store at `url_or_path`: a path (or `sqlite:///` URL) is an SQLite file, made if missing;
    a `postgresql+psycopg2://` URL a PostgreSQL database. Either is migrated to the current schema."""

    def __init__(self, url_or_path: str | Path):
        self.url, self.path = _parse(url_or_path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._tx("schema") as db:
            _migrate(db)

    def _engine(self) -> sa.Engine:
        return _engine(self.url, self.path)

    @contextmanager
    def _tx(self, *locks: str) -> Iterator[sa.Connection]:
        """One write transaction. On SQLite it begins IMMEDIATE: the write lock is taken first, so a
        decision never reads a state another process changes before it writes. On PostgreSQL each of `locks`
        names an advisory lock held until the end of the transaction (the links whose sessions it decides),
        taken in sorted order so that two transactions never wait for each other."""
        with _writer(self.path), self._engine().connect() as db:
            db.execution_options(vexport_write=True)  # read by _sqlite_begin
            try:
                tx = db.begin()
            except sa.exc.OperationalError as exc:
                if not _lock_held(exc):
                    raise
                raise StoreBusy(
                    f"the event store stayed locked by another process for {BUSY_S:g} s", where=str(self.path)
                ) from None
            with tx:
                if db.dialect.name == "postgresql":
                    for lock in sorted(set(locks)):
                        db.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_SPACE, sa.func.hashtext(lock))))
                yield db

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._engine().connect() as db:
            yield db

    # links

    def add_link(self, row: LinkRow) -> None:
        with self._tx() as db:
            db.execute(
                _NEW_LINK,
                {
                    "id": row.id,
                    "export_id": row.export_id,
                    "version": row.version,
                    "rendition": row.rendition,
                    "path": row.path,
                    "created_at": row.created_at,
                    "expires_at": row.expires_at,
                    "max_downloads": row.max_downloads,
                    "allow_ips": ",".join(row.allow_ips),
                    "revoked": 0,
                    "one_time": int(row.one_time),
                    "countries": ",".join(row.countries),
                    "destination": row.destination,
                    "max_concurrent": row.max_concurrent,
                    "max_rate": row.max_rate,
                },
            )

    def link(self, link_id: str) -> LinkRow | None:
        with self._read() as db:
            row = db.execute(_LINK_BY_ID, {"link_id": link_id}).first()
        return _link(row) if row else None

    def links(self, export_id: str) -> list[LinkRow]:
        query = _LINK.where(LINKS.c.export_id == export_id).order_by(LINKS.c.created_at, LINKS.c.rendition)
        with self._read() as db:
            rows = db.execute(query).all()
        return [_link(r) for r in rows]

    def revoke(self, link_id: str | None = None, *, export_id: str | None = None, version: str | None = None) -> int:
        """Revoke one link, or every link of an export (or of one of its versions). Returns how many."""
        where = LINKS.c.id == link_id if link_id else LINKS.c.export_id == export_id
        if version:
            where = sa.and_(where, LINKS.c.version == version)
        update = LINKS.update().where(LINKS.c.revoked == 0, where).values(revoked=1, revoked_at=time.time())
        with self._tx() as db:
            return db.execute(update).rowcount

    # downloads

    def start_download(self, link: LinkRow, client: str, etag: str, *, fresh: bool, now: float | None = None) -> str:
        """Join or open this client's download session; 'ok', 'used_up' (every slot completed), 'busy'
        (the free slots are reserved by downloads in progress) or 'revoked' (the link as it is now, whatever
        `link` says). `fresh`: a request from the first byte without a Range, which after a completed download
        is a new download rather than a seek."""
        with self._tx(link.id) as db:
            return _start_download(db, link, client, etag, fresh=fresh, now=now)

    def served(self, link: LinkRow, client: str, etag: str, ranges: list[tuple[int, int]], size: int) -> bool:
        """Add the byte ranges just served to the client's session; True if this completed the download."""
        with self._tx(link.id) as db:
            return _cover(db, link, client, etag, ranges, size)

    def record(self, r: Request) -> None:
        with self._tx() as db:
            _insert(db, r)

    def finish(self, r: Request, etag: str, ranges: list[tuple[int, int]], size: int) -> bool:
        """`served` and `record` of one response in one transaction (one commit per request); the request is
        recorded as completing the download if its ranges did."""
        with self._tx(r.link.id) as db:
            return _finish(db, r, etag, ranges, size)

    def apply(self, writes: list[Write]) -> list[object]:
        """Several of `start_download`, `served`, `record` and `finish` (by name, with their arguments) in one
        transaction, one after another as if each were its own: the gateway's group commit, one commit for the
        writes of every request in flight instead of one each. Returns each one's result; where the transaction
        fails, each is tried again alone, and one that still fails has its exception in its place."""
        try:
            with self._tx(*(lock for w in writes if (lock := w.lock()))) as db:
                return [_WRITES[w.name](db, *w.args, **w.kwargs) for w in writes]
        except StoreBusy as exc:  # alone, each would wait as long again
            return [exc] * len(writes)
        except Exception:
            if len(writes) == 1:
                raise
        out: list[object] = []
        for w in writes:
            try:
                out.append(self.apply([w])[0])
            except Exception as exc:
                out.append(exc)
        return out

    def apply_now(self, write: Write) -> tuple[bool, object]:
        """`write` applied now if that needs no waiting, for a caller that must never block long (the gateway's event
        loop; about 0.3 ms for a download decision): (True, its result or the exception it raised), or (False, None)
        where it would wait: another writer holds the write lock, in this process or another, or the store is
        PostgreSQL (a network round trip). These connections never checkpoint the WAL, whose fsync would hold up the
        caller; whoever uses them calls `checkpoint` elsewhere now and then."""
        if self.path is None or not (lock := _writer(self.path)).acquire(blocking=False):
            return False, None
        try:
            with _engine(self.url, self.path, at_once=True).connect() as db:
                db.execution_options(vexport_write=True)  # read by _sqlite_begin: BEGIN IMMEDIATE
                try:
                    with db.begin():
                        return True, _WRITES[write.name](db, *write.args, **write.kwargs)
                except sa.exc.OperationalError as exc:
                    if _lock_held(exc):  # another process's transaction: not now
                        return False, None
                    return True, exc
                except Exception as exc:
                    return True, exc
        finally:
            lock.release()

    def checkpoint(self) -> None:
        """Copy the SQLite WAL into the database as far as readers allow, without waiting for anyone (PASSIVE)."""
        if self.path is not None:
            with self._read() as db:
                db.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

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
            {c: int(v) if i > 2 else str(v) for i, (c, v) in enumerate(zip(cols, r, strict=True))}
            for r in daily[cols].itertuples(index=False)
        ]
        with self._tx("daily") as db:  # two rollups at once on PostgreSQL: one after the other
            db.execute(DAILY.delete())
            if rows:
                db.execute(DAILY.insert(), rows)
        return len(rows)

    def daily_frame(self) -> pd.DataFrame:
        import pandas as pd

        query = sa.select(DAILY).order_by(DAILY.c.day, DAILY.c.export_id, DAILY.c.rendition)
        with self._read() as db:
            return pd.read_sql_query(query, db)

    def requests_frame(self, export_id: str | None = None) -> pd.DataFrame:
        import pandas as pd

        query = sa.select(REQUESTS).order_by(REQUESTS.c.at)
        if export_id:
            query = query.where(REQUESTS.c.export_id == export_id)
        with self._read() as db:
            return pd.read_sql_query(query, db)

    def links_frame(self, export_id: str | None = None) -> pd.DataFrame:
        import pandas as pd

        names = ("id", "export_id", "version", "rendition", "created_at", "expires_at", "max_downloads", "revoked")
        query = sa.select(*(LINKS.c[n] for n in names)).order_by(LINKS.c.created_at)
        if export_id:
            query = query.where(LINKS.c.export_id == export_id)
        with self._read() as db:
            return pd.read_sql_query(query, db)

    def downloads_frame(self, export_id: str | None = None) -> pd.DataFrame:
        """One row per (export, rendition) that has links: downloads, bytes and the last download."""
        import pandas as pd

        with self._read() as db:
            df = pd.read_sql_query(_downloads_query(export_id), db)
        df["last_download"] = pd.to_datetime(df["last_download"], unit="s", utc=True)
        return df


def _downloads_query(export_id: str | None) -> sa.Select:
    pairs = sa.select(LINKS.c.export_id, LINKS.c.rendition).distinct()
    if export_id:
        pairs = pairs.where(LINKS.c.export_id == export_id)
    lk, r = pairs.subquery("l"), REQUESTS.c
    served = sa.and_(r.export_id == lk.c.export_id, r.rendition == lk.c.rendition, r.status.between(200, 299))
    return (
        sa.select(
            lk.c.export_id,
            lk.c.rendition,
            _total(r.completed).label("downloads"),
            _total(r.bytes).label("bytes"),
            sa.func.max(sa.case((r.completed == 1, r.at))).label("last_download"),
        )
        .select_from(lk.outerjoin(REQUESTS, served))
        .group_by(lk.c.export_id, lk.c.rendition)
        .order_by(lk.c.export_id, lk.c.rendition)
    )


def _session(db: sa.Connection, link: LinkRow, client: str, etag: str) -> tuple | None:
    """The client's latest download session of this link: (id, covered, completed)."""
    return db.execute(_SESSION, {"link_id": link.id, "client": client, "etag": etag}).first()


def _cover(db: sa.Connection, link: LinkRow, client: str, etag: str, ranges: list[tuple[int, int]], size: int) -> bool:
    row = _session(db, link, client, etag)
    if row is None or row[2]:
        return False
    covered = merge([*map(tuple, json.loads(row[1])), *ranges])
    done = covered == [(0, size)]
    db.execute(_COVER, {"sid": row[0], "new_covered": json.dumps(covered), "done": int(done), "now": time.time()})
    return done


def _start_download(
    db: sa.Connection, link: LinkRow, client: str, etag: str, *, fresh: bool, now: float | None = None
) -> str:
    now = now or time.time()
    if db.execute(_REVOKED, {"link_id": link.id}).scalar() != 0:  # read in the transaction: `link` may be older
        return "revoked"
    mine = _session(db, link, client, etag)
    if mine and (not mine[2] or not fresh):
        db.execute(_TOUCH, {"sid": mine[0], "now": now})
        return "ok"
    limit = 1 if link.one_time else link.max_downloads
    if limit is not None:
        done, open_ = db.execute(_SLOTS, {"link_id": link.id, "alive_after": now - ABANDON_S}).one()
        if done >= limit:
            return "used_up"
        if done + open_ >= limit:
            return "busy"
    db.execute(_NEW_SESSION, {"link_id": link.id, "client": client, "etag": etag, "started_at": now, "last_at": now})
    return "ok"


def _finish(db: sa.Connection, r: Request, etag: str, ranges: list[tuple[int, int]], size: int) -> bool:
    done = bool(ranges) and _cover(db, r.link, r.client_ip, etag, ranges, size)
    _insert(db, replace(r, completed=done))
    return done


@dataclass(frozen=True)
class Write:
    """One of the event store's writes, to be applied with others (`EventStore.apply`)."""

    name: str  # start_download, served, record or finish
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def lock(self) -> str | None:
        """The link whose sessions it decides (a PostgreSQL advisory lock), if any."""
        first = self.args[0] if self.args else None
        if self.name == "record":
            return None
        return first.link.id if isinstance(first, Request) else first.id


def _insert(db: sa.Connection, r: Request) -> None:
    db.execute(
        _NEW_REQUEST,
        {
            "at": time.time(), "link_id": r.link.id, "export_id": r.link.export_id, "version": r.link.version,
            "rendition": r.link.rendition, "method": r.method, "status": r.status, "bytes": r.bytes,
            "range": r.range[:200], "completed": int(r.completed), "client_ip": r.client_ip, "country": r.country,
            "browser": r.browser[:100], "os": r.os[:100], "device": r.device[:100], "referrer": r.referrer[:500],
            "user_agent": r.user_agent[:500],
        },
    )  # fmt: skip


_WRITES: dict[str, Callable[..., object]] = {
    "start_download": _start_download,
    "served": _cover,
    "record": _insert,
    "finish": _finish,
}


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of half-open byte ranges [start, end), sorted and merged."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


# migrations


def _migrate(db: sa.Connection) -> None:
    """Bring the database to SCHEMA_VERSION, inside the caller's write transaction (which holds the
    SQLite write lock or the PostgreSQL `schema` advisory lock: one process migrates, the others wait and
    find it done)."""
    tables = set(sa.inspect(db).get_table_names())
    if VERSION.name in tables:
        version = db.execute(sa.select(VERSION.c.version)).scalar_one()
    elif db.dialect.name == "sqlite" and (tables & {"links", "downloads"} or _user_version(db)):
        version = _from_user_version(db)
    else:  # an empty database (a foreign `links` table makes this fail rather than being adopted)
        METADATA.create_all(db, checkfirst=False)
        db.execute(VERSION.insert().values(version=SCHEMA_VERSION))
        if db.dialect.name == "sqlite":  # the sqlite3-era code (a gateway not yet upgraded) finds it complete
            db.exec_driver_sql(f"PRAGMA user_version = {len(MIGRATIONS)}")
        return
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"the event store is at schema version {version}, newer than this vexport ({SCHEMA_VERSION}):"
            " upgrade vexport",
            where="VEXPORT_EVENTS_URL",
        )
    for n in range(version + 1, SCHEMA_VERSION + 1):
        UPGRADES[n](db)
        db.execute(VERSION.update().values(version=n))


def _user_version(db: sa.Connection) -> int:
    return db.exec_driver_sql("PRAGMA user_version").scalar_one()


def _from_user_version(db: sa.Connection) -> int:
    """An SQLite file of the sqlite3 era: its remaining historical scripts, then `schema_version`."""
    version = _user_version(db)
    for n, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in filter(str.strip, script.split(";\n")):
            db.exec_driver_sql(statement)
        db.exec_driver_sql(f"PRAGMA user_version = {n}")
    VERSION.create(db)
    db.execute(VERSION.insert().values(version=len(MIGRATIONS)))
    return len(MIGRATIONS)


# engines: one per process and database, shared by every EventStore on it

_LOCK_SPACE = 0x76657870  # "vexp": the first key of vexport's advisory locks, the second is hashtext(name)
_engines: dict[tuple[int, str, bool], tuple[sa.Engine, int | None]] = {}
_engines_lock = threading.Lock()
_writers: dict[tuple[int, Path], threading.Lock] = {}


def _writer(path: Path | None):
    """This process's lock on an SQLite file's writes. The writers of one process take turns here and start at
    once when the one before commits; meeting SQLite's lock instead, each waits in its busy handler, which sleeps
    in steps of up to 100 ms (50 clients of one gateway: p99 time to first byte 0.68 s). Other processes still
    wait at SQLite's lock. PostgreSQL: no lock here (its advisory locks order decisions per link)."""
    if path is None:
        return contextlib.nullcontext()
    with _engines_lock:
        return _writers.setdefault((os.getpid(), path), threading.Lock())  # a forked child makes its own


def _parse(url_or_path: str | Path) -> tuple[sa.URL, Path | None]:
    """The database URL, and the file when it is SQLite."""
    text = str(url_or_path)
    if isinstance(url_or_path, Path) or "://" not in text:
        path = Path(text).expanduser()
        return sa.URL.create("sqlite+pysqlite", database=str(path)), path
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError:
        raise ConfigError("is not a database URL", where="VEXPORT_EVENTS_URL") from None
    if url.drivername == "postgresql":  # the installed driver (SQLAlchemy 2.1 would pick psycopg 3)
        url = url.set(drivername="postgresql+psycopg2")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return url, Path(url.database).expanduser()
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            f"{url.drivername}:// is not an event store: use postgresql+psycopg2://... or an SQLite file",
            where="VEXPORT_EVENTS_URL",
        )
    return url, None


def _engine(url: sa.URL, path: Path | None, at_once: bool = False) -> sa.Engine:
    """This process's engine for the database (made once; after a fork the child makes its own). An SQLite
    file that was replaced (deleted and made again) gets a new engine, whose connections open the new file.
    `at_once`: SQLite connections that never wait for a lock nor checkpoint the WAL (`EventStore.apply_now`)."""
    key = (os.getpid(), url.render_as_string(hide_password=False), at_once)
    inode = _inode(path) if path is not None else None
    engine, known = _engines.get(key, (None, None))
    if engine is not None and inode == known:
        return engine
    with _engines_lock:
        engine, known = _engines.get(key, (None, None))
        if engine is None or inode != known:
            if engine is not None:
                engine.dispose()  # connections still in use finish on the old file, then close
            engine = _sqlite_engine(url, at_once) if path is not None else _postgres_engine(url)
            _engines[key] = (engine, inode)
    return engine


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        path.touch()  # SQLite takes an empty file as a new database
        return os.stat(path).st_ino


BUSY_S = 30.0  # how long an SQLite write waits for another process's write lock before StoreBusy


def _lock_held(exc: sa.exc.OperationalError) -> bool:
    """SQLite's answer that another connection holds the lock it waited for (SQLITE_BUSY or SQLITE_LOCKED)."""
    return getattr(exc.orig, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


# a gateway runs its calls in up to 40 threads (AnyIO's default): as many connections, 8 kept open
_POOL = {"pool_size": 8, "max_overflow": 32, "pool_timeout": 60}


def _postgres_engine(url: sa.URL) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True, **_POOL)


def _sqlite_engine(url: sa.URL, at_once: bool = False) -> sa.Engine:
    """SQLite with SQLAlchemy emitting BEGIN itself (SQLAlchemy's SQLite docs, "Enabling Non-Legacy SQLite
    Transactional Modes"): the sqlite3 driver's own BEGIN is turned off and writes begin IMMEDIATE. WAL lets
    readers run beside the writer; `synchronous=NORMAL` is safe with WAL against a crash of the process (a
    power cut may lose the last commits) and saves an fsync per transaction."""
    engine = sa.create_engine(url, connect_args={"timeout": 0 if at_once else BUSY_S}, **_POOL)
    sa.event.listen(engine, "connect", _sqlite_connect_at_once if at_once else _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_connect_at_once(dbapi_connection, record) -> None:
    _sqlite_connect(dbapi_connection, record)
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")  # a checkpoint's fsync would hold up the caller


def _sqlite_begin(db: sa.Connection) -> None:
    """Writes take the write lock first; reads (one statement each) run without a transaction."""
    if db.get_execution_options().get("vexport_write"):
        db.exec_driver_sql("BEGIN IMMEDIATE")
