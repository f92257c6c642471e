"""The joins between stages: typed records, settings read once, the error boundary, owner tags,
links only for versions that exist."""

import logging
import sqlite3

import dagster as dg
import pytest
import yaml

from vexport_pipeline.cli.export import failed_summary
from vexport_pipeline.core.errors import ConfigError, EncodeError, InputError, StorageError, ValidationFailed
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.records import ExportSource
from vexport_pipeline.core.spec.loading import parse_composition
from vexport_pipeline.definitions import defs
from vexport_pipeline.defs.failures import reported
from vexport_pipeline_tests.conftest import REPO, vexport
from vexport_pipeline_tests.defs.test_dagster import materialize


def _register(home, source, **extra):
    data = {
        "id": "handoff",
        "source": str(source),
        "export_type": "single",
        "segments": [{"start": 0, "end": 1}],
        "targets": [{"preset": "web_720p", "quality": "draft"}],
        **extra,
    }
    return registry.register(home, parse_composition(data), source)


def test_a_preset_file_edited_during_a_run_does_not_change_the_running_export(home, media, tmp_path, monkeypatch):
    presets = tmp_path / "presets.yaml"
    presets.write_text("house:\n  base: web_720p\n  target: {resolution: 320x180}\n")
    monkeypatch.setenv("VEXPORT_PRESETS", str(presets))
    _register(home, media["av"], targets=[{"preset": "house", "quality": "draft"}])
    with dg.instance_for_test() as instance:
        first = materialize(instance, "handoff", selection=["source"])
        src = first.output_for_node("source")
        assert isinstance(src, ExportSource) and (src.targets[0].width, src.targets[0].height) == (320, 180)
        presets.write_text("house:\n  base: web_720p\n  target: {resolution: 640x360}\n")  # edited mid-run
        rest = materialize(instance, "handoff", selection=["segments", "renditions"])
        [r] = rest.output_for_node("renditions")
        assert (r.width, r.height) == (320, 180)


def test_a_refusal_inside_a_step_carries_its_code_and_exit_code_to_the_cli(home, media, tmp_path):
    gone = tmp_path / "gone.mp4"
    gone.write_bytes(media["av"].read_bytes())
    _register(home, gone)
    gone.unlink()
    with dg.instance_for_test() as instance:
        result = materialize(instance, "handoff")
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure.metadata["vexport/code"].value == "source_missing"
    data, code = failed_summary("handoff", result)
    assert code == 2 and data["status"] == "refused"
    assert data["errors"][0]["code"] == "source_missing" and "no longer exists" in data["errors"][0]["message"]


def test_a_failed_promotion_leaves_no_version_and_no_link_rows(home, media):
    _register(home, media["av"])
    (home.store / "handoff").write_text("a file where the export's folder should be")  # the commit cannot rename
    with dg.instance_for_test() as instance:
        result = materialize(instance, "handoff")
    assert not result.success
    failure = next(e for e in result.get_step_failure_events() if e.step_key == "delivery")
    assert failure.step_failure_data.user_failure_data.metadata["vexport/code"].value == "storage_failed"
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retried] == ["delivery", "delivery"]  # a storage failure is tried three times
    assert not list((home.store / ".staging").iterdir())
    rows = (
        sqlite3.connect(home.events_db).execute("SELECT COUNT(*) FROM links").fetchone()[0]
        if home.events_db.exists()
        else 0
    )
    assert rows == 0


def test_every_run_carries_owner_and_export_tags_whoever_launched_it(home, media):
    """...and keeps its events but not Dagster's DEBUG lines (dagster.yaml's python_logs: each line is an event)."""
    _register(home, media["av"], owner="alice")
    logs = yaml.safe_load((REPO / "dagster.yaml").read_text())["python_logs"]
    with dg.instance_for_test(overrides={"python_logs": logs}) as instance:
        result = materialize(instance, "handoff", selection=["source"])  # launched without tags, as the UI would
        tags = instance.get_run_by_id(result.run_id).tags
        kept = instance.all_logs(result.run_id)
    assert tags["vexport/owner"] == "alice" and tags["vexport/export"] == "handoff"
    events = {e.dagster_event.event_type_value for e in kept if e.dagster_event}
    assert {"STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS", "PIPELINE_SUCCESS"} <= events, events
    assert [e.user_message for e in kept if not e.dagster_event and e.level < logging.INFO] == []


def test_production_refuses_to_start_without_a_shared_signing_key(home, monkeypatch):
    proc = vexport("presets", env={"VEXPORT_DEPLOYMENT": "production", "VEXPORT_SECRET_KEY": ""})
    assert proc.returncode == 2
    assert "VEXPORT_SECRET_KEY" in proc.stderr and "Traceback" not in proc.stderr
    ok = vexport("presets", env={"VEXPORT_DEPLOYMENT": "production", "VEXPORT_SECRET_KEY": "s3cret-shared"})
    assert ok.returncode == 0, ok.stderr
    monkeypatch.setenv("VEXPORT_DEPLOYMENT", "production")
    monkeypatch.delenv("VEXPORT_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="VEXPORT_SECRET_KEY"):
        defs()


@pytest.mark.parametrize(
    "error, retried",
    [
        (StorageError("the bucket answered 503"), True),
        (ValidationFailed("validation failed for web_720p"), False),
        (InputError("bad manifest", where="targets[0]"), False),
        (EncodeError("FFmpeg exited with code 1"), False),
    ],
)
def test_only_transient_failures_are_retried(error, retried):
    with pytest.raises(dg.Failure) as caught, reported():
        raise error
    assert caught.value.allow_retries is retried
    assert caught.value.metadata["vexport/code"].value == error.code
