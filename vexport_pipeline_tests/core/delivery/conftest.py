"""S3 on the wire for the delivery tests: moto's server over HTTP on a free local port, started once per
session; each test gets test credentials in its environment and a bucket of its own."""

import uuid

import boto3
import pytest
from botocore.config import Config

BUCKET_PREFIX = "vexport-test-"


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch, tmp_path):
    """A plain client of the emulator and a fresh bucket; credentials only through the standard chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.client("s3", endpoint_url=moto_endpoint, config=Config(signature_version="s3v4"))
    bucket = BUCKET_PREFIX + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=bucket)
    return client, bucket
