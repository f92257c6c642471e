"""Process-level set-up for the entry points (CLI, `make dev`, tests): env defaults and DAGSTER_HOME."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
DEFAULT_DAGSTER_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"


def apply_env_defaults() -> None:
    """Give every VEXPORT_* variable the resources read a value, so the embedded defaults need no set-up."""
    os.environ["VEXPORT_HOME"] = str(Path(os.environ.get("VEXPORT_HOME") or ".vexport").expanduser().resolve())
    os.environ.setdefault("VEXPORT_MEDIA_ROOTS", "")
    os.environ.setdefault("VEXPORT_PUBLIC_URL", "http://127.0.0.1:8787")
    os.environ.setdefault("VEXPORT_HARDWARE", "auto")
    os.environ.setdefault("VEXPORT_CHUNK_SECONDS", "120")


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, or VEXPORT_HOME/dagster holding a copy of the repository's dagster.yaml."""
    apply_env_defaults()
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = Path(os.environ["VEXPORT_HOME"]) / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if REPO_DAGSTER_YAML.exists():
        if not target.exists() or target.read_bytes() != REPO_DAGSTER_YAML.read_bytes():
            shutil.copyfile(REPO_DAGSTER_YAML, target)
    elif not target.exists():
        target.write_text(DEFAULT_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
