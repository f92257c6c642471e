import dagster as dg

from vexport_pipeline.core import owners
from vexport_pipeline.core.intake.registry import DEFAULT_OWNER
from vexport_pipeline.core.spec.composition import Composition
from vexport_pipeline.defs.tags import EXPORT_TAG, KIND_TAG, OWNER_TAG, PRIORITY_TAG, QUEUE_TAG, SOURCE_TAG


def run_tags(comp: Composition) -> dict[str, str]:
    """The tags every export run carries, whoever launched it. The queue (dagster.yaml) takes higher
    `dagster/priority` first, limits `vexport/kind` (gpu, cpu) apart, and limits each owner: by the per-owner
    default on `vexport/queue`, or, for an owner with their own `concurrent` in VEXPORT_OWNERS, by their entry on
    `vexport/owner` alone. Dagster applies every limit a run matches, so their runs must not carry
    `vexport/queue`: the default would cap them too."""
    owner = comp.owner or DEFAULT_OWNER
    tags = {EXPORT_TAG: comp.id, OWNER_TAG: owner, PRIORITY_TAG: str(comp.priority), KIND_TAG: export_kind(comp)}
    if owner not in owners.load().own_concurrency():
        tags[QUEUE_TAG] = owner
    return tags


def export_kind(comp: Composition) -> str:
    """`gpu` when one of the export's target codecs has a working hardware encoder on this host (and
    VEXPORT_HARDWARE is `auto`), else `cpu`: the queue limits the two kinds apart, so GPU exports never take
    every run slot from CPU ones."""
    from vexport_pipeline.core.media.hardware import CANDIDATES, declared, detect
    from vexport_pipeline.core.settings import current
    from vexport_pipeline.core.spec.presets import PresetBook

    hardware = current().hardware
    if hardware == "off":
        return "cpu"
    # every codec's answer, kept per host: with no working encoder here (most machines) the targets need no
    # reading, which the sensor would otherwise do for every recent record on every tick
    usable = declared(hardware, CANDIDATES) if hardware != "auto" else detect(tuple(CANDIDATES))[0]
    if not any(usable.values()):
        return "cpu"
    book = PresetBook.load()
    return "gpu" if any(usable.get(book.merged(t)["video_codec"]) for t in comp.targets) else "cpu"


# Every stage of one export, in graph order (partitioned by `exports` through its assets).
export_job = dg.define_asset_job(
    "export_job",
    selection=dg.AssetSelection.groups("export"),
    description="Run the whole asset graph for one export partition.",
)
metrics_job = dg.define_asset_job(
    "metrics_job",
    selection=dg.AssetSelection.assets("analytics"),
    description="Roll up the downloads of every delivered export, in one run.",
)


PID_TAG, HOST_TAG, STARTED_TAG = "vexport/pid", "vexport/host", "vexport/process_started"


def process_tags() -> dict[str, str]:
    """Which process runs an in-process (`vexport export`) run, so a later one can tell it died."""
    import socket

    import psutil

    me = psutil.Process()
    return {PID_TAG: str(me.pid), HOST_TAG: socket.gethostname(), STARTED_TAG: f"{me.create_time():.2f}"}


def alive(tags: dict) -> bool:
    import socket

    import psutil

    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return True  # not ours to judge: another host's run (Dagster's run monitoring covers daemon runs)
    try:
        proc = psutil.Process(int(tags[PID_TAG]))
        return f"{proc.create_time():.2f}" == tags.get(STARTED_TAG)  # the same process, not a reused pid
    except psutil.Error:
        return False


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs of `vexport export` whose process is gone (killed with SIGKILL, the machine rebooted) are marked
    failed and their pool slots freed, so the next export does not wait forever for a slot nobody holds."""
    statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING]
    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses, tags={SOURCE_TAG: "cli"})):
        if alive(run.tags):
            continue
        instance.report_run_failed(run, f"the process running it (pid {run.tags.get(PID_TAG)}) is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        _sweep_partials(run.tags.get(EXPORT_TAG))
        reaped.append(run.run_id)
    return reaped


def _sweep_partials(export_id: str | None) -> None:
    """What a killed run was still writing (`.NAME.partial.EXT`, two-pass logs) in its export's work folder."""
    from vexport_pipeline.core.settings import current

    if not export_id or "/" in export_id or export_id.startswith("."):
        return
    folder = current().paths.work / export_id
    for p in folder.rglob(".*.partial*") if folder.is_dir() else []:
        p.unlink(missing_ok=True)
