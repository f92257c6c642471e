"""`vexport export`: the same Dagster assets, materialized in-process for one composition."""

from __future__ import annotations

import logging
from pathlib import Path

from vexport_pipeline.core.delivery import summary
from vexport_pipeline.core.errors import VexportError
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.intake.registry import Registered
from vexport_pipeline.core.media.probe import probe, require_video
from vexport_pipeline.core.planning import plan_checked
from vexport_pipeline.core.settings import current
from vexport_pipeline.core.spec.loading import load_composition, resolve_source, slug
from vexport_pipeline.defs.instance import ensure_dagster_home

log = logging.getLogger("vexport")


def prepare(manifest: Path) -> Registered:
    """Everything that can refuse the input, before a partition exists or a byte is encoded."""
    settings = current()
    home = settings.paths.ensure()
    comp = load_composition(manifest)
    source = resolve_source(comp, manifest.resolve().parent, settings.policy)
    plan_checked(comp, require_video(probe(source)))  # refused now if sure to fail (or over quota): nothing encoded
    return registry.register(home, comp, source, manifest=manifest.resolve(), checked=True)


def run_export(manifest: Path) -> tuple[dict, int]:
    """Returns (summary, exit code): 0 delivered, 2 refused input, 1 processing failed."""
    manifest = Path(manifest)
    try:
        ensure_dagster_home()
        record = prepare(manifest)
    except VexportError as exc:
        return summary.build(slug(manifest.stem), "refused", errors=[exc.as_dict()]), exc.exit_code
    except Exception as exc:  # a bug, never a traceback for the user: the summary says what and where
        log.exception("preparing %s failed", manifest)
        error = {"code": "internal_error", "message": f"{manifest.name}: {type(exc).__name__}: {str(exc)[:300]}"}
        return summary.build(slug(manifest.stem), "failed", errors=[error]), 1

    return execute(record)


def execute(record: Registered, extra_tags: dict[str, str] | None = None) -> tuple[dict, int]:
    """Run `export_job` in-process for a registered composition; (summary, exit code) as `run_export`."""
    import dagster as dg

    from vexport_pipeline.definitions import defs
    from vexport_pipeline.defs.jobs import process_tags, reap_dead_runs, run_tags
    from vexport_pipeline.defs.partitions import exports

    instance = dg.DagsterInstance.get()
    reap_dead_runs(instance)
    if not instance.has_dynamic_partition(exports.name, record.export_id):
        instance.add_dynamic_partitions(exports.name, [record.export_id])
    tags = {**run_tags(record.composition), **process_tags()}
    result = (
        defs()
        .resolve_job_def("export_job")
        .execute_in_process(
            partition_key=record.export_id,
            instance=instance,
            raise_on_error=False,
            tags={**tags, "vexport/source": "cli", **(extra_tags or {})},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    )
    if _has_materialization(result, "delivery"):
        return result.output_for_node("delivery"), 0
    return failed_summary(record.export_id, result)


INTERRUPTS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")


def _interrupted(result) -> str | None:
    """The step (or 'the run') that an interrupt (Ctrl-C, SIGTERM, a terminate) stopped, if one did."""
    for event in result.all_events:
        data = event.event_specific_data
        error = getattr(data, "error", None)
        while error is not None:
            if error.cls_name in INTERRUPTS:
                return event.step_key or "the run"
            error = error.cause
    return None


def failed_summary(export_id: str, result) -> tuple[dict, int]:
    """The summary of a run that did not deliver, with the exit code its errors call for."""
    from vexport_pipeline.defs.failures import CODE, EXIT_CODE, GATE_ERROR

    errors, code = [], 1
    stopped = _interrupted(result)
    if stopped:
        message = f"stopped by an interrupt (Ctrl-C, SIGTERM, a terminate) in {stopped}; nothing was delivered"
        errors.append({"code": "interrupted", "message": message})
    for event in [] if stopped else result.get_step_failure_events():
        data = event.step_failure_data
        if data.error and data.error.cls_name == GATE_ERROR:
            continue  # the validation gate: the `validation_failed` error below names the renditions
        meta = data.user_failure_data.metadata if data.user_failure_data else {}
        exit_code = meta[EXIT_CODE].value if EXIT_CODE in meta else 1
        code = 2 if exit_code == 2 else code
        message = data.user_failure_data.description if data.user_failure_data else _innermost(data.error)
        errors.append(
            {
                "code": meta[CODE].value if CODE in meta else "step_failed",
                "message": f"{event.step_key}: {message.strip()}",
            }
        )
    src, segs = _maybe(result, "source"), _maybe(result, "segments")
    rends, outcome = _maybe(result, "renditions") or [], _maybe(result, "validation_report")
    checked = list(outcome.renditions) if outcome else [None] * len(rends)
    rends = outcome.files(rends) if outcome else rends
    blocks = [summary.rendition_block(r, c, []) for r, c in zip(rends, checked)]
    if outcome and outcome.status == "fail":
        errors.append(
            {
                "code": "validation_failed",
                "message": f"validation failed for {', '.join(outcome.failed)}; nothing was delivered",
            }
        )
    data = summary.build(
        export_id,
        "refused" if code == 2 else "failed",
        source=summary.source_block(src) if src else None,
        output_duration=segs.output_duration if segs else None,
        renditions=blocks,
        errors=errors or [{"code": "failed", "message": "the run failed"}],
    )
    return data, code


def _innermost(error) -> str:
    while error.cause is not None:
        error = error.cause
    return error.message


def _has_materialization(result, name: str) -> bool:
    return any(e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key.path == [name] for e in result.all_events)


def _maybe(result, node: str):
    try:
        return result.output_for_node(node)
    except Exception:  # the step did not run or failed
        return None
