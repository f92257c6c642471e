"""ZIP bundles of delivered files."""

from __future__ import annotations

import zipfile
from pathlib import Path


def write_zip(target: Path, members: dict[str, Path]) -> None:
    """A ZIP of already-compressed media: stored, not deflated (no CPU spent for nothing)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, path in members.items():
            zf.write(path, arcname=name)
