"""Retention of versions delivered to S3 (moto's server over HTTP): past archive_after the media move to the
archive class in place and cannot be downloaded until restored, past delete_after they are deleted (links
revoked, the records kept), a legal hold is never touched; `vexport restore` asks S3 for a restore where the
class needs one and brings the version back byte for byte; the CLI and its refusals."""

import hashlib
import json
import os
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from vexport_pipeline.core import retention
from vexport_pipeline.core.delivery import s3lifecycle
from vexport_pipeline.core.delivery.events import EventStore, LinkRow
from vexport_pipeline.core.delivery.publish import SUMMARY, publish
from vexport_pipeline.core.delivery.s3store import S3Store
from vexport_pipeline.core.delivery.stores import Version
from vexport_pipeline_tests.conftest import vexport
from vexport_pipeline_tests.core.test_retention import DAY, NOW, register

pytestmark = pytest.mark.s3


class DatedS3Store(S3Store):
    """An S3Store whose new versions carry an id stamped `days` ago (as if delivered then)."""

    days = 0.0

    def begin(self, export_id):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW - self.days * DAY))
        v = Version(export_id, f"{stamp}-{uuid.uuid4().hex[:6]}")
        self.version_prefix(v)
        self._staged[v] = {}
        return v


@pytest.fixture
def bucket(s3, moto_endpoint):
    client, name = s3
    return client, DatedS3Store(name, "exports", endpoint_url=moto_endpoint)


def deliver(store, tmp_path, export_id, days_old, events=None):
    """A version made `days_old` days ago: two files and a summary, and a link to one of them."""
    src = tmp_path / f"src-{export_id}-{days_old}"
    src.mkdir()
    files = {name: src / name for name in ("a.mp4", "b.webm")}
    for name, path in files.items():
        path.write_bytes(os.urandom(3000) + name.encode())
    store.days = days_old
    v = publish(store, export_id, files, bundle=None, work=src)
    store.write_record(v, SUMMARY, json.dumps({"export_id": export_id, "version": v.version}).encode())
    if events is not None:
        events.add_link(LinkRow(f"l-{v.version}", export_id, v.version, "a.mp4", store.url(v, "a.mp4"), NOW, NOW + 9))
    return v, {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}


def classes(client, store, v):
    listed = client.list_objects_v2(Bucket=store.bucket, Prefix=store.version_prefix(v)).get("Contents", [])
    return {o["Key"].rsplit("/", 1)[1]: o.get("StorageClass", "STANDARD") for o in listed}


def body(client, store, v, name):
    return client.get_object(Bucket=store.bucket, Key=store.key(v, name))["Body"].read()


def test_s3_versions_are_archived_deleted_held_and_restored_by_storage_class(bucket, home, media, tmp_path):
    client, store = bucket
    events = EventStore(home.events_db)
    register(home, media, "gone", archive_after="30d", delete_after="365d")
    register(home, media, "cold", archive_after="30d", delete_after="365d")
    register(home, media, "held", archive_after="1d", delete_after="2d", legal_hold=True)
    old, _ = deliver(store, tmp_path, "gone", 400, events)
    cold_old, cold_hashes = deliver(store, tmp_path, "cold", 60, events)
    cold_new, _ = deliver(store, tmp_path, "cold", 1, events)
    held, _ = deliver(store, tmp_path, "held", 900, events)
    stores = {"s3main": (store, "GLACIER")}

    dry = retention.run(home, NOW, stores=stores, dry_run=True)  # a dry run changes nothing
    assert {(a.export_id, a.kind) for a in dry.actions if a.destination == "s3main"} >= {
        ("gone", "delete"),
        ("cold", "archive"),
        ("held", "hold"),
    }
    assert classes(client, store, cold_old)["a.mp4"] == "STANDARD"

    report = retention.run(home, NOW, revoke=lambda e, v: events.revoke(export_id=e, version=v), stores=stores)
    assert report.errors == []
    done = {(a.export_id, a.version, a.kind) for a in report.done if a.destination == "s3main"}
    assert ("gone", old.version, "delete") in done and ("cold", cold_old.version, "archive") in done
    assert report.revoked_links == 1 and events.link(f"l-{old.version}").revoked

    # deleted: the media gone, the summary and what retention did kept as the record
    left = classes(client, store, old)
    assert sorted(left) == [s3lifecycle.STATE, SUMMARY]
    assert json.loads(body(client, store, old, SUMMARY))["version"] == old.version
    assert store.current("gone") is None

    # archived: the media in GLACIER (not downloadable), the summary still readable, current untouched
    archived = classes(client, store, cold_old)
    assert archived["a.mp4"] == archived["b.webm"] == "GLACIER" and archived[SUMMARY] == "STANDARD"
    with pytest.raises(ClientError, match="InvalidObjectState"):
        body(client, store, cold_old, "a.mp4")
    assert json.loads(body(client, store, cold_old, SUMMARY))["version"] == cold_old.version
    assert store.current("cold") == cold_new and not events.link(f"l-{cold_old.version}").revoked

    # legal hold: untouched
    assert set(classes(client, store, held).values()) == {"STANDARD"} and store.current("held") == held
    usage = {(u.owner, u.tier): u for u in retention.storage_usage(home, stores)}
    assert usage["default", "s3main archive"].versions == 1 and usage["default", "s3main archive"].bytes > 6000
    assert usage["default", "s3main store"].versions == 2  # cold's newer version and the held one

    # restore: asked of S3 first (GLACIER), then copied back once S3 reports the copies ready; byte for byte
    first = retention.restore_from(store, "cold", cold_old.version, "s3main")
    assert "requested" in first.reason and classes(client, store, cold_old)["a.mp4"] == "GLACIER"
    second = retention.restore_from(store, "cold", cold_old.version, "s3main")  # moto restores at once
    assert second.reason.startswith("restored")
    assert set(classes(client, store, cold_old).values()) == {"STANDARD"}
    for name, digest in cold_hashes.items():
        assert hashlib.sha256(body(client, store, cold_old, name)).hexdigest() == digest

    # the next run keeps it: archive_after counts again from the restore
    again = retention.run(home, NOW + 60, stores=stores)
    kinds = {(a.export_id, a.version): a.kind for a in again.done if a.destination == "s3main"}
    assert kinds[("cold", cold_old.version)] == "keep" and ("gone", old.version) not in kinds


def test_glacier_ir_comes_back_at_once_and_an_early_delete_names_the_minimum_charge(bucket, home, media, tmp_path):
    client, store = bucket
    register(home, media, "ir", archive_after="30d", delete_after="100d")
    v, hashes = deliver(store, tmp_path, "ir", 40)
    stores = {"s3main": (store, "GLACIER_IR")}
    retention.run(home, NOW, stores=stores)
    assert classes(client, store, v)["a.mp4"] == "GLACIER_IR"
    assert store.current("ir") is None  # archived versions are not current, as in the local archive
    restored = retention.restore_from(store, "ir", v.version, "s3main")
    assert restored.reason.startswith("restored") and store.current("ir") == v
    assert hashlib.sha256(body(client, store, v, "b.webm")).hexdigest() == hashes["b.webm"]

    kept = retention.run(home, NOW + 1, stores=stores)
    assert [a.kind for a in kept.done if a.export_id == "ir"] == ["keep"]  # just restored
    archived = retention.run(home, NOW + 31 * DAY, stores=stores)  # 30 days after the restore: archived again
    assert [a.kind for a in archived.done if a.export_id == "ir"] == ["archive"]
    late = retention.run(home, NOW + 65 * DAY, stores=stores, dry_run=True)  # 105 days old, 34 days archived
    [delete] = [a for a in late.actions if a.export_id == "ir" and a.destination == "s3main"]
    assert delete.kind == "delete" and "GLACIER_IR's 90-day minimum storage" in delete.reason


def test_restore_refusals_and_the_cli_over_an_s3_destination(bucket, home, media, tmp_path, moto_endpoint):
    client, store = bucket
    register(home, media, "cli", archive_after="30d")
    v, _ = deliver(store, tmp_path, "cli", 45)
    dests = tmp_path / "destinations.yaml"
    dests.write_text(
        f"s3main: {{url: 's3://{store.bucket}/exports', endpoint_url: '{moto_endpoint}', archive_class: GLACIER_IR}}\n"
    )
    env = {"VEXPORT_DESTINATIONS": str(dests)}
    with pytest.raises(Exception, match="is not archived"):
        retention.restore_from(store, "cli", v.version, "s3main")
    out = vexport("retention", "--now", env=env)
    assert out.returncode == 0, out.stderr
    assert f"archive      cli {v.version} in s3main" in out.stdout
    assert classes(client, store, v)["a.mp4"] == "GLACIER_IR"
    unknown = vexport("restore", "cli", v.version, "--destination", "nowhere", env=env)
    assert unknown.returncode == 2 and "nowhere" in unknown.stdout + unknown.stderr
    assert "Traceback" not in unknown.stdout + unknown.stderr
    missing = vexport("restore", "cli", "20200101T000000Z-abcdef", "--destination", "s3main", env=env)
    assert missing.returncode == 2 and "not in s3main" in missing.stdout + missing.stderr
    ok = vexport("restore", "cli", v.version, "--destination", "s3main", env=env)
    assert ok.returncode == 0 and "restored cli" in ok.stdout
    assert set(classes(client, store, v).values()) == {"STANDARD"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"s3main: {{url: 's3://{store.bucket}/x', endpoint_url: '{moto_endpoint}', archive_class: COLD}}\n")
    refused = vexport("retention", "--now", env={"VEXPORT_DESTINATIONS": str(bad)})
    assert refused.returncode == 2 and "archive_class" in refused.stdout + refused.stderr
