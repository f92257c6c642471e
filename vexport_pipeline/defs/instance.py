"""The Dagster instance the CLI and `make dev` use: `DAGSTER_HOME`, else `VEXPORT_HOME/dagster`
holding a copy of the repository's dagster.yaml."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from vexport_pipeline.core.files import write_atomically
from vexport_pipeline.core.settings import current

REPO_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
DEFAULT_DAGSTER_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"


def ensure_dagster_home() -> Path:
    """Called by entry points only. Pins `VEXPORT_HOME` to an absolute path in this process's
    environment, so the processes Dagster starts (code servers, run workers) find the same home."""
    settings = current()
    os.environ["VEXPORT_HOME"] = str(settings.home)
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = settings.paths.dagster
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    with open(home / ".init.lock", "a") as lock:  # first runs started together: one creates, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        target = home / "dagster.yaml"
        wanted = REPO_DAGSTER_YAML.read_text() if REPO_DAGSTER_YAML.exists() else DEFAULT_DAGSTER_YAML
        if not target.exists() or target.read_text() != wanted:
            write_atomically(target, wanted)
        if not (home / ".initialised").exists():
            _create_storage()
            (home / ".initialised").touch()
    return home


def _create_storage() -> None:
    """Open every storage once, so their tables exist before a second process looks (SQLite's schema
    creation is not safe to race: 'table secondary_indexes already exists')."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    try:
        instance.get_runs(limit=1)
        instance.event_log_storage.get_concurrency_keys()
        if instance.schedule_storage:
            instance.schedule_storage.all_instigator_state()
    finally:
        instance.dispose()
