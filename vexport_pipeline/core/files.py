"""File helpers shared by the stages: content hashes, placing a file without copying where the file system
allows it, and reading a small text file (a manifest, the owners file) safely."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
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


_UMASK = os.umask(0o022)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write `data` to a new hidden file beside `path`, then rename it into place: a reader sees the old
    content or the whole new one, never a part (a crash mid-write leaves no half file behind). The hidden file is
    created, never opened (`mkstemp`): a link someone left under its name in a shared folder is not written through."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # the mode an ordinary write gives (mkstemp's is 0600)
        with os.fdopen(fd, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_text_file(path: Path, limit: int, what: str, *, follow_links: bool = True) -> str:
    """A regular file's text, at most `limit` bytes. FIFOs, devices, sockets and folders are refused before
    anything is read (opened without blocking and checked again on the open file, so a swap cannot slip in);
    without `follow_links`, a symbolic link too."""
    where = str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"cannot read {what}: {reason}", where=where, code="manifest_unreadable") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # before fdopen, which refuses a folder with its own error
        os.close(fd)
        raise InputError(f"{what} is not a regular file ({_kind(st.st_mode)})", where=where, code="manifest_unreadable")
    with os.fdopen(fd, "rb") as f:
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
