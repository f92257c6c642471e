"""File helpers shared by the stages: content hashes, placing a file without copying where the file system
allows it, and reading a small text file (a manifest, the owners file) safely."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import uuid
from pathlib import Path

from vexport_pipeline.core.errors import InputError


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


def read_text_file(path: Path, limit: int, what: str) -> str:
    """A regular file's text, at most `limit` bytes. FIFOs, devices, sockets and folders are refused before
    anything is read (opened without blocking and checked again on the open file, so a swap cannot slip in)."""
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"cannot read {what}: {reason}", where=where, code="manifest_unreadable") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InputError(
                f"{what} is not a regular file ({_kind(st.st_mode)})", where=where, code="manifest_unreadable"
            )
        if st.st_size > limit:
            raise InputError(f"{what} is {st.st_size} bytes, more than {limit}", where=where, code="manifest_too_large")
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise InputError(f"{what} is more than {limit} bytes", where=where, code="manifest_too_large")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text", where=where, code="manifest_invalid") from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a file"
