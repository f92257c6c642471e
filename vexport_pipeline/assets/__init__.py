"""The per-export asset graph: source -> segments -> renditions -> validation_report -> delivery -> delivery_metrics."""

from .delivery import delivery
from .delivery_metrics import delivery_metrics
from .renditions import renditions
from .segments import segments
from .source import source
from .validation_report import validation_report

export_assets = [source, segments, renditions, validation_report, delivery, delivery_metrics]
