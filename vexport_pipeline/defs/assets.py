"""The per-export assets, in graph order, and the fix for Dagster's busy wait for pool slots, applied in every
process that loads them."""

from vexport_pipeline.defs import concurrency
from vexport_pipeline.defs.delivery.delivery import delivery
from vexport_pipeline.defs.delivery.delivery_metrics import delivery_metrics
from vexport_pipeline.defs.intake.source import source
from vexport_pipeline.defs.media.renditions import renditions
from vexport_pipeline.defs.media.segments import segments
from vexport_pipeline.defs.validation.validation_report import validation_report

export_assets = [source, segments, renditions, validation_report, delivery, delivery_metrics]

concurrency.patch()  # every process that runs these assets waits for pool slots without spinning
