"""An export delivered to the local store and to S3 (moto's server over HTTP), then downloaded through
the gateway from the S3 copy, streamed (`serve: proxy`) and by a presigned redirect (`serve: redirect`);
and a delivery that cannot reach one destination leaves no version anywhere and no link rows."""

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from vexport_pipeline_tests.conftest import vexport, write_manifest
from vexport_pipeline_tests.gateway.test_gateway import free_port

pytestmark = pytest.mark.s3


@pytest.fixture
def env(s3, moto_endpoint, tmp_path, media):
    _, bucket = s3
    dests = tmp_path / "destinations.yaml"
    dests.write_text(
        f"s3main: {{url: 's3://{bucket}/exports', endpoint_url: '{moto_endpoint}', region: us-east-1}}\n"
        f"s3redirect: {{url: 's3://{bucket}/direct', endpoint_url: '{moto_endpoint}', serve: redirect}}\n"
        f"s3down: {{url: 's3://nowhere-bucket/x', endpoint_url: '{moto_endpoint}'}}\n"  # no such bucket
    )
    import os

    return {
        **os.environ,
        "VEXPORT_HOME": str(tmp_path / "home"),
        "VEXPORT_MEDIA_ROOTS": str(media["dir"]),
        "VEXPORT_DESTINATIONS": str(dests),
        "VEXPORT_PUBLIC_URL": "http://127.0.0.1:1",  # replaced per test by the gateway's port
    }


def export(tmp_path, media, env, destinations: list[str], export_id: str):
    manifest = write_manifest(
        tmp_path,
        {"id": export_id, "source": str(media["av"]), "segments": [{"start": 0, "end": 1.5}],
         "targets": [{"format": "mp4", "video_codec": "h264", "resolution": "640x360", "crf": 30}],
         "delivery": {"destinations": destinations}},
        name=f"{export_id}.yaml",
    )  # fmt: skip
    out = tmp_path / f"{export_id}.json"
    proc = vexport("export", manifest, "--json", out, env=env)
    return proc, json.loads(out.read_text())


def test_delivered_to_s3_with_verified_checksums_and_served_from_there(s3, env, tmp_path, media):
    client, bucket = s3
    proc, summary = export(tmp_path, media, env, ["default", "s3main", "s3redirect"], "tos3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [r] = summary["renditions"]
    copies = {c["destination"]: c for c in r["copies"]}
    assert (
        set(copies) == {"default", "s3main", "s3redirect"} and copies["default"]["checksum"] == f"sha256:{r['sha256']}"
    )
    for name in ("s3main", "s3redirect"):
        uri = copies[name]["uri"]
        assert uri.startswith(f"s3://{bucket}/") and copies[name]["checksum"].startswith("crc64nvme:")
        key = uri.split("/", 3)[3]
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert f"crc64nvme:{head['ChecksumCRC64NVME']}" == copies[name]["checksum"]
        assert head["ContentLength"] == r["size_bytes"]
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == Path(r["path"]).read_bytes()
    pointer = json.loads(client.get_object(Bucket=bucket, Key="exports/tos3/current")["Body"].read())
    assert pointer["version"] in copies["s3main"]["uri"]

    port = free_port()
    env = {**env, "VEXPORT_PUBLIC_URL": f"http://127.0.0.1:{port}", "VEXPORT_TRUSTED_PROXIES": "127.0.0.1/32"}
    exe = Path(sys.executable).with_name("vexport")
    gateway = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.TransportError:
                assert gateway.poll() is None and time.monotonic() < deadline, gateway.stderr.read()
                time.sleep(0.1)
        data = Path(r["path"]).read_bytes()
        made = json.loads(
            vexport("links", "create", "tos3", "--destination", "s3main", "--json", env=env, check=True).stdout
        )
        assert made["destination"] == "s3main"
        part = httpx.get(made["url"], headers={"range": "bytes=100-1099", "x-forwarded-for": "198.51.100.7"})
        assert part.status_code == 206 and part.content == data[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
        whole = httpx.get(made["url"], headers={"x-forwarded-for": "198.51.100.7"})
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-disposition"].startswith("attachment")
        listed = json.loads(vexport("links", "list", "tos3", "--json", env=env, check=True).stdout)
        assert next(x for x in listed if x["id"] == made["id"])["downloads"] == 1

        direct = json.loads(
            vexport("links", "create", "tos3", "--destination", "s3redirect", "--json", env=env, check=True).stdout
        )
        hop = httpx.get(direct["url"], headers={"x-forwarded-for": "198.51.100.8"})
        assert hop.status_code == 302 and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in hop.headers["location"]
        assert httpx.get(hop.headers["location"]).content == data
    finally:
        gateway.terminate()
        _, err = gateway.communicate(timeout=10)
    assert "Traceback" not in err, err


def test_a_destination_that_fails_leaves_no_version_anywhere_and_no_links(s3, env, tmp_path, media):
    client, bucket = s3
    proc, summary = export(tmp_path, media, env, ["default", "s3main", "s3down"], "halfway")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert summary["errors"][0]["code"] == "storage_failed" and "nowhere-bucket" in summary["errors"][0]["message"]
    store = Path(env["VEXPORT_HOME"]) / "store"
    assert not (store / "halfway").exists() and not list(store.glob(".staging/*"))
    assert client.list_objects_v2(Bucket=bucket, Prefix="exports/halfway").get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    events = Path(env["VEXPORT_HOME"]) / "events.sqlite"
    assert not events.exists() or sqlite3.connect(events).execute("SELECT COUNT(*) FROM links").fetchone()[0] == 0

    listed = vexport("destinations", "--json", env=env)
    assert listed.returncode == 1  # s3down's bucket does not exist
    state = {r["name"]: r["ok"] for r in json.loads(listed.stdout)}
    assert state == {"default": True, "s3main": True, "s3redirect": True, "s3down": False}
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # the probes cleaned up after themselves

    bad = vexport("submit", write_manifest(tmp_path, {"source": str(media["av"]), "targets": [{"preset": "web_720p"}],
                  "delivery": {"destinations": ["nope"]}}, name="nope.yaml"), env=env)  # fmt: skip
    assert bad.returncode == 2 and "delivery.destinations[0]: 'nope'" in bad.stderr + bad.stdout


def test_an_s3_source_from_an_allowed_bucket_is_fetched_verified_and_exported(s3, moto_endpoint, env, tmp_path, media):
    client, bucket = s3
    allowed = tmp_path / "with-sources.yaml"
    allowed.write_text(
        Path(env["VEXPORT_DESTINATIONS"]).read_text()
        + f"inbound: {{url: 's3://{bucket}/incoming', endpoint_url: '{moto_endpoint}', sources: true}}\n"
    )
    env = {**env, "VEXPORT_DESTINATIONS": str(allowed)}
    client.upload_file(str(media["av"]), bucket, "incoming/clip.mp4")
    client.upload_file(str(media["av"]), bucket, "private/clip.mp4")

    def manifest(source: str, name: str) -> Path:
        return write_manifest(tmp_path, {"id": name, "source": source, "segments": [{"start": 0, "end": 1}],
                              "targets": [{"format": "mp4", "video_codec": "h264", "resolution": "640x360"}]},
                              name=f"{name}.yaml")  # fmt: skip

    out = tmp_path / "froms3.json"
    proc = vexport("export", manifest(f"s3://{bucket}/incoming/clip.mp4", "froms3"), "--json", out, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    assert summary["status"] == "delivered" and summary["source"]["duration"] == pytest.approx(4.0, abs=0.05)
    fetched = list((Path(env["VEXPORT_HOME"]) / "cache" / "s3").rglob("source.mp4"))
    assert len(fetched) == 1 and fetched[0].read_bytes() == media["av"].read_bytes()

    for source, needle in [
        (f"s3://{bucket}/private/clip.mp4", "not under a destination that allows sources"),
        (f"s3://{bucket}/incoming/missing.mp4", "does not exist"),
        (f"s3://{bucket}/incoming/../private/clip.mp4", "is not s3://bucket/key"),
        ("s3://another-bucket/incoming/clip.mp4", "not under a destination that allows sources"),
    ]:
        refused = vexport("export", manifest(source, "refused"), env=env)
        assert refused.returncode == 2 and needle in refused.stdout + refused.stderr, (source, refused.stdout)
