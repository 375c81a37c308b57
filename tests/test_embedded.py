"""The `stackai` source in a plain dlt pipeline of the user's own, as README shows it: same
tables, same guarantees, no CLI involved."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dlt
import duckdb
import pytest

from pipelines.load import PIPELINE_NAME, pipelines_dir_for, run_sync
from pipelines.stackai import ConfigError, stackai
from tests.support.truth import assert_matches, expected_runs, loaded_runs

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The plain dlt example of README ("Use it in your own dlt pipeline"), as written there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it in your own dlt pipeline", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def user_pipeline(tmp_path, monkeypatch, simulator, flows):
    """The user's own pipeline: configured only the dlt way, from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STACKAI_API_KEY", simulator.world.api_key)
    monkeypatch.setenv("SOURCES__STACKAI__BASE_URL", simulator.url)
    monkeypatch.setenv("SOURCES__STACKAI__PAGE_SIZE", "25")
    monkeypatch.setenv("SOURCES__STACKAI__FLOWS", json.dumps([str(f) for f in flows]))
    path = tmp_path / "mine.duckdb"
    pipeline = dlt.pipeline(
        pipeline_name="my_stackai",
        pipelines_dir=str(tmp_path / "dlt"),
        destination=dlt.destinations.duckdb(str(path)),
        dataset_name="stackai",
    )
    return pipeline, path


def test_the_readme_example_runs_as_written_and_equals_the_ground_truth(
    tmp_path, monkeypatch, simulator, world, flows
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STACKAI_API_KEY", simulator.world.api_key)
    monkeypatch.setenv("SOURCES__STACKAI__BASE_URL", simulator.url)
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt_home"))
    code = readme_example().replace('"ORG_ID/FLOW_ID"', ", ".join(f'"{f}"' for f in flows))
    exec(compile(code, "README.md", "exec"), {})
    assert_matches(loaded_runs(tmp_path / "stackai_runs.duckdb"), expected_runs(world))


def test_a_users_pipeline_keeps_every_guarantee(user_pipeline, world, flows):
    pipeline, path = user_pipeline
    flow = flows[0]
    world.inject("records", flow_id=flow.flow_id)
    pipeline.run(stackai())
    assert_matches(loaded_runs(path), expected_runs(world))

    # a run with LLM calls, then re-read with fewer, then with none: its rows are replaced
    run = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(minutes=5))
    calls = [
        {"provider": "OpenAI", "model_id": m, "tokens": 3, "input_tokens": 2, "output_tokens": 1}
        for m in ("gpt-4o", "gpt-4o-mini")
    ]
    world.update_run(run["run_id"], llm_usage=calls)
    pipeline.run(stackai(now=world.now))
    assert len(loaded_runs(path)[run["run_id"].lower()]["llm_usage"]) == 2
    world.update_run(run["run_id"], llm_usage=[], state="COMPLETED")
    pipeline.run(stackai(now=world.now))
    loaded = loaded_runs(path)  # also: no usage row without its run, no run twice
    assert loaded[run["run_id"].lower()]["llm_usage"] == []
    assert_matches(loaded, expected_runs(world))

    with duckdb.connect(str(path), read_only=True) as con:
        rejected = con.execute(
            "select org_id, flow_id, reason from stackai.flow_runs_rejected"
        ).fetchall()
        markers = con.execute(
            "select count(*) from stackai.flow_runs__llm_usage where _deleted or _dlt_list_idx < 0"
        ).fetchone()[0]
        no_load_id = con.execute(
            "select count(*) from stackai.flow_runs where _dlt_load_id is null"
        ).fetchone()[0]
    assert rejected and {(o, f) for o, f, _ in rejected} == {(flow.org_id, flow.flow_id)}
    assert markers == 0
    assert no_load_id == 0

    # a crash-resumed load can stage a file twice (dlt-hub/dlt#3023): in anyone's pipeline
    # dlt's merge drops the copies (the CLI removes them itself and skips that work)
    for table in ("flow_runs", "flow_runs__llm_usage"):
        assert not pipeline.default_schema.tables[table].get("x-stage-data-deduplicated")

    # each flow's state is committed with its data: the cursor is the newest run loaded
    state = pipeline.state["sources"]["stackai"]["resources"][str(flow)]
    newest = max(r["date"] for r in loaded.values() if r["flow_id"] == flow.flow_id)
    assert state["cursor"] == newest.isoformat()


def test_a_missing_key_is_a_config_error_naming_where_to_put_it(user_pipeline, monkeypatch):
    monkeypatch.delenv("STACKAI_API_KEY")
    with pytest.raises(ConfigError, match="no API key: set SOURCES__STACKAI__API_KEY"):
        stackai()


def test_arguments_win_over_configuration(user_pipeline, flows, simulator):
    pipeline, path = user_pipeline
    with pytest.raises(ConfigError, match="page_size must be at least 1"):
        stackai(page_size=0)
    only = flows[1]
    before = simulator.world.request_count
    source = stackai(flows=[str(only)])
    # making the source asks nothing of the API (Dagster makes it when loading definitions)
    assert simulator.world.request_count == before
    assert list(source.resources) == [str(only), "flows"]
    pipeline.run(source)
    with duckdb.connect(str(path), read_only=True) as con:
        stored = con.execute("select distinct org_id, flow_id from stackai.flow_runs").fetchall()
    assert stored == [(only.org_id, only.flow_id)]


def dlt_pipeline_command(duckdb_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`dlt --yes pipeline ... stackai_runs ARGS` as README documents it (off a terminal dlt
    answers its own prompts with their default, which for `drop` is no)."""
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("dlt")),
            "--yes",
            "pipeline",
            "--pipelines-dir",
            str(pipelines_dir_for(duckdb_path)),
            PIPELINE_NAME,
            *args,
        ],
        env={**os.environ, "DESTINATION__DUCKDB__CREDENTIALS": str(duckdb_path)},
        cwd=duckdb_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dlts_own_cli_works_on_the_pipeline_a_sync_leaves(settings, world):
    assert run_sync(settings, now=world.now).ok
    info = dlt_pipeline_command(settings.duckdb_path, "info")
    assert info.returncode == 0, info.stderr
    assert f"Found pipeline {PIPELINE_NAME}" in info.stdout
    assert "dataset_name: stackai" in info.stdout
    schema = dlt_pipeline_command(settings.duckdb_path, "schema", "--format", "yaml")
    assert schema.returncode == 0 and "flow_runs__llm_usage:" in schema.stdout

    # README: `drop FLOW --state-only` makes the next sync re-read that flow; nothing doubles
    flow = settings.flows[0]
    dropped = dlt_pipeline_command(settings.duckdb_path, "drop", str(flow), "--state-only")
    assert dropped.returncode == 0, dropped.stderr
    assert "Table(s) to drop: []" in dropped.stdout
    report = run_sync(settings, now=world.now)
    assert report.ok
    assert report.flows[str(flow)].cursor_before is None
    assert report.flows[str(settings.flows[1])].cursor_before is not None
    assert_matches(loaded_runs(settings.duckdb_path), expected_runs(world))
