"""Retention and archive of delivered versions, and cleanup of the work area and the rendition cache.

`plan(home, now)` looks at every delivered version in the local store (`store/<export>/<version>/`) and in the
local archive (`<home>/archive/<export>/<version>/`), reads the export's `retention` from its registered
composition (else a per-owner default, else `DEFAULT_RETENTION`: keep forever) and decides one action per
version: `keep`, `hold` (a legal hold: never touched), `archive` (past `archive_after`) or `delete` (past
`delete_after`; this wins when both have passed, and applies to archived versions too). It adds `clean_work`
for work folders and `clean_cache` for cache files older than the policy's limits (and the oldest cache
files over a size cap). `apply` carries a plan out; nothing is changed by `plan` (a dry run is a plan alone).

The record survives: before a version is archived or deleted, its JSON records (`summary.json`, a
validation report: top-level `*.json` files up to 4 MiB) are copied to `store/<export>/<version>.record/`.
Archiving moves the version folder to the archive (`restore` moves it back, byte for byte). Deleting removes
the files and bundles and revokes the version's links, so the gateway answers 410. The `current` pointer
never dangles: when the version it names is archived or deleted, the pointer is removed; `restore` puts it
back when the export has none.

Every path acted on must be a real folder or file (not a symlink) inside the store, archive, work or cache
root after resolving; anything else is refused and reported.

S3 destinations (`object_stores`) get the same decisions per version, carried out by storage class
(`delivery.s3lifecycle`): archive moves the media to the destination's `archive_class`, delete removes them,
the JSON records stay in place as the record, `restore` brings them back (through `restore_object` where the
class needs it). GCS, Azure, Dropbox and Drive destinations are not managed by retention.

The artifact store (`VEXPORT_ARTIFACTS`, core/artifacts.py), where workers hand each other files, is cleaned the
same way as the home it stands in for: an export's keys (`exports/<id>/...`: its work files and step values) go
once none of them was written for `work_days`, all but `registration.json` (the composition as registered, which
`reexport` reads); the shared cache's keys (`cache/...`) by age and size cap, as the local cache.

A version's age comes from its id (`YYYYmmddTHHMMSSZ-xxxxxx`, as `LocalStore.begin` makes them), else from
the folder's mtime; a work folder's and a cache file's age from their newest mtime.
"""

from __future__ import annotations

import calendar
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vexport_pipeline.core.artifacts import ArtifactStore, Entry, registration_key
from vexport_pipeline.core.errors import InputError, StorageError, VexportError
from vexport_pipeline.core.history import registered
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.settings import Home
from vexport_pipeline.core.spec.composition import Retention

DAY = 86400.0
DEFAULT_RETENTION = Retention()  # no archive_after, no delete_after: keep forever
RECORD_SUFFIX = ".record"
RECORD_MAX_BYTES = 4 << 20
KINDS = ("keep", "hold", "archive", "delete", "clean_work", "clean_cache")
ARTIFACTS = "artifacts"  # the tier of the artifact store's keys
_STAMP = re.compile(r"^(\d{8}T\d{6}Z)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def archive_root(home: Home) -> Path:
    """The local archive tier: `<home>/archive/<export>/<version>/`."""
    return home.root / "archive"


@dataclass(frozen=True)
class Policy:
    """What retention applies beyond each composition's own `retention`."""

    work_days: float = 7.0  # work folders untouched this long are removed
    cache_days: float = 30.0  # cache files older than this are removed
    cache_max_bytes: int | None = None  # then the oldest cache files go until the cache fits
    owner_defaults: dict[str, Retention] = field(default_factory=dict)  # used where a composition sets none


@dataclass(frozen=True)
class Action:
    """One decision: what happens to one version, work folder or cache file, and how many bytes it holds."""

    kind: str  # one of KINDS
    export_id: str
    version: str | None
    path: str
    bytes: int
    age_days: float
    reason: str
    tier: str = "store"  # "store", "archive", "work", "cache", "artifacts" (the artifact store: `path` is a key)
    destination: str = "default"  # where the version is: the local store and archive, or a named S3 destination

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    """A plan, and (after `apply`) what was done: counts and bytes per kind, links revoked, errors."""

    now: float
    actions: list[Action]
    dry_run: bool = True
    done: list[Action] = field(default_factory=list)
    revoked_links: int = 0
    errors: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, dict[str, int]]:
        """{kind: {"count": n, "bytes": b}} over what was done (what would be done, for a dry run)."""
        acted = self.actions if self.dry_run else self.done
        out = {k: {"count": 0, "bytes": 0} for k in KINDS}
        for a in acted:
            out[a.kind]["count"] += 1
            out[a.kind]["bytes"] += a.bytes
        return out

    def to_dict(self) -> dict:
        return {
            "now": self.now,
            "dry_run": self.dry_run,
            "totals": self.totals(),
            "revoked_links": self.revoked_links,
            "errors": self.errors,
            "actions": [a.to_dict() for a in (self.actions if self.dry_run else self.done)],
        }


# looking


def version_time(version: str, folder: Path | None = None) -> float | None:
    """Epoch seconds a version was made: from its id's UTC timestamp, else its folder's mtime."""
    if m := _STAMP.match(version):
        try:
            return float(calendar.timegm(time.strptime(m.group(1), "%Y%m%dT%H%M%SZ")))
        except ValueError:
            pass
    try:
        return folder.lstat().st_mtime if folder is not None else None
    except OSError:
        return None


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (symlinks counted as themselves, never followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        total += sum(_lstat(os.path.join(dirpath, f), "st_size") for f in files)
    return total


def _lstat(path: str, attr: str) -> float:
    """One stat field, 0 for a file that went away while we looked (a running export's temporary files)."""
    try:
        return getattr(os.lstat(path), attr)
    except FileNotFoundError:
        return 0


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                newest = max(newest, _lstat(os.path.join(dirpath, name), "st_mtime"))
    return newest


def _is_version_dir(p: Path) -> bool:
    return (
        _NAME.match(p.name) is not None
        and p.name != "current"
        and not p.name.endswith(RECORD_SUFFIX)
        and p.is_dir()
        and not p.is_symlink()
    )


def _versions(root: Path) -> Iterator[tuple[str, str, Path]]:
    """(export_id, version, folder) for each version folder under `root/<export>/` (symlinks never followed)."""
    if not root.is_dir():
        return
    for export in sorted(root.iterdir()):
        if export.name.startswith(".") or not _NAME.match(export.name) or export.is_symlink() or not export.is_dir():
            continue
        for folder in sorted(export.iterdir()):
            if _is_version_dir(folder):
                yield export.name, folder.name, folder


def stored_bytes(home: Home, export_ids: set[str]) -> int:
    """Bytes the versions of these exports hold in the store and the archive (what owner quotas count)."""
    roots = (home.store, archive_root(home))
    return sum(_size(folder) for root in roots for export_id, _, folder in _versions(root) if export_id in export_ids)


@dataclass(frozen=True)
class Usage:
    """Bytes one owner's delivered versions hold in one tier (`store` or `archive`)."""

    owner: str
    tier: str
    exports: int
    versions: int
    bytes: int


def storage_usage(home: Home, stores: dict | None = None) -> list[Usage]:
    """Bytes per owner and tier, from the version folders themselves (what quotas count), and from the S3 `stores`
    (`object_stores`) as tiers `<destination> store` / `<destination> archive`; an export without a registry
    record counts for the `default` owner."""
    owner_of = {eid: rec["owner"] for eid, rec in registered(home.registry).items()}
    found = [
        (tier, export_id, _size(folder))
        for tier, root in (("store", home.store), ("archive", archive_root(home)))
        for export_id, _, folder in _versions(root)
    ]
    for name, (store, _) in (stores or {}).items():
        from vexport_pipeline.core.delivery.s3lifecycle import versions  # boto3: only where S3 is used

        found += [
            (f"{name} {'archive' if sv.archived else 'store'}", sv.version.export_id, sv.bytes)
            for sv in versions(store)
            if not sv.deleted
        ]
    acc: dict[tuple[str, str], tuple[set, int, int]] = {}
    for tier, export_id, size in found:
        key = (owner_of.get(export_id, registry.DEFAULT_OWNER), tier)
        ids, count, total = acc.get(key, (set(), 0, 0))
        acc[key] = (ids | {export_id}, count + 1, total + size)
    return [Usage(o, t, len(ids), n, size) for (o, t), (ids, n, size) in sorted(acc.items())]


def retention_for(home: Home, export_id: str, policy: Policy, cache: dict[str, Retention]) -> Retention:
    """The export's `retention`: its registered composition's, else its owner's default, else keep forever."""
    if export_id not in cache:
        try:
            record = registry.load(home, export_id)
        except (VexportError, OSError, ValueError, KeyError):
            cache[export_id] = policy.owner_defaults.get(registry.DEFAULT_OWNER, DEFAULT_RETENTION)
        else:
            cache[export_id] = record.composition.retention or policy.owner_defaults.get(
                record.owner, DEFAULT_RETENTION
            )
    return cache[export_id]


def decide(
    retention: Retention, age_s: float, *, archived: bool, since_restore_s: float | None = None
) -> tuple[str, str]:
    """(kind, reason) for one version of this age: hold, delete, archive or keep. A restored version is
    archived again only `archive_after` after its restore (`since_restore_s`); deletion counts from its making."""
    if retention.legal_hold:
        return "hold", "legal hold"
    if retention.delete_after is not None and age_s >= retention.delete_after:
        return "delete", f"older than delete_after ({retention.delete_after / DAY:g} d)"
    archive_age = age_s if since_restore_s is None else min(age_s, since_restore_s)
    if retention.archive_after is not None and archive_age >= retention.archive_after and not archived:
        return "archive", f"older than archive_after ({retention.archive_after / DAY:g} d)"
    return "keep", "archived" if archived else "within its retention"


def object_stores(destinations: dict) -> dict[str, tuple[Any, str]]:
    """{name: (S3Store, archive class)} of the S3 destinations among `destinations` (settings.destinations())."""
    return {n: (d.store(), d.archive_class) for n, d in destinations.items() if d.kind == "s3"}


def plan(
    home: Home,
    now: float | None = None,
    policy: Policy | None = None,
    stores: dict | None = None,
    artifacts: ArtifactStore | None = None,
) -> Report:
    """Every decision for this home (and the S3 `stores`, from `object_stores`, and the `artifacts` store) at
    `now` (epoch seconds, default the clock); changes nothing."""
    now = time.time() if now is None else now
    policy = policy or Policy()
    actions: list[Action] = []
    known: dict[str, Retention] = {}
    for tier, root in (("store", home.store), ("archive", archive_root(home))):
        for export_id, version, folder in _versions(root):
            made = version_time(version, folder)
            age = max(0.0, now - made) if made is not None else 0.0
            restored = _restored_at(home, export_id, version)
            since = max(0.0, now - restored) if restored is not None else None
            rule = retention_for(home, export_id, policy, known)
            kind, reason = decide(rule, age, archived=tier == "archive", since_restore_s=since)
            actions.append(Action(kind, export_id, version, str(folder), _size(folder), age / DAY, reason, tier))
    for name, (store, _) in (stores or {}).items():
        actions += _s3_actions(home, name, store, now, policy, known)
    actions += _work_actions(home, now, policy)
    actions += _cache_actions(home, now, policy)
    actions += _artifact_actions(artifacts, now, policy) if artifacts else []
    return Report(now, actions)


def _s3_actions(home: Home, name: str, store, now: float, policy: Policy, known: dict) -> list[Action]:
    from vexport_pipeline.core.delivery.s3lifecycle import early_charge, versions

    out = []
    for sv in versions(store):
        if sv.deleted:
            continue
        v, made = sv.version, version_time(sv.version.version)
        age = max(0.0, now - made) if made is not None else 0.0
        restored = sv.state.get("restored_at")
        since = max(0.0, now - restored) if restored is not None else None
        rule = retention_for(home, v.export_id, policy, known)
        kind, reason = decide(rule, age, archived=sv.archived, since_restore_s=since)
        reason += early_charge(sv, now) if kind == "delete" else ""
        tier = "archive" if sv.archived else "store"
        uri = store._uri(store.version_prefix(v))
        out.append(Action(kind, v.export_id, v.version, uri, sv.bytes, age / DAY, reason, tier, name))
    return out


def _restore_marker(home: Home, export_id: str, version: str) -> Path:
    return home.store / export_id / f".{version}.restored"


def _restored_at(home: Home, export_id: str, version: str) -> float | None:
    try:
        return _restore_marker(home, export_id, version).lstat().st_mtime
    except OSError:
        return None


def _work_actions(home: Home, now: float, policy: Policy) -> list[Action]:
    out = []
    for entry in sorted(home.work.iterdir()) if home.work.is_dir() else []:
        age = now - _newest_mtime(entry)
        if age >= policy.work_days * DAY:
            reason = f"untouched for more than {policy.work_days:g} d"
            out.append(Action("clean_work", entry.name, None, str(entry), _size(entry), age / DAY, reason, "work"))
    return out


def _cache_actions(home: Home, now: float, policy: Policy) -> list[Action]:
    files = []
    for dirpath, _dirs, names in os.walk(home.cache) if home.cache.is_dir() else []:
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, str(Path(dirpath) / name)))
    return _aged_out(files, now, policy, "cache")


def _aged_out(files: list[tuple[float, int, str]], now: float, policy: Policy, tier: str) -> list[Action]:
    """`clean_cache` for the cache files (mtime, size, path or key) older than `cache_days`, then for the oldest
    until the rest fit under `cache_max_bytes`."""
    files.sort()  # oldest first
    total = sum(size for _, size, _ in files)
    out = []
    for mtime, size, path in files:
        age = now - mtime
        if age >= policy.cache_days * DAY:
            reason = f"older than {policy.cache_days:g} d"
        elif policy.cache_max_bytes is not None and total > policy.cache_max_bytes:
            reason = f"cache over its cap of {policy.cache_max_bytes} bytes"
        else:
            continue
        total -= size
        out.append(Action("clean_cache", "", None, path, size, age / DAY, reason, tier))
    return out


def _artifact_actions(store: ArtifactStore, now: float, policy: Policy) -> list[Action]:
    """`clean_work` per export whose keys in the artifact store were all written more than `work_days` ago (its
    registration aside); `clean_cache` for the shared cache's keys, as for the local cache."""
    exports: dict[str, list[Entry]] = {}
    for e in store.entries("exports/"):
        if _NAME.match(export_id := e.key.split("/")[1]):  # an odd key (an S3 `exports/../x`) is left alone
            exports.setdefault(export_id, []).append(e)
    out = []
    for export_id, entries in sorted(exports.items()):
        files = [e for e in entries if e.key != registration_key(export_id)]
        age = now - max(e.mtime for e in entries)
        if files and age >= policy.work_days * DAY:
            reason = f"untouched for more than {policy.work_days:g} d"
            size = sum(e.size for e in files)
            out.append(
                Action("clean_work", export_id, None, f"exports/{export_id}/", size, age / DAY, reason, ARTIFACTS)
            )
    return out + _aged_out([(e.mtime, e.size, e.key) for e in store.entries("cache/")], now, policy, ARTIFACTS)


# acting


def _inside(path: Path, root: Path) -> Path:
    """`path`, once checked to be a real entry (not a symlink) inside `root` after resolving; else refused."""
    where = str(path)
    if path.is_symlink():
        raise StorageError("refusing to act on a symlink", where=where)
    try:
        resolved_root = root.resolve(strict=True)
        resolved = path.resolve(strict=True)
    except OSError as exc:
        raise StorageError(f"cannot resolve: {exc}", where=where) from exc
    if resolved == resolved_root or not resolved.is_relative_to(resolved_root):
        raise StorageError(f"refusing to act outside {resolved_root}", where=where)
    return resolved


def _keep_records(folder: Path, record: Path) -> None:
    """Copy the version's JSON records (summary, validation report) to `record` (kept if it exists)."""
    if record.is_dir():
        return
    tmp = record.with_name(f".{record.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in folder.iterdir():
        if f.suffix == ".json" and f.is_file() and not f.is_symlink() and f.stat().st_size <= RECORD_MAX_BYTES:
            shutil.copy2(f, tmp / f.name)
    os.rename(tmp, record)


def _drop_pointer(store_root: Path, export_id: str, version: str) -> None:
    """Remove `current` if it names this version (it would dangle)."""
    link = store_root / export_id / "current"
    if link.is_symlink() and os.readlink(link) == version:
        link.unlink()


def _set_pointer(store_root: Path, export_id: str, version: str) -> None:
    tmp = store_root / export_id / f".current-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
    os.symlink(version, tmp)
    os.replace(tmp, store_root / export_id / "current")


def _archive(home: Home, a: Action) -> None:
    folder = _inside(Path(a.path), home.store)
    _keep_records(folder, home.store / a.export_id / f"{a.version}{RECORD_SUFFIX}")
    target = archive_root(home) / a.export_id / a.version
    if target.exists():
        raise StorageError("already in the archive", where=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    _inside(target.parent, archive_root(home))
    _drop_pointer(home.store, a.export_id, a.version)
    shutil.move(str(folder), str(target))
    _restore_marker(home, a.export_id, a.version).unlink(missing_ok=True)


def _delete(home: Home, a: Action, revoke: Callable[[str, str], int] | None) -> int:
    root = home.store if a.tier == "store" else archive_root(home)
    folder = _inside(Path(a.path), root)
    home.store.joinpath(a.export_id).mkdir(parents=True, exist_ok=True)
    _keep_records(folder, home.store / a.export_id / f"{a.version}{RECORD_SUFFIX}")
    revoked = revoke(a.export_id, a.version) if revoke else 0  # before the files go: no link serves a gap
    if a.tier == "store":
        _drop_pointer(home.store, a.export_id, a.version)
    shutil.rmtree(folder)
    _restore_marker(home, a.export_id, a.version).unlink(missing_ok=True)
    return revoked


def _clean(home: Home, a: Action) -> None:
    path = _inside(Path(a.path), home.work if a.kind == "clean_work" else home.cache)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def apply(
    home: Home,
    report: Report,
    revoke: Callable[[str, str], int] | None = None,
    stores: dict | None = None,
    artifacts: ArtifactStore | None = None,
) -> Report:
    """Carry out a plan: archive, delete and clean; `revoke(export_id, version)` revokes a deleted version's
    links (`EventStore.revoke`) and returns how many. One failed action is reported and never stops the rest."""
    report.dry_run = False
    for a in report.actions:
        try:
            if a.tier == ARTIFACTS:
                _clean_artifacts(artifacts, a)
            elif a.destination != "default":
                report.revoked_links += _apply_s3(a, (stores or {})[a.destination], revoke, report.now)
            elif a.kind == "archive":
                _archive(home, a)
            elif a.kind == "delete":
                report.revoked_links += _delete(home, a, revoke)
            elif a.kind in ("clean_work", "clean_cache"):
                _clean(home, a)
        except (OSError, VexportError) as exc:
            report.errors.append(f"{a.kind} {a.path}: {exc}")
            continue
        report.done.append(a)
    return report


def _clean_artifacts(store: ArtifactStore | None, a: Action) -> None:
    """An export's keys (listed again: the plan may be old; its registration stays), or one cache key."""
    if store is None:
        raise StorageError("no artifact store is configured", where=a.path)
    if a.kind == "clean_cache":
        store.remove([a.path])
        return
    keep = registration_key(a.export_id)
    store.remove([e.key for e in store.entries(a.path) if e.key != keep])


def _apply_s3(a: Action, store_and_class: tuple, revoke: Callable[[str, str], int] | None, now: float) -> int:
    """Archive or delete one version in an S3 destination (looked up again: the plan may be old); links revoked."""
    from vexport_pipeline.core.delivery import s3lifecycle

    if a.kind not in ("archive", "delete"):
        return 0
    store, archive_class = store_and_class
    sv = s3lifecycle.find(store, a.export_id, a.version)
    if sv is None or sv.deleted:
        raise StorageError("the version is no longer in the bucket", where=a.path)
    if a.kind == "archive":
        s3lifecycle.archive(store, sv, archive_class, now)
        return 0
    revoked = revoke(a.export_id, a.version) if revoke else 0  # before the objects go: no link serves a gap
    s3lifecycle.delete(store, sv, now)
    return revoked


def run(
    home: Home,
    now: float | None = None,
    *,
    revoke: Callable[[str, str], int] | None = None,
    policy: Policy | None = None,
    dry_run: bool = False,
    stores: dict | None = None,
    artifacts: ArtifactStore | None = None,
) -> Report:
    """Plan, and apply unless `dry_run`; `stores` are the S3 destinations to manage too (`object_stores`), and
    `artifacts` the artifact store (`artifacts.configured()`)."""
    report = plan(home, now, policy, stores, artifacts)
    return report if dry_run else apply(home, report, revoke, stores, artifacts)


def restore_from(store, export_id: str, version: str, where: str) -> Action:
    """`restore` for a version in an S3 destination: done, or asked of S3 (run it again once S3 has made the
    temporary copies: hours for GLACIER and DEEP_ARCHIVE). The Action's reason says which."""
    from vexport_pipeline.core.delivery import s3lifecycle

    if not _NAME.match(export_id) or not _NAME.match(version):
        raise InputError(f"refusing export {export_id!r} version {version!r}", code="bad_id")
    sv = s3lifecycle.find(store, export_id, version)
    if sv is None:
        raise InputError(f"{export_id} {version} is not in {where}", where=where, code="not_archived")
    outcome = s3lifecycle.restore(store, sv)
    reason = {
        "restored": "restored from the archive class",
        "requested": "restore requested from S3 (hours for GLACIER/DEEP_ARCHIVE): run `vexport restore` again later",
        "in progress": "S3 is still restoring: run `vexport restore` again later",
    }[outcome]
    made = version_time(version)
    age = (time.time() - made) / DAY if made is not None else 0.0
    uri = store._uri(store.version_prefix(sv.version))
    return Action("restore", export_id, version, uri, sv.bytes, age, reason, "store", where)


def restore(home: Home, export_id: str, version: str) -> Action:
    """Bring an archived version back into the store (byte for byte: the folder is moved) and drop its
    `.record` copy; it becomes `current` when the export has no current version."""
    if not _NAME.match(export_id) or not _NAME.match(version) or version.endswith(RECORD_SUFFIX):
        raise InputError(f"refusing export {export_id!r} version {version!r}", code="bad_id")
    src = archive_root(home) / export_id / version
    if not src.is_dir() or src.is_symlink():
        raise InputError(f"{export_id} {version} is not in the archive", where=str(src), code="not_archived")
    folder = _inside(src, archive_root(home))
    target = home.store / export_id / version
    if target.exists() or target.is_symlink():
        raise StorageError("the version is already in the store", where=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    _inside(target.parent, home.store)
    size = _size(folder)
    shutil.move(str(folder), str(target))
    shutil.rmtree(home.store / export_id / f"{version}{RECORD_SUFFIX}", ignore_errors=True)
    _restore_marker(home, export_id, version).touch()  # archived again only archive_after from now
    pointer = home.store / export_id / "current"
    if not (pointer.is_symlink() and pointer.exists()):
        _set_pointer(home.store, export_id, version)
    made = version_time(version, target)
    age = (time.time() - made) / DAY if made is not None else 0.0
    return Action("restore", export_id, version, str(target), size, age, "restored from the archive", "store")
