"""The main job end to end: the simulator over real HTTP, a real DuckDB file, real dlt state."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import duckdb
import pytest

from pipelines.load import open_pipeline, run_sync
from pipelines.stackai.flows import FlowRef
from tests.conftest import DESTINATIONS
from tests.support.truth import assert_matches, expected_runs, loaded_runs


def flow_state(settings, flow: FlowRef) -> dict:
    pipeline = open_pipeline(settings.target())
    return pipeline.state["sources"]["stackai"]["resources"][str(flow)]


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_full_sync_equals_the_ground_truth(settings, world):
    report = run_sync(settings, now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world))
    for flow in settings.flows:
        assert report.flows[str(flow)].runs == world.run_count(flow.org_id, flow.flow_id)


def test_column_types_follow_the_contract(settings, world):
    assert run_sync(settings, now=world.now).ok
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        types = dict(
            con.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = 'stackai' and table_name = 'flow_runs'"
            ).fetchall()
        )
    assert types["date"] == "TIMESTAMP WITH TIME ZONE"
    assert types["latency"] == "DOUBLE"
    assert types["total_tokens"] == "BIGINT"
    assert types["is_flow_successful"] == "BOOLEAN"
    assert not [c for c in types if "__v_" in c], "variant columns appeared"


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_second_sync_with_nothing_new_adds_no_rows_and_one_request_per_flow(settings, world):
    first = run_sync(settings, now=world.now)
    assert first.ok
    assert all(f.new_runs == f.runs > 0 for f in first.flows.values())
    before = loaded_runs(settings)
    requests_before = world.request_count
    report = run_sync(settings, now=world.now)
    assert report.ok
    assert all(f.new_runs == 0 < f.runs for f in report.flows.values())  # the tail, re-read
    assert loaded_runs(settings) == before
    # the tail (1 hour) fits in one page; open runs inside the tail need no re-check
    rechecks = sum(f.rechecks for f in report.flows.values())
    # plus one: the org summary, read once per sync for the flows' names
    assert world.request_count - requests_before == len(settings.flows) + rechecks + 1


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_new_runs_between_syncs_are_added(settings, world):
    assert run_sync(settings, now=world.now).ok
    world.advance(3 * 3600)
    assert run_sync(settings, now=world.now).ok
    # advance() also completes open runs, some older than max_open_run_age (7 days)
    horizon = world.now - settings.rules.max_open_run_age
    assert_matches(loaded_runs(settings), expected_runs(world), horizon)


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_run_that_completes_between_syncs_is_updated_in_place(settings, world):
    flow = settings.flows[0]
    pending = world.add_run(
        flow.org_id, flow.flow_id, date=world.now - timedelta(minutes=10), state="PENDING"
    )
    assert run_sync(settings, now=world.now).ok
    row = loaded_runs(settings)[pending["run_id"].lower()]
    assert row["state"] == "PENDING" and row["llm_usage"] == []

    done = world.complete_run(pending["run_id"])
    assert done["llm_usage"], "the simulator should fill in usage on completion"
    assert run_sync(settings, now=world.now).ok
    loaded = loaded_runs(settings)
    assert loaded[pending["run_id"].lower()]["state"] == done["state"]
    assert_matches(loaded, expected_runs(world))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_usage_rows_of_a_refetched_run_are_replaced_not_added(settings, world):
    flow = settings.flows[0]
    run = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(minutes=5))
    world.update_run(
        run["run_id"],
        llm_usage=[
            {
                "provider": "OpenAI",
                "model_id": "gpt-4o",
                "tokens": 5,
                "input_tokens": 3,
                "output_tokens": 2,
                "is_local_model": False,
                "should_charge": True,
            },
            {
                "provider": "Anthropic",
                "model_id": "claude",
                "tokens": 7,
                "input_tokens": 4,
                "output_tokens": 3,
                "is_local_model": False,
                "should_charge": True,
            },
        ],
    )
    assert run_sync(settings, now=world.now).ok
    assert len(loaded_runs(settings)[run["run_id"].lower()]["llm_usage"]) == 2
    world.update_run(run["run_id"], llm_usage=[world.get_run(run["run_id"])["llm_usage"][1]])
    assert run_sync(settings, now=world.now).ok
    loaded = loaded_runs(settings)
    assert [u["model_id"] for u in loaded[run["run_id"].lower()]["llm_usage"]] == ["claude"]
    assert_matches(loaded, expected_runs(world))
    # down to none: no row is left to replace the old one, which must still go
    world.update_run(run["run_id"], llm_usage=[])
    assert run_sync(settings, now=world.now).ok
    loaded = loaded_runs(settings)  # also checks no usage row lost its run
    assert loaded[run["run_id"].lower()]["llm_usage"] == []
    assert_matches(loaded, expected_runs(world))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_two_flows_keep_their_own_cursors(settings, world):
    first, second = settings.flows[0], settings.flows[1]
    only_first = replace(settings, flows=(first,))
    assert run_sync(only_first, now=world.now).ok
    cursor_first = flow_state(settings, first)["cursor"]
    assert (
        str(second) not in open_pipeline(settings.target()).state["sources"]["stackai"]["resources"]
    )

    world.advance(2 * 3600)
    only_second = replace(settings, flows=(second,))
    assert run_sync(only_second, now=world.now).ok
    assert flow_state(settings, first)["cursor"] == cursor_first  # untouched
    newest_second = max(expected_runs(world, [second]).values(), key=lambda r: r["date"])["date"]
    assert flow_state(settings, second)["cursor"] == newest_second.isoformat()


@pytest.mark.parametrize("parent_style", ["flat", "nested"])
def test_parent_runs_land_flat_whatever_the_api_sends(settings, world, parent_style):
    world.parent_style = parent_style
    assert run_sync(settings, now=world.now).ok
    loaded = loaded_runs(settings)
    children = [r for r in loaded.values() if r["parent_run_id"]]
    assert children, "the simulator should serve sub-workflow runs"
    for child in children:
        parent = loaded[child["parent_run_id"]]
        assert parent["flow_id"] == child["parent_project_id"] != child["flow_id"]
    assert_matches(loaded, expected_runs(world))


@pytest.mark.parametrize("sort_order", ["oldest_first", "unordered"])
def test_any_sort_order_gives_the_same_table(settings, world, sort_order):
    world.sort_order = sort_order
    assert run_sync(settings, now=world.now).ok
    assert_matches(loaded_runs(settings), expected_runs(world))


def test_an_unknown_flow_fails_alone(settings, world):
    ghost = FlowRef(settings.flows[0].org_id, "no-such-flow")
    report = run_sync(replace(settings, flows=(*settings.flows, ghost)), now=world.now)
    assert not report.ok
    assert [f.flow for f in report.failed] == [str(ghost)]
    assert "flow not found" in report.flows[str(ghost)].error
    assert_matches(loaded_runs(settings), expected_runs(world))


def test_a_rejected_key_fails_every_flow_and_names_them(settings, world):
    report = run_sync(replace(settings, api_key="sk-wrong"), now=world.now)
    assert not report.ok and len(report.failed) == len(settings.flows)
    for flow in settings.flows:
        error = report.flows[str(flow)].error
        assert error.startswith("API key rejected (HTTP 401)")
        assert flow.org_id in error and flow.flow_id in error
        assert "sk-wrong" not in error


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_full_refresh_counts_as_new_only_runs_not_stored_before(settings, world):
    assert run_sync(settings, now=world.now).ok
    flow = settings.flows[0]
    world.advance(120, new_runs=False)  # the one new run is dated after every stored one
    added = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(seconds=30))
    report = run_sync(replace(settings, full_refresh=True), now=world.now)
    assert report.ok
    counts = {name: (f.runs, f.new_runs) for name, f in report.flows.items()}
    assert counts[str(flow)][1] == 1 and added["run_id"]
    assert all(new == 0 < runs for name, (runs, new) in counts.items() if name != str(flow))
