"""What the runs cost, end to end: every stored LLM call priced as genai-prices' own
`calc_price` prices it (computed here, independently of `pipelines.pricing`), on DuckDB and
PostgreSQL; unknown models left unpriced and listed; overrides re-pricing the whole history at
the next sync, even one with nothing new."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from genai_prices import Usage, calc_price

from pipelines.load import run_sync
from pipelines.pricing import PROVIDER_IDS, parse_overrides
from tests.conftest import DESTINATIONS
from tests.support.store import query

PLANTED = [
    # date, provider, model_id, input_tokens, output_tokens
    (datetime(2025, 6, 9, 23, 30, tzinfo=UTC), "OpenAI", "o3", 20_000, 5_000),
    (datetime(2025, 6, 10, 0, 30, tzinfo=UTC), "OpenAI", "o3", 20_000, 5_000),
    (datetime(2025, 6, 1, tzinfo=UTC), "Google", "gemini-1.5-pro", 300_000, 500),  # a tier
    (datetime(2025, 6, 1, tzinfo=UTC), "Google", "gemini-1.5-pro", 100_000, 500),
    (datetime(2025, 8, 1, tzinfo=UTC), "Local", "llama3:8b-instruct-q4", 1_000, 100),
    (datetime(2025, 8, 1, tzinfo=UTC), "OpenAI", "ft:gpt-4o:acme::unknown", 1_000, 100),
]


def usage_item(provider: str, model_id: str, tokens_in: int, tokens_out: int) -> dict:
    return {
        "provider": provider,
        "model_id": model_id,
        "tokens": tokens_in + tokens_out,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "is_local_model": provider == "Local",
        "should_charge": True,
    }


def plant(world, flow) -> list[str]:
    """Runs at chosen dates, each with one planted call; returns their run_ids."""
    ids = []
    for when, provider, model_id, tokens_in, tokens_out in PLANTED:
        run = world.add_run(
            flow.org_id,
            flow.flow_id,
            date=when,
            llm_usage=[usage_item(provider, model_id, tokens_in, tokens_out)],
        )
        ids.append(run["run_id"].lower())
    return ids


def expected_cost(provider, model_id, when, tokens_in, tokens_out) -> tuple | None:
    """(input, output, total) USD by genai-prices' public API (the total has a per-request fee
    on top for some models), or None when it cannot price the call."""
    pid = PROVIDER_IDS.get(provider, (provider or "").lower())
    if pid is None or model_id is None:
        return None
    try:
        price = calc_price(
            Usage(input_tokens=tokens_in or 0, output_tokens=tokens_out or 0),
            model_id,
            provider_id=pid,
            genai_request_timestamp=when,
        )
    except LookupError:
        return None
    return float(price.input_price), float(price.output_price), float(price.total_price)


def world_calls(world) -> list[tuple]:
    """Every call the world serves: (run_id, index, date, provider, model, in, out)."""
    calls = []
    for _, _, run in world.all_runs():
        when = world.run_instant(run["run_id"])
        for index, item in enumerate(run.get("llm_usage") or []):
            calls.append(
                (
                    run["run_id"].lower(),
                    index,
                    when,
                    item.get("provider"),
                    item.get("model_id"),
                    item.get("input_tokens"),
                    item.get("output_tokens"),
                )
            )
    return calls


def stored_costs(settings) -> dict[tuple[str, int], dict]:
    rows = query(
        settings,
        "select c.*, u._dlt_list_idx as idx from stackai.llm_usage_costs c"
        " join stackai.flow_runs__llm_usage u on u._dlt_id = c.call_id",
    )
    return {(r["run_id"], r["idx"]): r for r in rows}


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_every_call_costs_what_genai_prices_says_and_unknown_models_stay_unpriced(settings, world):
    flow = settings.flows[0]
    planted = plant(world, flow)
    report = run_sync(settings, now=world.now)
    assert report.ok, report
    stored = stored_costs(settings)
    calls = world_calls(world)
    assert len(stored) == len(calls) > len(PLANTED)
    unpriced = {}
    for run_id, index, when, provider, model_id, tokens_in, tokens_out in calls:
        row = stored[(run_id, index)]
        want = expected_cost(provider, model_id, when, tokens_in, tokens_out)
        if want is None:
            assert row["cost_usd"] is None and row["price_source"] is None, row
            key = (provider, model_id)
            unpriced[key] = unpriced.get(key, 0) + 1
            continue
        assert (row["input_cost_usd"], row["output_cost_usd"]) == pytest.approx(want[:2], rel=1e-12)
        assert row["cost_usd"] == pytest.approx(want[2], rel=1e-12)
        assert row["price_source"].startswith("genai-prices ")
    # the planted calls: o3's price changed at midnight UTC; the long Gemini call is tiered
    o3_before, o3_after = stored[(planted[0], 0)], stored[(planted[1], 0)]
    assert o3_before["cost_usd"] > o3_after["cost_usd"]
    long_call, short_call = stored[(planted[2], 0)], stored[(planted[3], 0)]
    assert long_call["input_cost_usd"] / 300_000 > short_call["input_cost_usd"] / 100_000
    assert stored[(planted[4], 0)]["cost_usd"] is None  # a local model
    assert stored[(planted[5], 0)]["cost_usd"] is None  # a model the library does not know

    assert report.calls_priced == len(calls)
    assert report.calls_unpriced == sum(unpriced.values()) >= 2
    listed = {
        (r["provider"], r["model_id"]): r
        for r in query(settings, "select * from stackai.unpriced_models")
    }
    assert {k: v["calls"] for k, v in listed.items()} == unpriced
    local = listed[("Local", "llama3:8b-instruct-q4")]
    assert local["input_tokens"] >= 1_000 and local["runs"] >= 1

    # nothing new: only the calls of the re-read tail are priced (as they load), not the history
    again = run_sync(settings, now=world.now)
    assert again.ok and again.calls_priced < len(calls) / 4


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_an_override_added_later_reprices_the_whole_history_at_the_next_sync(settings, world):
    flow = settings.flows[0]
    planted = plant(world, flow)
    assert run_sync(settings, now=world.now).ok
    total_calls = len(world_calls(world))

    overrides = parse_overrides(
        {
            "Local/llama3:8b-instruct-q4": {"input_per_mtok": 0.5, "output_per_mtok": 1},
            "OpenAI/o3": {"input_per_mtok": 1, "output_per_mtok": 4, "from": "2025-06-10"},
        }
    )
    report = run_sync(replace(settings, model_prices=tuple(overrides)), now=world.now)
    assert report.ok
    assert report.calls_priced == total_calls  # the prices changed: every call again
    stored = stored_costs(settings)
    local = stored[(planted[4], 0)]
    assert local["cost_usd"] == pytest.approx(1_000 * 0.5 / 1e6 + 100 * 1 / 1e6)
    assert local["price_source"] == "override"
    after = stored[(planted[1], 0)]
    assert after["cost_usd"] == pytest.approx(20_000 * 1 / 1e6 + 5_000 * 4 / 1e6)
    before = stored[(planted[0], 0)]  # dated before the override's day: the library's price
    assert before["price_source"].startswith("genai-prices ")
    assert before["cost_usd"] == pytest.approx(
        expected_cost("OpenAI", "o3", PLANTED[0][0], 20_000, 5_000)[2]
    )
    names = {r["model_id"] for r in query(settings, "select * from stackai.unpriced_models")}
    assert "llama3:8b-instruct-q4" not in names and "ft:gpt-4o:acme::unknown" in names

    # removing the override goes back to no price
    report = run_sync(settings, now=world.now)
    assert report.calls_priced == total_calls
    assert stored_costs(settings)[(planted[4], 0)]["cost_usd"] is None


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_costs_roll_up_by_day_model_user_and_sub_workflow_tree(settings, world):
    assert run_sync(settings, now=world.now).ok
    calls = {
        (r["run_id"]): r
        for r in query(
            settings,
            "select run_id, sum(cost_usd) as cost, count(*) - count(cost_usd) as unpriced"
            " from stackai.llm_usage_costs group by run_id",
        )
    }
    runs = query(settings, "select run_id, org_id, flow_id, run_date, user_id from stackai.runs")

    def cost(ids):
        return sum(calls[i]["cost"] or 0 for i in ids if i in calls)

    by_user: dict = {}
    by_day: dict = {}
    for run in runs:
        by_user.setdefault((run["org_id"], run["user_id"]), []).append(run["run_id"])
        by_day.setdefault((run["org_id"], run["flow_id"], run["run_date"]), []).append(
            run["run_id"]
        )
    for row in query(settings, "select org_id, user_id, cost_usd from stackai.user_usage"):
        assert row["cost_usd"] == pytest.approx(cost(by_user[(row["org_id"], row["user_id"])]))
    for row in query(
        settings, "select org_id, flow_id, run_date, cost_usd from stackai.daily_flow_runs"
    ):
        key = (row["org_id"], row["flow_id"], row["run_date"])
        assert row["cost_usd"] == pytest.approx(cost(by_day[key]))
    model_total = query(settings, "select sum(cost_usd) as c from stackai.daily_llm_usage")
    assert model_total[0]["c"] == pytest.approx(cost([r["run_id"] for r in runs]))

    trees: dict = {}
    for row in query(settings, "select run_id, root_run_id from stackai.run_trees"):
        if row["root_run_id"] is not None:
            trees.setdefault(row["root_run_id"], []).append(row["run_id"])
    assert any(len(members) > 1 for members in trees.values()), "precondition: sub-workflows"
    for row in query(
        settings, "select root_run_id, tree_cost_usd from stackai.run_trees where depth = 0"
    ):
        assert row["tree_cost_usd"] == pytest.approx(cost(trees[row["root_run_id"]]))


def test_a_reread_run_is_priced_again_and_calls_gone_lose_their_cost(settings, world):
    flow = settings.flows[0]
    run = world.add_run(
        flow.org_id,
        flow.flow_id,
        date=datetime(2025, 6, 1, tzinfo=UTC),
        llm_usage=[usage_item("OpenAI", "gpt-4o", 1_000, 10), usage_item("OpenAI", "o3", 5, 5)],
    )
    assert run_sync(settings, now=world.now).ok
    world.update_run(run["run_id"], llm_usage=[usage_item("OpenAI", "gpt-4o", 2_000, 10)])
    report = run_sync(replace(settings, since=datetime(2025, 5, 31, tzinfo=UTC)), now=world.now)
    assert report.ok and report.calls_priced >= 1
    rows = query(
        settings,
        "select * from stackai.llm_call_costs where run_id = %s",
        run["run_id"].lower(),
    )
    assert [r["input_tokens"] for r in rows] == [2_000]
    want = expected_cost("OpenAI", "gpt-4o", datetime(2025, 6, 1, tzinfo=UTC), 2_000, 10)
    assert rows[0]["cost_usd"] == pytest.approx(want[2])
