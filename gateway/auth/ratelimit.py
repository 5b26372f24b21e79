"""In-memory token buckets: per client id for authenticated calls, per client id (or address) for tokens.

Each gateway replica limits on its own, so N replicas allow up to N times the configured rate; that is the
price of O(1) work per request with no shared store. Buckets live in a bounded LRU table so a flood of
made-up client ids at the token endpoint cannot grow memory without bound.
"""

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import Counter

from kit.auth import CurrentPrincipal, Principal
from kit.errors import TooManyRequests

__all__ = [
    "RATE_LIMIT_DECISIONS",
    "RateLimitedPrincipal",
    "RateLimiter",
    "rate_limited_principal",
]

RATE_LIMIT_DECISIONS = Counter(
    "registry_gateway_rate_limit_total", "Rate limit decisions of the gateway", ["bucket", "decision"]
)


class RateLimiter:
    """Token buckets of `burst` tokens refilled at `rate` per second, one per key."""

    def __init__(
        self,
        name: str,
        *,
        rate: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)
        self._allowed = RATE_LIMIT_DECISIONS.labels(name, "allowed")
        self._limited = RATE_LIMIT_DECISIONS.labels(name, "limited")

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until a token is available."""
        now = self._clock()
        state = self._buckets.get(key)
        if state is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
        else:
            tokens = min(self.burst, state[0] + (now - state[1]) * self.rate)
            self._buckets.move_to_end(key)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._allowed.inc()
            return 0.0
        self._buckets[key] = (tokens, now)
        self._limited.inc()
        return (1.0 - tokens) / self.rate

    def check(self, key: str) -> None:
        """Take one token for `key` or raise a 429 problem with an integer `Retry-After`."""
        wait = self.acquire(key)
        if wait > 0.0:
            retry_after = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"Too many requests for this client; retry in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
                retry_after=retry_after,
            )


async def rate_limited_principal(request: Request, principal: CurrentPrincipal) -> Principal:
    """The verified caller (revoked clients already refused by the verifier), within its rate limit."""
    limiter: RateLimiter = request.app.state.api_rate_limiter
    limiter.check(principal.client_id)
    return principal


RateLimitedPrincipal = Annotated[Principal, Depends(rate_limited_principal)]
