"""The simulated world as ground truth: determinism, realism, mutators and the clock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.simulator import World
from pipelines.simulator.contract import (
    OPEN_STATES,
    PARENT_KEYS,
    RUN_KEYS,
    RanByType,
    RunType,
    WorkflowState,
)

from .conftest import ANCHOR

REQUIRED_KEYS = {
    "run_id",
    "date",
    "is_flow_successful",
    "state",
    "error",
    "latency",
    "total_tokens",
    "user_id",
    "inputs",
    "outputs",
    "llms",
    "feedback",
}


def fingerprint(world: World) -> str:
    return hashlib.sha256(json.dumps(world.all_runs()).encode()).hexdigest()


def parse_date(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class TestDeterminism:
    def test_same_seed_same_bytes(self):
        first = World(seed=11, anchor=ANCHOR, runs_per_flow=80)
        second = World(seed=11, anchor=ANCHOR, runs_per_flow=80)
        assert fingerprint(first) == fingerprint(second)
        assert first.api_key == second.api_key
        assert first.org_api_keys == second.org_api_keys

    def test_same_seed_same_bytes_across_processes(self):
        """No dependence on str hashing (PYTHONHASHSEED) or on anything outside the seed."""
        script = (
            "import hashlib, json; from datetime import datetime, UTC;"
            "from pipelines.simulator import World;"
            "w = World(seed=5, anchor=datetime(2026, 11, 29, 12, tzinfo=UTC), runs_per_flow=50);"
            "w.advance(7200);"
            "print(hashlib.sha256(json.dumps(w.all_runs()).encode()).hexdigest())"
        )
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                env={**os.environ, "PYTHONHASHSEED": hash_seed},
                stdout=subprocess.PIPE,
                text=True,
            )
            for hash_seed in ("1", "2")
        ]
        digests = [process.communicate(timeout=30)[0].strip() for process in processes]
        assert all(process.returncode == 0 for process in processes)
        assert len(digests[0]) == 64 and digests[0] == digests[1]

    def test_different_seed_different_data(self):
        first = World(seed=1, anchor=ANCHOR, runs_per_flow=30)
        second = World(seed=2, anchor=ANCHOR, runs_per_flow=30)
        assert fingerprint(first) != fingerprint(second)
        assert {f.flow_id for f in first.flows()}.isdisjoint(f.flow_id for f in second.flows())
        assert first.api_key != second.api_key

    def test_sizes_do_not_change_identities(self):
        small = World(seed=4, anchor=ANCHOR, runs_per_flow=10)
        large = World(seed=4, anchor=ANCHOR, runs_per_flow=100)
        assert small.flows() == large.flows()
        assert small.api_key == large.api_key

    def test_advance_is_deterministic(self):
        worlds = [World(seed=9, anchor=ANCHOR, runs_per_flow=20) for _ in range(2)]
        for world in worlds:
            world.advance(3 * 3600, late_feedback=True)
        assert fingerprint(worlds[0]) == fingerprint(worlds[1])

    def test_default_anchor_is_an_hour_before_now_floored_to_the_minute(self):
        before = datetime.now(UTC)
        world = World(runs_per_flow=1)
        assert world.anchor.tzinfo is not None and world.anchor.second == 0
        assert timedelta(minutes=59) <= before - world.anchor <= timedelta(minutes=61)
        assert world.now == world.anchor


@pytest.fixture(scope="module")
def rows(big_world: World) -> list[dict]:
    return [run for _, _, run in big_world.all_runs()]


class TestShapeAndRealism:
    def test_sizes(self, big_world: World, rows: list[dict]):
        assert len(big_world.flows()) == 6
        per_flow = Counter((org, flow) for org, flow, _ in big_world.all_runs())
        assert all(280 <= count <= 520 for count in per_flow.values())
        assert len(set(per_flow.values())) > 1, "flows should differ in size"
        assert len({run["run_id"] for run in rows}) == len(rows)

    def test_every_enum_value_occurs(self, rows: list[dict]):
        assert {run["state"] for run in rows} == set(WorkflowState)
        assert {run.get("run_type") for run in rows} - {None} == set(RunType)
        assert {run.get("ran_by_type") for run in rows} - {None} == set(RanByType)

    def test_keys_required_present_and_in_contract_order(self, rows: list[dict]):
        for run in rows:
            assert run.keys() >= REQUIRED_KEYS
            assert list(run) == [key for key in RUN_KEYS if key in run]
        assert any("llm_usage" not in run for run in rows), "old runs lack optional keys"
        assert any(run.get("parent_run_id", 1) is None for run in rows)
        assert any("parent_run_id" not in run and "run_type" in run for run in rows)

    def test_ids_are_lowercase_uuid4(self, big_world: World, rows: list[dict]):
        ids = [run["run_id"] for run in rows] + [f.flow_id for f in big_world.flows()]
        ids += [f.org_id for f in big_world.flows()]
        for value in ids:
            assert str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4

    def test_outcome_consistent_with_state(self, rows: list[dict]):
        for run in rows:
            if run["state"] in OPEN_STATES:
                assert run["is_flow_successful"] is None
                assert run["latency"] is None and run["outputs"] is None
                assert run["total_tokens"] == 0 and not run.get("llm_usage")
            else:
                assert run["is_flow_successful"] is (run["state"] == "COMPLETED")
                assert run["latency"] > 0
            if run["state"] == "FAILED":
                assert run["error"]
            if "llm_usage" in run:
                known = [u["tokens"] for u in run["llm_usage"] if u["tokens"] is not None]
                assert run["total_tokens"] == sum(known)

    def test_failed_errors_vary(self, rows: list[dict]):
        errors = [run["error"] for run in rows if run["state"] == "FAILED"]
        assert len(set(errors)) > len(errors) / 2

    def test_open_runs_among_newest_and_older(self, big_world: World, rows: list[dict]):
        instants = [
            big_world.run_instant(run["run_id"]) for run in rows if run["state"] in OPEN_STATES
        ]
        assert any(big_world.anchor - i < timedelta(minutes=10) for i in instants)
        assert any(big_world.anchor - i > timedelta(days=1) for i in instants)

    def test_usage_records(self, rows: list[dict]):
        usage = [u for run in rows for u in run.get("llm_usage", [])]
        assert {len(run["llm_usage"]) for run in rows if "llm_usage" in run} == {0, 1, 2, 3, 4}
        assert any(u["tokens"] is None for u in usage)
        for u in usage:
            if u["tokens"] is not None:
                assert u["tokens"] == u["input_tokens"] + u["output_tokens"]
            assert u["should_charge"] is (u["connection_origin"] == "stack_ai")
        assert {u["connection_origin"] for u in usage} >= {"stack_ai", "external_db"}
        assert len({u["provider"] for u in usage}) >= 4

    def test_free_text_fields_mix_json_and_plain_text(self, rows: list[dict]):
        def is_json(text: str) -> bool:
            try:
                json.loads(text)
            except ValueError:
                return False
            return True

        inputs = [run["inputs"] for run in rows]
        assert any(is_json(text) for text in inputs) and not all(is_json(t) for t in inputs)
        feedback = [run["feedback"] for run in rows if run["feedback"] is not None]
        assert any(is_json(text) for text in feedback) and not all(is_json(t) for t in feedback)
        assert sum(run["feedback"] is None for run in rows) > 0.8 * len(rows)
        texts = " ".join(inputs + [run["outputs"] or "" for run in rows])
        assert not texts.isascii()
        assert any(ord(char) > 0xFFFF for char in texts), "an emoji (astral plane) somewhere"
        for run in rows:
            assert isinstance(json.loads(run["llms"]), list)

    def test_latency_sometimes_integral_as_int_and_as_float(self, rows: list[dict]):
        latencies = [run["latency"] for run in rows if run["latency"] is not None]
        assert any(type(value) is int for value in latencies)
        assert any(type(value) is float and value.is_integer() for value in latencies)
        assert all(type(value) in (int, float) for value in latencies)

    def test_user_ids_from_small_pool_some_null(self, big_world: World):
        for org_id in big_world.org_ids():
            users = Counter(run["user_id"] for org, _, run in big_world.all_runs() if org == org_id)
            assert None in users
            assert 3 <= len(users) <= 12

    def test_date_styles_vary_and_denote_the_instant(self, big_world: World, rows: list[dict]):
        def style(text: str) -> str:
            if text.endswith("Z"):
                return "Z"
            if text[-6] in "+-" and text[-3] == ":":
                return text[-6:]
            return "naive." if "." in text else "naive"

        styles = Counter(style(run["date"]) for run in rows)
        assert {"naive.", "naive", "Z", "+00:00", "+02:00"} <= styles.keys()
        assert styles.most_common(1)[0][0] == "naive."
        for run in rows:
            assert parse_date(run["date"]) == big_world.run_instant(run["run_id"])

    def test_history_within_30_days_before_anchor(self, big_world: World, rows: list[dict]):
        instants = [big_world.run_instant(run["run_id"]) for run in rows]
        assert all(ANCHOR - timedelta(days=30) <= i <= ANCHOR for i in instants)
        assert max(instants) - min(instants) > timedelta(days=25)

    def test_generation_is_fast(self):
        import time

        started = time.perf_counter()
        World(seed=123, anchor=ANCHOR)
        assert time.perf_counter() - started < 1.0


class TestSubWorkflows:
    def test_parents_are_real_runs_in_another_flow_of_the_same_org(self, big_world: World):
        located = {run["run_id"]: (org, flow) for org, flow, run in big_world.all_runs()}
        names = {f.flow_id: f.name for f in big_world.flows()}
        children = [
            (org, flow, run) for org, flow, run in big_world.all_runs() if run.get("parent_run_id")
        ]
        assert len(children) > 50
        for org, flow, run in children:
            assert run["run_type"] == "sub_workflow"
            parent_org, parent_flow = located[run["parent_run_id"]]
            assert parent_org == org and parent_flow != flow
            assert run["parent_project_id"] == parent_flow
            assert run["parent_project_name"] == names[parent_flow]
            delay = big_world.run_instant(run["run_id"]) - big_world.run_instant(
                run["parent_run_id"]
            )
            assert timedelta(0) < delay <= timedelta(seconds=30)

    def test_only_sub_workflow_runs_have_parents(self, big_world: World):
        for _, _, run in big_world.all_runs():
            assert (run.get("run_type") == "sub_workflow") == bool(run.get("parent_run_id"))

    def test_nested_parent_style(self):
        flat = World(seed=3, anchor=ANCHOR, runs_per_flow=60)
        nested = World(seed=3, anchor=ANCHOR, runs_per_flow=60, parent_style="nested")
        pairs = list(zip(flat.all_runs(), nested.all_runs(), strict=True))
        with_parent = 0
        for (_, _, f), (_, _, n) in pairs:
            assert not set(PARENT_KEYS) & n.keys()
            if f.get("parent_run_id"):
                with_parent += 1
                assert n["parent"] == {
                    "run_id": f["parent_run_id"],
                    "project_id": f["parent_project_id"],
                    "project_name": f["parent_project_name"],
                }
            elif "parent_run_id" in f:
                assert n["parent"] is None
            else:
                assert "parent" not in n
            assert {k: v for k, v in f.items() if k not in PARENT_KEYS} == {
                k: v for k, v in n.items() if k != "parent"
            }
        assert with_parent > 0

    def test_one_flow_per_org_has_no_sub_workflows(self):
        world = World(seed=1, anchor=ANCHOR, flows_per_org=1, runs_per_flow=50)
        assert all(run.get("run_type") != "sub_workflow" for _, _, run in world.all_runs())


class TestSortOrder:
    @pytest.mark.parametrize("order", ["newest_first", "oldest_first", "unordered"])
    def test_runs_follow_sort_order(self, world: World, order: str):
        world.sort_order = order
        flow = world.flows()[0]
        instants = [world.run_instant(r["run_id"]) for r in world.runs(flow.org_id, flow.flow_id)]
        if order == "newest_first":
            assert instants == sorted(instants, reverse=True)
        elif order == "oldest_first":
            assert instants == sorted(instants)
        else:
            assert instants not in (sorted(instants), sorted(instants, reverse=True))
            assert world.runs(flow.org_id, flow.flow_id) == world.runs(flow.org_id, flow.flow_id)

    def test_rejects_unknown_settings(self, world: World):
        with pytest.raises(ValueError):
            world.sort_order = "random"
        with pytest.raises(ValueError):
            World(runs_per_flow=1, parent_style="deep")


class TestMutators:
    def test_add_run_at_given_date(self, world: World):
        flow = world.flows()[1]
        date = datetime(2026, 11, 29, 11, 0, 0, 123456)  # naive: UTC
        run = world.add_run(flow.org_id, flow.flow_id, date=date, state="PENDING", user_id="u-1")
        assert world.run_instant(run["run_id"]) == date.replace(tzinfo=UTC)
        assert parse_date(run["date"]) == date.replace(tzinfo=UTC)
        assert run["state"] == "PENDING" and run["user_id"] == "u-1"
        assert run["latency"] is None and run["total_tokens"] == 0
        assert run in world.runs(flow.org_id, flow.flow_id)

    def test_add_run_defaults_to_now_and_completed(self, world: World):
        flow = world.flows()[0]
        run = world.add_run(flow.org_id, flow.flow_id)
        assert world.run_instant(run["run_id"]) == world.now
        assert run["state"] == "COMPLETED" and run["is_flow_successful"] is True

    def test_add_sub_workflow_run(self, world: World):
        parent_flow, child_flow = world.flows()[:2]
        parent = world.runs(parent_flow.org_id, parent_flow.flow_id)[5]
        run = world.add_run(child_flow.org_id, child_flow.flow_id, parent_run_id=parent["run_id"])
        assert run["run_type"] == "sub_workflow"
        assert run["parent_project_id"] == parent_flow.flow_id
        assert run["parent_project_name"] == parent_flow.name

    def test_complete_run_fills_outcome_and_keeps_date(self, world: World):
        flow = world.flows()[0]
        run = world.add_run(flow.org_id, flow.flow_id, state="RESUMED")
        done = world.complete_run(run["run_id"], state="FAILED")
        assert done["date"] == run["date"]
        assert done["state"] == "FAILED" and done["is_flow_successful"] is False
        assert done["error"] and done["latency"] > 0
        with pytest.raises(ValueError, match="not open"):
            world.complete_run(run["run_id"])

    def test_complete_run_rejects_open_target_state(self, world: World):
        flow = world.flows()[0]
        run = world.add_run(flow.org_id, flow.flow_id, state="PENDING")
        with pytest.raises(ValueError, match="not a final state"):
            world.complete_run(run["run_id"], state="PAUSED")

    def test_set_feedback_and_update_run(self, world: World):
        run_id = world.runs(*_first_flow(world))[0]["run_id"]
        assert world.set_feedback(run_id, "late 👍")["feedback"] == "late 👍"
        assert world.get_run(run_id)["feedback"] == "late 👍"
        assert world.update_run(run_id, outputs="edited", total_tokens=7)["outputs"] == "edited"
        assert world.get_run(run_id)["total_tokens"] == 7
        with pytest.raises(ValueError):
            world.update_run(run_id, date="2026-01-01T00:00:00")
        with pytest.raises(ValueError):
            world.update_run(run_id, colour="blue")
        with pytest.raises(KeyError):
            world.set_feedback("no-such-run", None)

    def test_returned_dicts_are_copies(self, world: World):
        org_id, flow_id = _first_flow(world)
        served = world.runs(org_id, flow_id)[0]
        served["state"] = "MUTATED"
        served.get("llm_usage", []).append({"x": 1})
        assert world.runs(org_id, flow_id)[0]["state"] != "MUTATED"

    def test_unknown_flow(self, world: World):
        org_id = world.org_ids()[0]
        other_org_flow = world.flows()[-1].flow_id
        with pytest.raises(KeyError):
            world.runs(org_id, other_org_flow)
        with pytest.raises(KeyError):
            world.add_run(org_id, "nope")


class TestClock:
    def test_advance_adds_runs_dated_in_the_interval(self, world: World):
        before = {run["run_id"] for _, _, run in world.all_runs()}
        start = world.now
        world.advance(2 * 3600)
        assert world.now == start + timedelta(hours=2)
        new = [(flow, run) for _, flow, run in world.all_runs() if run["run_id"] not in before]
        assert len({flow for flow, _ in new}) == len(world.flows())
        assert 6 <= len(new) <= 100
        for _, run in new:
            assert start < world.run_instant(run["run_id"]) <= world.now
            assert parse_date(run["date"]) == world.run_instant(run["run_id"])

    def test_advance_without_new_runs(self, world: World):
        count = len(world.all_runs())
        world.advance(600, new_runs=False)
        assert len(world.all_runs()) == count

    def test_advance_completes_old_open_runs_keeping_their_date(self, world: World):
        open_before = {
            run["run_id"]: run for _, _, run in world.all_runs() if run["state"] in OPEN_STATES
        }
        assert open_before
        world.advance(6 * 60, new_runs=False)
        for run_id, old in open_before.items():
            now = world.get_run(run_id)
            assert now["date"] == old["date"]
            assert now["state"] in ("COMPLETED", "FAILED", "CANCELLED")
            assert now["latency"] is not None and now["is_flow_successful"] is not None
            if now["state"] == "COMPLETED":
                assert now["outputs"] is not None

    def test_young_open_runs_stay_open(self, world: World):
        org_id, flow_id = _first_flow(world)
        run = world.add_run(org_id, flow_id, state="PAUSED")
        world.advance(60, new_runs=False)
        assert world.get_run(run["run_id"])["state"] == "PAUSED"
        world.advance(5 * 60, new_runs=False)
        assert world.get_run(run["run_id"])["state"] != "PAUSED"

    def test_new_runs_include_open_ones(self, world: World):
        world.advance(6 * 3600)
        recent = [
            run
            for _, _, run in world.all_runs()
            if world.now - world.run_instant(run["run_id"]) < timedelta(minutes=5)
        ]
        assert recent and any(run["state"] in OPEN_STATES for run in recent)

    def test_late_feedback(self, world: World):
        before = {run["run_id"]: run["feedback"] for _, _, run in world.all_runs()}
        world.advance(12 * 3600, new_runs=False, late_feedback=True)
        changed = [
            run for _, _, run in world.all_runs() if run["feedback"] != before[run["run_id"]]
        ]
        assert changed and all(run["feedback"] for run in changed)

    def test_clock_never_goes_back(self, world: World):
        with pytest.raises(ValueError):
            world.advance(-1)


def test_concurrent_mutation_and_reading_is_safe(world: World):
    org_id, flow_id = _first_flow(world)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(100):
                world.add_run(org_id, flow_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(30):
        world.query_runs(org_id, flow_id, page_size=1000)
        world.advance(1)
    for thread in threads:
        thread.join()
    assert not errors
    ids = [run["run_id"] for run in world.runs(org_id, flow_id)]
    assert len(ids) == len(set(ids)) >= 300


def _first_flow(world: World) -> tuple[str, str]:
    flow = world.flows()[0]
    return flow.org_id, flow.flow_id
