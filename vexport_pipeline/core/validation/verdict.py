"""What validation concludes: issues, the report of one file, and the verdict.

Score: 100, minus 30 for each error and 5 for each warning (never below 0). Status: fail with any
error, warn with any warning, else pass. Limits listed as uncertain only ever warn.

A/V offsets follow ITU-R BT.1359 signs: positive means the audio leads. The change from the source's
own offset warns outside -45/+15 ms (ATSC IS-191) and fails outside -125/+45 ms (ITU detectability).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ERROR_WEIGHT, WARNING_WEIGHT = 30, 5


@dataclass(frozen=True)
class SyncLimits:
    warn_lag_ms: float = -45.0
    warn_lead_ms: float = 15.0
    fail_lag_ms: float = -125.0
    fail_lead_ms: float = 45.0


@dataclass
class Issue:
    severity: str  # error | warning
    code: str
    message: str
    hint: str = ""


@dataclass
class Report:
    status: str
    score: int
    issues: list[Issue]
    measurements: dict = field(default_factory=dict)
    vmaf: float | None = None
    loudness_lufs: float | None = None
    av_offset_ms: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["issues"] = [asdict(i) for i in self.issues]
        return d


def verdict(issues: list[Issue]) -> tuple[str, int]:
    errors = sum(i.severity == "error" for i in issues)
    warnings = sum(i.severity == "warning" for i in issues)
    score = max(0, 100 - ERROR_WEIGHT * errors - WARNING_WEIGHT * warnings)
    return ("fail" if errors else "warn" if warnings else "pass"), score
