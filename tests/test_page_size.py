"""A server that serves fewer runs a page than asked (the contract gives `page_size` a minimum
and no maximum), silently or with a 422 naming its maximum: every run still loads, the cap is
learned, remembered and reported, and it costs one request per flow while unknown."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines.load import run_sync
from pipelines.stackai.dates import format_api_datetime
from tests.support.truth import assert_matches, expected_runs, loaded_runs


@pytest.fixture
def world():
    from datetime import UTC, datetime, timedelta

    from pipelines.simulator import World

    anchor = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    return World(seed=3, anchor=anchor, orgs=1, flows_per_org=2, runs_per_flow=140)


def flow_requests(world, mark: int = 0) -> list[dict]:
    return [r for r in world.requests[mark:] if r["path"].startswith("/analytics/org/")]


@pytest.mark.parametrize("how", ["silent", "422"])
def test_a_server_capping_its_pages_loses_no_run_and_the_cap_is_learned(settings, world, how):
    if how == "silent":
        world.page_size_cap = 40
    else:
        world.page_size_limit = 40
    settings = replace(settings, page_size=100)
    report = run_sync(settings, now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world))
    notes = [n for f in report.flows.values() for n in f.notes]
    assert any("at most 40 runs a page" in n for n in notes), notes

    # remembered: the next sync asks for 40 from its first request, and reads no page twice
    world.advance(3600)
    mark = len(world.requests)
    report = run_sync(settings, now=world.now)
    assert report.ok, report
    sizes = {int(r["params"]["page_size"]) for r in flow_requests(world, mark)}
    assert sizes == {40}, sizes
    assert_matches(
        loaded_runs(settings), expected_runs(world), world.now - settings.rules.max_open_run_age
    )


def test_a_server_honouring_page_size_costs_no_extra_request_once_it_served_a_full_page(
    settings, world
):
    settings = replace(settings, page_size=100)
    assert run_sync(settings, now=world.now).ok  # 140 runs a flow: a full page each
    mark = len(world.requests)
    report = run_sync(settings, now=world.now)  # nothing new: one short page a flow
    assert report.ok
    # the tail windows, those that end at the sync's pinned end; open runs older than the
    # lookback (the world's clock decides whether there are any) are rechecked in windows of
    # their own, around their dates
    tail = [
        r
        for r in flow_requests(world, mark)
        if r["params"]["end_date"] == format_api_datetime(world.now)
    ]
    assert len(tail) == len(settings.flows), tail


def test_small_flows_confirm_their_short_page_once_then_cost_one_request_a_sync(settings, world):
    from pipelines.simulator import World

    small = World(seed=4, anchor=world.anchor, orgs=1, flows_per_org=3, runs_per_flow=20)
    from pipelines.simulator import SimulatorServer
    from pipelines.stackai.flows import FlowRef

    with SimulatorServer(small) as server:
        flows = tuple(FlowRef(f.org_id, f.flow_id) for f in small.flows())
        local = replace(
            settings, base_url=server.url, api_key=small.api_key, flows=flows, page_size=100
        )
        assert run_sync(local, now=small.now).ok  # every flow under a page: confirmed once
        assert len(flow_requests(small)) <= 2 * len(flows)
        small.advance(600)
        mark = len(small.requests)
        assert run_sync(local, now=small.now).ok
        assert len(flow_requests(small, mark)) == len(flows)  # a tail shorter than confirmed
        # open runs past max_open_run_age that the clock completed stay as last seen (by design)
        horizon = small.now - local.rules.max_open_run_age
        assert_matches(loaded_runs(local), expected_runs(small), horizon)
