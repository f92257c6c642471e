"""The latest run of every export, read straight from the instance's run storage without importing Dagster, for
`vexport list`: importing Dagster and opening its storage took 2.4 s of the 3.5 s a list of 10,000 exports took
(B9). The storage is the one the instance's dagster.yaml names: SQLite under `DAGSTER_HOME` (the default, or
`storage: sqlite: base_dir`) or PostgreSQL (`storage: postgres:`). The tables read, `runs` and `run_tags`, are
Dagster's (pinned in pyproject.toml; `test_runstore.py` checks this reader against Dagster's own answer on both
databases). Any other storage, or tables that do not answer as expected: None, and the caller asks Dagster."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import yaml

from vexport_pipeline.core import history
from vexport_pipeline.core.delivery.stores import LocalStore
from vexport_pipeline.core.settings import current
from vexport_pipeline.defs.tags import EXPORT_TAG, OWNER_TAG, SOURCE_TAG

# Newest first, as Dagster's `get_run_records` orders them; the tags we read, one row each.
QUERY = f"""
SELECT r.run_id, r.status, r.create_timestamp, r.start_time, r.end_time, t.key, t.value
FROM runs r JOIN run_tags t ON t.run_id = r.run_id
WHERE r.pipeline_name = 'export_job' AND t.key IN ('{EXPORT_TAG}', '{OWNER_TAG}', '{SOURCE_TAG}')
ORDER BY r.id DESC
"""


def latest_runs(dagster_home: Path) -> dict[str, history.RunInfo] | None:
    """Export id → its newest run (as `runs.latest_runs` gives it), or None where this reader cannot tell."""
    try:
        found = _connector(dagster_home)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError, yaml.YAMLError):
        return None
    if found is None:
        return None
    connect, errors = found
    try:
        with closing(connect()) as conn:
            cursor = conn.cursor()
            cursor.execute(QUERY)
            return _latest(cursor.fetchall())
    except (*errors, AttributeError, TypeError, ValueError):  # unreadable, or rows not as Dagster writes them
        return None


def _latest(rows: list[tuple]) -> dict[str, history.RunInfo]:
    runs: dict[str, tuple[tuple, dict[str, str]]] = {}
    for run_id, status, created, started, ended, key, value in rows:
        runs.setdefault(run_id, ((run_id, status, created, started, ended), {}))[1][key] = value
    out: dict[str, history.RunInfo] = {}
    for (run_id, status, created, started, ended), tags in runs.values():
        export_id = tags.get(EXPORT_TAG)
        if export_id and export_id not in out:
            out[export_id] = history.RunInfo(
                run_id,
                history.status_name(status),
                _utc(created),
                started,
                ended,
                tags.get(OWNER_TAG),
                tags.get(SOURCE_TAG),
            )
    return out


def rows(runs: dict[str, history.RunInfo]) -> list[history.Row]:
    """`vexport list`'s rows: every export the registry or these runs know, with its delivered version."""
    paths = current().paths
    store = LocalStore(paths.store)
    stored = {e.name for e in os.scandir(store.root)} if store.root.is_dir() else set()  # one listing, not a look each
    return history.rows(
        history.registered(paths.registry),
        runs,
        lambda export_id: delivered(store, export_id) if export_id in stored else (None, None),
    )


def delivered(store: LocalStore, export_id: str) -> tuple[str | None, str | None]:
    """(version, summary status) of the export's current version in the local store, or (None, None)."""
    v = store.current(export_id)
    if v is None:
        return None, None
    return v.version, (summary(store, v) or {}).get("status", "delivered")


def summary(store: LocalStore, v) -> dict | None:
    """A delivered version's summary.json, or None where it is missing or unreadable."""
    try:
        raw = store.read_record(v, "summary.json")
        return json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None


def _utc(value) -> float | None:
    """Dagster keeps `create_timestamp` as naive UTC (SQLite: text; PostgreSQL: a timestamp)."""
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _connector(home: Path) -> tuple[Callable, tuple[type[Exception], ...]] | None:
    """How to open the run storage, and the errors that say it cannot be read this way."""
    path = home / "dagster.yaml"
    config = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    if any(k in config for k in ("run_storage", "event_log_storage", "schedule_storage")):
        return None  # storages configured one by one (class names): Dagster knows them
    storage = config.get("storage")
    if storage is None or set(storage) == {"sqlite"}:
        sqlite = (storage or {}).get("sqlite") or {}
        base = _value(sqlite["base_dir"]) if "base_dir" in sqlite else str(home)
        if not base:
            return None  # named but empty (an unset variable): Dagster says what is wrong
        db = Path(base) / "history" / "runs.db"
        if not db.is_file():
            return None
        return (lambda: sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5)), (sqlite3.Error,)
    if set(storage) == {"postgres"}:
        return _postgres(storage["postgres"])
    return None


# `postgres_db` schemes psycopg2 reads (SQLAlchemy 2.1 takes plain `postgresql` for psycopg 3, not installed here)
SCHEMES = ("postgresql", "postgresql+psycopg2")


def _postgres(pg: dict) -> tuple[Callable, tuple[type[Exception], ...]] | None:
    """A connection as dagster-postgres makes it: `postgres_url`, or `postgres_db`'s parts (params as the query)."""
    url = _value(pg.get("postgres_url"))
    if not url:
        db = {k: _value(v) for k, v in (pg.get("postgres_db") or {}).items()}
        if not db.get("hostname") or not db.get("db_name") or db.get("scheme", "postgresql") not in SCHEMES:
            return None
        auth = quote(str(db.get("username") or ""), safe="")
        if db.get("password"):
            auth += ":" + quote(str(db["password"]), safe="")
        query = f"?{urlencode(db['params'])}" if db.get("params") else ""
        url = f"postgresql://{auth}@{db['hostname']}:{db.get('port') or 5432}/{db['db_name']}{query}"
    import psycopg2

    url = str(url).replace("postgresql+psycopg2://", "postgresql://", 1)
    return (lambda: psycopg2.connect(url, connect_timeout=5)), (psycopg2.Error,)


def _value(v):
    """A dagster.yaml value: as it is, or `{env: NAME}` read from the environment."""
    return os.environ.get(v["env"]) if isinstance(v, dict) and "env" in v else v
