import os

import dagster as dg

from vexport_pipeline.core.intake import inbox
from vexport_pipeline.defs.jobs import export_job
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import VexportResource


@dg.sensor(
    job=export_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns compositions and bare videos dropped in VEXPORT_HOME/inbox into export partitions and runs.",
)
def composition_sensor(context: dg.SensorEvaluationContext, vexport: VexportResource) -> dg.SensorResult:
    min_age = float(os.environ.get("VEXPORT_INBOX_MIN_AGE", "2"))
    accepted, rejected = inbox.process(vexport.paths, vexport.policy, min_age_s=min_age)
    for r in rejected:
        context.log.warning(f"rejected {r.file}: {r.error}")
    if not accepted:
        return dg.SensorResult(skip_reason="inbox empty" if not rejected else f"rejected {len(rejected)} file(s)")
    new_keys = [a.export_id for a in accepted if not context.instance.has_dynamic_partition(exports.name, a.export_id)]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=a.run_key, partition_key=a.export_id, tags={"vexport/file": a.file}) for a in accepted
        ],
        dynamic_partitions_requests=[exports.build_add_request(sorted(set(new_keys)))] if new_keys else [],
    )
