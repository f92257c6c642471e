"""The error boundary of the Dagster layer: a `VexportError` raised by the core becomes a
`dagster.Failure` whose metadata carries its stable code and exit code, so the UI shows the code and
the CLI maps a failed run to its exit code without matching class names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from vexport_pipeline.core.errors import VexportError

CODE, EXIT_CODE, WHERE = "vexport/code", "vexport/exit_code", "vexport/where"


@contextmanager
def reported() -> Iterator[None]:
    try:
        yield
    except VexportError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={CODE: exc.code, EXIT_CODE: exc.exit_code, WHERE: exc.where or ""},
            allow_retries=exc.transient,  # refused input or a failed validation never gets better by retrying
        ) from exc


GATE_ERROR = "DagsterAssetCheckFailedError"  # the blocking validation check failed: validation's own verdict


def step_errors(events: list[dg.DagsterEvent]) -> list[dict]:
    """`{code, message}` of each step failure event: the stable code a `reported()` failure carries (else
    `step_failed`) and the step with its message, for webhooks and `vexport status --batch`."""
    out = []
    for event in events:
        data = event.step_failure_data
        meta = data.user_failure_data.metadata if data.user_failure_data else {}
        message = data.user_failure_data.description if data.user_failure_data else data.error.message
        code = meta[CODE].value if CODE in meta else "step_failed"
        if data.error and data.error.cls_name == GATE_ERROR:  # Dagster's words for the gate, not the user's
            code, message = "validation_failed", "a rendition failed validation; nothing was delivered"
        out.append({"code": code, "message": f"{event.step_key}: {(message or '').strip()[:500]}"})
    return out


# Steps that meet storage retry what may pass on a second try (`allow_retries` above says which failures:
# StorageError, not refused input nor a failed validation): twice, after about 2 s and 4 s, with jitter so
# parallel steps do not retry in step. Encodes are not retried: a failed encode fails the same way again, and
# a hardware encoder that fails already falls back to the CPU per clip.
TRANSIENT_RETRIES = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
