"""The retry wait and the request limit of the shared session, as pure behaviour."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from tenacity import RetryCallState, Retrying

from pipelines.stackai.client import describe_transport_error
from pipelines.stackai.http import HttpSettings, make_session, redact, retry_wait

SETTINGS = HttpSettings(backoff_factor=2, max_retry_delay=30, jitter=0.5)


def state_after(attempt: int, retry_after: str | None) -> RetryCallState:
    response = requests.Response()
    response.status_code = 429
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_result(response)
    return state


@pytest.mark.parametrize(
    ("attempt", "retry_after", "low", "high"),
    [
        (1, None, 2, 2.5),  # backoff 2 * 2**0
        (3, None, 8, 8.5),  # backoff 2 * 2**2
        (9, None, 30, 30.5),  # capped
        (1, "7", 7, 7.5),  # the server's seconds
        (1, "3600", 30, 30.5),  # capped
        (1, "0", 2, 2.5),  # "now" falls back to backoff: no tight loop
        (1, "-5", 2, 2.5),
        (1, "soon", 2, 2.5),  # unparseable
    ],
)
def test_wait_honours_retry_after_within_the_cap_and_never_spins(attempt, retry_after, low, high):
    wait = retry_wait(SETTINGS)
    for _ in range(20):
        assert low <= wait(state_after(attempt, retry_after)) <= high


def test_wait_accepts_an_http_date():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 18 <= retry_wait(SETTINGS)(state_after(1, when)) <= 20.5


def test_the_request_limit_bounds_requests_in_flight(monkeypatch):
    in_flight, peak, lock = 0, 0, threading.Lock()
    # Each request waits for a partner: with the limit, exactly two are inside at a time; without
    # it, all eight would pile up at the barrier.
    partner = threading.Barrier(2, timeout=10)

    def fake_send(self, request, **kwargs):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        partner.wait()
        with lock:
            in_flight -= 1
        response = requests.Response()
        response.status_code = 200
        return response

    monkeypatch.setattr(requests.Session, "send", fake_send)
    session = make_session(HttpSettings(max_concurrent_requests=2))
    threads = [
        threading.Thread(target=session.get, args=(f"https://example.invalid/{i}",))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2


@pytest.mark.parametrize(
    "text",
    [
        "ValueError: Invalid header value b'Bearer sk-sim-7a3f0\\r'",
        'headers {"Authorization": "Bearer sk-sim-7a3f0"}',
        "authorization: bearer sk-sim-7a3f0 and more",
    ],
)
def test_bearer_tokens_are_redacted_from_messages(text):
    assert "sk-sim-7a3f0" not in redact(text)
    assert "***" in redact(text)


def test_connection_failures_read_as_one_short_line_naming_the_host():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens here once closed
    try:
        requests.get(f"http://127.0.0.1:{port}/analytics", timeout=3)
    except requests.RequestException as exc:
        text = describe_transport_error(exc)
    assert text is not None and text.startswith(f"cannot reach 127.0.0.1:{port}")
    assert "refused" in text.lower() and "Max retries" not in text and len(text) < 160
    assert describe_transport_error(ValueError("x")) is None
