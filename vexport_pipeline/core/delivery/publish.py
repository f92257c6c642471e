"""Promotion of an export's validated files into a store, as one new version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vexport_pipeline.core.delivery.bundles import write_zip
from vexport_pipeline.core.delivery.stores import Store, Version
from vexport_pipeline.core.errors import StorageError, ValidationFailed
from vexport_pipeline.core.records import ValidationOutcome

SUMMARY = "summary.json"


def worse_than_delivered(store: Store, export_id: str, outcome: ValidationOutcome) -> list[str]:
    """Renditions whose new validation score is lower than the one already delivered for them."""
    current = store.current(export_id)
    data = store.read_record(current, SUMMARY) if current else None
    if not data:
        return []
    before = {
        (r["clip_id"], r["target"]): r["validation"]["score"]
        for r in json.loads(data)["renditions"]
        if r.get("validation")
    }
    return [
        f"{c.label} would go from score {before[key]} to {c.report.score}"
        for c in outcome.renditions
        if (key := (c.clip_id, c.target)) in before and c.report.score < before[key]
    ]


def check_deliverable(store: Store, export_id: str, outcome: ValidationOutcome) -> None:
    """Refuse to deliver a failed validation, or a re-export that scores worse than what is delivered."""
    if outcome.status == "fail":  # the blocking check already stops this; never promote a failure
        raise ValidationFailed(
            f"validation failed for {', '.join(outcome.failed)}; nothing was delivered", where=export_id
        )
    if worse := worse_than_delivered(store, export_id, outcome):
        raise ValidationFailed(
            "a re-export must not replace a better delivered file: "
            + "; ".join(worse)
            + "; the delivered version stays",
            where=export_id,
        )


def unchanged_version(store: Store, export_id: str, files: dict[str, str], bundle: str | None) -> Version | None:
    """The delivered version, if it holds exactly these files (delivered name -> sha256) and the same bundle:
    an unchanged re-export reuses it instead of adding a copy."""
    current = store.current(export_id)
    data = store.read_record(current, SUMMARY) if current else None
    if not data:
        return None
    before = json.loads(data)
    had = {Path(r["path"] or r["uri"]).name: r["sha256"] for r in before.get("renditions", [])}
    had_bundle = [Path(b["path"] or b["uri"]).name for b in before.get("bundles", [])]
    return current if had == files and had_bundle == ([bundle] if bundle else []) else None


def publish(store: Store, export_id: str, files: dict[str, Path], *, bundle: str | None, work: Path) -> Version:
    """Stage every file (and the ZIP of them all, if `bundle` names one) and commit them as one version.
    On any failure the version is dropped whole: nothing of it is visible."""
    return publish_all({"default": store}, export_id, files, bundle=bundle, work=work).versions["default"]


@dataclass
class Published:
    """The version each destination got, and the checksum each store verified per file (where it does)."""

    versions: dict[str, Version]
    checksums: dict[str, dict[str, str]]


def publish_all(
    stores: dict[str, Store], export_id: str, files: dict[str, Path], *, bundle: str | None, work: Path
) -> Published:
    """`publish` to several destinations as one delivery: every file is staged (uploaded and verified) in
    every store first, and only then is each version committed; a failure before that drops every staged
    version, so no destination shows a part of the delivery."""
    begun: dict[str, Version] = {}
    committed: set[str] = set()
    checksums: dict[str, dict[str, str]] = {name: {} for name in stores}
    zip_path = work / bundle if bundle else None
    try:
        members = dict(files)
        if zip_path:
            try:
                write_zip(zip_path, files)
            except OSError as exc:  # a full disk (ENOSPC) or a file size limit (EFBIG) while writing
                raise StorageError(
                    f"could not write the bundle {bundle} in {work}: {exc.strerror or exc}", where=export_id
                ) from exc
            members[bundle] = zip_path
        for dest, store in stores.items():
            begun[dest] = v = store.begin(export_id)
            for name, src in members.items():
                if checksum := store.put(v, name, src):
                    checksums[dest][name] = checksum
        for dest, store in stores.items():
            store.commit(begun[dest])
            committed.add(dest)
    except BaseException:
        for dest, v in begun.items():
            if dest not in committed:  # a commit that already happened stays (a later one failed)
                stores[dest].abort(v)
        raise
    finally:
        if zip_path:
            zip_path.unlink(missing_ok=True)
    return Published(begun, checksums)
