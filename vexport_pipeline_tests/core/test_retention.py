"""Retention: versions past delete_after are gone (links revoked, summary kept), versions past archive_after
move to the archive and come back byte for byte, a legal hold is never touched, `current` never dangles, a
dry run changes nothing, old work folders and cache files go; the Dagster asset and the CLI do the same."""

import json
import os
import time
import uuid

import dagster as dg

from vexport_pipeline.core import retention
from vexport_pipeline.core.delivery.events import EventStore, LinkRow
from vexport_pipeline.core.delivery.publish import SUMMARY, publish
from vexport_pipeline.core.delivery.stores import LocalStore, Version
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.spec.loading import parse_composition
from vexport_pipeline_tests.conftest import vexport

DAY = 86400
NOW = time.time()


class DatedStore(LocalStore):
    """A LocalStore whose new versions carry an id stamped at `when` (as if made then)."""

    def __init__(self, root, when):
        super().__init__(root)
        self.when = when

    def begin(self, export_id):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.when))
        v = Version(export_id, f"{stamp}-{uuid.uuid4().hex[:6]}")
        self._staging(v).mkdir(parents=True)
        return v


def register(home, media, export_id, owner=None, **ret):
    data = {"id": export_id, "owner": owner, "source": str(media["av"]), "targets": [{"preset": "web_720p"}]}
    if ret:
        data["retention"] = ret
    registry.register(home, parse_composition(data), media["av"])


def deliver(home, tmp_path, export_id, days_old, events=None):
    """One version made `days_old` days ago: two small files, a ZIP bundle, a summary and a link."""
    src = tmp_path / f"src-{export_id}-{days_old}"
    src.mkdir()
    files = {"a.mp4": src / "a.mp4", "b.webm": src / "b.webm"}
    for name, path in files.items():
        path.write_bytes(os.urandom(2000) + name.encode())
    store = DatedStore(home.store, NOW - days_old * DAY)
    v = publish(store, export_id, files, bundle="all.zip", work=src)
    store.write_record(v, SUMMARY, json.dumps({"export_id": export_id, "version": v.version}).encode())
    if events is not None:
        link = LinkRow(f"l-{v.version}", export_id, v.version, "a.mp4", str(store.folder(v) / "a.mp4"), NOW, NOW + 3600)
        events.add_link(link)
    return v


def snapshot(root):
    return sorted(
        (str(p.relative_to(root)), p.read_bytes() if p.is_file() and not p.is_symlink() else os.readlink(p))
        for p in root.rglob("*")
        if p.is_file() or p.is_symlink()
    )


def test_delete_archive_hold_and_restore(home, media, tmp_path):
    events = EventStore(home.events_db)
    register(home, media, "gone", archive_after="30d", delete_after="365d")
    register(home, media, "cold", archive_after="30d", delete_after="365d")
    register(home, media, "held", archive_after="1d", delete_after="2d", legal_hold=True)
    register(home, media, "fresh", archive_after="30d")
    old = deliver(home, tmp_path, "gone", 400, events)
    cold_old = deliver(home, tmp_path, "cold", 60, events)
    cold_new = deliver(home, tmp_path, "cold", 1, events)
    held = deliver(home, tmp_path, "held", 900, events)
    fresh = deliver(home, tmp_path, "fresh", 3, events)
    before_cold = snapshot(home.store / "cold" / cold_old.version)
    before_held = snapshot(home.store / "held")

    report = retention.run(home, NOW, revoke=lambda e, v: events.revoke(export_id=e, version=v))
    assert report.errors == []
    totals = report.totals()
    assert (totals["delete"]["count"], totals["archive"]["count"], totals["hold"]["count"]) == (1, 1, 1)
    assert totals["delete"]["bytes"] > 4000 and totals["archive"]["bytes"] > 4000
    assert report.revoked_links == 1

    # deleted: files and bundle gone, the summary kept as the record, the link revoked, no dangling pointer
    assert not (home.store / "gone" / old.version).exists()
    record = home.store / "gone" / f"{old.version}.record"
    assert json.loads((record / SUMMARY).read_text())["version"] == old.version
    assert sorted(p.name for p in record.iterdir()) == [SUMMARY]
    assert events.link(f"l-{old.version}").revoked
    assert not (home.store / "gone" / "current").is_symlink()
    assert LocalStore(home.store).current("gone") is None

    # archived: moved whole, its record kept in the store, current untouched (it names the newer version)
    archived = retention.archive_root(home) / "cold" / cold_old.version
    assert snapshot(archived) == before_cold
    assert (home.store / "cold" / f"{cold_old.version}.record" / SUMMARY).is_file()
    assert LocalStore(home.store).current("cold") == cold_new
    assert not events.link(f"l-{cold_old.version}").revoked

    # legal hold and fresh: untouched
    assert snapshot(home.store / "held") == before_held
    assert LocalStore(home.store).current("held") == held
    assert (home.store / "fresh" / fresh.version / "a.mp4").is_file()

    # restore: byte-identical, the record copy dropped
    action = retention.restore(home, "cold", cold_old.version)
    assert action.kind == "restore" and action.bytes == totals["archive"]["bytes"]
    assert snapshot(home.store / "cold" / cold_old.version) == before_cold
    assert not (home.store / "cold" / f"{cold_old.version}.record").exists()
    assert not archived.exists()
    again = retention.run(home, NOW + 5 * DAY)  # not archived again until archive_after from its restore
    assert [a.kind for a in again.done if a.export_id == "cold"] == ["keep", "keep"]
    later = retention.run(home, NOW + 31 * DAY)
    assert [(a.kind, a.version) for a in later.done if a.export_id == "cold" and a.kind != "keep"] == [
        ("archive", cold_old.version),
        ("archive", cold_new.version),
    ]


def test_current_version_archived_or_deleted_never_dangles(home, media, tmp_path):
    register(home, media, "solo", archive_after="10d")
    v = deliver(home, tmp_path, "solo", 20)
    report = retention.run(home, NOW)
    assert [a.kind for a in report.done] == ["archive"]
    link = home.store / "solo" / "current"
    assert not link.is_symlink()  # removed, not dangling
    # archived versions are deleted later, from the archive
    register(home, media, "solo", archive_after="10d", delete_after="30d")
    report = retention.run(home, NOW + 15 * DAY)
    assert [(a.kind, a.tier) for a in report.done] == [("delete", "archive")]
    assert not (retention.archive_root(home) / "solo" / v.version).exists()
    assert (home.store / "solo" / f"{v.version}.record" / SUMMARY).is_file()


def test_restore_sets_current_and_refuses_bad_input(home, media, tmp_path):
    import pytest

    from vexport_pipeline.core.errors import InputError

    register(home, media, "back", archive_after="1d")
    v = deliver(home, tmp_path, "back", 5)
    retention.run(home, NOW)
    retention.restore(home, "back", v.version)
    assert LocalStore(home.store).current("back") == v
    with pytest.raises(InputError):
        retention.restore(home, "back", v.version)  # no longer archived
    with pytest.raises(InputError):
        retention.restore(home, "..", v.version)


def test_dry_run_changes_nothing(home, media, tmp_path):
    register(home, media, "gone", delete_after="1d")
    register(home, media, "cold", archive_after="1d")
    deliver(home, tmp_path, "gone", 5)
    deliver(home, tmp_path, "cold", 5)
    (home.work / "old").mkdir()
    os.utime(home.work / "old", (NOW - 30 * DAY, NOW - 30 * DAY))
    before = snapshot(home.root)
    report = retention.run(home, NOW, dry_run=True)
    kinds = sorted(a.kind for a in report.actions)
    assert kinds == ["archive", "clean_work", "delete"]
    assert report.done == [] and report.dry_run
    assert snapshot(home.root) == before
    assert sorted(p.name for p in (home.work).iterdir()) == ["old"]


def test_work_and_cache_cleanup_takes_only_old_entries(home, tmp_path):
    old, new = NOW - 10 * DAY, NOW - 1 * DAY
    for name, when in (("stale", old), ("busy", new)):
        d = home.work / name / "renditions"
        d.mkdir(parents=True)
        (d / "x.mp4").write_bytes(b"x" * 100)
        for p in (d / "x.mp4", d, d.parent):
            os.utime(p, (when, when))
    cache = home.cache / "ab"
    cache.mkdir(parents=True)
    for name, when in (("abold.mp4", NOW - 40 * DAY), ("abnew.mp4", new)):
        (cache / name).write_bytes(b"c" * 50)
        os.utime(cache / name, (when, when))
    report = retention.run(home, NOW)
    assert sorted(p.name for p in home.work.iterdir()) == ["busy"]
    assert sorted(p.name for p in cache.iterdir()) == ["abnew.mp4"]
    t = report.totals()
    assert t["clean_work"] == {"count": 1, "bytes": 100} and t["clean_cache"] == {"count": 1, "bytes": 50}
    # a size cap evicts the oldest first
    capped = retention.run(home, NOW, policy=retention.Policy(cache_max_bytes=10))
    assert [a.kind for a in capped.done] == ["clean_cache"] and not cache.joinpath("abnew.mp4").exists()


def test_refuses_symlinks_out_of_the_roots(home, media, tmp_path):
    outside = tmp_path / "outside" / "20000101T000000Z-abcdef"
    outside.mkdir(parents=True)
    (outside / "precious.txt").write_text("keep me")
    register(home, media, "evil", delete_after="1d")
    (home.store / "evil").mkdir()
    (home.store / "evil" / "20000101T000000Z-abcdef").symlink_to(outside)  # a version folder that leads out
    (home.work / "link").symlink_to(tmp_path / "outside")
    os.utime(home.work / "link", (NOW - 30 * DAY, NOW - 30 * DAY), follow_symlinks=False)
    report = retention.run(home, NOW)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert all(a.kind != "delete" for a in report.actions)  # the symlinked version is never listed
    assert any("symlink" in e for e in report.errors)  # the symlinked work entry is refused
    assert (home.work / "link").is_symlink()


def test_retention_asset_reports_counts_and_bytes(home, media, tmp_path):
    from vexport_pipeline.core.settings import current
    from vexport_pipeline.defs.operations.retention import retention as asset
    from vexport_pipeline.defs.operations.retention import storage
    from vexport_pipeline.defs.resources import build_resources

    events = EventStore(home.events_db)
    register(home, media, "gone", delete_after="30d")
    register(home, media, "held", delete_after="1d", legal_hold=True)
    register(home, media, "cold", owner="alice", archive_after="7d")
    gone = deliver(home, tmp_path, "gone", 40, events)
    held = deliver(home, tmp_path, "held", 40)
    cold = deliver(home, tmp_path, "cold", 10)
    with dg.instance_for_test() as instance:
        result = dg.materialize([asset, storage], instance=instance, resources=build_resources(current()))
        assert result.success
        mat, used = result.get_asset_materialization_events()
        meta = {k: v.value for k, v in mat.materialization.metadata.items()}
        usage = result.output_for_node("storage").set_index(["owner", "tier"])

    # the storage asset, after the retention run: bytes per owner and tier, as the folders hold them
    def size(folder):
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())

    assert sorted(usage.index) == [("alice", "archive"), ("default", "store")]  # "gone" holds nothing now
    assert usage.loc[("default", "store"), "bytes"] == size(home.store / "held" / held.version)
    assert usage.loc[("alice", "archive"), "bytes"] == size(home.root / "archive" / "cold" / cold.version) > 4000
    charted = {k: v.value for k, v in used.materialization.metadata.items()}
    assert charted["total_bytes"] == usage["bytes"].sum() and charted["owners"] == 2
    assert "| alice | archive | 1 | 1 |" in charted["table"] and "data:image/png;base64," in charted["chart"]
    assert (meta["deleted"], meta["archived"], meta["kept_on_hold"], meta["revoked_links"]) == (1, 1, 1, 1)
    assert meta["deleted_bytes"] > 4000 and meta["archived_bytes"] > 4000
    assert "| delete | gone |" in meta["actions"]
    assert events.link(f"l-{gone.version}").revoked


def test_cli_retention_now_json_and_restore(home, media, tmp_path):
    register(home, media, "cold", archive_after="7d")
    v = deliver(home, tmp_path, "cold", 10)
    dry = vexport("retention", "--dry-run", "--json", check=True)
    assert json.loads(dry.stdout)["totals"]["archive"]["count"] == 1
    assert (home.store / "cold" / v.version).is_dir()
    done = vexport("retention", "--now", "--json", check=True)
    data = json.loads(done.stdout)
    assert not data["dry_run"] and [a["kind"] for a in data["actions"] if a["kind"] != "keep"] == ["archive"]
    assert not (home.store / "cold" / v.version).exists()
    back = vexport("restore", "cold", v.version, check=True)
    assert "restored cold" in back.stdout and (home.store / "cold" / v.version / "a.mp4").is_file()
    assert vexport("restore", "cold", "nope").returncode == 2
