"""Registered compositions: the normalized manifest of each export, keyed by export id.

Registering resolves the source to an absolute path once (under the path policy), so the Dagster
assets read a trusted record rather than re-interpreting a user's file."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from vexport_pipeline.core import artifacts
from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.files import write_atomically
from vexport_pipeline.core.history import DEFAULT_OWNER
from vexport_pipeline.core.settings import Home
from vexport_pipeline.core.spec.composition import Composition
from vexport_pipeline.core.spec.loading import parse_composition


@dataclass(frozen=True)
class Registered:
    """A composition accepted for export, with its source resolved to an absolute, allowed path."""

    composition: Composition
    source_path: Path
    manifest: str | None
    fingerprint: str  # changes when the composition or the source file changes
    registered_at: float
    via: str = "cli"  # "inbox": taken by the sensor, which must see its run requested
    checked: str | None = None  # the source's size-mtime when plan_checked passed on it (decode, jumps)

    def checks_hold(self) -> bool:
        """The source file is the one the plan-time media checks passed on: the `source` asset need not read
        it again (a truncation decode, a demux for timestamp jumps)."""
        try:
            return self.checked is not None and self.checked == _stat_key(self.source_path)
        except OSError:
            return False

    @property
    def export_id(self) -> str:
        return self.composition.id

    @property
    def owner(self) -> str:
        return self.composition.owner or DEFAULT_OWNER

    @property
    def run_key(self) -> str:
        return f"{self.export_id}:{self.fingerprint[:24]}"

    def to_dict(self) -> dict:
        return {
            "export_id": self.export_id,
            "composition": self.composition.model_dump(mode="json", exclude_none=True),
            "source_path": str(self.source_path),
            "manifest": self.manifest,
            "fingerprint": self.fingerprint,
            "registered_at": self.registered_at,
            "via": self.via,
            "checked": self.checked,
        }


def register(
    home: Home,
    comp: Composition,
    source_path: Path,
    *,
    manifest: Path | None = None,
    via: str = "cli",
    checked: bool = False,
) -> Registered:
    record = Registered(
        comp,
        Path(source_path),
        str(manifest) if manifest else None,
        comp.fingerprint() + ":" + _stat_key(source_path),
        time.time(),
        via,
        _stat_key(source_path) if checked else None,
    )
    home.registry.mkdir(parents=True, exist_ok=True)
    target = home.registry / f"{comp.id}.json"
    text = json.dumps(record.to_dict(), indent=2)
    write_atomically(target, text)
    if store := artifacts.configured():  # workers with homes of their own read it there
        store.write(artifacts.registration_key(comp.id), text.encode())
    _log(home, record)
    return record


LOG_KEEP_S = 2 * 86400  # the hourly rate limits need one hour of the log; two days are kept


def _log_folder(home: Home) -> Path:
    return home.registry / ".log"


def _log(home: Home, record: Registered) -> None:
    """One line per registration in an hourly file: the record above is replaced when an id is exported again,
    and each of those exports counts against its owner's hourly rate."""
    folder = _log_folder(home)
    folder.mkdir(exist_ok=True)
    path = folder / time.strftime("%Y%m%dT%H.jsonl", time.gmtime(record.registered_at))
    if not path.exists():  # a new hour: drop the files nobody counts any more
        oldest = time.strftime("%Y%m%dT%H", time.gmtime(record.registered_at - LOG_KEEP_S))
        for old in folder.glob("*.jsonl"):
            if old.stem < oldest:
                old.unlink(missing_ok=True)
    line = json.dumps({"export_id": record.export_id, "owner": record.owner, "at": record.registered_at})
    with open(path, "a") as f:  # one short appended line: whole, even with other processes appending
        f.write(line + "\n")


def registrations(home: Home, since: float) -> list[tuple[str, float]]:
    """(owner, epoch seconds) of every registration at or after `since` (within the last two days)."""
    first = time.strftime("%Y%m%dT%H", time.gmtime(since))
    out = []
    folder = _log_folder(home)
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        if path.stem < first:
            continue
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                if entry["at"] >= since:
                    out.append((str(entry["owner"]), float(entry["at"])))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash counts for nothing
    return out


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}-{int(st.st_mtime)}"


def load(home: Home, export_id: str) -> Registered:
    path = home.registry / f"{export_id}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        store = artifacts.configured()  # a worker's own home: the registering host put the record in the store
        shared = store and store.read(artifacts.registration_key(export_id))
        if not shared:
            raise InputError(
                f"no composition is registered for export {export_id!r}", where=str(path), code="export_unknown"
            ) from None
        data = json.loads(shared)
    comp = parse_composition(data["composition"], file=str(path))
    return Registered(
        comp,
        Path(data["source_path"]),
        data.get("manifest"),
        data["fingerprint"],
        data["registered_at"],
        data.get("via", "cli"),
        data.get("checked"),
    )


def recent(home: Home, since: float, via: str = "inbox") -> list[Registered]:
    """Records registered `via` the inbox since `since` (epoch seconds): the sensor asks for their runs again,
    so a tick that failed after taking a file never loses its run (Dagster drops a run key it has seen)."""
    out = []
    for path in sorted(home.registry.glob("*.json")) if home.registry.is_dir() else []:
        try:
            if path.stat().st_mtime < since:
                continue
            record = load(home, path.stem)
        except (OSError, ValueError, KeyError, InputError):
            continue  # a record that cannot be read is reported where it is used, not here
        if record.via == via and record.registered_at >= since:
            out.append(record)
    return out
