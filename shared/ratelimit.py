"""Rate limits: one token bucket per API key. Pure: the clock comes in as `now` (monotonic seconds)."""

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

    def retry_after(self, key: str, now: float) -> int:
        """0 when the request may go ahead, else the whole seconds to wait (for Retry-After)."""
        if self.rate <= 0:
            return 0
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(now)
        return 0 if wait == 0 else max(1, math.ceil(wait))
