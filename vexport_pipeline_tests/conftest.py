import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from vexport_pipeline.core.settings import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
# before anything imports gcsfs (it reads this at import): without it, every call to the GCS emulator stalls
# about 60 s in gcsfs's hierarchical-namespace layer. Set for the whole test session, as the fixture explains.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


def running_ffmpeg(pid: int | None = None) -> list:
    """FFmpeg processes under `pid` (default: this process) that still run: zombies not yet reaped are dead,
    and a process that ends while being looked at is skipped."""
    import psutil

    running = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return running
    for p in children:
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "ffmpeg" in p.name():
                running.append(p)
        except psutil.Error:
            pass
    return running


BT709 = "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"  # tagged, as cameras do


def ffmpeg_make(out: Path, *args: str) -> Path:
    """`out` made by FFmpeg from `args` (inputs, filters, codecs); FFmpeg's own errors only."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args, str(out)], check=True)
    return out


def sound_change_ts(out: Path) -> Path:
    """4 s of MPEG-TS whose sound changes at 2 s, as a broadcast recording's does at a programme boundary: a 440 Hz
    stereo 48 kHz tone, then a 660 Hz 5.1 44.1 kHz one (the picture 640x360 throughout)."""
    parts = []
    for k, (tone, rate, channels) in enumerate([(440, 48000, 2), (660, 44100, 6)]):
        parts.append(
            ffmpeg_make(
                out.with_name(f"{out.stem}.{k}.ts"),
                *("-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=2"),
                *("-f", "lavfi", "-i", f"sine=f={tone}:r={rate}:d=2"),
                *("-ac", str(channels), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac"),
                *("-output_ts_offset", str(2 * k), "-f", "mpegts"),
            )
        )
    out.write_bytes(b"".join(p.read_bytes() for p in parts))
    for p in parts:
        p.unlink()
    return out


def tone_hz(samples, rate: int) -> float:
    """The strongest frequency of a mono signal."""
    import numpy as np

    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def killed_at_once(argv: list[str]) -> subprocess.CompletedProcess:
    """What `runner.capture` returns for an FFmpeg started for real and SIGKILLed at once (as CI saw a decode check
    end: no picture, nothing on stderr)."""
    import signal

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def make_clip(path: Path, *, seconds=4, size="640x360", rate=25, audio=True, gop=25, extra_v=()):
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=s={size}:r={rate}:d={seconds},{BT709}",
    ]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=f=440:d={seconds}:r=48000"]
    cmd += [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(gop),
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        *extra_v,
    ]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    subprocess.run(cmd + [str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Small generated sources shared by the whole run."""
    d = tmp_path_factory.mktemp("media")
    return {
        "dir": d,
        "av": make_clip(d / "av.mp4"),  # 4 s, 640x360, 25 fps, keyframe every second, AAC
        "silent": make_clip(d / "silent.mp4", seconds=2, size="320x240", audio=False),
    }


AWKWARD = {
    # name: (ffmpeg arguments after the inputs, output name)
    "vfr": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=30:d=3",
        "-vf",
        r"select='not(eq(mod(n\,4)\,3))'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
    ],
    "odd444": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=25:d=2",
        "-vf",
        "scale=641:361,setsar=1,format=yuv444p",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv444p",
    ],
    "hevc10": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=25:d=2",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p10le",
        "-x265-params",
        "log-level=error",
    ],
    "surround": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=25:d=2",
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:d=2",
        "-af",
        "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
    ],
    "shortaudio": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=25:d=3",
        "-f",
        "lavfi",
        "-i",
        "sine=d=1.5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
    ],
    "longaudio": [  # the camera stopped, the sound did not: 2 s of pictures, 3.5 s of audio
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=25:d=2",
        "-f",
        "lavfi",
        "-i",
        "sine=d=3.5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
    ],
    "slides": [  # 1 fps, like a slideshow or a screen capture at low rate
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=1:d=6",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
    ],
    "two_video": [  # a second picture (a camera's proxy, a picture-in-picture track) and a timecode
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=1280x720:r=25:d=2",
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=320x240:r=25:d=2",
        "-f",
        "lavfi",
        "-i",
        "sine=d=2",
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-timecode",
        "01:00:00:00",
    ],
    "tiny": ["-f", "lavfi", "-i", "testsrc2=s=16x16:r=25:d=1", "-c:v", "libx264", "-preset", "ultrafast"],
    "offset": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=25:d=2",
        "-f",
        "lavfi",
        "-i",
        "sine=d=2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-output_ts_offset",
        "5",
    ],
}


@pytest.fixture(scope="session")
def awkward(tmp_path_factory, media):
    """Sources that break naive pipelines: VFR, rotated, odd-sized 4:4:4, 10-bit HEVC, 5.1, short audio,
    non-zero start."""
    d = tmp_path_factory.mktemp("awkward")
    out = {name: ffmpeg_make(d / f"{name}.mp4", *args) for name, args in AWKWARD.items()}
    out["rotated"] = ffmpeg_make(d / "rotated.mp4", "-display_rotation", "90", "-i", str(media["av"]), "-c", "copy")
    return out


@pytest.fixture
def home(tmp_path, monkeypatch, media):
    """A fresh VEXPORT_HOME; the session media folder is an allowed media root."""
    h = tmp_path / "home"
    monkeypatch.setenv("VEXPORT_HOME", str(h))
    monkeypatch.setenv("VEXPORT_MEDIA_ROOTS", str(media["dir"]))
    monkeypatch.setenv("VEXPORT_INBOX_TICK_S", "120")  # a tick takes every file here, however loaded the machine
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("VEXPORT_PRESETS", raising=False)
    from vexport_pipeline.core.settings import Home

    return Home(h).ensure()


def passed(validation: dict) -> bool:
    """A rendition that passed, or only warns that it has more pixels or frames than its small test source."""
    codes = {i["code"] for i in validation["issues"]}
    return validation["status"] == "pass" or (validation["status"] == "warn" and codes <= {"beyond_source"})


def write_manifest(folder: Path, data: dict, name="comp.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data) if name.endswith(".json") else __import__("yaml").safe_dump(data))
    return path


def vexport(*args, env=None, check=False):
    """Run the real CLI as a user would."""
    full_env = {**os.environ, **(env or {})}
    exe = Path(sys.executable).with_name("vexport")
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"vexport {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# S3 on the wire: moto's server over HTTP on a free local port, started once per session; each test gets
# test credentials in its environment and a bucket of its own.
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
    import uuid

    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=moto_endpoint, config=Config(signature_version="s3v4"))
    bucket = BUCKET_PREFIX + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=bucket)
    return client, bucket


# GCS and Azure Blob on the wire, each emulator started once per session on a free local port; each test gets
# the emulator's settings in its environment (as a deployment would: the SDKs' own variables) and a bucket or
# container of its own. Dropbox and Google Drive have no emulator: their tests use fsspec's memory filesystem.


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc=None, seconds: float = 30.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the emulator exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s")


@pytest.fixture(scope="session")
def gcs_endpoint():
    """gcp-storage-emulator's JSON API server, in memory, in a thread of this process, over real HTTP.

    gcsfs reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT when it is imported; left at its default ("true") its
    zonal/hierarchical-bucket layer asks the Storage Control API about every bucket, which the emulator does not
    serve, and each call stalls about 60 s. So it is set to "false" here, before gcsfs is imported, and for the
    rest of the session (subprocesses inherit it)."""
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    import gcsfs
    from gcp_storage_emulator.server import create_server

    if gcsfs.GCSFileSystem.__name__ != "GCSFileSystem":
        pytest.fail("gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set (60 s stalls)")
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs(gcs_endpoint, monkeypatch):
    """A gcsfs filesystem on the emulator and a fresh bucket; STORAGE_EMULATOR_HOST in the environment (so the
    store goes there, without credentials, as google-cloud-storage does) and no Google credentials."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # never ask a metadata server
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    import uuid

    import gcsfs

    fs = gcsfs.GCSFileSystem(token="anon", endpoint_url=gcs_endpoint)
    bucket = BUCKET_PREFIX + uuid.uuid4().hex[:12]
    fs.mkdir(bucket)
    return fs, bucket


# Azurite's published development account: its key is public and only opens the local emulator.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_exe() -> str | None:
    import shutil

    local = REPO / ".ci-tools" / "node_modules" / ".bin" / "azurite-blob"  # where `make azurite` puts it
    return str(local) if local.exists() else shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azurite_endpoint(tmp_path_factory):
    """Azurite's blob service (npm; `make test` installs it), in memory, on a free port. It ignores SIGTERM,
    so it is stopped by its PID with SIGKILL."""
    import signal

    exe = azurite_exe()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("azurite-blob is needed (make azurite installs it)")
        pytest.skip("azurite is not installed (make azurite)")
    port, where = free_port(), tmp_path_factory.mktemp("azurite")
    args = ["--inMemoryPersistence", "--blobHost", "127.0.0.1", "--blobPort", str(port), "--skipApiVersionCheck"]
    with open(where / "azurite.log", "wb") as logf:
        proc = subprocess.Popen([exe, *args, "--loose"], cwd=where, stdout=logf, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(port, proc)
        except RuntimeError as exc:
            pytest.fail(f"Azurite did not start: {exc}\n{(where / 'azurite.log').read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def azure(azurite_endpoint, monkeypatch):
    """An adlfs filesystem on Azurite and a fresh container; the connection string (with the well-known
    development key) only in this test's environment, where the SDK's chain reads it."""
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={azurite_endpoint};"
    )
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    import uuid

    import adlfs

    fs = adlfs.AzureBlobFileSystem(connection_string=conn)
    container = BUCKET_PREFIX + uuid.uuid4().hex[:12]
    fs.mkdir(container)
    return fs, container


PG = os.environ.get("VEXPORT_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432")


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database, dropped afterwards (with the event store's engines on it)."""
    import psycopg2

    from vexport_pipeline.core.delivery import events as ev

    dsn = PG.replace("postgresql+psycopg2://", "postgresql://")
    try:
        admin = psycopg2.connect(dsn + "/postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise  # CI has PostgreSQL: not reaching it is a failure, not a skip
        pytest.skip(f"no PostgreSQL at {PG}: {exc}")
    admin.autocommit = True
    name = f"vexport_test_{uuid.uuid4().hex[:8]}"
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        for (_, url, _), (engine, _) in list(ev._engines.items()):
            if url.endswith(f"/{name}"):
                engine.dispose()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
