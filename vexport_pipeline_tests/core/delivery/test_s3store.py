"""The S3 delivery store over the real wire (moto's server over HTTP): versions published whole and
verified by checksum, nothing left behind by a failure, SigV4 presigned URLs; and the checksum and retry
decisions moto does not exercise (it does not verify a checksum sent with a single PUT), tested directly."""

import base64
import json
import os
import urllib.request
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from awscrt import checksums
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from vexport_pipeline.core.delivery import s3store
from vexport_pipeline.core.delivery.publish import SUMMARY, publish
from vexport_pipeline.core.delivery.s3store import (
    ChecksumMismatch,
    S3Store,
    compare_checksum,
    crc64nvme_file,
    retryable,
)
from vexport_pipeline.core.delivery.stores import Version
from vexport_pipeline.core.errors import StorageError

MiB = 1024 * 1024
# small enough that a test file really goes in parts (S3's minimum part is 5 MiB)
SMALL_PARTS = TransferConfig(
    multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4, preferred_transfer_client="classic"
)


def crc(data: bytes) -> str:
    """CRC64NVME as S3 reports it, computed here without the store's code."""
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("s3files")
    small, big = d / "clip.mp4", d / "master.mov"
    small.write_bytes(os.urandom(300 * 1024))
    big.write_bytes(os.urandom(11 * MiB + 5))  # three parts: 5 + 5 + 1 MiB
    return {"clip.mp4": small, "master.mov": big}


@pytest.fixture
def store(s3, moto_endpoint):
    _, bucket = s3
    return S3Store(
        bucket,
        "deliveries/team",
        endpoint_url=moto_endpoint,
        storage_class="STANDARD_IA",
        sse="AES256",
        transfer=SMALL_PARTS,
        backoff=0,
    )


def keys(client, bucket, prefix=""):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def uploads(client, bucket, prefix=""):
    return client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def begun(store, monkeypatch):
    """Every version `store.begin` hands out, in order."""
    seen, real = [], store.begin
    monkeypatch.setattr(store, "begin", lambda export_id: seen.append(real(export_id)) or seen[-1])
    return seen


# the checksum and retry decisions, directly --------------------------------------------------------------


def test_crc64nvme_of_a_file_matches_the_published_check_value(tmp_path):
    path = tmp_path / "check"
    path.write_bytes(b"123456789")  # CRC-64/NVME's check value is 0xAE8B14860A799888
    assert crc64nvme_file(path) == base64.b64encode(bytes.fromhex("AE8B14860A799888")).decode()
    path.write_bytes(os.urandom(3 * MiB + 7))
    assert crc64nvme_file(path, chunk=MiB) == crc(path.read_bytes())  # chunked equals whole


def test_only_an_equal_full_object_checksum_verifies():
    good = crc(b"video")
    compare_checksum(good, {"ChecksumCRC64NVME": good, "ChecksumType": "FULL_OBJECT", "ContentLength": 5}, 5)
    compare_checksum(good, {"ChecksumCRC64NVME": good})  # a single PUT may not say its type
    with pytest.raises(ChecksumMismatch, match="local file has"):
        compare_checksum(good, {"ChecksumCRC64NVME": crc(b"other")})
    with pytest.raises(ChecksumMismatch, match="COMPOSITE"):
        compare_checksum(good, {"ChecksumCRC64NVME": good + "-3", "ChecksumType": "COMPOSITE"})
    with pytest.raises(ChecksumMismatch, match="full-object"):
        compare_checksum(good, {"ChecksumCRC64NVME": good + "-3"})
    with pytest.raises(ChecksumMismatch, match="4 bytes"):
        compare_checksum(good, {"ChecksumCRC64NVME": good, "ContentLength": 4}, 5)
    with pytest.raises(StorageError, match="no CRC64NVME"):
        compare_checksum(good, {"ChecksumCRC32": "AAAAAA=="})


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_whole_object_failures_are_retried_and_refusals_are_not():
    def wrapped(exc):  # as boto3's upload_file re-raises a ClientError
        try:
            raise exc
        except ClientError:
            try:
                raise S3UploadFailedError("Failed to upload")
            except S3UploadFailedError as outer:
                return outer

    assert retryable(ChecksumMismatch("x"))
    assert retryable(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert retryable(_client_error("BadDigest", 400))
    assert retryable(wrapped(_client_error("SlowDown", 503)))
    assert retryable(_client_error("WhateverBroke", 500))
    assert not retryable(wrapped(_client_error("AccessDenied", 403)))
    assert not retryable(_client_error("NoSuchBucket", 404))
    assert not retryable(StorageError("cannot read"))


def test_upload_settings_carry_checksum_class_encryption_and_type():
    kms = S3Store("bkt-test", "p", sse="aws:kms", kms_key_id="arn:aws:kms:k", client=object())
    assert kms.upload_args("a.mp4", "Zm9v") == {
        "ChecksumAlgorithm": "CRC64NVME",
        "ChecksumCRC64NVME": "Zm9v",
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "arn:aws:kms:k",
        "ContentType": "video/mp4",
    }
    assert S3Store("bkt-test", client=object(), storage_class="STANDARD_IA").upload_args("x.bin", "Zm9v")[
        "StorageClass"
    ] == ("STANDARD_IA")
    with pytest.raises(StorageError, match="sse"):
        S3Store("bkt-test", sse="bogus", client=object())
    assert s3store.VIDEO_TRANSFER.multipart_threshold == 64 * MiB and s3store.CLIENT_CONFIG.signature_version == "s3v4"


# on the wire -----------------------------------------------------------------------------------------------


@pytest.mark.s3
def test_a_version_goes_live_whole_and_reads_back_through_sigv4_presigned_urls(s3, store, files):
    client, bucket = s3
    v = store.begin("launch")
    sums = {name: store.put(v, name, src) for name, src in files.items()}
    assert store.current("launch") is None  # uploaded, verified, still invisible
    assert not any(k.endswith("/current") for k in keys(client, bucket))
    store.commit(v)
    assert store.current("launch") == v
    pointer = client.get_object(Bucket=bucket, Key="deliveries/team/launch/current")["Body"].read()
    assert json.loads(pointer) == {"version": v.version}
    for name, src in files.items():
        data = src.read_bytes()
        assert sums[name] == store.checksums[(v, name)] == f"crc64nvme:{crc(data)}"
        url = store.presign(v, name, seconds=60)
        query = parse_qs(urlsplit(url).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"]
        assert query["X-Amz-Expires"] == ["60"] and "Signature" not in query  # not SigV2
        assert fetch(url) == data
        assert store.url(v, name) == f"s3://{bucket}/deliveries/team/launch/{v.version}/{name}"
        assert store.local_path(v, name) is None
        head = client.head_object(Bucket=bucket, Key=store.key(v, name), ChecksumMode="ENABLED")
        assert head["StorageClass"] == "STANDARD_IA" and head["ServerSideEncryption"] == "AES256"
        assert head["ChecksumCRC64NVME"] == crc(data)
    big = client.head_object(Bucket=bucket, Key=store.key(v, "master.mov"), ChecksumMode="ENABLED")
    assert big["ETag"].strip('"').endswith("-3") and big["ChecksumType"] == "FULL_OBJECT"  # really multipart
    assert not uploads(client, bucket)


@pytest.mark.s3
def test_a_failed_put_leaves_nothing_and_the_old_version_stays_current(s3, store, files, tmp_path, monkeypatch):
    client, bucket = s3
    old = publish(store, "launch", dict(files), bundle=None, work=tmp_path)
    seen = begun(store, monkeypatch)
    missing = tmp_path / "gone.mp4"
    with pytest.raises(StorageError, match=r"gone\.mp4") as info:
        publish(store, "launch", {**files, "gone.mp4": missing}, bundle=None, work=tmp_path)
    assert info.value.where == "launch" and "s3://" in str(info.value)
    [failed] = seen
    assert keys(client, bucket, store.version_prefix(failed)) == []
    assert not uploads(client, bucket)
    assert store.current("launch") == old
    assert fetch(store.presign(old, "master.mov")) == files["master.mov"].read_bytes()


@pytest.mark.s3
def test_an_object_that_never_verifies_is_deleted_after_retries(s3, store, files, tmp_path, monkeypatch):
    client, bucket = s3
    old = publish(store, "launch", {"clip.mp4": files["clip.mp4"]}, bundle=None, work=tmp_path)
    seen = begun(store, monkeypatch)
    calls = []
    real = s3store.compare_checksum

    def lying(expected, head, size=None):
        calls.append(head.get("ETag"))
        if head.get("ChecksumType") == "FULL_OBJECT" and "-" in head["ETag"]:  # the multipart one
            raise ChecksumMismatch("the store reports CRC64NVME AAAAAAAAAAA=")
        real(expected, head, size)

    monkeypatch.setattr(s3store, "compare_checksum", lying)
    store.attempts = 2
    with pytest.raises(StorageError, match=r"master\.mov.*after 2 attempts.*CRC64NVME") as info:
        publish(store, "launch", dict(files), bundle=None, work=tmp_path)
    assert "s3://" in str(info.value)
    assert sum("-" in (etag or "") for etag in calls) == 2  # uploaded twice, refused twice
    assert keys(client, bucket, store.version_prefix(seen[0])) == []
    assert not uploads(client, bucket)
    assert store.current("launch") == old


@pytest.mark.s3
def test_a_mismatched_object_is_deleted_by_put_itself(s3, store, files, monkeypatch):
    client, bucket = s3

    def mismatch(expected, head, size=None):
        raise ChecksumMismatch("the store reports CRC64NVME AAAAAAAAAAA=")

    monkeypatch.setattr(s3store, "compare_checksum", mismatch)
    store.attempts = 1
    v = store.begin("mismatch")
    with pytest.raises(StorageError, match=r"could not upload clip\.mp4 to s3://.*AAAAAAAAAAA="):
        store.put(v, "clip.mp4", files["clip.mp4"])
    assert keys(client, bucket) == []  # before any abort
    assert (v, "clip.mp4") not in store.checksums


@pytest.mark.s3
def test_a_passing_retry_delivers_after_one_mismatch(s3, store, files, monkeypatch):
    real, failures = s3store.compare_checksum, []

    def once(expected, head, size=None):
        if not failures:
            failures.append(1)
            raise ChecksumMismatch("dropped bytes")
        real(expected, head, size)

    monkeypatch.setattr(s3store, "compare_checksum", once)
    v = store.begin("retry")
    assert store.put(v, "clip.mp4", files["clip.mp4"]) == f"crc64nvme:{crc(files['clip.mp4'].read_bytes())}"
    store.commit(v)
    assert failures == [1] and store.current("retry") == v


@pytest.mark.s3
def test_a_connection_dropped_mid_multipart_is_uploaded_again_and_leaves_no_parts(s3, store, files, monkeypatch):
    client, bucket = s3
    real, dropped = store.client.upload_part, []

    def flaky(**kwargs):
        if kwargs["PartNumber"] == 2 and not dropped:  # after botocore's own retries gave up
            dropped.append(kwargs["UploadId"])
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1")
        return real(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", flaky)
    v = store.begin("flaky")
    data = files["master.mov"].read_bytes()
    assert store.put(v, "master.mov", files["master.mov"]) == f"crc64nvme:{crc(data)}"
    store.commit(v)
    assert len(dropped) == 1 and uploads(client, bucket) == []
    assert fetch(store.presign(v, "master.mov")) == data


@pytest.mark.s3
def test_commit_refuses_an_object_changed_after_upload(s3, store, files):
    client, bucket = s3
    v = store.begin("tampered")
    store.put(v, "clip.mp4", files["clip.mp4"])
    store.put(v, "master.mov", files["master.mov"])
    client.put_object(Bucket=bucket, Key=store.key(v, "clip.mp4"), Body=b"not the clip", ChecksumAlgorithm="CRC64NVME")
    with pytest.raises(StorageError, match=r"clip\.mp4 changed after upload") as info:
        store.commit(v)
    assert info.value.where == "tampered"
    assert store.current("tampered") is None
    assert keys(client, bucket, "deliveries/team/tampered/") == []


@pytest.mark.s3
def test_commit_refuses_an_object_deleted_after_upload(s3, store, files):
    client, bucket = s3
    v = store.begin("vanished")
    store.put(v, "clip.mp4", files["clip.mp4"])
    client.delete_object(Bucket=bucket, Key=store.key(v, "clip.mp4"))
    with pytest.raises(StorageError, match=r"clip\.mp4 is missing"):
        store.commit(v)
    assert store.current("vanished") is None


@pytest.mark.s3
def test_abort_cleans_up_a_started_multipart_upload(s3, store, files):
    client, bucket = s3
    v = store.begin("cancelled")
    store.put(v, "clip.mp4", files["clip.mp4"])
    key = store.key(v, "master.mov")
    up = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC64NVME")
    client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * (5 * MiB))
    assert len(uploads(client, bucket, store.version_prefix(v))) == 1
    store.abort(v)
    assert uploads(client, bucket) == []
    assert keys(client, bucket) == []
    assert store.current("cancelled") is None


@pytest.mark.s3
def test_a_second_version_switches_current_and_the_first_stays_readable(s3, store, files, tmp_path):
    first = publish(store, "series", {"clip.mp4": files["clip.mp4"]}, bundle=None, work=tmp_path)
    store.write_record(first, SUMMARY, b'{"v": 1}')
    other = tmp_path / "clip-v2.mp4"
    other.write_bytes(os.urandom(4096))
    second = publish(store, "series", {"clip.mp4": other}, bundle=None, work=tmp_path)
    assert second != first and store.current("series") == second
    assert fetch(store.presign(first, "clip.mp4")) == files["clip.mp4"].read_bytes()
    assert fetch(store.presign(second, "clip.mp4")) == other.read_bytes()
    assert store.read_record(first, SUMMARY) == b'{"v": 1}' and store.read_record(second, SUMMARY) is None
    data = other.read_bytes()
    body = store.open_range(second, "clip.mp4", 100, 199)
    assert body.read() == data[100:200]
    assert store.open_range(second, "clip.mp4", 4000).read() == data[4000:]
    info = store.head(second, "clip.mp4")
    assert info.size == 4096 and info.checksum == f"crc64nvme:{crc(data)}" and info.content_type == "video/mp4"
    assert store.head(second, "nothing.mp4") is None


@pytest.mark.s3
def test_publish_with_a_bundle_works_unchanged_on_s3(s3, store, files, tmp_path):
    client, bucket = s3
    work = tmp_path / "work"
    work.mkdir()
    v = publish(store, "bundled", dict(files), bundle="bundled.zip", work=work)
    assert store.current("bundled") == v
    names = [k.rsplit("/", 1)[1] for k in keys(client, bucket, store.version_prefix(v))]
    assert sorted(names) == ["bundled.zip", "clip.mp4", "master.mov"]
    assert not (work / "bundled.zip").exists()
    assert set(store.checksums) == {(v, n) for n in names}
    assert fetch(store.presign(v, "clip.mp4")) == files["clip.mp4"].read_bytes()


@pytest.mark.s3
def test_a_pointer_to_a_bad_version_is_refused(s3, store):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="deliveries/team/odd/current", Body=b'{"version": "../../escape"}')
    with pytest.raises(StorageError, match="not a version pointer"):
        store.current("odd")
    with pytest.raises(StorageError, match="refusing"):
        store.url(Version("odd", "v1"), "../x")


@pytest.mark.s3
def test_an_unreachable_store_is_a_storage_error_naming_the_object(s3, files):
    _, bucket = s3
    quick = Config(signature_version="s3v4", retries={"max_attempts": 1}, connect_timeout=1)
    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", config=quick)
    dead = S3Store(bucket, client=client, attempts=1, backoff=0)
    with pytest.raises(StorageError, match=r"could not read s3://vexport-test-\w+/x/current"):
        dead.current("x")
    v = dead.begin("x")
    with pytest.raises(StorageError, match=r"could not upload clip\.mp4 to s3://vexport-test-\w+/x/"):
        dead.put(v, "clip.mp4", files["clip.mp4"])
