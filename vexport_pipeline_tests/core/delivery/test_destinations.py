"""The destinations file: what it accepts, every refusal naming the field at fault, files that are not
plain small YAML, and `check` proving a destination writable (S3 through moto's server over HTTP)."""

import os

import pytest

from vexport_pipeline.core.delivery.destinations import MAX_FILE_BYTES, check, load_destinations
from vexport_pipeline.core.delivery.s3store import S3Store
from vexport_pipeline.core.delivery.stores import LocalStore
from vexport_pipeline.core.errors import ConfigError

GOOD = """
s3main:
  url: s3://media-bucket/exports/team
  endpoint_url: http://127.0.0.1:9000
  region: eu-west-1
  storage_class: STANDARD_IA
  sse: aws:kms
  kms_key_id: arn:aws:kms:eu-west-1:111122223333:key/abc
  serve: redirect
archive:
  url: file:///srv/archive
plain: {url: "s3://other-bucket"}
"""


def write(tmp_path, text, name="destinations.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(tmp_path, text) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_destinations(path, tmp_path / "store")
    assert str(path) in str(info.value) and info.value.code == "config_invalid"
    return str(info.value)


def test_a_good_file_names_every_destination_and_default_is_the_local_store(tmp_path):
    dests = load_destinations(write(tmp_path, GOOD), tmp_path / "store")
    assert list(dests) == ["default", "s3main", "archive", "plain"]
    assert dests["default"].kind == "local" and dests["default"].root == tmp_path / "store"
    s3 = dests["s3main"]
    assert (s3.bucket, s3.prefix, s3.endpoint_url, s3.region) == (
        "media-bucket",
        "exports/team",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    assert (s3.storage_class, s3.sse, s3.kms_key_id, s3.serve) == ("STANDARD_IA", "aws:kms", s3.kms_key_id, "redirect")
    assert dests["plain"].prefix == "" and dests["plain"].serve == "proxy"
    assert dests["archive"].root.as_posix() == "/srv/archive"
    assert isinstance(dests["default"].store(), LocalStore) and isinstance(dests["archive"].store(), LocalStore)
    store = s3.store()
    assert isinstance(store, S3Store) and store.bucket == "media-bucket" and store.prefix == "exports/team"
    assert store.upload_args("a.mp4", "Zm9v")["SSEKMSKeyId"].endswith("key/abc")


def test_no_file_or_an_empty_one_means_only_default(tmp_path):
    assert list(load_destinations(None, tmp_path)) == ["default"]
    assert list(load_destinations(write(tmp_path, "# nothing yet\n"), tmp_path)) == ["default"]


def test_an_unknown_key_is_refused_by_its_path(tmp_path):
    msg = refused(tmp_path, "s3main: {url: s3://media-bucket, storage_clas: STANDARD}\n")
    assert "s3main.storage_clas: unknown key" in msg and "storage_class" in msg


@pytest.mark.parametrize(
    "key",
    [
        "aws_secret_access_key",
        "aws_access_key_id",
        "password",
        "session_token",
        "Token",
        "connection_string",
        "account_key",
    ],
)
def test_credentials_are_refused_and_the_standard_chain_named(tmp_path, key):
    msg = refused(tmp_path, f"s3main: {{url: s3://media-bucket, {key}: hunter2}}\n")
    assert f"s3main.{key}: credentials are not accepted" in msg and "standard chain" in msg
    assert "hunter2" not in msg


@pytest.mark.parametrize("name", ["S3Main", "-x", "a" * 33, "has space", "dot.ted"])
def test_a_bad_name_is_refused(tmp_path, name):
    msg = refused(tmp_path, f"'{name}': {{url: s3://media-bucket}}\n")
    assert repr(name) in msg and "[a-z0-9][a-z0-9_-]{0,31}" in msg


def test_default_cannot_be_redefined(tmp_path):
    msg = refused(tmp_path, "default: {url: s3://media-bucket}\n")
    assert "default: is always the local store" in msg


OTHER_CLOUDS = """
gcs: {url: 'gs://media_bucket.v2/exports/team', endpoint_url: 'http://127.0.0.1:4443', serve: redirect}
azure: {url: 'az://media-container/exports'}
team: {url: 'dropbox:///Exports/Team A'}
drive: {url: 'gdrive://Exports/team'}
"""


def test_gcs_azure_dropbox_and_drive_urls_are_destinations(tmp_path):
    dests = load_destinations(write(tmp_path, OTHER_CLOUDS), tmp_path / "store")
    got = {n: (d.kind, d.bucket, d.prefix, d.endpoint_url, d.serve) for n, d in dests.items() if n != "default"}
    assert got == {
        "gcs": ("gcs", "media_bucket.v2", "exports/team", "http://127.0.0.1:4443", "redirect"),
        "azure": ("azure", "media-container", "exports", None, "proxy"),
        "team": ("dropbox", None, "/Exports/Team A", None, "proxy"),
        "drive": ("gdrive", None, "Exports/team", None, "proxy"),
    }
    assert not any(d.sources for d in dests.values())


def test_their_stores_are_fsspec_stores_with_credentials_from_the_environment(tmp_path, monkeypatch):
    from vexport_pipeline.core.delivery.fsspecstore import FsspecStore
    from vexport_pipeline.core.errors import StorageError

    dests = load_destinations(write(tmp_path, OTHER_CLOUDS), tmp_path / "store")
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's
    conn = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint=http://127.0.0.1:9/x;"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    store = dests["azure"].store()  # made without a request
    assert isinstance(store, FsspecStore) and store.root == "media-container/exports"
    assert store.url(store.begin("e1"), "a.mp4").startswith("az://media-container/exports/e1/")
    for name in ("DROPBOX_TOKEN", "DROPBOX_REFRESH_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageError, match="DROPBOX_TOKEN"):
        dests["team"].store()
    with pytest.raises(StorageError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        dests["drive"].store()


@pytest.mark.gcs
def test_a_gcs_store_goes_to_the_emulator_without_credentials(gcs, tmp_path):
    from vexport_pipeline.core.delivery.fsspecstore import FsspecStore

    store = load_destinations(write(tmp_path, OTHER_CLOUDS), tmp_path / "store")["gcs"].store()
    assert isinstance(store, FsspecStore) and store.root == "media_bucket.v2/exports/team" and store.kind == "gcs"


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ("{url: 'https://example.com/x'}", "x.url", "not an s3://, gs://, az://, dropbox:///, gdrive:// or file://"),
        ("{url: 's3://AB'}", "x.url", "not a valid bucket name"),
        ("{url: 's3://key:secret@media-bucket'}", "x.url", "without credentials"),
        ("{url: 's3://media-bucket/a/../b'}", "x.url", "'..'"),
        ("{url: 'file://relative/folder'}", "x.url", "absolute folder"),
        ("{storage_class: STANDARD}", "x.url", "is required"),
        ("{url: 's3://media-bucket', storage_class: GLACIER}", "x.storage_class", "restore"),
        ("{url: 's3://media-bucket', sse: rot13}", "x.sse", "AES256"),
        ("{url: 's3://media-bucket', kms_key_id: k}", "x.kms_key_id", "aws:kms"),
        ("{url: 's3://media-bucket', serve: teleport}", "x.serve", "proxy, redirect"),
        ("{url: 's3://media-bucket', endpoint_url: 'ftp://host'}", "x.endpoint_url", "http(s)"),
        ("{url: 's3://media-bucket', endpoint_url: 'http://u:p@host'}", "x.endpoint_url", "without credentials"),
        ("{url: 's3://media-bucket', region: 'EU WEST'}", "x.region", "not a region"),
        ("{url: 's3://media-bucket', region: 5}", "x.region", "must be a string"),
        ("{url: 'file:///srv/a', region: eu-west-1}", "x.region", "s3:// destinations only"),
        ("[not, a, mapping]", "x:", "must be a mapping"),
        ("{url: 'gs://AB'}", "x.url", "not a valid bucket name"),
        ("{url: 'gs://key@media-bucket'}", "x.url", "credentials"),
        ("{url: 'az://media_container'}", "x.url", "not a valid container name"),
        ("{url: 'az://media-container', endpoint_url: 'http://127.0.0.1:10000'}", "x.endpoint_url", "BlobEndpoint"),
        ("{url: 'gs://media-bucket', region: eu-west-1}", "x.region", "s3:// destinations only"),
        ("{url: 'gs://media-bucket', sources: true}", "x.sources", "s3:// destinations only"),
        ("{url: 'gs://media-bucket', endpoint_url: 'ftp://host'}", "x.endpoint_url", "http(s)"),
        ("{url: 'dropbox://Exports'}", "x.url", "three slashes"),
        ("{url: 'dropbox:///'}", "x.url", "name a folder"),
        ("{url: 'gdrive://Exports/../x'}", "x.url", "'..'"),
        ("{url: 'gdrive://Exports', serve: redirect}", "x.serve", "cannot presign"),
        ("{url: 'dropbox:///Exports', storage_class: STANDARD}", "x.storage_class", "s3:// destinations only"),
    ],
)
def test_each_bad_field_is_refused_by_name(tmp_path, entry, field, says):
    msg = refused(tmp_path, f"x: {entry}\n")
    assert field in msg and says in msg


def test_every_bad_destination_is_reported_at_once(tmp_path):
    msg = refused(tmp_path, "a: {url: 'gs://x'}\nb: {url: 's3://media-bucket', colour: red}\n")
    assert "a.url:" in msg and "b.colour:" in msg


def test_the_file_must_be_a_mapping_of_plain_yaml(tmp_path):
    assert "must be a mapping" in refused(tmp_path, "- s3main\n")
    assert "not valid YAML at line 2" in refused(tmp_path, "a: {url: s3://media-bucket}\nb: c: d\n")
    # safe_load: no Python objects from tags
    assert "not valid YAML" in refused(tmp_path, "a: !!python/object/apply:os.system ['true']\n")


def test_a_directory_is_not_a_destinations_file(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file") as info:
        load_destinations(tmp_path, tmp_path / "store")
    assert str(tmp_path) in str(info.value)


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "destinations.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file") as info:
        load_destinations(fifo, tmp_path / "store")
    assert str(fifo) in str(info.value)


def test_a_missing_or_too_big_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot open the destinations file") as info:
        load_destinations(tmp_path / "nope.yaml", tmp_path)
    assert "nope.yaml" in str(info.value)
    big = write(tmp_path, "# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ConfigError, match="over 64 KiB") as info:
        load_destinations(big, tmp_path)
    assert str(big) in str(info.value)


def test_a_symlink_to_a_good_file_is_read(tmp_path):
    link = tmp_path / "link.yaml"
    link.symlink_to(write(tmp_path, GOOD))
    assert "s3main" in load_destinations(link, tmp_path)


# check(): write, read back, delete -----------------------------------------------------------------------


@pytest.mark.s3
def test_check_writes_reads_and_deletes_a_probe_on_s3(s3, moto_endpoint, tmp_path):
    client, bucket = s3
    path = write(tmp_path, f"s3main: {{url: 's3://{bucket}/exports', endpoint_url: '{moto_endpoint}'}}\n")
    dests = load_destinations(path, tmp_path / "store")
    ok, message = check(dests["s3main"])
    assert ok, message
    assert "s3main" in message and "writable" in message
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # the probe is gone
    ok, message = check(dests["default"])
    assert ok and not any((tmp_path / "store").iterdir())


@pytest.mark.s3
def test_check_reports_a_missing_bucket_without_raising(s3, moto_endpoint, tmp_path):
    path = write(tmp_path, f"gone: {{url: 's3://no-such-bucket-here/x', endpoint_url: '{moto_endpoint}'}}\n")
    ok, message = check(load_destinations(path, tmp_path)["gone"])
    assert (
        not ok and message.startswith("gone: s3://no-such-bucket-here/x is not writable") and "NoSuchBucket" in message
    )


def test_check_reports_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    dests = load_destinations(write(tmp_path, f"archive: {{url: 'file://{blocker}/sub'}}\n"), tmp_path)
    ok, message = check(dests["archive"])
    assert not ok and message.startswith("archive: file://") and "not writable" in message
