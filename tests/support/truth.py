"""Compare what landed in DuckDB or PostgreSQL with the simulator's ground truth, field by field.

The expected values are derived here from the served JSON with the standard library only, so a
bug in the project's normaliser cannot hide in both sides of the comparison.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.settings import SyncSettings
from pipelines.simulator import World
from tests.support.store import query, scalar

RUN_FIELDS = (
    "conversation_id",
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
    "run_type",
    "ran_by_type",
    "ran_by_id",
    "ran_by_display_name",
    "parent_run_id",
    "parent_project_id",
    "parent_project_name",
)
USAGE_FIELDS = (
    "provider",
    "model_id",
    "tokens",
    "input_tokens",
    "output_tokens",
    "connection_id",
    "connection_origin",
    "is_local_model",
    "should_charge",
)


def utc(text: str) -> datetime:
    instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def expected_run(org_id: str, flow_id: str, served: dict[str, Any]) -> dict[str, Any]:
    parent = served.get("parent") or {}
    row = {
        "run_id": served["run_id"].lower(),
        "org_id": org_id,
        "flow_id": flow_id,
        "date": utc(served["date"]),
    }
    for name in RUN_FIELDS:
        value = served.get(name)
        if name.startswith("parent_") and value is None:
            value = parent.get(name.removeprefix("parent_"))
        if name in ("ran_by_id", "parent_run_id") and isinstance(value, str):
            value = value.lower()
        if name == "latency" and value is not None:
            value = float(value)
        row[name] = value
    row["llm_usage"] = [
        {name: usage.get(name) for name in USAGE_FIELDS} for usage in served.get("llm_usage") or []
    ]
    return row


def expected_runs(world: World, flows=None) -> dict[str, dict[str, Any]]:
    wanted = {(f.org_id, f.flow_id) for f in flows} if flows is not None else None
    return {
        served["run_id"].lower(): expected_run(org_id, flow_id, served)
        for org_id, flow_id, served in world.all_runs()
        if wanted is None or (org_id, flow_id) in wanted
    }


def loaded_runs(target: SyncSettings | Path) -> dict[str, dict[str, Any]]:
    """Every stored run with its `llm_usage`, from the DuckDB file or the settings' destination."""
    rows = query(target, "select * from stackai.flow_runs")
    usage = query(
        target,
        "select u.*, r.run_id as root_run_id from stackai.flow_runs__llm_usage u"
        " join stackai.flow_runs r on u._dlt_root_id = r._dlt_id"
        " order by u._dlt_list_idx",
    )
    stored = scalar(target, "select count(*) from stackai.flow_runs__llm_usage")
    assert stored == len(usage), f"{stored - len(usage)} usage rows without their run"
    runs: dict[str, dict[str, Any]] = {}
    for row in rows:
        row = {k: v for k, v in row.items() if not k.startswith("_dlt_")}
        assert row["run_id"] not in runs, f"duplicate run_id {row['run_id']}"
        row["llm_usage"] = []
        runs[row["run_id"]] = row
    for item in usage:
        assert item["run_id"] == item["root_run_id"], "usage row linked to the wrong run"
        assert item["run_id"] in runs
        runs[item["run_id"]]["llm_usage"].append({name: item.get(name) for name in USAGE_FIELDS})
    return runs


def assert_matches(
    loaded: dict[str, dict], expected: dict[str, dict], changes_since: datetime | None = None
) -> None:
    """Same run_ids, and every field of every run equal.

    With `changes_since`, runs dated before it are only checked for presence and `date`: the
    sync re-checks open runs up to `max_open_run_age` old, by design not older ones.
    """
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    assert not missing, f"{len(missing)} runs missing, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} unexpected runs, e.g. {extra[:3]}"
    for run_id, want in expected.items():
        got = loaded[run_id]
        if changes_since is not None and want["date"] < changes_since:
            assert got["date"] == want["date"], f"run {run_id} date"
            continue
        for name, value in want.items():
            assert got.get(name) == value, (
                f"run {run_id} field {name}: {got.get(name)!r} != {value!r}"
            )
