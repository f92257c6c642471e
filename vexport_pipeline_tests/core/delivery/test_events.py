"""The event store on both of its databases: SQLite (the default) and PostgreSQL (`VEXPORT_EVENTS_URL`).
Download sessions count once and reserve slots; every historical SQLite file is migrated in place with its
rows; a fresh database of either kind gets the same schema; processes racing for the last slot of a link,
or meeting a new database at once, never both win nor fail."""

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from vexport_pipeline.core.delivery import events as ev
from vexport_pipeline.core.delivery.events import ABANDON_S, MIGRATIONS, EventStore, LinkRow, Request
from vexport_pipeline.core.errors import ConfigError
from vexport_pipeline_tests.conftest import PG

SPAWN = multiprocessing.get_context("spawn")  # real, separate processes: nothing inherited from this one


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def where(request, tmp_path):
    """Where a store lives: an SQLite file (a Path) or a PostgreSQL URL."""
    return tmp_path / "events.sqlite" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def row(**kw) -> LinkRow:
    base = {"id": "l1", "export_id": "e", "version": "v", "rendition": "a.mp4", "path": "/x", "created_at": 0}
    return LinkRow(**({**base, "expires_at": time.time() + 60} | kw))


def test_download_sessions_count_once_and_reserve_slots(where):
    events = EventStore(where)
    link = row(max_downloads=2)
    events.add_link(link)
    assert events.start_download(link, "a", '"t"', fresh=True) == "ok"
    assert not events.served(link, "a", '"t"', [(0, 50)], 100)
    assert events.start_download(link, "b", '"t"', fresh=True) == "ok"
    assert events.start_download(link, "c", '"t"', fresh=True) == "busy"  # two downloads in progress
    assert events.finish(Request(link, "GET", 206, 50, client_ip="a"), '"t"', [(50, 100)], 100)
    assert not events.served(link, "a", '"t"', [(0, 100)], 100)  # a seek after completion: not again
    assert events.start_download(link, "a", '"t"', fresh=False) == "ok"
    assert events.start_download(link, "c", '"t"', fresh=True) == "busy"
    later = time.time() + ABANDON_S + 1  # b gave up: its slot comes back
    assert events.start_download(link, "c", '"t"', fresh=True, now=later) == "ok"
    assert events.served(link, "c", '"t"', [(0, 100)], 100)
    assert events.start_download(link, "d", '"t"', fresh=True, now=later) == "used_up"
    assert events.link("l1").downloads == 2
    one = row(id="l2", one_time=True, allow_ips=("10.0.0.0/8",), countries=("DE", "FR"), destination="s3main")
    events.add_link(one)
    assert events.start_download(one, "a", '"t"', fresh=True) == "ok"
    assert events.start_download(one, "b", '"t"', fresh=True) == "busy"
    assert events.link("l2") == one and [r.id for r in events.links("e")] == ["l1", "l2"]
    assert events.revoke(export_id="e", version="v") == 2 and events.revoke("l1") == 0
    assert events.link("l1").revoked and events.link("nope") is None
    assert events.start_download(one, "a", '"t"', fresh=False) == "revoked"  # `one` was read before the revocation


def _fill(events: EventStore) -> None:
    for n, name in enumerate(["a.mp4", "b.webm"]):
        events.add_link(row(id=f"l{n}", rendition=name, created_at=n, max_downloads=1 if n else None))
    big = 5_000_000_000  # over 2**31: bytes are 64-bit on both databases
    link = events.link("l0")
    assert events.start_download(link, "9.9.9.9", '"t"', fresh=True) == "ok"
    events.finish(Request(link, "GET", 200, big, client_ip="9.9.9.9", browser="Firefox"), '"t"', [(0, big)], big)
    events.record(Request(events.link("l1"), "GET", 403, client_ip="1.2.3.4"))
    events.record_download("l1", bytes_sent=7, client_ip="1.2.3.4")
    daily = {"day": "2026-01-02", "export_id": "e", "rendition": "a.mp4", "downloads": 1, "requests": 2}
    assert events.save_daily(pd.DataFrame([daily | {"bytes_served": big, "unique_clients": 1}])) == 1


@pytest.mark.postgres
def test_both_databases_give_the_same_frames(tmp_path, pg_url):
    lite, pg = EventStore(tmp_path / "events.sqlite"), EventStore(pg_url)
    _fill(lite)
    _fill(pg)
    for name in ("requests_frame", "links_frame", "downloads_frame"):
        for export_id in (None, "e", "other"):
            a, b = getattr(lite, name)(export_id), getattr(pg, name)(export_id)
            moments = [c for c in ("at", "last_download") if c in a]  # when it happened differs by a moment
            pd.testing.assert_frame_equal(a.drop(columns=moments), b.drop(columns=moments))
            assert list(a.dtypes) == list(b.dtypes), name
    pd.testing.assert_frame_equal(lite.daily_frame(), pg.daily_frame())
    frame = pg.downloads_frame("e")
    assert list(frame["downloads"]) == [1, 1] and list(frame["bytes"]) == [5_000_000_000, 7]
    assert frame["last_download"].notna().all()


def _schema(where) -> dict:
    """Tables -> columns (name, nullable, primary key) in order, and indexes: what must not drift."""
    engine = sa.create_engine(f"sqlite:///{where}" if isinstance(where, Path) else where)
    try:
        inspector = sa.inspect(engine)
        out = {}
        for table in sorted(set(inspector.get_table_names()) - {"sqlite_sequence"}):
            pk = inspector.get_pk_constraint(table)["constrained_columns"]
            # SQLite lets an old TEXT PRIMARY KEY hold NULL (a quirk of it): key columns' nullability is moot
            columns = [(c["name"], c["nullable"] and c["name"] not in pk) for c in inspector.get_columns(table)]
            indexes = sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table))
            out[table] = (columns, pk, indexes)
        return out
    finally:
        engine.dispose()


def _old_file(path: Path, version: int) -> Path:
    """An event store as the sqlite3-era code left it at `PRAGMA user_version` `version`, with rows; version
    0 is the very first code, which had the `downloads` table and no user_version."""
    db = sqlite3.connect(path)
    for script in MIGRATIONS[: max(version, 1)]:
        db.executescript(script)
    db.execute(f"PRAGMA user_version = {version}")
    db.execute(
        "INSERT INTO links(id, export_id, version, rendition, path, created_at, expires_at, max_downloads,"
        " allow_ips, revoked) VALUES ('l1','e','v','a.mp4','/x',0,9e9,NULL,'10.0.0.0/8',0)"
    )
    if version < 2:
        db.execute(
            "INSERT INTO downloads(link_id, export_id, rendition, at, bytes, client_ip, status)"
            " VALUES ('l1','e','a.mp4',1,5,'9.9.9.9',200)"
        )
    else:
        db.execute(
            "INSERT INTO requests(at, link_id, export_id, version, rendition, method, status, bytes, completed,"
            " client_ip) VALUES (1,'l1','e','v','a.mp4','GET',200,5,1,'9.9.9.9')"
        )
        db.execute(
            "INSERT INTO sessions(link_id, client, etag, started_at, last_at, completed)"
            " VALUES ('l1', '9.9.9.9', '\"t\"', 1, 1, 1)"
        )
    if version >= 4:
        db.execute("INSERT INTO daily VALUES ('2026-01-01','e','a.mp4',1,1,5,1)")
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("version", range(len(MIGRATIONS) + 1))
def test_every_old_event_store_is_migrated_in_place_with_its_rows(tmp_path, version):
    events = EventStore(_old_file(tmp_path / "old.sqlite", version))
    frame = events.downloads_frame("e")
    assert list(frame["downloads"]) == [1] and list(frame["bytes"]) == [5]
    assert list(events.requests_frame("e")["client_ip"]) == ["9.9.9.9"]
    link = events.link("l1")
    assert (link.destination, link.one_time, link.allow_ips) == ("default", False, ("10.0.0.0/8",))
    assert link.downloads == (1 if version >= 2 else 0)  # the sqlite3-era downloads had no sessions
    assert len(events.daily_frame()) == (1 if version >= 4 else 0)
    fresh = EventStore(tmp_path / "fresh.sqlite")
    assert _schema(tmp_path / "old.sqlite") == _schema(tmp_path / "fresh.sqlite")
    for path in ("old.sqlite", "fresh.sqlite"):
        db = sqlite3.connect(tmp_path / path)
        stamps = db.execute("SELECT version FROM schema_version").fetchall(), db.execute("PRAGMA user_version")
        assert (stamps[0], stamps[1].fetchone()[0]) == ([(ev.SCHEMA_VERSION,)], len(MIGRATIONS)), path
        db.close()
    EventStore(tmp_path / "old.sqlite")  # opened again: nothing left to do
    events.add_link(row(id="l2", max_downloads=1))
    assert events.start_download(events.link("l2"), "a", '"t"', fresh=True) == "ok"
    assert fresh.links("e") == []


@pytest.mark.postgres
def test_a_new_postgres_database_gets_the_schema_of_a_new_sqlite_file(tmp_path, pg_url):
    EventStore(tmp_path / "events.sqlite")
    EventStore(pg_url)
    assert _schema(pg_url) == _schema(tmp_path / "events.sqlite")


def test_later_schema_steps_run_once_and_a_newer_schema_is_refused(where, monkeypatch):
    EventStore(where)
    ran = []
    monkeypatch.setattr(ev, "SCHEMA_VERSION", ev.SCHEMA_VERSION + 1)
    monkeypatch.setitem(ev.UPGRADES, ev.SCHEMA_VERSION, lambda db: ran.append(db.dialect.name))
    EventStore(where)
    EventStore(where)
    assert len(ran) == 1
    monkeypatch.setattr(ev, "SCHEMA_VERSION", ev.SCHEMA_VERSION - 1)  # an older vexport meets it
    with pytest.raises(ConfigError, match="newer than this vexport"):
        EventStore(where)


def test_a_bad_events_url_is_refused():
    from vexport_pipeline.core.settings import Settings

    with pytest.raises(ConfigError, match="VEXPORT_EVENTS_URL"):
        EventStore("mysql://u@h/db")
    with pytest.raises(ConfigError, match="VEXPORT_EVENTS_URL"):
        Settings.from_env({"VEXPORT_EVENTS_URL": "mysql://u:secret@h/db"})
    settings = Settings.from_env({"VEXPORT_EVENTS_URL": f"{PG}/x"})
    assert settings.events_url == f"{PG}/x" and "secret" not in repr(settings)


def _first_use(where, barrier, out) -> None:
    ev._engine(*ev._parse(where)).connect().close()  # connected already: the processes meet at the migration
    barrier.wait(timeout=60)
    try:
        EventStore(where)
        out.put("ok")
    except Exception as exc:  # reported to the test
        out.put(repr(exc))


def _race(where, link_ids, barrier, out) -> None:
    events = EventStore(where)
    links = [events.link(i) for i in link_ids]
    got = []
    for link in links:
        barrier.wait(timeout=60)
        got.append(events.start_download(link, f"client-{os.getpid()}", '"t"', fresh=True))
    out.put(got)


def _run(target, n: int, *args) -> list:
    barrier, out = SPAWN.Barrier(n), SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)
    return results


def test_processes_meeting_a_new_database_all_find_it_made(where):
    assert _run(_first_use, 3, where) == ["ok"] * 3
    engine = sa.create_engine(f"sqlite:///{where}" if isinstance(where, Path) else where)
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT version FROM schema_version")).all() == [(ev.SCHEMA_VERSION,)]
    engine.dispose()


def test_two_processes_racing_for_the_last_slot_never_both_get_it(where):
    events = EventStore(where)
    ids = [f"race{n}" for n in range(30)]
    for i in ids:
        events.add_link(row(id=i, max_downloads=1))
    first, second = _run(_race, 2, where, ids)
    assert [sorted(pair) for pair in zip(first, second, strict=True)] == [["busy", "ok"]] * len(ids)
    assert all(events.start_download(events.link(i), "late", '"t"', fresh=True) == "busy" for i in ids)


def _half(where, link_ids, barrier, out) -> None:
    events = EventStore(where)
    links = [events.link(i) for i in link_ids]
    got = []
    for link in links:
        half = [(0, 50), (50, 100)][barrier.wait(timeout=60)]  # wait() tells the two processes apart
        got.append((half, events.served(link, "player", '"t"', [half], 100)))
    out.put(got)


def test_a_players_parallel_ranges_complete_the_download_exactly_once(where):
    """Two range requests of one player finish at once, in two processes: neither half is lost."""
    events = EventStore(where)
    ids = [f"half{n}" for n in range(30)]
    for i in ids:
        events.add_link(row(id=i, max_downloads=1))
        assert events.start_download(events.link(i), "player", '"t"', fresh=True) == "ok"
    first, second = _run(_half, 2, where, ids)
    assert [sorted(done for _, done in pair) for pair in zip(first, second, strict=True)] == [[False, True]] * len(ids)
    assert all(events.link(i).downloads == 1 for i in ids)


def test_writes_applied_together_decide_as_if_one_after_another(where):
    """The gateway's group commit: one transaction for several requests' writes gives the answers they would get
    one at a time (the second of two clients racing for a one-slot link is busy, a whole file completes), and a
    write that fails is rolled back alone while the others still take effect."""
    events = EventStore(where)
    link, other = row(max_downloads=1), row(id="l2")
    events.add_link(link)
    events.add_link(other)
    got = events.apply(
        [
            ev.Write("start_download", (link, "a", '"t"'), {"fresh": True}),
            ev.Write("start_download", (link, "b", '"t"'), {"fresh": True}),
            ev.Write("start_download", (other, "c", '"t"'), {"fresh": True}),
            ev.Write("finish", (Request(other, "GET", 200, 100, client_ip="c"), '"t"', [(0, 100)], 100)),
            ev.Write("record", (Request(link, "GET", 429, client_ip="b"),)),
        ]
    )
    assert got == ["ok", "busy", "ok", True, None]
    assert events.link("l2").downloads == 1 and events.link("l1").downloads == 0
    got = events.apply(
        [
            ev.Write("served", (link, "a", '"t"', [(0, 100)], 100)),
            ev.Write("record", (None,)),  # fails: the others still take effect
            ev.Write("record", (Request(other, "HEAD", 200, client_ip="c"),)),
        ]
    )
    assert got[0] is True and isinstance(got[1], AttributeError) and got[2] is None
    assert events.link("l1").downloads == 1
    frame = events.requests_frame()
    assert sorted(zip(frame["method"], frame["status"])) == [("GET", 200), ("GET", 429), ("HEAD", 200)]


def test_a_write_is_applied_at_once_only_where_it_need_not_wait(where, tmp_path):
    """apply_now (the gateway's event loop): done at once when the write lock is free; never waits for another
    process's transaction nor for this process's writer, and never runs on PostgreSQL (a network round trip)."""
    events = EventStore(where)
    link = row(max_downloads=1)
    events.add_link(link)
    start = ev.Write("start_download", (link, "a", '"t"'), {"fresh": True})
    if not isinstance(where, Path):
        assert events.apply_now(start) == (False, None)
        return
    other = sqlite3.connect(where, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write transaction
    t0 = time.monotonic()
    assert events.apply_now(start) == (False, None) and time.monotonic() - t0 < 1
    other.execute("ROLLBACK")
    with ev._writer(where):  # this process's group-commit thread in the middle of a round
        assert events.apply_now(start) == (False, None)
    assert events.apply_now(start) == (True, "ok")
    assert events.apply_now(ev.Write("start_download", (link, "b", '"t"'), {"fresh": True})) == (True, "busy")
    done, error = events.apply_now(ev.Write("record", (None,)))
    assert done and isinstance(error, AttributeError)
    events.checkpoint()
    assert events.start_download(link, "a", '"t"', fresh=False) == "ok"  # the session survived the checkpoint


def test_a_write_kept_waiting_too_long_by_another_process_is_refused_as_busy(tmp_path, monkeypatch):
    """Past BUSY_S waiting for another process's SQLite write lock a write raises StoreBusy (not a database error),
    and a group of writes gives up once for all of them instead of waiting again for each."""
    from vexport_pipeline.core.errors import StoreBusy

    monkeypatch.setattr(ev, "BUSY_S", 0.3)
    path = tmp_path / "events.sqlite"
    events = EventStore(path)
    link = row()
    events.add_link(link)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    t0 = time.monotonic()
    with pytest.raises(StoreBusy, match="locked by another process"):
        events.start_download(link, "a", '"t"', fresh=True)
    writes = [ev.Write("record", (Request(link, "GET", 200, client_ip=ip),)) for ip in ("a", "b", "c")]
    got = events.apply(writes)
    assert all(isinstance(g, StoreBusy) for g in got) and time.monotonic() - t0 < 3  # two waits, not four
    other.execute("ROLLBACK")
    assert events.apply(writes) == [None] * 3
