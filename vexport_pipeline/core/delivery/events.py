"""The event store (SQLite under VEXPORT_HOME): the links handed out and the downloads made through them."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import astuple, dataclass
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS links (
  id TEXT PRIMARY KEY, export_id TEXT NOT NULL, version TEXT NOT NULL, rendition TEXT NOT NULL,
  path TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
  max_downloads INTEGER, allow_ips TEXT, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS downloads (
  id INTEGER PRIMARY KEY AUTOINCREMENT, link_id TEXT NOT NULL, export_id TEXT NOT NULL,
  rendition TEXT NOT NULL, at REAL NOT NULL, bytes INTEGER NOT NULL DEFAULT 0, client_ip TEXT, status INTEGER);
CREATE INDEX IF NOT EXISTS downloads_export ON downloads(export_id);
"""


@dataclass(frozen=True)
class LinkRow:
    id: str
    export_id: str
    version: str
    rendition: str
    path: str
    created_at: float
    expires_at: float


class EventStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def add_link(self, row: LinkRow, *, max_downloads: int | None, allow_ips: list[str]) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO links VALUES (?,?,?,?,?,?,?,?,?,0)",
                (*astuple(row), max_downloads, ",".join(allow_ips)),
            )

    def record_download(self, link_id: str, *, bytes_sent: int, client_ip: str = "", status: int = 200) -> None:
        with closing(self._connect()) as db, db:
            row = db.execute("SELECT export_id, rendition FROM links WHERE id=?", (link_id,)).fetchone()
            if row is None:
                raise KeyError(link_id)
            db.execute(
                "INSERT INTO downloads(link_id, export_id, rendition, at, bytes, client_ip, status)"
                " VALUES (?,?,?,?,?,?,?)",
                (link_id, row[0], row[1], time.time(), bytes_sent, client_ip, status),
            )

    def downloads_frame(self, export_id: str | None = None) -> pd.DataFrame:
        """One row per (export, rendition) that has links: downloads, bytes and the last download."""
        query = """
            SELECT l.export_id, l.rendition, COUNT(d.id) AS downloads, COALESCE(SUM(d.bytes), 0) AS bytes,
                   MAX(d.at) AS last_download
            FROM links l LEFT JOIN downloads d ON d.link_id = l.id AND d.status BETWEEN 200 AND 299
            {where} GROUP BY l.export_id, l.rendition ORDER BY l.export_id, l.rendition"""
        with closing(self._connect()) as db:
            if export_id:
                df = pd.read_sql_query(query.format(where="WHERE l.export_id = ?"), db, params=(export_id,))
            else:
                df = pd.read_sql_query(query.format(where=""), db)
        df["last_download"] = pd.to_datetime(df["last_download"], unit="s", utc=True)
        return df
