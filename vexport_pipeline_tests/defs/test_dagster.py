"""The Dagster layer: definitions load, the whole graph materializes, the gate blocks, the sensor is idempotent."""

import json
import os
import shutil

import dagster as dg
import pytest

from vexport_pipeline.core.delivery.events import EventStore
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.core.spec.loading import parse_composition
from vexport_pipeline.definitions import defs
from vexport_pipeline.defs.assets import export_assets
from vexport_pipeline.defs.intake.sensors import composition_sensor
from vexport_pipeline.defs.resources import HomeResource
from vexport_pipeline_tests.conftest import REPO, passed

# every asset the definitions hold: the export graph's partitioned ones, then the per-deployment ones
ASSET_NAMES = {"source", "segments", "renditions", "validation_report", "delivery", "delivery_metrics"} | {
    "analytics",
    "retention",
    "storage",
}


def test_definitions_load_with_their_assets_jobs_sensor_and_schedule():
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    keys = {k.to_user_string() for k in loaded.resolve_asset_graph().get_all_asset_keys()}
    assert keys == ASSET_NAMES
    assert loaded.resolve_job_def("export_job") and loaded.resolve_sensor_def("composition_sensor")
    assert loaded.resolve_schedule_def("metrics_rollup")
    renditions = next(a for a in export_assets if a.key.to_user_string() == "renditions")
    encode_op = next(n for n in renditions.node_def.node_defs if n.name == "encode")
    assert encode_op.pool == "gpu"


def test_the_instance_queue_limits_runs_per_owner():
    """dagster.yaml as shipped: the queued run coordinator takes at most 3 runs per owner at once."""
    import yaml

    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides={"concurrency": settings["concurrency"]}) as instance:
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        limits = queue.tag_concurrency_limits
        assert queue.max_concurrent_runs == 4
        assert {"key": "vexport/queue", "value": {"applyLimitPerUniqueValue": True}, "limit": 3} in limits


def register(home, media, data):
    comp = parse_composition(data)
    registry.register(home, comp, media["av"])
    return comp


def materialize(instance, key, selection=None):
    if not instance.has_dynamic_partition("exports", key):
        instance.add_dynamic_partitions("exports", [key])
    return dg.materialize(
        export_assets,
        partition_key=key,
        instance=instance,
        resources=defs().resources,
        raise_on_error=False,
        selection=selection,
    )


def test_whole_graph_for_a_clips_export(home, media):
    register(
        home,
        media,
        {
            "id": "two-clips",
            "source": str(media["av"]),
            "export_type": "clips",
            "segments": [{"start": 0, "end": 1, "clip_id": "intro"}, {"start": 2, "end": 3.2, "clip_id": "outro"}],
            "targets": [
                {"preset": "web_720p", "quality": "draft"},
                {"format": "webm", "resolution": "320x180", "quality": "draft"},
            ],
            "delivery": {"zip": True, "link_ttl": "1h"},
        },
    )
    with dg.instance_for_test() as instance:
        result = materialize(instance, "two-clips")
        assert result.success
        # progress as the UI shows it: the run's tags end at done/100, one observation as each stage began
        tags = instance.get_run_by_id(result.run_id).tags
        assert (tags["vexport/stage"], tags["vexport/percent"]) == ("done", "100")
        stages = [
            (o.asset_key.to_user_string(), o.metadata["stage"].value, o.metadata["run_percent"].value)
            for o in (e.event_specific_data.asset_observation for e in result.all_events if e.is_asset_observation)
            if "stage" in o.metadata
        ]
        assert [s[:2] for s in stages] == [
            ("source", "planning"),
            ("renditions", "encoding"),
            ("validation_report", "validating"),
            ("delivery", "delivering"),
        ]
        assert [s[2] for s in stages] == sorted(s[2] for s in stages) and stages[-1][2] >= 95
        summary = result.output_for_node("delivery")
        assert summary["status"] == "delivered"
        got = [(r["clip_id"], r["target"]) for r in summary["renditions"]]
        assert got == [
            ("intro", "web_720p"),
            ("intro", "webm_vp9_320x180_draft"),
            ("outro", "web_720p"),
            ("outro", "webm_vp9_320x180_draft"),
        ]
        for r, dur in zip(summary["renditions"], [1.0, 1.0, 1.2, 1.2]):
            assert r["path"].startswith(str(home.store / "two-clips"))
            out = probe(r["path"])
            assert (out.video.width, out.video.height) == (r["width"], r["height"])
            assert abs((out.video.duration or out.duration) - dur) < 0.05
            assert passed(r["validation"]) and r["links"][0]["url"].startswith("http")
        assert (home.store / "two-clips" / "current" / "summary.json").exists()
        [bundle] = summary["bundles"]
        import zipfile

        with zipfile.ZipFile(bundle["path"]) as zf:
            assert sorted(zf.namelist()) == sorted(r["path"].rsplit("/", 1)[1] for r in summary["renditions"])
            assert zf.testzip() is None
        assert bundle["links"][0]["url"].startswith("http")
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("validation_report"), "renditions_pass_validation")]
        )
        assert check  # the blocking check ran and was recorded
        metrics = result.output_for_node("delivery_metrics")
        assert list(metrics["downloads"]) == [0] * 5 and "two-clips.zip" in set(metrics["rendition"])

        # a download lands in the event table; the next rollup counts it
        store = EventStore(home.events_db)
        import sqlite3

        link_id = (
            sqlite3.connect(home.events_db)
            .execute("SELECT id FROM links WHERE rendition LIKE 'intro__web_720p%'")
            .fetchone()[0]
        )
        store.record_download(link_id, bytes_sent=1234, client_ip="127.0.0.1")
        again = materialize(instance, "two-clips", selection=["delivery_metrics"])
        rerun = materialize(
            instance, "two-clips", selection=["renditions"]
        )  # unchanged: every rendition from the cache
        assert [r.cached for r in rerun.output_for_node("renditions")] == [True] * 4
        [mat] = [e for e in rerun.get_asset_materialization_events() if e.asset_key == dg.AssetKey("renditions")]
        assert mat.materialization.metadata["cache_hits"].value == 4
        df = again.output_for_node("delivery_metrics").set_index("rendition")
        assert df.loc["intro__web_720p.mp4", "downloads"] == 1 and df.loc["intro__web_720p.mp4", "bytes"] == 1234
        [seen] = [e for e in again.get_asset_materialization_events() if e.asset_key.path == ["delivery_metrics"]]
        meta = seen.materialization.metadata
        assert meta["downloads"].value == 1 and meta["bytes"].value == 1234 and meta["unique_clients"].value == 1
        assert "intro__web_720p.mp4 | 1 | 1 | 1,234" in meta["table"].value
        assert meta["charts"].value.count("data:image/png;base64,") == 2

        # the hourly rollup: every export in one run, per day (kept in the event store), owner and preset
        from vexport_pipeline.definitions import defs as load_defs

        rollup = load_defs().resolve_job_def("metrics_job").execute_in_process(instance=instance)
        owners = rollup.output_for_node("analytics").set_index("owner")
        assert owners.loc["default", "downloads"] == 1 and owners.loc["default", "exports"] == 1
        assert store.daily_frame()["downloads"].sum() == 1
        [mat] = [e for e in rollup.get_asset_materialization_events() if e.asset_key.path == ["analytics"]]
        assert "web_720p" in mat.materialization.metadata["presets"].value


def test_failed_validation_blocks_delivery(home, media, tmp_path, monkeypatch):
    presets = tmp_path / "presets.yaml"
    # firm, and only known once the file exists (the plan cannot refuse it): stereo out, mono allowed
    presets.write_text("mono_only:\n  base: web_720p\n  limits: {max_channels: 1}\n")
    monkeypatch.setenv("VEXPORT_PRESETS", str(presets))
    register(
        home,
        media,
        {
            "id": "too-big",
            "source": str(media["av"]),
            "segments": [{"start": 0, "end": 1}],
            "targets": [{"preset": "mono_only", "quality": "draft"}],
        },
    )
    with dg.instance_for_test() as instance:
        result = materialize(instance, "too-big")
        report = result.output_for_node("validation_report")
        assert report.status == "fail"
        assert "channels" in {i.code for i in report.renditions[0].report.issues}
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert "delivery" not in materialized
    assert not (home.store / "too-big").exists()


def test_sensor_registers_once_and_moves_bad_files_aside(home, media, monkeypatch):
    monkeypatch.setenv("VEXPORT_INBOX_MIN_AGE", "0")
    shutil.copy(media["av"], home.inbox / "clip.mp4")
    shutil.copy(media["silent"], home.inbox / "Bare Video.mp4")
    (home.inbox / "promo.yaml").write_text(
        "source: clip.mp4\nexport_type: single\nsegments: [{start: 0, end: 1}]\npriority: 20\n"
        "targets: [{preset: web_720p, quality: draft}]\n"
    )
    (home.inbox / "broken.yaml").write_text("source: clip.mp4\ntargets: [{preset: web_720p, resolution: 5k}]\n")
    resource = HomeResource(root=str(home.root), media_roots=[str(media["dir"])])
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"home": resource})
        first = composition_sensor(ctx)
        assert sorted(r.partition_key for r in first.run_requests) == ["bare-video", "promo"]
        assert all(r.run_key for r in first.run_requests)
        assert {
            (r.tags["vexport/export"], r.tags["vexport/owner"], r.tags["dagster/priority"]) for r in first.run_requests
        } == {
            ("bare-video", "default", "0"),
            ("promo", "default", "20"),  # the manifest's priority: the queue takes it first
        }
        assert sorted(first.dynamic_partitions_requests[0].partition_keys) == ["bare-video", "promo"]
        error = (home.inbox / "rejected" / "broken.yaml.error.txt").read_text()
        assert "targets[0].resolution: '5k' is not one of" in error
        assert sorted(p.name for p in home.inbox.iterdir() if p.is_file()) == []
        assert (home.media / "inbox" / "promo" / "clip.mp4").exists()  # the manifest's video is not a bare video

        # the next tick asks again for the same run keys (nothing new for Dagster to launch: it drops keys it
        # has seen), so a tick that died after taking the files still gets its runs
        second = composition_sensor(dg.build_sensor_context(instance=instance, resources={"home": resource}))
        assert sorted(r.run_key for r in second.run_requests) == sorted(r.run_key for r in first.run_requests)

        # the requested run succeeds through the job the sensor targets
        instance.add_dynamic_partitions("exports", ["promo"])
        run = (
            defs()
            .resolve_job_def("export_job")
            .execute_in_process(partition_key="promo", instance=instance, raise_on_error=False)
        )
        assert run.success
        summary = run.output_for_node("delivery")
        assert summary["renditions"][0]["duration"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
def test_chunked_encoding_matches_the_single_process_path(home, media, tmp_path):
    """An 8 s clip in ~2 s keyframe-aligned chunks, each its own step, joined without re-encoding."""
    from vexport_pipeline.core.media.probe import count_frames
    from vexport_pipeline.defs.resources import EncoderResource
    from vexport_pipeline_tests.conftest import make_clip

    long_source = (
        make_clip(media["dir"] / "eight.mp4", seconds=8)
        if not (media["dir"] / "eight.mp4").exists()
        else media["dir"] / "eight.mp4"
    )
    targets = [
        {"preset": "web_720p", "quality": "draft"},
        {"format": "webm", "resolution": "320x180", "quality": "draft"},
    ]
    got = {}
    for name, chunk_s in (("whole", 0), ("chunked", 2)):
        comp = parse_composition(
            {
                "id": name,
                "source": str(long_source),
                "export_type": "single",
                "audio": {"normalize": True, "target_lufs": -16},
                "targets": targets,
            }
        )
        registry.register(home, comp, long_source)
        res = {**defs().resources, "encoders": EncoderResource(hardware="off", chunk_seconds=chunk_s)}
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("exports", [name])
            result = dg.materialize(
                export_assets, partition_key=name, instance=instance, resources=res, raise_on_error=False
            )
            assert result.success
            got[name] = result.output_for_node("delivery")["renditions"]
            steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
            encode_steps = sorted(k for k in steps if k.startswith("renditions.encode["))
            assert len(encode_steps) == (3 if chunk_s else 1), encode_steps  # 0-2, 2-4, 4-8 s: the last takes the tail
    for whole, chunked in zip(got["whole"], got["chunked"]):
        a, b = probe(whole["path"]), probe(chunked["path"])
        assert count_frames(whole["path"])[0] == count_frames(chunked["path"])[0] == 200
        assert (a.video.duration or a.duration) == pytest.approx(b.video.duration or b.duration, abs=1e-3)
        assert a.video.start_time == b.video.start_time == 0.0
        assert (b.audio.start_time - b.video.start_time) == pytest.approx(
            a.audio.start_time - a.video.start_time, abs=0.005
        )
        assert b.audio.duration == pytest.approx(a.audio.duration, abs=0.03)
        assert passed(chunked["validation"]) and chunked["validation"]["loudness_lufs"] == pytest.approx(-16, abs=1)


def test_brand_rules_and_no_worse_redelivery(home, media, tmp_path, monkeypatch):
    brands = tmp_path / "brands.yaml"
    brands.write_text("acme: {min_height: 720, forbidden_codecs: [vp9]}\n")
    monkeypatch.setenv("VEXPORT_BRANDS", str(brands))
    base = {
        "id": "brand",
        "owner": "acme",
        "source": str(media["av"]),
        "export_type": "single",
        "segments": [{"start": 0, "end": 1}],
    }
    register(home, media, {**base, "targets": [{"format": "webm", "resolution": "320x180", "quality": "draft"}]})
    with dg.instance_for_test() as instance:
        bad = materialize(instance, "brand")
        codes = {i.code for i in bad.output_for_node("validation_report").renditions[0].report.issues}
        assert {"brand_min_resolution", "brand_forbidden_codec"} <= codes
        assert not (home.store / "brand").exists()  # blocked
        # a good delivery first...
        register(home, media, {**base, "targets": [{"preset": "web_720p", "quality": "draft"}]})
        assert materialize(instance, "brand").success
        first = (home.store / "brand" / "current").resolve()
        # ...then a re-export whose file scores worse (a warning: black picture) must not replace it
        monkeypatch.setenv("VEXPORT_BRANDS", "")
        black = media["dir"] / "black.mp4"
        if not black.exists():
            import subprocess

            from vexport_pipeline.core.settings import ffmpeg_exe

            subprocess.run(
                [
                    ffmpeg_exe(),
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "color=black:s=640x360:r=25:d=2",
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=d=2",
                    "-c:v",
                    "libx264",
                    "-c:a",
                    "aac",
                    "-shortest",
                    "-movflags",
                    "+faststart",
                    str(black),
                ],
                check=True,
            )
        comp = parse_composition(
            {**base, "source": str(black), "targets": [{"preset": "web_720p", "quality": "draft"}]}
        )
        registry.register(home, comp, black)
        worse = materialize(instance, "brand")
        assert not worse.success
        failure = next(e for e in worse.all_events if e.event_type_value == "STEP_FAILURE")
        assert "must not replace a better delivered file" in str(
            failure.event_specific_data.error.cause or failure.event_specific_data.error
        )
        assert (home.store / "brand" / "current").resolve() == first


def test_the_inbox_refuses_links_to_files_elsewhere(home, media, tmp_path):
    """A symlink dropped as a bare video (or a manifest) could point anywhere: refused, never registered."""
    from vexport_pipeline.core.intake import inbox
    from vexport_pipeline.core.settings import current

    private = tmp_path / "private.mp4"
    shutil.copy(media["av"], private)
    (home.inbox / "stolen.mp4").symlink_to(private)
    (home.inbox / "passwd.mp4").symlink_to("/etc/passwd")
    accepted, rejected, _ = inbox.process(home, current().policy, min_age_s=0)
    assert not accepted and sorted(r.file for r in rejected) == ["passwd.mp4", "stolen.mp4"]
    assert "only regular files" in (home.inbox / "rejected" / "stolen.mp4.error.txt").read_text()
    assert not list(home.registry.glob("*.json")) and private.exists()


def test_one_bad_inbox_file_never_stops_the_sensor_or_the_good_files(home, media, tmp_path, monkeypatch):
    """Every hostile kind of inbox file in one tick: each is rejected with its reason, the good manifest is
    still accepted and requested, and a second file for an id already taken is refused, not swapped in."""
    monkeypatch.setenv("VEXPORT_INBOX_MIN_AGE", "0")
    private = tmp_path / "private.mp4"
    shutil.copy(media["av"], private)
    inbox_dir = home.inbox
    shutil.copy(media["av"], inbox_dir / "clip.mp4")
    (inbox_dir / "good.yaml").write_text("id: good\nsource: clip.mp4\ntargets: [{preset: web_720p, quality: draft}]\n")
    (inbox_dir / "nul.yaml").write_text('source: "clip\\0.mp4"\ntargets: [{preset: web_720p}]\n')
    (inbox_dir / "deep.yaml").write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    (inbox_dir / "dup.json").write_text('{"source": "clip.mp4", "source": "x.mp4", "targets": []}')
    (inbox_dir / "loop.mp4").symlink_to(inbox_dir / "loop.mp4")
    (inbox_dir / ("l" * 250 + ".mp4")).write_bytes(b"not a video")
    os.mkfifo(inbox_dir / "fifo.yaml")
    os.link(private, inbox_dir / "hardlink.mp4")
    (inbox_dir / "text.mp4").write_text("hello\n")
    (inbox_dir / "hls.mp4").write_text("#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n")
    shutil.copy(media["av"], inbox_dir / "promo-source.mp4")
    (inbox_dir / "promo.yaml").write_text(
        "id: promo\nsource: promo-source.mp4\ntargets: [{preset: web_720p, quality: draft}]\n"
    )
    shutil.copy(media["silent"], inbox_dir / "Promo.mp4")  # the same id, promo, from a bare video
    resource = HomeResource(root=str(home.root), media_roots=[str(media["dir"])])
    with dg.instance_for_test() as instance:
        result = composition_sensor(dg.build_sensor_context(instance=instance, resources={"home": resource}))
        assert sorted(r.partition_key for r in result.run_requests) == ["good", "promo"]
    rejected = {p.name[: -len(".error.txt")][:20]: p.read_text() for p in (inbox_dir / "rejected").glob("*.error.txt")}
    reasons = {
        "nul.yaml": "NUL byte",
        "deep.yaml": "nested too deeply",
        "dup.json": "given twice",
        "loop.mp4": "symbolic link",
        "l" * 20: "not a readable media file",
        "fifo.yaml": "not a regular file",
        "hardlink.mp4": "hard link",
        "text.mp4": "not a readable media file",
        "hls.mp4": "not a readable media file",
        "Promo.mp4": "export id 'promo' is already in use by promo.yaml",
    }
    assert set(rejected) == set(reasons), rejected
    for name, needle in reasons.items():
        assert needle in rejected[name], (name, rejected[name])
    assert [p.name for p in inbox_dir.iterdir() if not p.is_dir()] == []
    assert sorted(p.stem for p in home.registry.glob("*.json")) == ["good", "promo"]
    assert private.exists()


def test_a_file_for_an_export_whose_run_has_not_ended_waits_for_it(home, media, monkeypatch):
    """A new version of a composition dropped while the export's run is still working: it was moved to rejected/
    ("submit it again once that export has finished"); it now waits in the inbox, the tick saying for which run,
    and is taken on the first tick after that run ends."""
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from vexport_pipeline.defs.tags import EXPORT_TAG

    monkeypatch.setenv("VEXPORT_INBOX_MIN_AGE", "0")
    resource = HomeResource(root=str(home.root), media_roots=[str(media["dir"])])
    with dg.instance_for_test() as instance:
        run = DagsterRun(job_name="export_job", status=DagsterRunStatus.STARTED, tags={EXPORT_TAG: "promo"})
        instance.add_run(run)
        (home.inbox / "promo.yaml").write_text(
            f"id: promo\nsource: {media['av']}\ntargets: [{{preset: web_720p, quality: draft}}]\n"
        )
        tick = composition_sensor(dg.build_sensor_context(instance=instance, resources={"home": resource}))
        assert not tick.run_requests
        why = f"promo.yaml: export id 'promo' waits for run {run.run_id[:8]} (started) to end"
        assert why in tick.skip_reason.skip_message
        assert (home.inbox / "promo.yaml").is_file() and not (home.inbox / "rejected").exists()

        instance.report_run_canceled(run)
        tick = composition_sensor(dg.build_sensor_context(instance=instance, resources={"home": resource}))
        assert [r.partition_key for r in tick.run_requests] == ["promo"]
        assert (home.inbox / "accepted" / "promo.yaml").is_file()


def test_a_tick_that_dies_after_taking_a_file_loses_no_run(home, media, monkeypatch):
    """The inbox pass took the file (moved to accepted/, registered) but the tick never returned its run
    request: the next tick asks for it, with the same run key."""
    from vexport_pipeline.core.intake import inbox
    from vexport_pipeline.core.settings import current

    monkeypatch.setenv("VEXPORT_INBOX_MIN_AGE", "0")
    shutil.copy(media["av"], home.inbox / "clip.mp4")
    (home.inbox / "lost.yaml").write_text("id: lost\nsource: clip.mp4\ntargets: [{preset: web_720p, quality: draft}]\n")
    [taken], _, _ = inbox.process(home, current().policy, min_age_s=0)  # the tick's work, then it "crashed"
    assert (home.inbox / "accepted" / "lost.yaml").exists()
    resource = HomeResource(root=str(home.root), media_roots=[str(media["dir"])])
    with dg.instance_for_test() as instance:
        result = composition_sensor(dg.build_sensor_context(instance=instance, resources={"home": resource}))
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [("lost", taken.record.run_key)]
    assert result.dynamic_partitions_requests[0].partition_keys == ["lost"]
    assert registry.load(home, "lost").via == "inbox"


def test_a_record_says_when_its_source_passed_the_plan_checks(home, media, tmp_path):
    """The `source` asset re-reads the media (truncation decode, timestamp-jump demux) only if the file changed
    since `export`/the inbox checked it, or nobody did."""
    src = tmp_path / "clip.mp4"
    shutil.copy(media["av"], src)
    comp = parse_composition({"id": "chk", "source": str(src), "targets": [{"preset": "web_720p"}]})
    assert not registry.register(home, comp, src).checks_hold()
    record = registry.register(home, comp, src, checked=True)
    assert record.checks_hold() and registry.load(home, "chk").checks_hold()
    os.utime(src, (1, 1))  # the file was replaced after the check
    assert not registry.load(home, "chk").checks_hold()


def export_job_for_retries():
    """The export job as the daemon runs it (reconstructable: a retry is a new run of the same definitions)."""
    return defs().resolve_job_def("export_job")


def test_a_retried_run_resumes_at_the_failed_step(home, media, tmp_path, monkeypatch):
    """`run_retries` re-runs a failed export from the failed step (Dagster's FROM_FAILURE strategy, the one
    dagster.yaml asks for): the step outputs persist in the instance, so no finished encode is done again. The
    daemon retries runs that died; here a step's failure gives the run a failed step to resume from."""
    import yaml

    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert settings["run_retries"]["enabled"] and settings["run_retries"]["max_retries"] >= 1
    spare = tmp_path / "spare"
    spare.write_text("a file where the spare destination's folder should be: promotion fails")
    dests = tmp_path / "destinations.yaml"
    dests.write_text(f"spare: {{url: 'file://{spare}/store'}}\n")
    monkeypatch.setenv("VEXPORT_DESTINATIONS", str(dests))
    register(home, media, {"id": "retry", "source": str(media["av"]), "segments": [{"start": 0, "end": 1.5}],
                           "targets": [{"preset": "web_720p", "quality": "draft"}],
                           "delivery": {"destinations": ["default", "spare"]}})  # fmt: skip
    job = dg.reconstructable(export_job_for_retries)
    in_process = {"execution": {"config": {"in_process": {}}}}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("exports", ["retry"])
        with dg.execute_job(job, instance, run_config=in_process, tags={"dagster/partition": "retry"}) as first:
            assert not first.success
            [failed] = [e.step_key for e in first.all_events if e.is_step_failure]
            assert failed == "delivery"
        encoded = sorted(home.work.rglob("*.mp4"))
        stamps = [p.stat().st_mtime_ns for p in encoded]
        spare.unlink()  # the storage problem is fixed; the retry picks up where the run failed
        retry = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        tags = instance.get_run_by_id(first.run_id).tags  # the daemon's retry keeps the parent run's tags too
        with dg.execute_job(job, instance, run_config=in_process, tags=tags, reexecution_options=retry) as second:
            assert second.success
            ran = {e.step_key for e in second.all_events if e.is_step_start}
            assert ran == {"delivery", "delivery_metrics"}, ran  # nothing before the failed step ran again
        summary = json.loads((home.store / "retry" / "current" / "summary.json").read_text())
        assert [p.stat().st_mtime_ns for p in encoded] == stamps
        [r] = summary["renditions"]
        assert {c["destination"] for c in r["copies"]} == {"default", "spare"}
        assert probe(spare / "store" / "retry" / "current" / r["path"].rsplit("/", 1)[1]).video.height == 720


def test_a_tick_takes_files_for_its_time_budget_and_leaves_the_rest(home, media, monkeypatch):
    """VEXPORT_INBOX_TICK_S bounds a tick (1,000 files in the inbox cost about 0.5 s each to check): what does not
    fit stays in the inbox, said once in the log, and a later tick takes it."""
    monkeypatch.setenv("VEXPORT_INBOX_MIN_AGE", "0")
    for name in ("a", "b", "c"):
        manifest = f"id: {name}\nsource: {media['av']}\ntargets: [{{preset: web_720p}}]\n"
        (home.inbox / f"{name}.yaml").write_text(manifest)
    resource = HomeResource(root=str(home.root), media_roots=[str(media["dir"])])
    with dg.instance_for_test() as instance:

        def tick():
            return composition_sensor(dg.build_sensor_context(instance=instance, resources={"home": resource}))

        monkeypatch.setenv("VEXPORT_INBOX_TICK_S", "0.001")  # spent after the first file
        first = tick()
        assert [r.partition_key for r in first.run_requests] == ["a"]
        assert sorted(p.name for p in home.inbox.glob("*.yaml")) == ["b.yaml", "c.yaml"]
        monkeypatch.setenv("VEXPORT_INBOX_TICK_S", "120")
        assert sorted(r.partition_key for r in tick().run_requests) == ["a", "b", "c"]  # a's key again, then b, c
    assert not list(home.inbox.glob("*.yaml"))
    monkeypatch.setenv("VEXPORT_INBOX_TICK_S", "0")
    from vexport_pipeline.core.errors import ConfigError
    from vexport_pipeline.core.settings import current

    with pytest.raises(ConfigError, match="VEXPORT_INBOX_TICK_S"):
        current().check()
