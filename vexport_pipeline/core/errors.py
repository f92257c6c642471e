"""One error hierarchy. The CLI maps it to exit codes, the assets to Dagster failures."""

from __future__ import annotations


class VexportError(Exception):
    """Base error: `code` is stable for scripts, `where` names the field, file or time range at fault."""

    exit_code = 1
    default_code = "error"
    transient = False  # True where trying again can succeed (a store or encoder that failed this time)

    def __init__(self, message: str, *, code: str | None = None, where: str | None = None):
        self.message = message
        self.code = code or self.default_code
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def as_dict(self) -> dict:
        return {"code": self.code, "message": str(self)}


class InputError(VexportError):
    """The input was refused (manifest, source media, preset name, time range). Exit code 2."""

    exit_code = 2
    default_code = "input_refused"


class ConfigError(InputError):
    """A `VEXPORT_*` setting or a configuration file (presets, brands, profile) is invalid. Exit code 2."""

    default_code = "config_invalid"


class RateLimited(InputError):
    """The owner has started as many exports this hour as they may; `opens_at` (epoch seconds) is when the next
    one may start. The inbox leaves such a file where it is, for a later tick. Exit code 2."""

    default_code = "rate_limited"

    def __init__(self, message: str, *, opens_at: float, where: str | None = None):
        self.opens_at = opens_at
        super().__init__(message, where=where)


class ManifestError(InputError):
    """A composition manifest is invalid; `problems` lists every field at fault."""

    default_code = "manifest_invalid"

    def __init__(self, problems: list[str], *, file: str | None = None):
        self.problems = problems
        head = f"{file}: invalid composition" if file else "invalid composition"
        shown = problems[:20] + ([f"... and {len(problems) - 20} more problems"] if len(problems) > 20 else [])
        super().__init__(head + "\n  " + "\n  ".join(shown), code=self.default_code)


class ProcessingError(VexportError):
    """Processing failed (encode, validation that blocks delivery, storage). Exit code 1."""

    default_code = "processing_failed"


class EncodeError(ProcessingError):
    default_code = "encode_failed"


class Interrupted(ProcessingError):
    """A check stopped from outside (a signal: the machine short of memory, a supervisor), twice: nothing is known
    against the input, and a later try can succeed."""

    default_code = "interrupted"
    transient = True


class ValidationFailed(ProcessingError):
    default_code = "validation_failed"


class StorageError(ProcessingError):
    default_code = "storage_failed"
    transient = True  # object-store 5xx, timeouts, a network that came back


class StoreBusy(StorageError):
    """The event store's write lock stayed held by another process for longer than a write waits for it."""

    default_code = "event_store_busy"
