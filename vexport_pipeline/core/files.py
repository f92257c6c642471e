"""File helpers shared by the stages: content hashes and placing a file without copying where the
file system allows it."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    """`dst` becomes `src`'s content: a hard link on the same file system, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def place_atomically(src: Path, dst: Path) -> None:
    """Link or copy `src` to a hidden name beside `dst`, then rename it into place: a reader of `dst`
    sees the old file or the whole new one, never a part; nothing is left behind if it fails."""
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:6]}")
    try:
        link_or_copy(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write `data` to a hidden name beside `path`, then rename it into place: a reader sees the old
    content or the whole new one, never a part (a crash mid-write leaves no half file behind)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    try:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
