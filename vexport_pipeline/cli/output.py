"""What every command prints on the way out: a refusal as `error: ...` with its exit code, a JSON file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from vexport_pipeline.core.errors import VexportError


def fail(exc: VexportError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
