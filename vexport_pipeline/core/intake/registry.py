"""Registered compositions: the normalized manifest of each export, keyed by export id.

Registering resolves the source to an absolute path once (under the path policy), so the Dagster
assets read a trusted record rather than re-interpreting a user's file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.settings import Home
from vexport_pipeline.core.spec.composition import Composition, parse_composition


def register(home: Home, comp: Composition, source_path: Path, *, manifest: Path | None = None) -> dict:
    record = {
        "export_id": comp.id,
        "composition": comp.model_dump(mode="json", exclude_none=True),
        "source_path": str(source_path),
        "manifest": str(manifest) if manifest else None,
        "fingerprint": comp.fingerprint() + ":" + _stat_key(source_path),
        "registered_at": time.time(),
    }
    home.registry.mkdir(parents=True, exist_ok=True)
    target = home.registry / f"{comp.id}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, target)
    return record


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}-{int(st.st_mtime)}"


def load(home: Home, export_id: str) -> tuple[dict, Composition]:
    path = home.registry / f"{export_id}.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"no composition is registered for export {export_id!r}", where=str(path), code="export_unknown"
        ) from None
    comp = parse_composition(record["composition"], file=str(path))
    return record, comp
