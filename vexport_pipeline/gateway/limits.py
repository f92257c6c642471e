"""Per-key request rate limits of one gateway process (a sliding window in memory): enough to stop one
client or one leaked link from hammering the gateway; each process behind a balancer counts its own."""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class RateLimiter:
    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait(self, key: str, now: float | None = None) -> int:
        """0 if a request for `key` may go now (and counts it), else the seconds until one may."""
        if self.per_minute <= 0:
            return 0
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._seen.setdefault(key, deque())
            while q and q[0] <= now - 60:
                q.popleft()
            if len(q) >= self.per_minute:
                return max(1, math.ceil(q[0] + 60 - now))
            q.append(now)
            if len(self._seen) > 100_000:  # forget idle keys rather than grow without bound
                self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - 60}
            return 0
