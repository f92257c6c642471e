"""The Dagster instance the CLI and `make dev` use: `DAGSTER_HOME`, else `VEXPORT_HOME/dagster`
holding a copy of the repository's dagster.yaml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
    target = home / "dagster.yaml"
    if REPO_DAGSTER_YAML.exists():
        if not target.exists() or target.read_bytes() != REPO_DAGSTER_YAML.read_bytes():
            shutil.copyfile(REPO_DAGSTER_YAML, target)
    elif not target.exists():
        target.write_text(DEFAULT_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
