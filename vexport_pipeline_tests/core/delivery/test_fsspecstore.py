"""The fsspec delivery store (GCS, Azure Blob, Dropbox, Google Drive): one set of tests run on each backend.

GCS and Azure run over the real wire: gcp-storage-emulator and Azurite over HTTP on local ports (conftest), the
stores made from a destinations file as in production, credentials only from the SDKs' environment variables.
Dropbox and Google Drive have no emulator, so their tests run the same store code on fsspec's in-memory
filesystem with each backend's settings (Drive: folders made first, a name replaced by delete-then-write; Dropbox:
the `content_hash` its API reports, computed here independently). Their HTTP clients are not exercised: no
test here reaches Dropbox or Google Drive."""

import hashlib
import io
import json
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from vexport_pipeline.core.delivery import fsspecstore
from vexport_pipeline.core.delivery.destinations import check, load_destinations
from vexport_pipeline.core.delivery.fsspecstore import FsspecStore, _RangeReader, file_digest, reported_hash
from vexport_pipeline.core.delivery.publish import SUMMARY, publish_all
from vexport_pipeline.core.delivery.stores import Version
from vexport_pipeline.core.errors import StorageError

MiB = 1024 * 1024


def dropbox_hash(data: bytes) -> str:
    """Dropbox's content hash as its API documents it, written here without the store's code."""
    blocks = [data[i : i + 4 * MiB] for i in range(0, len(data), 4 * MiB)]
    return hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in blocks)).hexdigest()


class DropboxLikeMemory(MemoryFileSystem):
    """fsspec's in-memory filesystem, reporting each file's `content_hash` in `info` as Dropbox's API does
    (dropboxdrivefs passes the API's metadata through)."""

    store: dict = {}  # its own files, apart from the plain memory filesystem's
    pseudo_dirs: list = [""]

    def info(self, path, **kwargs):
        out = super().info(path, **kwargs)
        if out["type"] == "file":
            out["content_hash"] = dropbox_hash(self.cat_file(path))
        return out


class DriveLikeMemory(MemoryFileSystem):
    """fsspec's in-memory filesystem with Google Drive's two differences that the store must handle (as
    gdrive-fsspec shows them): a file can only be written into a folder that exists, and writing a name that
    exists would add a second file of that name (refused here, so a store that did it fails)."""

    store: dict = {}
    pseudo_dirs: list = [""]

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode or "x" in mode:
            path = self._strip_protocol(path)
            if path in self.store:
                raise FileExistsError(f"{path}: Drive would add a second file of this name")
            if self._parent(path) not in self.pseudo_dirs:
                raise FileNotFoundError(f"{self._parent(path)}: no such Drive folder")
        return super()._open(path, mode, **kwargs)


@dataclass
class Backend:
    """A store under test, and a plain filesystem on the same place to look behind its back."""

    kind: str
    store: FsspecStore
    fs: Any
    root: str

    def expected(self, data: bytes) -> str:
        """The checksum the store must report, computed independently from the bytes."""
        if self.kind in ("gcs", "azure"):
            return "md5:" + hashlib.md5(data).hexdigest()
        if self.kind == "dropbox":
            return "dropbox:" + dropbox_hash(data)
        return "sha256:" + hashlib.sha256(data).hexdigest()  # Drive: read back and hashed

    def find(self, path: str) -> list[str]:
        self.fs.invalidate_cache()
        return self.fs.find(path)

    def write(self, path: str, data: bytes) -> None:
        """Put other bytes at `path` behind the store's back (on Drive: delete, then write into the folder)."""
        if isinstance(self.fs, DriveLikeMemory):
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
            if self.fs.exists(path):
                self.fs.rm_file(path)
        self.fs.pipe_file(path, data)

    def read(self, path: str) -> bytes:
        self.fs.invalidate_cache()
        return self.fs.cat_file(path)


def _destination(tmp_path, url: str, extra: str = ""):
    path = tmp_path / "destinations.yaml"
    path.write_text(f"remote: {{url: '{url}'{extra}}}\n")
    return load_destinations(path, tmp_path / "store")["remote"]


@pytest.fixture(
    params=[
        pytest.param("gcs", marks=pytest.mark.gcs),
        pytest.param("azure", marks=pytest.mark.azure),
        "dropbox",
        "gdrive",
    ]
)
def backend(request, tmp_path) -> Backend:
    kind, prefix = request.param, "deliveries/team"
    if kind == "gcs":
        fs, bucket = request.getfixturevalue("gcs")
        store = _destination(tmp_path, f"gs://{bucket}/{prefix}").store(backoff=0)
        return Backend(kind, store, fs, f"{bucket}/{prefix}")
    if kind == "azure":
        fs, container = request.getfixturevalue("azure")
        store = _destination(tmp_path, f"az://{container}/{prefix}").store(backoff=0)
        return Backend(kind, store, fs, f"{container}/{prefix}")
    fs = DropboxLikeMemory() if kind == "dropbox" else DriveLikeMemory()
    root = f"/vexport-test-{os.urandom(6).hex()}/{prefix}"
    return Backend(kind, FsspecStore(fs, root, kind=kind, backoff=0), fs, root)


def payload(size: int) -> bytes:
    """Random bytes that do not end in CR: gcp-storage-emulator parses gcsfs's multipart uploads with Python's
    email parser, which drops a trailing "\r" (the store's verification catches it; real GCS keeps it)."""
    return os.urandom(size - 1) + b"."


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fsspecfiles")
    small, big = d / "clip.mp4", d / "master.mov"
    small.write_bytes(payload(300 * 1024))
    big.write_bytes(payload(4 * MiB + 333))  # two Dropbox hash blocks
    return {"clip.mp4": small, "master.mov": big}


def begun(store, monkeypatch):
    """Every version `store.begin` hands out, in order."""
    seen, real = [], store.begin
    monkeypatch.setattr(store, "begin", lambda export_id: seen.append(real(export_id)) or seen[-1])
    return seen


# the same behaviour on every backend -----------------------------------------------------------------------


def test_a_version_is_invisible_until_committed_and_reads_back_identical(backend, files):
    store = backend.store
    v = store.begin("launch")
    sums = {name: store.put(v, name, src) for name, src in files.items()}
    assert store.current("launch") is None  # uploaded and verified, still invisible
    assert f"{backend.root}/launch/current" not in backend.find(backend.root)
    store.commit(v)
    assert store.current("launch") == v
    assert json.loads(backend.read(f"{backend.root}/launch/current")) == {"version": v.version}
    for name, src in files.items():
        data = src.read_bytes()
        assert backend.read(store.key(v, name)) == data
        assert sums[name] == store.checksums[(v, name)] == backend.expected(data)
        assert store.url(v, name).endswith(f"/launch/{v.version}/{name}")
        assert store.url(v, name).startswith({"gcs": "gs://", "azure": "az://"}.get(backend.kind, backend.kind))
        info = store.head(v, name)
        assert info.size == len(data) and info.etag
        assert info.content_type == ("video/mp4" if name.endswith(".mp4") else "video/quicktime")
        if backend.kind != "gdrive":  # Drive reports no hash through gdrive-fsspec
            assert info.checksum == backend.expected(data)
    assert store.local_path(v, "clip.mp4") is None


def test_publish_all_delivers_the_files_and_their_zip_bundle(backend, files, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    done = publish_all({"remote": backend.store}, "bundled", dict(files), bundle="bundled.zip", work=work)
    v = done.versions["remote"]
    assert backend.store.current("bundled") == v
    prefix = backend.store.folder(v)
    assert sorted(p.rsplit("/", 1)[1] for p in backend.find(prefix)) == ["bundled.zip", "clip.mp4", "master.mov"]
    assert not (work / "bundled.zip").exists()
    bundle = backend.read(f"{prefix}/bundled.zip")
    with zipfile.ZipFile(io.BytesIO(bundle)) as z:
        assert {n: z.read(n) for n in z.namelist()} == {n: p.read_bytes() for n, p in files.items()}
    assert done.checksums["remote"] == {
        **{n: backend.expected(p.read_bytes()) for n, p in files.items()},
        "bundled.zip": backend.expected(bundle),
    }


def test_a_failure_mid_publish_leaves_nothing_and_the_old_version_stays_current(backend, files, tmp_path, monkeypatch):
    store = backend.store
    old = publish_all({"remote": store}, "launch", dict(files), bundle=None, work=tmp_path).versions["remote"]
    seen = begun(store, monkeypatch)
    with pytest.raises(StorageError, match=r"gone\.mp4") as info:
        publish_all(
            {"remote": store}, "launch", {**files, "gone.mp4": tmp_path / "gone.mp4"}, bundle=None, work=tmp_path
        )
    assert info.value.where == "launch" and "cannot read" in str(info.value)
    [failed] = seen
    assert backend.find(store.folder(failed)) == []  # clip.mp4 and master.mov had been uploaded
    assert store.current("launch") == old
    assert backend.read(store.key(old, "master.mov")) == files["master.mov"].read_bytes()


def test_a_second_version_switches_current_and_ranges_read_the_right_bytes(backend, files, tmp_path):
    store = backend.store
    first = publish_all({"r": store}, "series", {"clip.mp4": files["clip.mp4"]}, bundle=None, work=tmp_path)
    first = first.versions["r"]
    store.write_record(first, SUMMARY, b'{"v": 1}')
    store.write_record(first, SUMMARY, b'{"v": 2}')  # a record is replaced, never doubled
    other = tmp_path / "clip-v2.mp4"
    other.write_bytes(data := payload(5000))
    second = publish_all({"r": store}, "series", {"clip.mp4": other}, bundle=None, work=tmp_path).versions["r"]
    assert second != first and store.current("series") == second
    assert backend.read(store.key(first, "clip.mp4")) == files["clip.mp4"].read_bytes()
    assert store.read_record(first, SUMMARY) == b'{"v": 2}' and store.read_record(second, SUMMARY) is None
    with store.open_range(second, "clip.mp4", 100, 199) as body:
        assert body.read() == data[100:200] and body.read() == b""
    assert store.open_range(second, "clip.mp4", 4000).read() == data[4000:]
    assert store.open_range(second, "clip.mp4", 0, 0).read() == data[:1]
    assert b"".join(store.open_range(second, "clip.mp4").iter_chunks(1024)) == data
    assert store.head(second, "nothing.mp4") is None


def test_commit_refuses_a_file_changed_after_upload(backend, files):
    store = backend.store
    v = store.begin("tampered")
    store.put(v, "clip.mp4", files["clip.mp4"])
    backend.write(store.key(v, "clip.mp4"), b"not the clip")
    with pytest.raises(StorageError, match=r"clip\.mp4 changed after upload") as info:
        store.commit(v)
    assert info.value.where == "tampered"
    assert store.current("tampered") is None and backend.find(store.folder(v)) == []


def test_a_file_that_never_verifies_is_retried_then_removed(backend, files, monkeypatch):
    store = backend.store
    real, calls = store.fs.put_file, []

    def corrupting(lpath, rpath, **kwargs):  # the bytes arrive damaged, every time
        calls.append(rpath)
        real(lpath, rpath, **kwargs)
        backend.write(rpath, os.urandom(os.path.getsize(lpath)))

    monkeypatch.setattr(store.fs, "put_file", corrupting)
    store.attempts = 2
    v = store.begin("damaged")
    with pytest.raises(StorageError, match=r"clip\.mp4 .*after 2 attempts.*the local file has"):
        store.put(v, "clip.mp4", files["clip.mp4"])
    assert len(calls) == 2 and backend.find(store.folder(v)) == []
    monkeypatch.setattr(store.fs, "put_file", real)
    store.put(v, "clip.mp4", files["clip.mp4"])  # and then a good upload verifies
    store.commit(v)
    assert store.current("damaged") == v


def test_probe_writes_reads_and_cleans_up(backend):
    backend.store.probe()
    assert not [p for p in backend.find(backend.root) if ".vexport-probe" in p]


def test_presigned_urls_where_the_backend_signs_and_a_clear_refusal_elsewhere(backend, files, tmp_path):
    store = backend.store
    v = publish_all({"r": store}, "signed", dict(files), bundle=None, work=tmp_path).versions["r"]
    if backend.kind == "azure":  # a read-only SAS from the account key of the connection string
        url = store.presign(v, "clip.mp4", 60, content_disposition='attachment; filename="clip.mp4"')
        assert "sig=" in url and "sp=r" in url and "se=" in url
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.read() == files["clip.mp4"].read_bytes()
            assert resp.headers["Content-Disposition"] == 'attachment; filename="clip.mp4"'
    else:  # GCS signs only with a service account's key (the emulator's client has none); Dropbox, Drive never
        with pytest.raises(StorageError, match="sign|presign"):
            store.presign(v, "clip.mp4", 60)


def test_a_bad_pointer_or_name_is_refused(backend):
    backend.write(f"{backend.root}/odd/current", b'{"version": "../../escape"}')
    with pytest.raises(StorageError, match="not a version pointer"):
        backend.store.current("odd")
    with pytest.raises(StorageError, match="refusing"):
        backend.store.url(Version("odd", "v1"), "../x")
    with pytest.raises(StorageError, match="refusing"):
        backend.store.current("../up")


# destinations and credentials --------------------------------------------------------------------------------


@pytest.mark.gcs
def test_check_proves_a_gcs_destination_writable_through_the_emulator(gcs, gcs_endpoint, tmp_path):
    fs, bucket = gcs
    dest = _destination(tmp_path, f"gs://{bucket}/exports", f", endpoint_url: '{gcs_endpoint}'")
    ok, message = check(dest)
    assert ok, message
    assert fs.find(bucket) == []
    ok, message = check(_destination(tmp_path, "gs://no-such-bucket-here/x"))
    assert not ok and "gs://no-such-bucket-here/x is not writable" in message


@pytest.mark.azure
def test_check_proves_an_azure_destination_writable_through_azurite(azure, tmp_path, monkeypatch):
    fs, container = azure
    ok, message = check(_destination(tmp_path, f"az://{container}/exports"))
    assert ok, message
    fs.invalidate_cache()
    assert fs.find(container) == []
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    ok, message = check(_destination(tmp_path, f"az://{container}/exports"))
    assert not ok and "AZURE_STORAGE_CONNECTION_STRING" in message


def test_dropbox_and_drive_take_credentials_only_from_the_environment(tmp_path, monkeypatch):
    for name in ("DROPBOX_TOKEN", "DROPBOX_REFRESH_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    ok, message = check(_destination(tmp_path, "dropbox:///Exports/team"))
    assert not ok and "DROPBOX_TOKEN" in message
    ok, message = check(_destination(tmp_path, "gdrive://Exports/team"))
    assert not ok and "GOOGLE_APPLICATION_CREDENTIALS" in message


# the pieces, directly ----------------------------------------------------------------------------------------


def test_each_backends_reported_hash_is_read_as_hex():
    md5 = hashlib.md5(b"video")
    import base64

    assert reported_hash({"md5Hash": base64.b64encode(md5.digest()).decode()}) == ("md5", md5.hexdigest())
    assert reported_hash({"crc32c": "pKxRWA=="}) == ("crc32c", "a4ac5158")
    assert reported_hash({"content_settings": {"content_md5": bytearray(md5.digest())}}) == ("md5", md5.hexdigest())
    assert reported_hash({"content_hash": "ABC"}) == ("dropbox", "abc")
    assert reported_hash({"md5Checksum": md5.hexdigest()}) == ("md5", md5.hexdigest())
    assert reported_hash({"size": 5, "content_settings": {"content_md5": None}}) is None


def test_local_digests_match_independent_ones(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(2 * 4 * MiB + 17)
    path.write_bytes(data)
    assert file_digest(path, "dropbox", chunk=3 * MiB) == dropbox_hash(data)  # blocks across read chunks
    assert file_digest(path, "md5") == hashlib.md5(data).hexdigest()
    path.write_bytes(b"123456789")
    assert file_digest(path, "crc32c") == "e3069283"  # CRC-32C's check value


def test_a_range_reader_stops_at_its_length():
    body = _RangeReader(io.BytesIO(b"0123456789"), 4)
    assert body.read(3) == b"012" and body.read() == b"3" and body.read(5) == b""
    assert list(_RangeReader(io.BytesIO(b"abcdef"), None).iter_chunks(4)) == [b"abcd", b"ef"]
    assert (
        fsspecstore.BACKENDS["gdrive"].replace_by_delete
        and fsspecstore.BACKENDS["dropbox"].sign_disposition_arg is None
    )
