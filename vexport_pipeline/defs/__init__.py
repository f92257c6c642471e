"""The Dagster layer, a folder per stage: `intake/` (the `source` asset, the inbox sensor), `media/`
(`segments`, `renditions`), `validation/` (`validation_report` and its blocking check), `delivery/`
(`delivery`, `delivery_metrics`, the rollup schedule); `resources.py` holds one resource per external
system and `failures.py` the error boundary. It calls the core and adds no media logic of its own.

The per-export asset graph: source -> segments -> renditions -> validation_report -> delivery -> delivery_metrics.
"""

from vexport_pipeline.defs import concurrency
from vexport_pipeline.defs.delivery.delivery import delivery
from vexport_pipeline.defs.delivery.delivery_metrics import delivery_metrics
from vexport_pipeline.defs.intake.source import source
from vexport_pipeline.defs.media.renditions import renditions
from vexport_pipeline.defs.media.segments import segments
from vexport_pipeline.defs.validation.validation_report import validation_report

export_assets = [source, segments, renditions, validation_report, delivery, delivery_metrics]

concurrency.patch()  # every process that runs these assets waits for pool slots without spinning
