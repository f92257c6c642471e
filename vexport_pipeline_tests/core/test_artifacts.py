"""The artifact store (a folder, S3 on the wire) and records whose files travel between homes."""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vexport_pipeline.core import artifacts
from vexport_pipeline.core.artifacts import HomeFile, KeyRefused, attach, check_key, detach, file_key
from vexport_pipeline.core.errors import ConfigError, StorageError
from vexport_pipeline.core.settings import Settings
from vexport_pipeline_tests.conftest import vexport


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    if request.param == "folder":
        return artifacts.open_store((tmp_path / "store").as_uri())
    _, bucket = request.getfixturevalue("s3")
    return artifacts.open_store(f"s3://{bucket}/team/artifacts", request.getfixturevalue("moto_endpoint"))


@dataclass(frozen=True)
class Made:
    """A record as a step hands it on: files of the home as paths and as a string, and a file outside it."""

    video: Path
    info_path: str
    outside: Path
    chunks: tuple[Path, ...]
    note: str = "not a path"


def make_home(root: Path) -> tuple[Path, Made]:
    work = root / "work" / "exp" / "renditions"
    (work / ".chunks").mkdir(parents=True)
    (work / "web.mp4").write_bytes(os.urandom(300_000))
    (root / "work" / "exp" / "source.mp4").write_bytes(b"source" * 1000)
    for i in range(2):
        (work / ".chunks" / f"{i}.mp4").write_bytes(os.urandom(1000))
    outside = root.parent / "media.mp4"
    outside.write_bytes(b"media")
    made = Made(
        work / "web.mp4",
        str(root / "work" / "exp" / "source.mp4"),
        outside,
        tuple(work / ".chunks" / f"{i}.mp4" for i in range(2)),
    )
    return root, made


def test_files_round_trip_verified_and_small_records_whole(store, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(2_000_000))
    crc = artifacts.checksum(src)
    assert not store.has("exports/x/a.bin", crc) and store.get("exports/x/a.bin", tmp_path / "no") is False
    assert store.put_new("exports/x/a.bin", src, crc) and not store.put_new("exports/x/a.bin", src, crc)
    assert store.get("exports/x/a.bin", tmp_path / "back" / "a.bin", crc)
    assert (tmp_path / "back" / "a.bin").read_bytes() == src.read_bytes()
    with pytest.raises(StorageError, match="CRC64NVME"):  # bytes that are not the ones asked for never land
        store.get("exports/x/a.bin", tmp_path / "wrong.bin", artifacts.checksum(tmp_path / "back" / "a.bin")[::-1])
    assert not (tmp_path / "wrong.bin").exists() and not list(tmp_path.glob(".wrong*"))
    assert store.read("exports/x/r.json") is None
    store.write("exports/x/r.json", b"{}")
    assert store.read("exports/x/r.json") == b"{}"
    with pytest.raises(KeyRefused):
        store.write("exports/../../r.json", b"{}")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a\\b", "", "a/\0"])
def test_keys_that_would_leave_the_store_are_refused(tmp_path, key):
    with pytest.raises(KeyRefused):
        artifacts.open_store((tmp_path / "store").as_uri()).write(key, b"x")
    with pytest.raises(KeyRefused):
        check_key(key)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_a_symlink_inside_a_folder_store_cannot_lead_out_of_it(tmp_path):
    store = artifacts.open_store((tmp_path / "store").as_uri())
    (tmp_path / "store" / "exports").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "store" / "exports" / "x").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "store" / "exports" / "link.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(KeyRefused, match="symlink"):
        store.write("exports/x/r.json", b"x")
    with pytest.raises(KeyRefused, match="symlink"):
        store.read("exports/link.json")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_only_work_and_cache_files_have_keys():
    assert file_key("work/exp/renditions/web.mp4") == "exports/exp/renditions/web.mp4"
    assert file_key("cache/ab/abcd.mp4") == "cache/ab/abcd.mp4"
    for rel in ("store/exp/v1/web.mp4", "work/exp", "secret.key", "work/../secret.key", "work/exp/values/x.pickle"):
        with pytest.raises(KeyRefused):
            file_key(rel)


def test_a_record_moves_to_another_home_and_known_files_are_not_fetched_again(store, tmp_path):
    a, made = make_home(tmp_path / "a")
    sent, files = detach(made, a, store)
    assert {f.rel for f in files} == {
        "work/exp/renditions/web.mp4",
        "work/exp/source.mp4",
        "work/exp/renditions/.chunks/0.mp4",
        "work/exp/renditions/.chunks/1.mp4",
    }
    assert isinstance(sent.video, HomeFile) and sent.outside == made.outside and sent.note == "not a path"

    b = tmp_path / "b"
    got, fetched = attach(sent, b, store)
    assert len(fetched) == 4
    assert got.video == b / "work" / "exp" / "renditions" / "web.mp4"
    assert got.video.read_bytes() == made.video.read_bytes()
    assert got.info_path == str(b / "work" / "exp" / "source.mp4")  # a string stays a string
    assert got.outside == made.outside and got.chunks[1].read_bytes() == made.chunks[1].read_bytes()

    got.chunks[0].write_bytes(b"changed here")  # a stale local copy is replaced; the others stay as they are
    again, fetched = attach(sent, b, store)
    assert [f.rel for f in fetched] == ["work/exp/renditions/.chunks/0.mp4"]
    assert again.chunks[0].read_bytes() == made.chunks[0].read_bytes()


def test_a_path_in_the_work_area_that_is_no_file_cannot_travel(store, tmp_path):
    home = tmp_path / "h"
    (home / "work" / "exp" / "report").mkdir(parents=True)
    with pytest.raises(StorageError, match="not a file"):
        detach([home / "work" / "exp" / "report"], home, store)
    assert detach([str(home / "work" / "exp" / "report")], home, store)[0] == [str(home / "work" / "exp" / "report")]


def test_a_record_cannot_place_files_outside_the_home(store, tmp_path):
    home = tmp_path / "h"
    (home / "work").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (home / "work" / "exp").symlink_to(tmp_path / "elsewhere")
    for rel in ("work/../../x.mp4", "/etc/x.mp4", "work/exp/../../../x.mp4", "work/exp/r/x.mp4"):
        with pytest.raises(KeyRefused):
            attach(HomeFile(rel, 1, "AAAAAAAAAAA="), home, store)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_the_settings_refuse_a_store_they_cannot_open():
    for url in ("file://relative/folder", "file:///", "http://host/x", "s3://", "/plain/path"):
        with pytest.raises(ConfigError, match="VEXPORT_ARTIFACTS") as info:
            Settings.from_env({"VEXPORT_ARTIFACTS": url})
        assert info.value.exit_code == 2
    s = Settings.from_env({"VEXPORT_ARTIFACTS": "s3://bucket/prefix", "VEXPORT_EXECUTOR": "celery"})
    assert (s.artifacts, s.executor, s.celery_broker) == ("s3://bucket/prefix", "celery", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="VEXPORT_EXECUTOR"):
        Settings.from_env({"VEXPORT_EXECUTOR": "spark"})


def _fill(store, tmp_path) -> None:
    """Two exports' work files and step values, their registrations, and two entries of the shared cache."""
    src = tmp_path / "f.bin"
    for key, size in [
        ("exports/a/renditions/web.mp4", 300_000),
        ("exports/a/values/renditions.pickle", 2_000),
        ("exports/b/renditions/.chunks/0.mp4", 50_000),
        ("cache/ab/abcd.mp4", 100_000),
        ("cache/cd/cdef.mp4", 100_000),
    ]:
        src.write_bytes(os.urandom(size))
        store.put(key, src, artifacts.checksum(src))
    for export_id in ("a", "b"):
        store.write(artifacts.registration_key(export_id), b"id: " + export_id.encode())


def test_retention_cleans_the_artifact_store_as_it_cleans_the_home(store, tmp_path):
    """Workers' files in the store are cleaned as the work area and the cache are: an export's keys once none was
    written for `work_days` (its registration stays: `reexport` reads it), cache keys by age and size cap. Before,
    the store only ever grew."""
    from vexport_pipeline.core import retention
    from vexport_pipeline.core.settings import Home

    _fill(store, tmp_path)
    home, day = Home(tmp_path / "home").ensure(), retention.DAY
    keys = lambda prefix: sorted(e.key for e in store.entries(prefix))
    assert keys("exports/a/") == [
        "exports/a/registration.json",
        "exports/a/renditions/web.mp4",
        "exports/a/values/renditions.pickle",
    ]
    fresh = retention.run(home, artifacts=store)
    assert not [a for a in fresh.done if a.tier == "artifacts"] and len(keys("exports/")) == 5

    now = time.time() + 8 * day  # a week and a day later: past work_days (7), not cache_days (30)
    policy = retention.Policy(cache_max_bytes=150_000)  # the oldest cache key goes, so the rest fit
    dry = retention.run(home, now, policy=policy, artifacts=store, dry_run=True)
    planned = [(a.kind, a.export_id, a.path, a.bytes) for a in dry.actions if a.tier == "artifacts"]
    assert planned[:2] == [("clean_work", "a", "exports/a/", 302_000), ("clean_work", "b", "exports/b/", 50_000)]
    assert len(planned) == 3 and planned[2][0] == "clean_cache" and planned[2][2] in keys("cache/")
    assert len(keys("exports/")) == 5  # a dry run changes nothing
    report = retention.run(home, now, policy=policy, artifacts=store)
    assert not report.errors and report.totals()["clean_work"] == {"count": 2, "bytes": 352_000}
    assert keys("exports/") == ["exports/a/registration.json", "exports/b/registration.json"]
    assert len(keys("cache/")) == 1 and report.totals()["clean_cache"]["count"] == 1
    assert store.read(artifacts.registration_key("a")) == b"id: a"
    if isinstance(store, artifacts.FolderStore):  # emptied folders go too
        assert sorted(p.name for p in (store.root / "exports" / "a").iterdir()) == ["registration.json"]


def test_retention_of_a_folder_store_from_the_command_line_never_follows_a_symlink(tmp_path, home):
    """`vexport retention --now` with `VEXPORT_ARTIFACTS` set: old keys go, a symlink planted in the store (to a
    file outside it) is neither listed nor followed, and what it points at stays."""
    store = artifacts.open_store((tmp_path / "store").as_uri())
    _fill(store, tmp_path)
    outside = tmp_path / "precious.mp4"
    outside.write_bytes(b"not the store's")
    (store.root / "exports" / "a" / "renditions" / "evil.mp4").symlink_to(outside)
    os.mkfifo(store.root / "exports" / "b" / "pipe.mp4")  # never listed, so never opened or counted
    old = time.time() - 40 * 86400
    for dirpath, _, names in os.walk(store.root):
        for name in names:
            os.utime(os.path.join(dirpath, name), (old, old), follow_symlinks=False)
    env = {"VEXPORT_ARTIFACTS": store.url}
    proc = vexport("retention", "--now", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert done["totals"]["clean_work"] == {"count": 2, "bytes": 352_000}
    assert done["totals"]["clean_cache"] == {"count": 2, "bytes": 200_000}
    assert outside.read_bytes() == b"not the store's" and "Traceback" not in proc.stderr
    left = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file() or p.is_symlink())
    assert left == ["exports/a/registration.json", "exports/a/renditions/evil.mp4", "exports/b/registration.json"]
    assert (store.root / "exports" / "b" / "pipe.mp4").exists()


def test_an_odd_key_in_the_store_does_not_stop_retention(tmp_path):
    """S3 lists any key a bucket holds, `exports/../x` included (written by something else than vexport): it is left
    alone, and the rest of the store is still cleaned."""
    from vexport_pipeline.core import retention
    from vexport_pipeline.core.settings import Home

    class Listed(artifacts.FolderStore):  # the keys as an S3 listing could give them (pure logic: no bucket)
        def entries(self, prefix):
            yield from super().entries(prefix)
            if prefix == "exports/":
                yield artifacts.Entry("exports/../evil", 10, 0.0)

    store = Listed(tmp_path / "store")
    _fill(store, tmp_path)
    report = retention.run(Home(tmp_path / "home").ensure(), time.time() + 8 * retention.DAY, artifacts=store)
    assert not report.errors and report.totals()["clean_work"]["count"] == 2
