"""The HTTP session every flow of a sync shares: keep-alive, timeouts, retries, a request limit.

Composed from dlt's retry pieces (`dlt.sources.helpers.requests.retry`: the status and exception
predicates, and `wait_exponential_retry_after`, which honours `Retry-After` in seconds or as an
HTTP date, capped, and falls back to backoff for 0 or negative values) with two additions dlt's
`Client` lacks: random jitter, so that flows throttled together do not retry in lockstep, and a
hook that logs and counts each retry per flow for the summary.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from dlt.sources.helpers.requests.retry import (
    DEFAULT_RETRY_EXCEPTIONS,
    DEFAULT_RETRY_STATUS,
    retry_if_status,
    wait_exponential_retry_after,
)
from dlt.sources.helpers.requests.session import Session
from dlt.sources.helpers.rest_client.redaction import sanitize_url
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_any,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random,
)
from tenacity.wait import wait_base

from pipelines.stackai.limit import TIMED_OUT, AdaptiveLimit

log = logging.getLogger(__name__)


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")


def redact(text: str) -> str:
    """`text` with any `Bearer <token>` shown as `Bearer ***`.

    For messages of other libraries' exceptions, which may quote the Authorization header
    (requests' "Invalid header value b'Bearer ...'"), before they reach a log or the summary.
    """
    return _BEARER.sub(r"\1***", text)


class RetryableError(Exception):
    """Raised by a response hook for a response worth another attempt (e.g. a 200 whose body
    is an HTML error page): retried like a connection error."""


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and retries (seconds throughout).

    Attributes:
        connect_timeout: Seconds to open a connection (`[sources.stackai] connect_timeout`).
        read_timeout: Seconds to wait for the server between bytes (`[runtime]
            request_timeout`).
        max_attempts: Attempts per request, the first included (`request_max_attempts`).
        backoff_factor: Exponential backoff multiplier: waits 1x, 2x, 4x ... this
            (`request_backoff_factor`).
        max_retry_delay: Cap on one wait, `Retry-After` included (`request_max_retry_delay`).
        jitter: Up to this many seconds added at random to each wait.
        max_concurrent_requests: Requests in flight at once over all flows and time slices
            (`[sources.stackai] max_concurrent_requests`), so many flows cannot trip the API's
            rate limit together.
        adaptive_concurrency: Lower that number while the API throttles (HTTP 429/503) and
            raise it back after (`adaptive_concurrency`; `limit.AdaptiveLimit`).
    """

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    backoff_factor: float = 1.0
    max_retry_delay: float = 300.0
    jitter: float = 1.0
    max_concurrent_requests: int = 8
    adaptive_concurrency: bool = True


class RequestStats:
    """Requests and retries per URL path (one path per flow), safe across threads, and the
    request limit (`limit`, set by `make_session`) with what it did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.limit: AdaptiveLimit | None = None

    def count(self, counter: Counter[str], url: str) -> None:
        with self._lock:
            counter[urlsplit(url).path] += 1


def _describe(state: RetryCallState) -> str:
    outcome = state.outcome
    if outcome is None:
        return "unknown"
    error = outcome.exception()
    if error is None:
        response = outcome.result()
        return f"HTTP {response.status_code}"
    response = getattr(error, "response", None)
    if response is not None:
        return f"HTTP {response.status_code}"
    if isinstance(error, RetryableError):
        return str(error)
    return type(error).__name__


def retry_wait(settings: HttpSettings) -> wait_base:
    """Seconds to wait before the next attempt, from the last attempt's outcome.

    `Retry-After` (seconds or an HTTP date) when the server sends a positive one, else
    `backoff_factor * 2 ** (attempt - 1)`; either capped at `max_retry_delay`; plus up to
    `jitter` seconds at random. A `Retry-After` of 0 or less falls back to the backoff, so a
    server saying "now" cannot drive a tight loop.
    """
    return wait_exponential_retry_after(
        multiplier=settings.backoff_factor, max=settings.max_retry_delay
    ) + wait_random(0, settings.jitter)


def make_session(
    settings: HttpSettings, stats: RequestStats | None = None, max_connections: int = 10
) -> requests.Session:
    """A keep-alive session whose `send` retries 429, 5xx, connection errors and cut bodies.

    Args:
        settings: Timeouts, retries and the request limit.
        stats: If given, counts every attempt and every retry per URL path.
        max_connections: Connection pool size (at least the flows fetched at once).

    Returns:
        A `requests.Session`: (connect, read) timeouts on every request; errors that are not
        retried (4xx other than 429, or attempts exhausted) surface from `send` as raised by the
        response hooks or `requests`.
    """
    session = Session(
        timeout=(settings.connect_timeout, settings.read_timeout), raise_for_status=False
    )
    session.headers["User-Agent"] = "stackai-runs (dlt)"
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max_connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    limit = AdaptiveLimit(settings.max_concurrent_requests, settings.adaptive_concurrency)
    if stats is not None:
        stats.limit = limit
    send = session.send

    def one_attempt(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        # The limit covers an attempt, not the backoff wait: a sleeping retry holds no slot.
        ticket = limit.acquire()
        status = None
        try:
            if stats is not None:
                stats.count(stats.requests, request.url or "")
            response = send(request, **kwargs)
            status = response.status_code
            return response
        except requests.Timeout:
            status = TIMED_OUT
            raise
        except requests.RequestException as exc:
            # the response hooks run inside `send` and raise for an error status
            status = exc.response.status_code if exc.response is not None else None
            raise
        finally:
            limit.release(ticket, status)

    def before_sleep(state: RetryCallState) -> None:
        request = state.args[0] if state.args else None
        url = sanitize_url(request.url) if request is not None else "?"
        if stats is not None and request is not None:
            stats.count(stats.retries, request.url or "")
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "retrying %s %s after %s (attempt %d of %d, waiting %.1f s)",
            getattr(request, "method", "GET"),
            url,
            _describe(state),
            state.attempt_number,
            settings.max_attempts,
            wait,
        )

    retrying = Retrying(
        wait=retry_wait(settings),
        retry=retry_any(
            retry_if_status(DEFAULT_RETRY_STATUS),
            retry_if_exception_type((*DEFAULT_RETRY_EXCEPTIONS, RetryableError)),
        ),
        stop=stop_after_attempt(settings.max_attempts),
        reraise=True,
        # When attempts run out on a retryable *response*, hand that response back so the
        # caller's hook reports the real status and body.
        retry_error_callback=lambda state: state.outcome.result(),
        before_sleep=before_sleep,
    )
    session.send = retrying.wraps(one_attempt)  # type: ignore[method-assign]
    return session
