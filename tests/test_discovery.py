"""Every flow of an org, by name: discovery from the org summary (`orgs`, `--org`) and the
`flows` table, against the simulator over real HTTP. Expected values come from the World."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from pipelines.load import run_sync
from pipelines.settings import SyncSettings
from pipelines.simulator import SimulatorServer, World
from pipelines.stackai.flows import FlowRef
from tests.conftest import FAST_HTTP
from tests.support.cli import stackai_runs
from tests.support.truth import assert_matches, expected_runs, loaded_runs, utc


@pytest.fixture
def big_org() -> World:
    """One org of 32 flows: the summary (page size 25 by default) takes two pages."""
    anchor = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    return World(seed=11, anchor=anchor, orgs=1, flows_per_org=32, runs_per_flow=4)


@pytest.fixture
def org_settings(big_org: World, tmp_path) -> SyncSettings:
    server = SimulatorServer(big_org)
    server.__enter__()
    (org_id, key), *_ = big_org.org_api_keys.items()
    yield SyncSettings(
        base_url=server.url,
        api_key=key,
        flows=(),
        orgs=(org_id,),
        duckdb_path=tmp_path / "org.duckdb",
        page_size=25,
        http=FAST_HTTP,
    )
    server.__exit__(None, None, None)


def flows_table(path) -> dict[str, dict]:
    with duckdb.connect(str(path), read_only=True) as con:
        cursor = con.execute("select * from stackai.flows")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {f"{r['org_id']}/{r['flow_id']}": r for r in rows}


def summary_requests(world: World) -> list[dict]:
    return [r for r in world.requests if "projects-run-summary" in r["path"]]


def test_every_flow_of_an_org_is_discovered_across_summary_pages(org_settings, big_org):
    report = run_sync(org_settings, now=big_org.now)
    assert report.ok, report.error
    listed = {f"{f.org_id}/{f.flow_id}": f for f in big_org.flows()}
    assert len(listed) == 32
    assert set(report.flows) == set(listed)
    assert report.flows_discovered == 32
    assert sorted(report.flows_new) == sorted(listed)
    # the summary read once per sync: 32 flows at page_size 25 are two pages
    assert [r["params"]["page"] for r in summary_requests(big_org)] == ["0", "1"]
    assert_matches(loaded_runs(org_settings.duckdb_path), expected_runs(big_org))

    table = flows_table(org_settings.duckdb_path)
    assert set(table) == set(listed)
    summary = big_org.project_summaries(big_org.org_api_keys, page_size=100)
    served = {row["project_id"]: row for row in summary}
    for key, info in listed.items():
        row, want = table[key], served[info.flow_id]
        assert row["flow_name"] == info.name == want["project_name"]
        assert row["owner_email"] == want["project_owner"]["email"]
        assert row["project_type"] == want["project_type"]
        assert row["is_published"] == want["is_published"]
        assert row["public_ui_url"] == want["public_ui_url"]
        runs = big_org.run_count(info.org_id, info.flow_id)
        assert row["total_runs"] == want["total_runs"] == runs
        assert (row["total_errors"], row["total_tokens"], row["total_users"]) == (
            want["total_errors"],
            want["total_tokens"],
            want["total_users"],
        )
        assert row["is_listed"] is True
        assert row["first_seen_at"] == row["last_seen_at"]
    assert all(f.name == listed[key].name for key, f in report.flows.items())


def test_flows_that_come_and_go_between_syncs(org_settings, big_org):
    first_sync = big_org.now
    assert run_sync(org_settings, now=first_sync).ok
    (org_id,) = org_settings.orgs
    added = big_org.add_flow(org_id, name="Late arrival")
    big_org.advance(3600)
    gone = big_org.flows()[0]
    big_org.remove_flow(gone.flow_id)
    deleted = big_org.flows()[1]
    big_org.remove_flow(deleted.flow_id, from_summary=False)  # listed, then 404

    report = run_sync(org_settings, now=big_org.now)
    assert report.ok, report.error
    added_key = f"{org_id}/{added.flow_id}"
    assert report.flows_new == [added_key]
    assert report.flows_unlisted == [f"{org_id}/{gone.flow_id}"]
    assert f"{org_id}/{gone.flow_id}" not in report.flows  # no longer read
    assert report.flows[f"{org_id}/{deleted.flow_id}"].status == "skipped"
    assert report.flows[added_key].runs == big_org.run_count(org_id, added.flow_id) > 0

    table = flows_table(org_settings.duckdb_path)
    assert table[added_key]["flow_name"] == "Late arrival"
    assert table[added_key]["is_listed"] is True
    old = table[f"{org_id}/{gone.flow_id}"]
    assert old["is_listed"] is False and old["flow_name"] == gone.name
    assert old["last_seen_at"] < table[added_key]["last_seen_at"]
    # the removed flow keeps the runs the first sync loaded (none after: it is not read)
    stored = loaded_runs(org_settings.duckdb_path)
    assert {r for r, row in stored.items() if row["flow_id"] == gone.flow_id} == {
        r["run_id"].lower()
        for r in big_org.runs(org_id, gone.flow_id)
        if utc(r["date"]) <= first_sync
    }


def test_flows_configured_by_hand_get_their_names(settings, world):
    assert run_sync(settings, now=world.now).ok
    table = flows_table(settings.duckdb_path)
    names = {f"{f.org_id}/{f.flow_id}": f.name for f in world.flows()}
    assert {key: row["flow_name"] for key, row in table.items()} == names


def test_an_org_that_is_not_the_keys_is_one_clear_error(org_settings, big_org):
    other = "00000000-0000-4000-8000-000000000000"
    report = run_sync(replace(org_settings, orgs=(other,)), now=big_org.now)
    assert not report.ok
    assert f"org {other}: the API key is not for this org" in report.error
    assert "sk-" not in report.error


def test_org_on_the_command_line(org_settings, big_org):
    (org_id,) = org_settings.orgs
    result = stackai_runs(
        "sync",
        "--org",
        org_id,
        "--base-url",
        org_settings.base_url,
        "--duckdb",
        str(org_settings.duckdb_path),
        "--json",
        env={"STACKAI_API_KEY": org_settings.api_key},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["flows_discovered"] == 32 and len(summary["flows_new"]) == 32
    assert summary["flows_unlisted"] == []
    names = {f"{f.org_id}/{f.flow_id}": f.name for f in big_org.flows()}
    assert {f["flow"]: f["name"] for f in summary["flows"]} == names

    wrong = stackai_runs(
        "sync",
        "--org",
        "not-my-org",
        "--base-url",
        org_settings.base_url,
        "--duckdb",
        str(org_settings.duckdb_path),
        env={"STACKAI_API_KEY": org_settings.api_key},
    )
    assert wrong.returncode == 1
    assert "org not-my-org: the API key is not for this org" in wrong.stderr
    assert "WrongOrg" not in wrong.stderr + wrong.stdout  # a sentence, not a type name
    assert "stackai-runs sync" not in wrong.stdout  # no empty table of no flows
    assert "Traceback" not in wrong.stderr
    assert FlowRef.parse(next(iter(names)))  # the ids the summary gave are valid flows


def test_a_full_refresh_keeps_the_runs_of_a_flow_deleted_since_it_was_listed(org_settings, big_org):
    assert run_sync(org_settings, now=big_org.now).ok
    deleted = big_org.flows()[0]
    big_org.remove_flow(deleted.flow_id, from_summary=False)
    report = run_sync(replace(org_settings, full_refresh=True), now=big_org.now)
    assert report.ok
    key = f"{deleted.org_id}/{deleted.flow_id}"
    assert report.flows[key].status == "skipped"
    stored = loaded_runs(org_settings.duckdb_path)
    assert sum(row["flow_id"] == deleted.flow_id for row in stored.values()) == (
        big_org.run_count(deleted.org_id, deleted.flow_id)
    )
