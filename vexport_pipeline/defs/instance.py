"""The Dagster instance the CLI and `make dev` use: `DAGSTER_HOME`, else `VEXPORT_HOME/dagster`
holding a copy of the repository's dagster.yaml, with the per-owner run limits of `VEXPORT_OWNERS` added."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import yaml

from vexport_pipeline.core import owners
from vexport_pipeline.core.errors import ConfigError
from vexport_pipeline.core.files import write_atomically
from vexport_pipeline.core.settings import current
from vexport_pipeline.defs.tags import OWNER_TAG, QUEUE_TAG

REPO_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
DEFAULT_CONCURRENT = 3  # runs per owner where no dagster.yaml says otherwise
DEFAULT_DAGSTER_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"


def ensure_dagster_home() -> Path:
    """Called by entry points only. Pins `VEXPORT_HOME` to an absolute path in this process's
    environment, so the processes Dagster starts (code servers, run workers) find the same home."""
    settings = current()
    os.environ["VEXPORT_HOME"] = str(settings.home)
    if os.environ.get("DAGSTER_HOME"):
        given = Path(os.environ["DAGSTER_HOME"])
        if not given.is_dir():  # Dagster's own answer is a stack trace
            raise ConfigError(f"{given} is not a folder: create it, or unset DAGSTER_HOME", where="DAGSTER_HOME")
        return given
    home = settings.paths.dagster
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    with open(home / ".init.lock", "a") as lock:  # first runs started together: one creates, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        target = home / "dagster.yaml"
        wanted = instance_yaml(owners.load())
        if not target.exists() or target.read_text() != wanted:
            write_atomically(target, wanted)
        if not (home / ".initialised").exists():
            _create_storage()
            (home / ".initialised").touch()
    return home


def instance_yaml(limits: owners.Owners) -> str:
    """The repository's dagster.yaml as it is, or, with an owners file that sets `concurrent`, with its run queue
    limits: the per-owner default (`vexport/queue`) from `default`, and one `vexport/owner` entry per owner that
    has their own (their runs carry no `vexport/queue` tag, see `run_tags`)."""
    text = REPO_DAGSTER_YAML.read_text() if REPO_DAGSTER_YAML.exists() else DEFAULT_DAGSTER_YAML
    own = limits.own_concurrency()
    if limits.default.concurrent is None and not own:
        return text
    data = yaml.safe_load(text)
    queue = data.setdefault("concurrency", {}).setdefault("runs", {})
    entries = queue.get("tag_concurrency_limits") or []
    default = next((e for e in entries if e["key"] == QUEUE_TAG), None)
    default = default or {"key": QUEUE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": DEFAULT_CONCURRENT}
    default["limit"] = limits.default.concurrent or default["limit"]
    mine = [{"key": OWNER_TAG, "value": owner, "limit": n} for owner, n in sorted(own.items())]
    rest = [e for e in entries if e["key"] not in (QUEUE_TAG, OWNER_TAG)]
    queue["tag_concurrency_limits"] = [default, *mine, *rest]
    head = "# Made by vexport from the repository's dagster.yaml and VEXPORT_OWNERS; edit those, not this copy.\n"
    return head + yaml.safe_dump(data, sort_keys=False)


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
