"""Progress where the UI shows it: each stage of an export puts the run's stage, percent and ETA on the run's
tags (the runs list shows them as they change) and logs one asset observation when it begins. The figures are
computed from the run's event log exactly as `vexport status` computes them, so the UI and the terminal agree."""

from __future__ import annotations

import time

import dagster as dg

from vexport_pipeline.core import history

STAGE_TAG, PERCENT_TAG, ETA_TAG = "vexport/stage", "vexport/percent", "vexport/eta"


def publish(context, stage: str | None = None, asset: str | None = None) -> None:
    """Tag the run with where it stands now; with `stage`, also log the observation that the stage began (on
    `asset`, the stage's asset). The percent never goes back: the run's previous tag is its floor. Progress is
    a courtesy: a failure to record it is logged and never fails the export."""
    try:
        _publish(context, stage, asset)
    except Exception as exc:  # the export matters more than its progress bar
        context.log.warning(f"progress not recorded: {exc}")


def _publish(context, stage: str | None, asset: str | None) -> None:
    from vexport_pipeline.defs.operations.runs import planned_steps, step_events

    instance, run_id = context.instance, context.run_id
    record = instance.get_run_record_by_id(run_id)  # the run as stored now: its latest tags and start time
    now = record.dagster_run if record else context.run
    prog = history.progress(step_events(instance, run_id), "started", planned_steps(instance, now))
    previous = now.tags.get(PERCENT_TAG)
    prog.advance(float(previous) if previous else None)
    started = record.start_time if record else None
    eta = history.eta(prog.percent, time.time() - started if started else 0.0)
    tags = {STAGE_TAG: prog.stage, PERCENT_TAG: f"{prog.percent:.0f}"}
    if eta is not None:
        tags[ETA_TAG] = f"{eta:.0f}s"
    instance.add_run_tags(run_id, tags)
    if stage and asset:
        metadata = {"stage": stage, "run_percent": prog.percent, "eta_s": -1.0 if eta is None else round(eta, 1)}
        context.log_event(
            dg.AssetObservation(asset_key=dg.AssetKey(asset), partition=context.partition_key, metadata=metadata)
        )


def finish(context) -> None:
    """The last step of an export: 100 % and stage `done` on the run's tags."""
    context.instance.add_run_tags(context.run_id, {STAGE_TAG: "done", PERCENT_TAG: "100", ETA_TAG: "0s"})
