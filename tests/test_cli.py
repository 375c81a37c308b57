"""The `stackai-runs` command as cron runs it: a real process, real exit codes and output."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from tests.support.cli import ROOT, stackai_runs, sync_args
from tests.support.truth import expected_runs, loaded_runs


def test_sync_exit_0_and_summary(simulator, world, flows, duckdb_path):
    result = stackai_runs(
        *sync_args(simulator.url, duckdb_path, flows), env={"STACKAI_API_KEY": world.api_key}
    )
    assert result.returncode == 0, result.stderr
    for flow in flows:
        assert str(flow)[:20] in result.stdout
    assert f"from {len(flows)}/{len(flows)} flows" in result.stdout
    assert set(loaded_runs(duckdb_path)) == set(expected_runs(world))
    again = stackai_runs(
        *sync_args(simulator.url, duckdb_path, flows), env={"STACKAI_API_KEY": world.api_key}
    )
    assert again.returncode == 0 and "(no new runs)" in again.stdout


def test_dlt_env_variable_for_the_key_works_too(simulator, world, flows, duckdb_path):
    result = stackai_runs(
        *sync_args(simulator.url, duckdb_path, flows[:1]),
        env={"SOURCES__STACKAI__API_KEY": world.api_key},
    )
    assert result.returncode == 0, result.stderr


def test_rejected_key_exit_1_names_the_flow_and_hides_the_key(simulator, flows, duckdb_path):
    key = "sk-this-key-must-never-be-printed"
    result = stackai_runs(
        *sync_args(simulator.url, duckdb_path, flows[:1]), env={"STACKAI_API_KEY": key}
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "API key rejected (HTTP 401)" in output
    assert flows[0].flow_id in output
    assert key not in output
    assert "Traceback" not in output


def test_unknown_flow_exit_1_and_the_other_flows_load(simulator, world, flows, duckdb_path):
    ghost = f"{flows[0].org_id}/no-such-flow"
    args = [*sync_args(simulator.url, duckdb_path, flows[:1]), "--flow", ghost]
    result = stackai_runs(*args, env={"STACKAI_API_KEY": world.api_key})
    assert result.returncode == 1
    assert f"flow not found: {ghost}" in result.stdout
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        (count,) = con.execute("select count(*) from stackai.flow_runs").fetchone()
    assert count == world.run_count(flows[0].org_id, flows[0].flow_id)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["sync", "--flow", "o/f"], {}, "no API key"),
        (["sync"], {"STACKAI_API_KEY": "k"}, "no flow to sync"),
        (["sync", "--flow", "just-one-id"], {"STACKAI_API_KEY": "k"}, "ORG_ID/FLOW_ID"),
        (["sync", "--flow", "o/f", "--since", "soon"], {"STACKAI_API_KEY": "k"}, "--since"),
        (["sync", "--flow", "o/f", "--until", "2026-01-01"], {"STACKAI_API_KEY": "k"}, "--since"),
        (["sync", "--flow", "o/f", "--page-size", "0"], {"STACKAI_API_KEY": "k"}, "page-size"),
        (["sync", "--flow", "o/f", "--base-url", "ftp://x"], {"STACKAI_API_KEY": "k"}, "base_url"),
        (["sync", "--no-such-flag"], {}, "No such option"),
    ],
)
def test_usage_and_configuration_errors_exit_2_in_one_line(tmp_path, args, env, message):
    result = stackai_runs(*args, "--duckdb", str(tmp_path / "x.duckdb"), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_demo_syncs_the_simulator_and_summarises(tmp_path):
    path = tmp_path / "demo.duckdb"
    first = stackai_runs("demo", "--duckdb", str(path))
    assert first.returncode == 0, first.stderr
    assert "stackai-runs report" in first.stdout and "top 5 failures" in first.stdout
    with duckdb.connect(str(path), read_only=True) as con:
        runs, distinct = con.execute(
            "select count(*), count(distinct run_id) from stackai.flow_runs"
        ).fetchone()
    assert runs == distinct > 0
    # run again: the demo replaces its own file
    assert stackai_runs("demo", "--duckdb", str(path)).returncode == 0


def test_demo_never_replaces_a_file_it_did_not_write(tmp_path):
    path = tmp_path / "precious.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table important (x int)")
    result = stackai_runs("demo", "--duckdb", str(path))
    assert result.returncode == 2
    assert "not written by the demo" in result.stderr
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select count(*) from important").fetchone() == (0,)


def test_json_summary_for_monitoring(simulator, world, flows, duckdb_path):
    ghost = f"{flows[0].org_id}/no-such-flow"
    args = [*sync_args(simulator.url, duckdb_path, flows[:2]), "--flow", ghost, "--json"]
    result = stackai_runs(*args, env={"STACKAI_API_KEY": world.api_key})
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["ok"] is False
    by_flow = {f["flow"]: f for f in summary["flows"]}
    for flow in flows[:2]:
        entry = by_flow[str(flow)]
        assert entry["status"] == "ok" and entry["error"] is None
        assert entry["runs"] == world.run_count(flow.org_id, flow.flow_id)
        assert entry["requests"] == entry["pages"] >= 1 and entry["retries"] == 0
        assert entry["cursor_before"] is None and entry["cursor_after"]
        assert entry["window_start"] is None and entry["window_end"]  # whole history, pinned end
    assert by_flow[ghost]["status"] == "failed" and "flow not found" in by_flow[ghost]["error"]
    assert summary["runs"] == sum(f["runs"] for f in summary["flows"])


def test_the_environment_key_wins_over_secrets_toml(simulator, world, flows, tmp_path):
    """A user with the example secrets file still in place can pass the key by environment."""
    project = tmp_path / "project"
    (project / ".dlt").mkdir(parents=True)
    shutil.copy(ROOT / ".dlt" / "secrets.toml.example", project / ".dlt" / "secrets.toml")
    args = sync_args(simulator.url, tmp_path / "runs.duckdb", flows[:1])
    for variable in ("STACKAI_API_KEY", "SOURCES__STACKAI__API_KEY"):
        result = stackai_runs(
            *args,
            env={variable: world.api_key},
            cwd=project,
            project_config=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    alone = stackai_runs(*args, cwd=project, project_config=False, timeout=120)
    assert alone.returncode == 2 and "placeholder" in alone.stderr  # never sent to the API
