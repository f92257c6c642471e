"""`vexport list`'s reader of the run storage (no Dagster import) against Dagster's own answer, on SQLite and on a
real PostgreSQL, and where it must leave the answer to Dagster."""

import json
import subprocess
import sys

import dagster as dg
import pytest

from vexport_pipeline.defs.operations import runstore
from vexport_pipeline.defs.operations.runs import latest_runs
from vexport_pipeline.defs.tags import EXPORT_TAG, OWNER_TAG, SOURCE_TAG

ET = dg.DagsterEventType


def _runs(instance: dg.DagsterInstance) -> None:
    """Exports with an older and a newer run, one running, one canceled after it started, one not started, and a run of
    another job that carries an export tag."""

    def add(run_id: str, export_id: str, status=dg.DagsterRunStatus.NOT_STARTED, job="export_job", **tags):
        run = dg.DagsterRun(job_name=job, run_id=run_id, status=status, tags={EXPORT_TAG: export_id, **tags})
        return instance.add_run(run)

    def event(run, kind):
        instance.report_dagster_event(dg.DagsterEvent(event_type_value=kind.value, job_name=run.job_name), run.run_id)

    add("00000000-0000-0000-0000-000000000001", "alpha", dg.DagsterRunStatus.FAILURE, **{OWNER_TAG: "alice"})
    newer = add("00000000-0000-0000-0000-000000000002", "alpha", **{OWNER_TAG: "alice", SOURCE_TAG: "cli"})
    event(newer, ET.RUN_START)
    event(newer, ET.RUN_SUCCESS)
    event(add("00000000-0000-0000-0000-000000000003", "beta", **{OWNER_TAG: "bob"}), ET.RUN_START)
    gone = add("00000000-0000-0000-0000-000000000004", "gamma")
    event(gone, ET.RUN_START)
    instance.report_run_canceled(instance.get_run_by_id(gone.run_id))
    add("00000000-0000-0000-0000-000000000005", "delta", **{OWNER_TAG: "carol"})  # not started: queued
    add("00000000-0000-0000-0000-000000000006", "alpha", dg.DagsterRunStatus.SUCCESS, job="metrics_job")


def _check(home, instance) -> None:
    _runs(instance)
    fast, slow = runstore.latest_runs(home), latest_runs(instance)
    assert fast == slow
    assert {k: (r.status, r.owner) for k, r in fast.items()} == {
        "alpha": ("success", "alice"),
        "beta": ("started", "bob"),
        "gamma": ("canceled", None),
        "delta": ("queued", "carol"),
    }
    assert fast["alpha"].run_id.endswith("2") and fast["alpha"].source == "cli"
    assert fast["alpha"].started and fast["alpha"].ended >= fast["alpha"].started > fast["alpha"].created - 1


def test_the_list_reader_answers_as_dagster_does_on_sqlite(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        _check(tmp_path, instance)


def test_the_list_reader_follows_a_sqlite_base_dir(tmp_path):
    home, base = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {base}\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _check(home, instance)
    assert (base / "history" / "runs.db").is_file()


@pytest.mark.postgres
def test_the_list_reader_answers_as_dagster_does_on_postgres(tmp_path, pg_url, monkeypatch):
    monkeypatch.setenv("VEXPORT_TEST_RUNS_URL", pg_url)
    config = "storage:\n  postgres:\n    postgres_url:\n      env: VEXPORT_TEST_RUNS_URL\n"
    (tmp_path / "dagster.yaml").write_text(config)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        _check(tmp_path, instance)


@pytest.mark.postgres
def test_the_list_reader_builds_the_connection_from_postgres_db_parts(tmp_path, pg_url, monkeypatch):
    """dagster-postgres's other form: host, user and database apart, with libpq params."""
    user, rest = pg_url.removeprefix("postgresql+psycopg2://").split("@")
    hostport, name = rest.split("/")
    host, port = hostport.split(":")
    monkeypatch.setenv("VEXPORT_TEST_RUNS_HOST", host)
    (tmp_path / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_db:\n      username: {user}\n      hostname:\n"
        f"        env: VEXPORT_TEST_RUNS_HOST\n      port: {port}\n      db_name: {name}\n"
        "      scheme: postgresql+psycopg2\n      params:\n        application_name: vexport-test\n"
    )  # fmt: skip
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        _check(tmp_path, instance)


def test_the_list_reader_leaves_to_dagster_what_it_cannot_read(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert runstore.latest_runs(tmp_path) is None  # no storage yet: Dagster creates it
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.add_run(dg.DagsterRun(job_name="export_job", run_id="00000000-0000-0000-0000-00000000000a"))
    assert runstore.latest_runs(tmp_path) == {}  # a real run storage (its run has no export tag)
    (tmp_path / "dagster.yaml").write_text(
        "run_storage:\n  module: dagster.core.storage.runs\n  class: SqliteRunStorage\n  config:\n    base_dir: x\n"
    )
    assert runstore.latest_runs(tmp_path) is None  # storages named by class: Dagster's business
    monkeypatch.delenv("VEXPORT_TEST_UNSET", raising=False)
    (tmp_path / "dagster.yaml").write_text("storage:\n  sqlite:\n    base_dir:\n      env: VEXPORT_TEST_UNSET\n")
    assert runstore.latest_runs(tmp_path) is None  # not this home's database in its place
    (tmp_path / "dagster.yaml").write_text("storage: [unexpected\n")
    assert runstore.latest_runs(tmp_path) is None
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "history" / "runs.db").write_bytes(b"")  # a database without Dagster's tables
    assert runstore.latest_runs(tmp_path) is None
    (tmp_path / "history" / "runs.db").write_bytes(b"not a database at all")
    assert runstore.latest_runs(tmp_path) is None


def test_vexport_list_does_not_import_dagster(tmp_path, monkeypatch):
    """The point of the reader: `vexport list` runs without loading Dagster (B9: 2.3 s of it was Dagster). The
    first command in a new home creates the storage (with Dagster); the second lists without it."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("VEXPORT_HOME", str(tmp_path / "home"))
    code = (
        "import sys\nfrom vexport_pipeline.cli import main\nsys.argv = ['vexport', 'list', '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint('dagster' in sys.modules, file=sys.stderr)\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120) for _ in "12"]
    assert [r.stdout.strip() for r in runs] == ["[]", "[]"], runs[0].stderr
    assert runs[1].stderr.strip() == "False", runs[1].stderr


def test_vexport_list_asks_dagster_where_the_reader_cannot_tell(tmp_path, monkeypatch):
    """The same rows either way: the reader's answer, and Dagster's where the reader gives up."""
    from click.testing import CliRunner

    from vexport_pipeline.cli.operations import list_cmd
    from vexport_pipeline.defs.instance import ensure_dagster_home

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("VEXPORT_HOME", str(tmp_path / "home"))
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        _runs(instance)
    fast = CliRunner().invoke(list_cmd, ["--json"])
    monkeypatch.setattr(runstore, "latest_runs", lambda dagster_home: None)
    slow = CliRunner().invoke(list_cmd, ["--json"])
    assert fast.exit_code == slow.exit_code == 0, fast.output + slow.output
    assert fast.output == slow.output
    assert {r["id"] for r in json.loads(fast.output)} == {"alpha", "beta", "gamma", "delta"}
