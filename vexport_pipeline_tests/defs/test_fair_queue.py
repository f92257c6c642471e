"""The fair queue through Dagster's own queued-run daemon (one real dequeue iteration, runs launched by Dagster's
test launcher): an owner flooding the queue cannot starve another, an owner's own limit from VEXPORT_OWNERS
raises the default, GPU exports never take every slot; and the inbox sensor leaves a file whose owner is at
their hourly rate in the inbox, saying why and until when."""

import shutil
import time
import uuid

import dagster as dg
import yaml
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster._utils.tags import TagConcurrencyLimitsCounter

from vexport_pipeline.core import owners
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.spec.loading import parse_composition
from vexport_pipeline.defs.instance import ensure_dagster_home, instance_yaml
from vexport_pipeline.defs.intake.sensors import composition_sensor
from vexport_pipeline.defs.jobs import KIND_TAG, OWNER_TAG, QUEUE_TAG, run_tags
from vexport_pipeline.defs.resources import HomeResource


def instance_queue(tmp_path, monkeypatch, owners_file: str | None) -> dict:
    """The `concurrency` block of the instance's dagster.yaml, as `ensure_dagster_home` writes it."""
    if owners_file is not None:
        (tmp_path / "owners.yaml").write_text(owners_file)
        monkeypatch.setenv("VEXPORT_OWNERS", str(tmp_path / "owners.yaml"))
    return yaml.safe_load(instance_yaml(owners.load()))["concurrency"]


def tags(owner: str, priority: int = 0, **extra) -> dict[str, str]:
    comp = parse_composition(
        {"id": f"x{uuid.uuid4().hex[:8]}", "owner": owner, "priority": priority, "source": "x.mp4",
         "targets": [{"preset": "web_720p"}]}
    )  # fmt: skip
    return {**run_tags(comp), **extra}


def one_dequeue(concurrency: dict, queued: list[dict[str, str]]) -> list[dict[str, str]]:
    """Queue runs with these tags (in this order) and let the queued-run daemon take one iteration: the tags of
    the runs it launched."""
    launcher = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}
    location = GrpcServerCodeLocationOrigin(host="localhost", port=4000, location_name="vexport")  # never dialled
    origin = RemoteRepositoryOrigin(location, "__repository__").get_job_origin("export_job")
    with dg.instance_for_test(overrides={"concurrency": concurrency, "run_launcher": launcher}) as instance:
        for t in queued:
            instance.add_run(
                dg.DagsterRun("export_job", status=dg.DagsterRunStatus.QUEUED, tags=t, remote_job_origin=origin)
            )
        with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as context:
            list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(context))
        return [dict(r.tags) for r in instance.run_launcher.queue()]


def test_an_owner_flooding_the_queue_cannot_starve_another(home, tmp_path, monkeypatch):
    """The shipped dagster.yaml as it is: four run slots, three per owner. Alice's flood of high-priority runs
    (queued first) takes three slots and bob's run the fourth."""
    queue = instance_queue(tmp_path, monkeypatch, None)
    assert yaml.safe_load((ensure_dagster_home() / "dagster.yaml").read_text())["concurrency"] == queue
    assert queue["runs"]["max_concurrent_runs"] == 4
    flood = [tags("alice", priority=50) for _ in range(6)]
    launched = one_dequeue(queue, [*flood, tags("bob")])
    assert sorted(t[OWNER_TAG] for t in launched) == ["alice"] * 3 + ["bob"]


def test_an_owner_with_their_own_limit_runs_more_than_the_default(home, tmp_path, monkeypatch):
    queue = instance_queue(tmp_path, monkeypatch, "default: {concurrent: 1}\nalice: {concurrent: 3}\n")
    assert {"key": OWNER_TAG, "value": "alice", "limit": 3} in queue["runs"]["tag_concurrency_limits"]
    alice, carol = tags("alice"), tags("carol")
    assert QUEUE_TAG not in alice and carol[QUEUE_TAG] == "carol"
    queue["runs"]["max_concurrent_runs"] = 10  # only the owner limits bind here: not the slots, not the kinds
    limits = queue["runs"]["tag_concurrency_limits"]
    queue["runs"]["tag_concurrency_limits"] = [e for e in limits if e["key"] != KIND_TAG]
    launched = one_dequeue(queue, [tags("alice") for _ in range(5)] + [tags("carol") for _ in range(3)])
    assert sorted(t[OWNER_TAG] for t in launched) == ["alice"] * 3 + ["carol"]

    # why alice's runs carry no vexport/queue tag: Dagster applies every limit a run matches, so an entry for
    # one value next to the per-value default can only lower it
    both = [
        {"key": OWNER_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        {"key": OWNER_TAG, "value": "alice", "limit": 3},
    ]
    running = dg.DagsterRun(job_name="export_job", tags={OWNER_TAG: "alice"})
    assert TagConcurrencyLimitsCounter(both, [running]).is_blocked(running)


def test_gpu_exports_never_take_every_run_slot(home, tmp_path, monkeypatch):
    """The kind of an export is `cpu` unless a target codec has a working hardware encoder here; three GPU runs
    queued first take one slot (one GPU), the CPU run queued after them another."""
    queue = instance_queue(tmp_path, monkeypatch, None)
    monkeypatch.setenv("VEXPORT_HARDWARE", "off")
    assert tags("dave")[KIND_TAG] == "cpu"
    gpu = [tags(owner, **{KIND_TAG: "gpu"}) for owner in ("ann", "ben", "cat")]
    launched = one_dequeue(queue, [*gpu, tags("dave", **{KIND_TAG: "cpu"})])
    assert sorted(t[KIND_TAG] for t in launched) == ["cpu", "gpu"]


def test_the_sensor_leaves_a_file_in_the_inbox_while_its_owner_is_at_their_hourly_rate(
    home, media, tmp_path, monkeypatch
):
    monkeypatch.setenv("VEXPORT_INBOX_MIN_AGE", "0")
    owners_yaml = tmp_path / "owners.yaml"
    owners_yaml.write_text("default: {exports_per_hour: 1}\n")
    monkeypatch.setenv("VEXPORT_OWNERS", str(owners_yaml))
    earlier = {"id": "earlier", "owner": "alice", "source": "x.mp4", "targets": [{"preset": "web_720p"}]}
    at = registry.register(home, parse_composition(earlier), media["av"]).registered_at  # as `vexport export` does
    manifest = "id: {id}\nowner: {owner}\nsource: {id}.mp4\ntargets: [{{preset: web_720p, quality: draft}}]\n"
    shutil.copy(media["av"], home.inbox / "second.mp4")
    (home.inbox / "alice.yaml").write_text(manifest.format(id="second", owner="alice"))
    resource = HomeResource(root=str(home.root), media_roots=[str(media["dir"])])
    with dg.instance_for_test() as instance:

        def tick():
            return composition_sensor(dg.build_sensor_context(instance=instance, resources={"home": resource}))

        held = tick()
        assert not held.run_requests
        reason, opens = held.skip_reason.skip_message, time.strftime("%H:%M", time.localtime(at + 3600))
        assert "alice.yaml: owner alice: 1 export(s) in the last hour reach the limit of 1 an hour" in reason
        assert f"the next slot opens at {opens} (in 60 min)" in reason
        assert (home.inbox / "alice.yaml").exists() and (home.inbox / "second.mp4").exists()
        assert not (home.inbox / "rejected").exists()

        shutil.copy(media["av"], home.inbox / "bobs.mp4")
        (home.inbox / "bob.yaml").write_text(manifest.format(id="bobs", owner="bob"))
        other = tick()  # another owner's file is taken meanwhile
        assert [r.partition_key for r in other.run_requests] == ["bobs"]
        assert (home.inbox / "alice.yaml").exists()

        owners_yaml.write_text("default: {exports_per_hour: 1}\nalice: {exports_per_hour: 2}\n")  # a slot opens
        later = tick()
        assert sorted(r.partition_key for r in later.run_requests) == ["bobs", "second"]
    assert not (home.inbox / "alice.yaml").exists() and registry.load(home, "second").owner == "alice"
