"""The tags vexport puts on its runs, as plain names: importable without Dagster (`operations/runstore.py`)."""

OWNER_TAG, EXPORT_TAG, PRIORITY_TAG = "vexport/owner", "vexport/export", "dagster/priority"
QUEUE_TAG, KIND_TAG, SOURCE_TAG = "vexport/queue", "vexport/kind", "vexport/source"
