"""Rate limits: one token bucket per name (an API key; for publishable keys, a client address or a
person). Pure: the clock comes in as `now` (monotonic seconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    updated: float  # monotonic seconds

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; returns 0 when allowed, else the seconds until it would be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


@dataclass
class RateLimiter:
    rate: float
    burst: float
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    # Names come from outside (addresses, people): past this many buckets, the ones that have
    # refilled (as good as absent) are dropped, then the oldest, so memory stays bounded.
    max_buckets: int = 100_000

    def retry_after(self, key: str, now: float) -> int:
        """0 when the request may go ahead, else the whole seconds to wait (for Retry-After)."""
        if self.rate <= 0:
            return 0
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_buckets:
                self._prune(now)
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(now)
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def _prune(self, now: float) -> None:
        refill_s = self.burst / self.rate
        self.buckets = {k: b for k, b in self.buckets.items() if now - b.updated < refill_s}
        if len(self.buckets) >= self.max_buckets:  # a flood of fresh names: the older half goes
            self.buckets = dict(list(self.buckets.items())[len(self.buckets) // 2 :])
