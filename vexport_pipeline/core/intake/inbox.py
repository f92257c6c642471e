"""The inbox: compositions (YAML/JSON) and bare videos dropped in a folder become registered exports.

Accepted files move to `accepted/`; invalid ones to `rejected/` with a `.error.txt` beside them, so a
bad file is reported once and never retried forever. A file that failed for a reason that can pass (a check
stopped by a signal, a full disk, a store locked too long) stays and is tried again on the next passes, up to
`TRIES` in all, before it is refused. Sources inside the inbox move under the media root, so a video referenced
by a manifest is not also taken as a bare video.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from vexport_pipeline.core import owners
from vexport_pipeline.core.errors import InputError, RateLimited, VexportError
from vexport_pipeline.core.files import read_text_file, write_atomically
from vexport_pipeline.core.settings import Home, MediaPolicy, current
from vexport_pipeline.core.spec.composition import Composition
from vexport_pipeline.core.spec.loading import load_composition, parse_composition, read_manifest, resolve_source, slug

from . import registry

MANIFEST_EXTS = {".yaml", ".yml", ".json"}
# Bare videos the inbox takes (with the default profile): the names of the containers `probe` reads, camcorders' and
# broadcast recorders' among them (AVCHD .mts/.m2ts, DVD .vob, MiniDV .dv, old phones' .3gp); other files stay put
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mxf", ".ts", ".mts", ".m2ts", ".m2t", ".mpg",
              ".mpeg", ".vob", ".dv", ".flv", ".wmv", ".asf", ".3gp", ".3g2", ".ogv"}  # fmt: skip
DEFAULT_PROFILE = {"export_type": "single", "targets": [{"preset": "web_720p"}]}
TRIES = 3  # passes a file that failed for a passing reason gets before it is refused


@dataclass(frozen=True)
class Accepted:
    record: registry.Registered
    file: str


@dataclass(frozen=True)
class Rejected:
    file: str
    error: str


@dataclass(frozen=True)
class Held:
    """A file left in the inbox for a later pass: its owner is at their hourly rate (`reason` says until when), it
    failed for a reason that can pass (`reason` says which, and the tries so far), or the pass ran out of time
    before it (`waiting`)."""

    file: str
    reason: str
    waiting: bool = False


class _Retries:
    """The files that failed for a passing reason, kept in the inbox's hidden `.retries.json` by name with the size
    and modification time each had (a file replaced since then starts again at its first try)."""

    def __init__(self, home: Home):
        self.path = home.inbox / ".retries.json"
        try:  # only a regular file of its own: the inbox is open to others, and a FIFO there would hang the pass
            rows = json.loads(read_text_file(self.path, 1 << 20, "the inbox's tries", follow_links=False))
        except (VexportError, ValueError):
            rows = {}
        self.rows: dict = rows if isinstance(rows, dict) else {}
        self.changed = False

    def failed(self, path: Path, message: str) -> int:
        """Count one more failed try of `path`; returns the tries so far."""
        try:
            st = path.lstat()
            mark = [st.st_size, st.st_mtime_ns]
        except OSError:
            mark = None
        row = self.rows.get(path.name)
        before = row.get("tries") if isinstance(row, dict) and row.get("file") == mark else 0
        tries = (before if isinstance(before, int) else 0) + 1
        self.rows[path.name] = {"tries": tries, "file": mark, "error": message[:500]}
        self.changed = True
        return tries

    def reason(self, name: str) -> str | None:
        row = self.rows.get(name)
        return f"tried {row.get('tries')} of {TRIES} times: {row.get('error')}" if isinstance(row, dict) else None

    def forget(self, name: str) -> None:
        self.changed |= self.rows.pop(name, None) is not None

    def save(self) -> None:
        if not self.changed:
            return
        rows = {k: v for k, v in self.rows.items() if os.path.lexists(self.path.parent / k)}
        with contextlib.suppress(OSError):  # a full disk: this pass's tries go uncounted, and the pass still ends well
            write_atomically(self.path, json.dumps(rows))


def default_profile() -> dict:
    """The composition a bare video gets: `VEXPORT_DEFAULT_PROFILE` (YAML) or web_720p."""
    if path := current().default_profile_file:
        data = yaml.safe_load(path.read_text()) or {}
        return {k: v for k, v in data.items() if k not in ("source", "id")}
    return dict(DEFAULT_PROFILE)


def _aside(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = (
        src.name
        if len(src.name) <= 180
        else f"{src.name[:150]}-{hashlib.sha256(src.name.encode()).hexdigest()[:8]}{src.suffix[:10]}"
    )
    dst = folder / name
    if os.path.lexists(dst):
        dst = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{name}"
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
        return time.time() - path.lstat().st_mtime >= min_age_s
    except OSError:
        return False


def admit(comp: Composition, source: Path) -> None:
    """The checks `vexport export` makes before any work: readable video, segments inside it, and no
    target sure to fail its platform (the same for `submit` and the sensor)."""
    from vexport_pipeline.core.media.probe import probe, require_video
    from vexport_pipeline.core.planning import plan_checked

    plan_checked(comp, require_video(probe(source)))


def _regular(path: Path) -> None:
    """Only regular files dropped into the inbox itself are taken: a symlink could point anywhere, and a hard
    link is a second name of a file that lives elsewhere (perhaps outside every allowed folder)."""
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise InputError(
            f"only regular files are taken from the inbox; this is {kind}", where=path.name, code="inbox_not_regular"
        )
    if st.st_nlink > 1:
        raise InputError(
            "this file is a hard link to a file elsewhere; copy the file into the inbox instead",
            where=path.name,
            code="inbox_not_regular",
        )


def _entries(home: Home, min_age_s: float) -> list[Path]:
    """Every visible, settled name in the inbox except folders: FIFOs, devices and links are listed so they
    are rejected with a reason instead of being skipped forever."""
    out = []
    with os.scandir(home.inbox) as it:
        for e in it:
            if e.name.startswith(".") or e.is_dir(follow_symlinks=False):
                continue
            p = Path(e.path)
            if _ready(p, min_age_s):
                out.append(p)
    return sorted(out)


def _claimed(manifests: list[Path]) -> set[Path]:
    """The videos that manifests in the inbox name, so they are not also taken as bare videos."""
    claimed: set[Path] = set()
    for m in manifests:
        try:
            _regular(m)
            data = read_manifest(m)
            if isinstance(data, dict) and isinstance(data.get("source"), str):
                claimed.add(os.path.normpath(m.parent / data["source"]))
        except (VexportError, OSError, ValueError):
            continue  # the file is rejected with its reason below
    return claimed


def process(
    home: Home,
    policy: MediaPolicy,
    *,
    min_age_s: float = 2.0,
    busy: Callable[[str], str | None] = lambda _: None,
    budget_s: float | None = None,
) -> tuple[list[Accepted], list[Rejected], list[Held]]:
    """One pass over the inbox. Files younger than `min_age_s` may still be being written: next pass. Each
    file is handled in its own guard: whatever goes wrong with one is reported in `rejected/` and never stops
    the others. `busy(export_id)` names the run still working on an id: a file for that id stays where it is
    (`held`) until the run has ended. A file whose owner is at their hourly rate stays until a pass after their next
    slot opens.
    With `budget_s`, the pass takes files (oldest names first, manifests before bare videos) within that much time
    and leaves the rest, `held`, for the next pass: each file costs its plan-time media checks (a probe and a decode
    of the last selected second, about half a second), and a sensor tick must stay short. A file is started only
    while the time left is at least what the slowest file of this pass took, so the pass ends within its budget
    unless one file is slower than every one before it (the first file is always taken)."""
    home.ensure()
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    held: list[Held] = []
    usage = owners.Usage.read(home)
    entries = _entries(home, min_age_s)
    manifests = [p for p in entries if p.suffix.lower() in MANIFEST_EXTS]
    claimed = _claimed(manifests)
    taken: dict[str, str] = {}
    stop = time.monotonic() + budget_s if budget_s is not None else None
    slowest: float | None = None  # the longest one file took in this pass (None: none yet)
    retries = _Retries(home)
    for p in sorted(entries, key=lambda p: (p.suffix.lower() not in MANIFEST_EXTS, p.name)):  # explicit ids first
        is_manifest = p.suffix.lower() in MANIFEST_EXTS
        if not is_manifest and (p.suffix.lower() not in VIDEO_EXTS or os.path.normpath(p) in claimed):
            continue
        started = time.monotonic()
        if stop is not None and slowest is not None and started + slowest > stop:
            held.append(Held(p.name, f"waiting for the next pass (this one's {budget_s:g} s are spent)", True))
            continue
        try:
            _regular(p)
            if is_manifest:
                record = _take_manifest(home, p, policy, taken, busy, usage)
                _aside(p, home.inbox / "accepted")
            else:
                record = _take_video(home, p, taken, busy, usage)
            taken[record.export_id] = p.name
            usage.add(record.owner)
            accepted.append(Accepted(record, p.name))
            retries.forget(p.name)
        except (RateLimited, _Busy) as exc:
            held.append(Held(p.name, str(exc)))
        except VexportError as exc:
            if exc.transient:
                _again(home, p, str(exc), retries, rejected, held)
            else:
                retries.forget(p.name)
                _reject(home, p, str(exc), rejected)
        except Exception as exc:  # one file must never stop the sensor: tried again, then refused with the reason
            why = f"{p.name}: could not be read ({type(exc).__name__}: {str(exc)[:300]})"
            _again(home, p, why, retries, rejected, held)
        slowest = max(slowest or 0.0, time.monotonic() - started)
    retries.save()
    return accepted, rejected, held


def _again(home: Home, path: Path, message: str, retries: _Retries, rejected: list, held: list) -> None:
    """A try that failed for a reason that can pass: left for the next pass, or refused after `TRIES` tries."""
    tries = retries.failed(path, message)
    if tries < TRIES:
        held.append(Held(path.name, f"{message} (tried {tries} of {TRIES} times; tried again on the next pass)"))
        return
    retries.forget(path.name)
    _reject(home, path, f"{message} (tried {tries} times)", rejected)


class _Busy(Exception):
    """The export id's earlier run is still queued or working: the file waits in the inbox for it to end."""


def _check_free(export_id: str, name: str, taken: dict[str, str], busy: Callable[[str], str | None]) -> None:
    """Refuse a second file for an id taken in this same pass (which of the two was meant is not known); hold one
    whose id's earlier run has not ended (it is the newer version, taken once that run ends)."""
    if other := taken.get(export_id):
        raise InputError(
            f"export id {export_id!r} is already in use by {other}, taken in the same pass; give this composition"
            " another id",
            where=name,
            code="export_id_busy",
        )
    if run := busy(export_id):
        raise _Busy(f"export id {export_id!r} waits for {run} to end")


def _take_manifest(
    home: Home, m: Path, policy: MediaPolicy, taken: dict, busy: Callable, usage: owners.Usage
) -> registry.Registered:
    comp = load_composition(m)
    _check_free(comp.id, m.name, taken, busy)
    usage.check(comp.owner)  # before the source is probed: a held file costs a pass next to nothing
    source = resolve_source(comp, m.parent, policy)
    if source.is_relative_to(home.inbox.resolve()):
        _regular(source)  # a video dropped beside the manifest: no hard link to a file kept elsewhere
    admit(comp, source)
    return _register(home, comp, source, manifest=m)


def _take_video(home: Home, v: Path, taken: dict, busy: Callable, usage: owners.Usage) -> registry.Registered:
    export_id = slug(v.stem)
    _check_free(export_id, v.name, taken, busy)
    comp = parse_composition({**default_profile(), "id": export_id, "source": v.name}, file=v.name)
    usage.check(comp.owner)
    admit(comp, v)
    return _register(home, comp, v.resolve(), manifest=None)


def _register(home: Home, comp: Composition, source: Path, manifest: Path | None) -> registry.Registered:
    """Register the export, its source moved under the media root first if it sits in the inbox; moved back if
    the registration fails, so the next pass finds the file where it was dropped."""
    adopted = _adopt(home, comp.id, source)
    try:
        return registry.register(home, comp, adopted, manifest=manifest, via="inbox", checked=True)
    except BaseException:
        if adopted != source:
            with contextlib.suppress(OSError):  # the registration's own error is the one to report
                os.replace(adopted, source)
        raise


def _reject(home: Home, path: Path, message: str, rejected: list[Rejected]) -> None:
    try:
        if not os.path.lexists(path):
            return
        moved = _aside(path, home.inbox / "rejected")
        moved.with_name(moved.name + ".error.txt").write_text(message + "\n")
    except OSError as exc:  # cannot even move it: report it, the next pass tries again
        message += f" (and it could not be moved to rejected/: {exc.strerror})"
    rejected.append(Rejected(path.name, message))


def listing(home: Home) -> dict[str, list[dict]]:
    """What `vexport inbox` shows: files waiting, taken and refused (with the reason)."""
    home.ensure()
    out: dict[str, list[dict]] = {"pending": [], "accepted": [], "rejected": []}
    retries = _Retries(home)
    for p in sorted(home.inbox.iterdir()):
        if not p.name.startswith(".") and not p.is_dir():
            row = {"file": p.name}
            if reason := retries.reason(p.name) or _never_taken(p):
                row["reason"] = reason
            out["pending"].append(row)
    for kind in ("accepted", "rejected"):
        folder = home.inbox / kind
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            if p.name.endswith(".error.txt"):
                continue
            row = {"file": p.name}
            reason = p.with_name(p.name + ".error.txt")
            if reason.exists():
                row["reason"] = reason.read_text().strip()
            out[kind].append(row)
    return out


def _never_taken(p: Path) -> str | None:
    """Why the sensor will never take `p` (it leaves it where it is), or None."""
    if p.suffix.lower() in MANIFEST_EXTS | VIDEO_EXTS:
        return None
    manifests, videos = ", ".join(sorted(MANIFEST_EXTS)), ", ".join(sorted(VIDEO_EXTS))
    return f"left alone: not a composition ({manifests}) or a video ({videos}) by its name"


def _waiting(home: Home) -> list[tuple[str, float]]:
    """(owner, time placed) of the manifests waiting in the inbox: submitted, not taken yet, so not registered."""
    out = []
    for p in home.inbox.iterdir():
        if p.suffix.lower() not in MANIFEST_EXTS or p.name.startswith(".") or not p.is_file():
            continue
        try:
            data = read_manifest(p)
            owner = data.get("owner") if isinstance(data, dict) else None
            out.append((owner if isinstance(owner, str) else registry.DEFAULT_OWNER, p.stat().st_mtime))
        except (VexportError, OSError):
            continue  # the sensor rejects it with its reason
    return out


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
    if (home.inbox / f"{comp.id}.json").exists():
        raise InputError(
            f"export id {comp.id!r} is already waiting in the inbox ({comp.id}.json); give this composition another"
            " id or submit it again once that one has been taken",
            where=str(file),
            code="export_id_busy",
        )
    owners.Usage.read(home, waiting=_waiting(home)).check(comp.owner)
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
