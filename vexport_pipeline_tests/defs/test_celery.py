"""A chunked export on two real Celery workers, each with a VEXPORT_HOME of its own, handing files through a
folder artifact store: the same frames, duration and sync as the export in one process, and no worker reads
another's home. Needs Redis (127.0.0.1:6379, database 15 unless VEXPORT_TEST_REDIS says otherwise).

Two targets: ProRes, and H.264 at CRF 18 under its tier's rate cap (about 770 kb/s at 640x360, over film grain,
so the rate control (VBV) binds). x264 with frame threads and VBV does not repeat itself (8 encodes of one capped
grainy clip gave 8 different pictures; this test fails that way without it), so chunks are encoded `repeatable`
(x264 on one thread; on by default for the Celery and Kubernetes executors, set here for the one-process run
too): the cluster's H.264 frames must equal the one-process run's, bit for bit."""

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from vexport_pipeline.core.artifacts import checksum, file_key
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.media.chunks import EncodeJob
from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.records import EncodePlan
from vexport_pipeline.core.samples import make_sample
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.loading import parse_composition
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline.definitions import defs
from vexport_pipeline.defs import cluster
from vexport_pipeline.defs.assets import export_assets
from vexport_pipeline.defs.media.renditions import job_kind
from vexport_pipeline.defs.placement import CELERY_QUEUE_TAG
from vexport_pipeline_tests.defs.test_dagster import materialize

REDIS = os.environ.get("VEXPORT_TEST_REDIS", "redis://127.0.0.1:6379/15")
SELECTION = ["source", "segments", "renditions"]


@pytest.fixture
def redis_url():
    if not cluster.redis_answers(REDIS):
        if os.environ.get("CI"):
            pytest.fail(f"no Redis answers at {REDIS}: CI has one")
        pytest.skip(f"no Redis answers at {REDIS} (make dev-cluster starts one)")
    return REDIS


def framemd5(path: Path) -> list[str]:
    """Every decoded frame of every stream: its timestamps, duration, size and MD5."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if not line.startswith("#")]


@pytest.mark.celery
@pytest.mark.slow
def test_chunks_on_two_celery_workers_give_the_frames_of_one_process(home, tmp_path, monkeypatch, redis_url):
    (tmp_path / "media").mkdir()
    # film grain at 640x360, a keyframe every second, AAC: under its rate cap x264's rate control binds
    clip = make_sample("grain", tmp_path / "media" / "long.mp4", size=(640, 360), seconds=8)
    monkeypatch.setenv("VEXPORT_MEDIA_ROOTS", str(clip.parent))
    monkeypatch.setenv("VEXPORT_CHUNK_SECONDS", "2")  # 0-2, 2-4, 4-8 s: three chunk steps
    monkeypatch.setenv("VEXPORT_HARDWARE", "off")
    monkeypatch.setenv("VEXPORT_REPEATABLE_CHUNKS", "on")  # as the cluster has it (auto: on for celery)
    comp = parse_composition(
        {
            "id": "long",
            "source": str(clip),
            "export_type": "single",
            "targets": [
                {"format": "mov", "video_codec": "prores", "resolution": "320x180"},
                {"format": "mp4", "video_codec": "h264", "resolution": "640x360", "crf": 18},
            ],
        }
    )

    registry.register(home, comp, clip)
    with dg.instance_for_test() as instance:
        one = materialize(instance, "long", selection=SELECTION)
        assert one.success
        references = one.output_for_node("renditions")
        expected = [framemd5(r.path) for r in references]
        want = probe(references[0].path)
        assert probe(references[1].path).video.codec == "h264" and references[1].settings.maxrate
    shutil.rmtree(home.work / "long")  # the cluster's file is read back into this home: not this one

    artifacts, homes = tmp_path / "artifacts", tmp_path / "workers"
    monkeypatch.setenv("VEXPORT_EXECUTOR", "celery")
    monkeypatch.setenv("VEXPORT_CELERY_BROKER", redis_url)
    monkeypatch.setenv("VEXPORT_ARTIFACTS", artifacts.as_uri())
    registry.register(home, comp, clip)  # again, now into the artifact store too: the workers' homes have none
    with (
        dg.instance_for_test() as instance,
        cluster.celery_workers(2, homes) as workers,
        cluster.execute_export(instance, "long", SELECTION) as result,
    ):
        assert result.success
        ran_on = cluster.steps_by_worker(result)
        downloads = [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if e.step_key == "renditions.assemble" and "downloaded" in e.user_message
        ]
        renditions = result.output_for_node("renditions")  # into this process's home, from the store
        got = probe(renditions[0].path)
        assert [framemd5(r.path) for r in renditions] == expected  # ProRes and H.264, every frame
    chunks = {k: w for k, w in ran_on.items() if k.startswith("renditions.encode[c0_k")}
    assert len(chunks) == 3 and len(set(chunks.values())) == 2, ran_on  # the chunks ran on both workers
    assert (got.duration, got.video.duration, got.audio.duration) == (
        want.duration,
        want.video.duration,
        want.audio.duration,
    )
    assert (got.video.start_time, got.audio.start_time) == (want.video.start_time, want.audio.start_time)

    # each worker's home holds only files it made or downloaded: each is the store's object under the same key,
    # none is a link to a file of another home, and the assembling worker downloaded exactly the chunks the other
    # one encoded (its own it had)
    inodes = {}
    for w in workers:
        files = [p for p in (w.home / "work").rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert files, w.name
        for p in files:
            assert not p.is_symlink()
            rel = p.relative_to(w.home).as_posix()
            assert checksum(p) == checksum(artifacts / file_key(rel)), rel
            inodes.setdefault((p.stat().st_dev, p.stat().st_ino), set()).add(w.name)
    assert all(len(names) == 1 for names in inodes.values())
    others = [k for k, name in chunks.items() if name != ran_on["renditions.assemble"]]
    assert others and len([m for m in downloads if m.startswith("results: downloaded 2 file")]) == len(others)


def test_encodes_with_a_hardware_encoder_go_to_the_gpu_queue_and_every_other_step_to_cpu(home, media, monkeypatch):
    renditions = next(a for a in export_assets if a.key.to_user_string() == "renditions")
    queues = {n.name: n.tags[CELERY_QUEUE_TAG] for n in renditions.node_def.nodes}
    assert queues == {"plan_encodes": "cpu", "encode": "cpu", "gpu_encode": "gpu", "assemble": "cpu"}
    s = PresetBook.load().resolve(Target(preset="web_720p"), probe(media["av"]))
    plan = EncodePlan((s, replace(s, encoder="h264_nvenc")), ("web_720p", "web_720p_nvenc"), "h264_nvenc: ok")
    jobs = [EncodeJob("c0_all", 0, None, Clip(None, [(0.0, 1.0)]), targets) for targets in ([0], [1], [0, 1])]
    assert [job_kind(plan, job) for job in jobs] == ["cpu", "gpu", "gpu"]  # one FFmpeg process for all its targets
    monkeypatch.setenv("VEXPORT_EXECUTOR", "celery")
    assert defs().resolve_job_def("export_job").executor_def.name == "celery"
