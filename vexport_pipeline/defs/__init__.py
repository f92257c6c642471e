"""The per-export asset graph: source -> segments -> renditions -> validation_report -> delivery -> delivery_metrics."""

from .delivery.delivery import delivery
from .delivery.delivery_metrics import delivery_metrics
from .intake.source import source
from .media.renditions import renditions
from .media.segments import segments
from .validation.validation_report import validation_report

export_assets = [source, segments, renditions, validation_report, delivery, delivery_metrics]
