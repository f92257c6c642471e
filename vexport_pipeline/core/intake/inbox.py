"""The inbox: compositions (YAML/JSON) and bare videos dropped in a folder become registered exports.

Accepted files move to `accepted/`; invalid ones to `rejected/` with a `.error.txt` beside them, so a
bad file is reported once and never retried forever. Sources inside the inbox move under the media
root, so a video referenced by a manifest is not also taken as a bare video.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from vexport_pipeline.core.errors import InputError, VexportError
from vexport_pipeline.core.settings import Home, MediaPolicy, current
from vexport_pipeline.core.spec.composition import Composition
from vexport_pipeline.core.spec.loading import load_composition, parse_composition, read_manifest, resolve_source, slug

from . import registry

MANIFEST_EXTS = {".yaml", ".yml", ".json"}
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mxf", ".ts", ".mts"}
DEFAULT_PROFILE = {"export_type": "single", "targets": [{"preset": "web_720p"}]}


@dataclass(frozen=True)
class Accepted:
    record: registry.Registered
    file: str


@dataclass(frozen=True)
class Rejected:
    file: str
    error: str


def default_profile() -> dict:
    """The composition a bare video gets: `VEXPORT_DEFAULT_PROFILE` (YAML) or web_720p."""
    if path := current().default_profile_file:
        data = yaml.safe_load(path.read_text()) or {}
        return {k: v for k, v in data.items() if k not in ("source", "id")}
    return dict(DEFAULT_PROFILE)


def _aside(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    if dst.exists():
        dst = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{src.name}"
    os.replace(src, dst)
    return dst


def _adopt(home: Home, export_id: str, source: Path) -> Path:
    """Move a source that sits in the inbox under the media root."""
    if not source.is_relative_to(home.inbox.resolve()):
        return source
    folder = home.media / "inbox" / export_id
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / source.name
    os.replace(source, dst)
    return dst.resolve()


def _ready(path: Path, min_age_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime >= min_age_s
    except FileNotFoundError:
        return False


def admit(comp: Composition, source: Path) -> None:
    """The checks `vexport export` makes before any work: readable video, segments inside it, and no
    target sure to fail its platform (the same for `submit` and the sensor)."""
    from vexport_pipeline.core.media.probe import probe, require_video
    from vexport_pipeline.core.planning import plan_export

    plan_export(comp, require_video(probe(source)))


def _regular(path: Path) -> None:
    """Only regular files dropped into the inbox itself are taken: a symlink could point anywhere."""
    if path.is_symlink() or not path.is_file():
        raise InputError(
            "only regular files are taken from the inbox (this is a link or not a file)",
            where=path.name,
            code="inbox_not_regular",
        )


def process(home: Home, policy: MediaPolicy, *, min_age_s: float = 2.0) -> tuple[list[Accepted], list[Rejected]]:
    """One pass over the inbox. Files younger than `min_age_s` may still be being written: next pass."""
    home.ensure()
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    entries = sorted(
        p for p in home.inbox.iterdir() if p.is_file() and not p.name.startswith(".") and _ready(p, min_age_s)
    )
    manifests = [p for p in entries if p.suffix.lower() in MANIFEST_EXTS]
    claimed: set[Path] = set()
    for m in manifests:  # find the videos manifests name before any is taken as a bare video
        try:
            data = read_manifest(m)
            if isinstance(data, dict) and isinstance(data.get("source"), str):
                claimed.add((m.parent / data["source"]).resolve())
        except VexportError:
            pass
    for m in manifests:
        try:
            _regular(m)
            comp = load_composition(m)
            source = resolve_source(comp, m.parent, policy)
            admit(comp, source)
            source = _adopt(home, comp.id, source)
            record = registry.register(home, comp, source, manifest=m)
            _aside(m, home.inbox / "accepted")
            accepted.append(Accepted(record, m.name))
        except VexportError as exc:
            _reject(home, m, exc, rejected)
    for v in entries:
        if v.suffix.lower() not in VIDEO_EXTS or v.resolve() in claimed or not v.exists():
            continue
        try:
            _regular(v)
            export_id = slug(v.stem)
            comp = parse_composition({**default_profile(), "id": export_id, "source": v.name}, file=v.name)
            admit(comp, v)
            source = _adopt(home, comp.id, v.resolve())
            record = registry.register(home, comp, source, manifest=None)
            accepted.append(Accepted(record, v.name))
        except VexportError as exc:
            _reject(home, v, exc, rejected)
    return accepted, rejected


def _reject(home: Home, path: Path, exc: Exception, rejected: list[Rejected]) -> None:
    if not path.exists():
        return
    moved = _aside(path, home.inbox / "rejected")
    moved.with_name(moved.name + ".error.txt").write_text(str(exc) + "\n")
    rejected.append(Rejected(path.name, str(exc)))


def submit(home: Home, file: Path, policy: MediaPolicy) -> Path:
    """Validate a manifest or bare video and place it in the inbox (its media under the media root).
    Raises the same errors `vexport export` gives."""
    home.ensure()
    file = Path(file).resolve()
    if file.suffix.lower() in MANIFEST_EXTS:
        comp = load_composition(file)
        source = resolve_source(comp, file.parent, policy)
    elif file.suffix.lower() in VIDEO_EXTS:
        if not file.is_file():
            raise InputError("does not exist or is not a file", where=str(file), code="source_missing")
        comp = parse_composition({**default_profile(), "id": slug(file.stem), "source": file.name}, file=file.name)
        source = file
    else:
        raise InputError(
            f"expected a composition ({', '.join(sorted(MANIFEST_EXTS))}) or a video ({', '.join(sorted(VIDEO_EXTS))})",
            where=str(file),
            code="input_unknown",
        )
    admit(comp, source)
    media = source
    if not any(source.is_relative_to(r) for r in policy.roots):
        folder = home.media / "submitted" / comp.id
        folder.mkdir(parents=True, exist_ok=True)
        media = folder / source.name
        if media.exists():
            media.unlink()
        try:
            os.link(source, media)
        except OSError:
            shutil.copy2(source, media)
    data = comp.model_dump(mode="json", exclude_none=True)
    data["source"] = str(media)
    staged = home.inbox / f".{comp.id}.json.tmp"
    staged.write_text(json.dumps(data, indent=2))
    final = home.inbox / f"{comp.id}.json"
    os.replace(staged, final)
    return final
