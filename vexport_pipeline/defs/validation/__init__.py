"""Dagster definitions of the validation stage: the `validation_report` asset and its blocking check."""
