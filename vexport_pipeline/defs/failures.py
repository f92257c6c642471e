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
            allow_retries=exc.exit_code != 2,  # refused input never gets better by retrying
        ) from exc
