"""The local delivery store: every delivered version is built in a staging folder and renamed into
place in one step, then `current` is switched atomically. Nothing half-written is ever visible."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vexport_pipeline.core.errors import StorageError


@dataclass
class Promoted:
    export_id: str
    version: str
    folder: Path

    def path(self, name: str) -> Path:
        return self.folder / name


def _place(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same file system: no copy
    except OSError:
        shutil.copy2(src, dst)


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def export_dir(self, export_id: str) -> Path:
        return self.root / export_id

    def current(self, export_id: str) -> Path | None:
        link = self.export_dir(export_id) / "current"
        return link.resolve() if link.exists() else None

    def promote(
        self, export_id: str, files: dict[str, Path], write_extra: Callable[[Promoted, Path], None]
    ) -> Promoted:
        """Place `files` (name -> source path) as a new version; `write_extra(promoted, staging)` then
        writes more files into the staging folder knowing their final place (the summary names them)."""
        version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        final = self.export_dir(export_id) / version
        staging = self.root / ".staging" / f"{export_id}-{version}"
        staging.mkdir(parents=True)
        try:
            for name, src in files.items():
                if Path(name).name != name or name.startswith("."):
                    raise StorageError(f"refusing file name {name!r}", where=export_id)
                _place(Path(src), staging / name)
            promoted = Promoted(export_id, version, final)
            write_extra(promoted, staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)
            link_tmp = final.parent / f".current-{uuid.uuid4().hex[:6]}"
            os.symlink(version, link_tmp)
            os.replace(link_tmp, final.parent / "current")
            return promoted
        except OSError as exc:
            raise StorageError(f"could not promote into {self.root}: {exc}", where=export_id) from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def dump_json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def write_zip(target: Path, members: dict[str, Path]) -> None:
    """A ZIP of already-compressed media: stored, not deflated (no CPU spent for nothing)."""
    import zipfile

    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, path in members.items():
            zf.write(path, arcname=name)
