"""How many requests a sync keeps in flight: a fixed ceiling, lowered while the API says "too many".

Additive increase, multiplicative decrease (AIMD, as TCP's congestion control): every answer
that is not a throttle raises the limit by 1/limit (so by one request per round of `limit`
answers), and a throttle halves it, at most once per round: the throttles of requests that were
already in flight when the limit was last cut say nothing new. A throttle is HTTP 429, or 503
(which rate-limiting gateways send too), or a request that timed out (the API slowed down).
Retries go through the same limit, so a throttled API sees fewer requests, not the same number
again after a backoff.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

THROTTLE_STATUS = frozenset({429, 503})
"""Statuses that mean "slow down": 429 Too Many Requests; 503, which rate-limiting gateways
send too (the retry of both is dlt's `DEFAULT_RETRY_STATUS`)."""
TIMED_OUT = -1
"""The `status` to release a request with when it timed out: a server too slow to answer in
`request_timeout` is overloaded, and is slowed down for like a 429."""


@dataclass(frozen=True)
class LimitFigures:
    """What the limit did over a sync, for the summary.

    Attributes:
        maximum: The configured ceiling (`max_concurrent_requests`).
        lowest: The lowest the limit went (== maximum when never throttled).
        final: The limit at the end of the sync.
        throttled: Requests throttled (HTTP 429/503) or timed out, retried ones included.
        backoffs: Times the limit was cut.
        adaptive: Whether the limit adapts (`adaptive_concurrency`); if not, it stays at maximum.
    """

    maximum: int
    lowest: int
    final: int
    throttled: int
    backoffs: int
    adaptive: bool

    def describe(self) -> str | None:
        """One line for the summary, or None when nothing was throttled."""
        if not self.throttled:
            return None
        if not self.adaptive:
            return (
                f"the API throttled {self.throttled} requests (HTTP 429/503 or a timeout);"
                f" adaptive_concurrency"
                f" is off, so requests stayed at {self.maximum} at once"
            )
        return (
            f"the API throttled {self.throttled} requests (HTTP 429/503 or a timeout): requests in"
            " flight"
            f" backed off from {self.maximum} to {self.lowest} at lowest ({self.backoffs} cuts),"
            f" {self.final} at the end"
        )


class AdaptiveLimit:
    """A counting semaphore whose size follows AIMD between 1 and `maximum`. Thread-safe.

    Args:
        maximum: The most requests in flight at once (>= 1).
        adaptive: False keeps the limit at `maximum` (a plain semaphore that still counts
            throttles).

    Use `acquire()` before a request (blocks while `limit` are in flight; returns a ticket) and
    `release(ticket, status)` after it, with the response's status (None: no response,
    `TIMED_OUT`: it timed out).
    """

    def __init__(self, maximum: int, adaptive: bool = True) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be >= 1, got {maximum}")
        self.maximum = maximum
        self.adaptive = adaptive
        self._limit = float(maximum)
        self._lowest = maximum
        self._in_flight = 0
        self._issued = 0
        self._cut_at = 0  # tickets issued up to this one were in flight at the last cut
        self._throttled = 0
        self._backoffs = 0
        self._ready = threading.Condition()

    @property
    def limit(self) -> int:
        """Requests allowed in flight now (whole number, 1..maximum)."""
        return max(1, int(self._limit))

    def acquire(self) -> int:
        """Wait for a free slot; return this request's ticket (for `release`)."""
        with self._ready:
            while self._in_flight >= self.limit:
                self._ready.wait()
            self._in_flight += 1
            self._issued += 1
            return self._issued

    def release(self, ticket: int, status: int | None) -> None:
        """Free the slot of request `ticket`, which got HTTP `status` (None: no response;
        `TIMED_OUT`: it timed out)."""
        with self._ready:
            self._in_flight -= 1
            if status in THROTTLE_STATUS or status == TIMED_OUT:
                self._throttled += 1
                if self.adaptive and ticket > self._cut_at:
                    self._limit = max(1.0, self._limit / 2)
                    self._lowest = min(self._lowest, self.limit)
                    self._cut_at = self._issued
                    self._backoffs += 1
            elif status is not None and self.adaptive and self._limit < self.maximum:
                self._limit = min(float(self.maximum), self._limit + 1 / self._limit)
            self._ready.notify(max(0, self.limit - self._in_flight))

    def figures(self) -> LimitFigures:
        """A snapshot of what the limit did so far."""
        with self._ready:
            return LimitFigures(
                maximum=self.maximum,
                lowest=self._lowest,
                final=self.limit,
                throttled=self._throttled,
                backoffs=self._backoffs,
                adaptive=self.adaptive,
            )
