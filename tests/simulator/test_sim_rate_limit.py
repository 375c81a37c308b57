"""A rate-limited API: `World.concurrency_limit`, over real HTTP.

Requests to the flows endpoint above the limit in flight are answered 429. The overlaps the
tests need are made certain rather than timed: `held` keeps requests in flight inside
`World.before_page` until the test lets them go (it waits for each to arrive, not for a time);
only the `slow` test relies on a delay, the fault's own 0.5 s, as the window in which seven
requests released together by a barrier all arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress

import pytest
import requests

from pipelines.simulator import SimulatorServer, World
from pipelines.simulator.faults import RATE_LIMITED

from .conftest import ANCHOR, Api

SUMMARY_PATH = "/organizations/analytics/projects-run-summary"
WAIT = 10.0
"""Seconds a test waits for a held request to arrive (a bound, never reached when it works)."""


def flows_path(world: World, index: int = 0) -> str:
    flow = world.flows()[index]
    return f"/analytics/org/{flow.org_id}/flows/{flow.flow_id}"


def first_page(world: World, index: int = 0) -> list[dict]:
    flow = world.flows()[index]
    return world.query_runs(flow.org_id, flow.flow_id)


@contextmanager
def held(api: Api, count: int) -> Iterator[list[Future]]:
    """`count` requests of the first flow, each on its own connection, in flight (stopped in
    `before_page`) until the block ends; yields their futures (`requests.Response`s)."""
    world = api.server.world
    gate, arrived = threading.Event(), threading.Semaphore(0)

    def hold(org_id: str, flow_id: str, params: dict) -> None:
        arrived.release()
        gate.wait(WAIT)

    def fetch() -> requests.Response:
        client = Api(api.server)
        try:
            return client.get(flows_path(world))
        finally:
            client.session.close()

    world.before_page = hold
    pool = ThreadPoolExecutor(count)
    try:
        futures = [pool.submit(fetch) for _ in range(count)]
        for _ in range(count):
            assert arrived.acquire(timeout=WAIT), "a held request never arrived"
        world.before_page = None  # what the block sends is not held
        yield futures
    finally:
        world.before_page = None
        gate.set()
        pool.shutdown(wait=True)


@pytest.fixture
def limited(world: World) -> World:
    world.concurrency_limit = 4
    return world


def test_above_the_limit_in_flight_a_request_gets_429(api: Api, limited: World):
    with held(api, 4) as futures:
        assert limited.in_flight == 4
        refused = [api.get(flows_path(limited, index)) for index in (0, 1, 2)]
        assert limited.in_flight == 4
    for response in refused:
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/json"
        assert "retry-after" not in response.headers
        assert response.json() == {"detail": "Too Many Requests"}
    for future in futures:
        response = future.result()
        assert response.status_code == 200 and response.json() == first_page(limited)
    assert (limited.rate_limited, limited.max_in_flight, limited.in_flight) == (3, 4, 0)
    logged = sorted((r["status"], r["fault"] or "") for r in limited.requests)
    assert logged == [(200, "")] * 4 + [(429, RATE_LIMITED)] * 3
    assert api.get(flows_path(limited)).status_code == 200  # the slots are free again


def test_below_the_limit_requests_are_served(api: Api, limited: World):
    with held(api, 3):
        response = api.get(flows_path(limited, 1))
        assert response.status_code == 200 and response.json() == first_page(limited, 1)
    assert (limited.rate_limited, limited.max_in_flight) == (0, 4)


@pytest.mark.parametrize(
    ("setting", "header"),
    [(2, "2"), (0.5, "0.5"), ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT")],
)
def test_retry_after_is_sent_with_the_429(api: Api, world: World, setting, header: str):
    world.concurrency_limit, world.rate_limit_retry_after = 1, setting
    assert world.rate_limit_retry_after == header
    with held(api, 1):
        response = api.get(flows_path(world))
    assert response.status_code == 429 and response.headers["retry-after"] == header
    assert response.json() == {"detail": "Too Many Requests"}


def test_the_limit_comes_before_auth_and_spares_the_org_summary(api: Api, world: World):
    world.concurrency_limit = 1
    with held(api, 1):
        world.inject("status", status=503)
        assert api.get(flows_path(world), api_key="sk-wrong").status_code == 429
        assert api.get("/analytics/org/no-org/flows/no-flow").status_code == 429
        assert api.get(SUMMARY_PATH).status_code == 200
    assert world.rate_limited == 2
    assert len(world.pending_faults()) == 1  # a refused request takes no fault
    assert api.get(flows_path(world)).status_code == 503


def test_a_slow_response_is_in_flight_for_its_whole_delay():
    world = World(
        seed=3,
        anchor=ANCHOR,
        runs_per_flow=60,
        fault_rate=1.0,
        fault_kinds=("slow:0.5",),
        concurrency_limit=4,
    )
    with SimulatorServer(world) as server:
        clients = [Api(server) for _ in range(7)]
        for client in clients:  # connections open before the burst (the summary: no limit)
            assert client.get(SUMMARY_PATH).status_code == 200
        start = threading.Barrier(len(clients))

        def fetch(client: Api) -> int:
            start.wait(WAIT)
            return client.get(flows_path(world)).status_code

        with ThreadPoolExecutor(len(clients)) as pool:
            statuses = sorted(pool.map(fetch, clients))
        for client in clients:
            client.session.close()
    assert statuses == [200] * 4 + [429] * 3
    assert (world.rate_limited, world.max_in_flight, world.in_flight) == (3, 4, 0)
    logged = sorted((r["status"], r["fault"]) for r in world.requests if "flows" in r["path"])
    assert logged == [(200, "slow")] * 4 + [(429, RATE_LIMITED)] * 3


@pytest.mark.parametrize("kind", ["reset", "truncated", "bad_json"])
def test_a_faulty_response_frees_its_slot(api: Api, world: World, kind: str):
    world.concurrency_limit = 1
    world.inject(kind)
    with suppress(requests.RequestException):  # reset, truncated (test_sim_faults has them)
        api.get(flows_path(world))
    assert api.get(flows_path(world)).status_code == 200
    assert (world.rate_limited, world.max_in_flight, world.in_flight) == (0, 1, 0)


def test_counted_without_a_limit_and_reset(api: Api, world: World):
    assert world.concurrency_limit is None and world.rate_limit_retry_after is None
    with held(api, 3):
        assert api.get(flows_path(world)).status_code == 200
        assert world.max_in_flight == 4
        world.reset_concurrency_counters()
        assert (world.rate_limited, world.max_in_flight) == (0, 3)
    assert world.in_flight == 0


def test_settings_are_validated():
    world = World(runs_per_flow=1, concurrency_limit=2, rate_limit_retry_after="7")
    assert (world.concurrency_limit, world.rate_limit_retry_after) == (2, "7")
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError):
            world.concurrency_limit = bad
    for bad in ("1\r\nX-Evil: 1", "\u00e9"):
        with pytest.raises(ValueError):
            world.rate_limit_retry_after = bad
    with pytest.raises(ValueError):
        World(runs_per_flow=1, concurrency_limit=0)
    world.concurrency_limit = None
    assert world.concurrency_limit is None
