"""Adaptive concurrency (`pipelines/stackai/limit.py`): the requests a sync keeps in flight halve
when the API throttles (HTTP 429/503) and grow back after; the summary and `--json` say how far
it backed off. The limit's rules are tested directly; syncs go over real HTTP to the simulator
with its rate-limit fault (`status` 429)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pipelines.load import run_sync
from pipelines.stackai.http import HttpSettings
from pipelines.stackai.limit import TIMED_OUT, AdaptiveLimit
from tests.conftest import FAST_HTTP
from tests.support.cli import stackai_runs, sync_args_for
from tests.support.truth import assert_matches, expected_runs, loaded_runs

# ---------------------------------------------------------------------------- the limit


def test_a_throttle_halves_the_limit_once_per_round():
    limit = AdaptiveLimit(8)
    tickets = [limit.acquire() for _ in range(8)]
    limit.release(tickets[0], 429)
    assert limit.limit == 4
    # the other requests were in flight when the limit was cut: their throttles say nothing new
    for ticket in tickets[1:4]:
        limit.release(ticket, 429)
    assert limit.limit == 4
    for ticket in tickets[4:]:
        limit.release(ticket, 200)
    later = limit.acquire()  # sent after the cut
    limit.release(later, 429)
    assert limit.limit == 2
    figures = limit.figures()
    assert (figures.lowest, figures.throttled, figures.backoffs) == (2, 5, 2)


def test_the_limit_never_falls_below_one_and_grows_back_by_one_a_round():
    limit = AdaptiveLimit(4)
    for _ in range(5):
        limit.release(limit.acquire(), 503)
    assert limit.limit == 1
    answers = 0
    while limit.limit < 4:
        limit.release(limit.acquire(), 200)
        answers += 1
    # each answer adds 1/limit: 1 -> 2 -> 2.5 -> 2.9 -> 3.24 -> 3.55 -> 3.84 -> 4 (capped)
    assert answers == 7
    limit.release(limit.acquire(), 200)
    assert limit.limit == 4 and limit.figures().final == 4


def test_a_timeout_counts_as_a_throttle():
    limit = AdaptiveLimit(8)
    limit.release(limit.acquire(), TIMED_OUT)
    assert limit.limit == 4 and limit.figures().throttled == 1


def test_errors_without_a_response_and_other_statuses_do_not_cut_the_limit():
    limit = AdaptiveLimit(4)
    for status in (None, 500, 502, 404, 200):
        limit.release(limit.acquire(), status)
    figures = limit.figures()
    assert (figures.lowest, figures.throttled, figures.backoffs) == (4, 0, 0)
    assert figures.describe() is None


def test_a_fixed_limit_counts_throttles_and_stays():
    limit = AdaptiveLimit(6, adaptive=False)
    for _ in range(3):
        limit.release(limit.acquire(), 429)
    figures = limit.figures()
    assert (figures.lowest, figures.final, figures.throttled) == (6, 6, 3)
    assert "adaptive_concurrency is off" in figures.describe()


def test_the_limit_rejects_a_ceiling_below_one():
    with pytest.raises(ValueError, match="maximum must be >= 1"):
        AdaptiveLimit(0)


# ------------------------------------------------------------------ syncs over real HTTP


def throttled_settings(settings, adaptive: bool = True):
    http = replace(FAST_HTTP, max_attempts=5, adaptive_concurrency=adaptive)
    return replace(settings, http=http)


@pytest.mark.parametrize("adaptive", [True, False])
def test_a_throttled_sync_backs_off_loads_everything_and_says_so(settings, world, adaptive):
    world.inject("status", status=429, retry_after="0", count=5)
    report = run_sync(throttled_settings(settings, adaptive), now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world))
    figures = report.concurrency
    served = [r for r in world.requests if r["status"] == 429]
    assert figures.throttled == len(served) == 5
    assert figures.maximum == settings.http.max_concurrent_requests
    if adaptive:
        assert 1 <= figures.lowest <= figures.maximum // 2 and figures.backoffs >= 1
        assert "backed off" in figures.describe()
    else:
        assert figures.lowest == figures.final == figures.maximum and figures.backoffs == 0


def test_an_unthrottled_sync_keeps_its_limit(settings, world):
    report = run_sync(settings, now=world.now)
    assert report.ok
    figures = report.concurrency
    assert (figures.throttled, figures.lowest) == (0, HttpSettings().max_concurrent_requests)


def test_the_cli_summary_and_json_report_the_backoff(settings, world):
    world.inject("status", status=429, retry_after="0", count=4)
    env = {
        "STACKAI_API_KEY": settings.api_key,
        "RUNTIME__REQUEST_MAX_ATTEMPTS": "5",
    }
    done = stackai_runs(*sync_args_for(settings), "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["concurrency"]["throttled"] == 4
    assert summary["concurrency"]["lowest"] < summary["concurrency"]["maximum"]
    assert summary["concurrency"]["adaptive"] is True

    world.inject("status", status=429, retry_after="0", count=2)
    env["SOURCES__STACKAI__ADAPTIVE_CONCURRENCY"] = "false"
    done = stackai_runs(*sync_args_for(settings), env=env)
    assert done.returncode == 0, done.stderr
    assert "throttled 2 requests" in done.stdout and "adaptive_concurrency is off" in done.stdout


def test_against_an_api_that_allows_two_requests_at_once_the_sync_adapts_and_loads_all(
    settings, world
):
    """The simulator's rate-limited API: above 2 requests in flight (each 50 ms late) it answers
    429 with Retry-After 0. Six flows read as time slices start far above that: the limit is cut,
    every 429 is counted, and the data equals the ground truth."""
    world.concurrency_limit = 2
    world.rate_limit_retry_after = 0
    world.fault_rate, world.fault_kinds = 1.0, ("slow:0.05",)
    report = run_sync(throttled_settings(settings), now=world.now)
    assert report.ok, report
    world.fault_rate = 0.0
    assert_matches(loaded_runs(settings), expected_runs(world))
    figures = report.concurrency
    assert figures.throttled == world.rate_limited > 0
    assert figures.backoffs >= 1 and figures.lowest <= figures.maximum // 2
    assert world.max_in_flight >= 2


def test_an_api_that_slows_down_past_the_read_timeout_is_backed_off_from(settings, world):
    """Two answers come later than the read timeout: both count as throttles, the limit is cut,
    the retries load everything."""
    world.inject("slow", seconds=1.0, count=2)
    http = replace(FAST_HTTP, read_timeout=0.3, max_attempts=5)
    report = run_sync(replace(settings, http=http), now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world))
    figures = report.concurrency
    assert figures.throttled == 2 and figures.backoffs >= 1
