"""A DuckDB file written by 0.1 (LLM usage as dlt's nested table) keeps working after upgrade."""

from __future__ import annotations

import dlt
import duckdb

from pipelines.load import open_pipeline, run_sync
from pipelines.stackai import endpoint
from pipelines.stackai.normalise import normalise_run
from tests.support.truth import assert_matches, expected_runs, loaded_runs


def write_like_0_1(settings, world) -> None:
    """Load every run as 0.1 did: dicts through dlt's normaliser, `llm_usage` nested (the
    hints of 0.1's `source.flow_runs`)."""

    @dlt.resource(
        name="legacy",
        table_name=endpoint.RUNS_TABLE,
        write_disposition="merge",
        primary_key=endpoint.PRIMARY_KEY,
        columns=endpoint.RUN_COLUMNS,
        nested_hints={"llm_usage": {"columns": endpoint.LLM_USAGE_COLUMNS}},
        schema_contract={"tables": "evolve", "columns": "evolve", "data_type": "freeze"},
        max_table_nesting=1,
    )
    def runs():
        yield [normalise_run(served, org, flow) for org, flow, served in world.all_runs()]

    pipeline = open_pipeline(settings.duckdb_path)
    pipeline.run(runs(), loader_file_format="jsonl", schema=dlt.Schema("stackai"))
    assert pipeline.default_schema.tables[endpoint.LLM_USAGE_TABLE]["parent"] == "flow_runs"


def test_a_file_from_0_1_is_upgraded_and_its_usage_rows_replaced(settings, world):
    write_like_0_1(settings, world)
    before = loaded_runs(settings.duckdb_path)
    assert_matches(before, expected_runs(world))
    flow = settings.flows[0]
    changed, emptied = [
        row["run_id"]
        for row in before.values()
        if row["flow_id"] == flow.flow_id and len(row["llm_usage"]) >= 2
    ][:2]
    world.update_run(changed, llm_usage=[world.get_run(changed)["llm_usage"][0]])
    world.update_run(emptied, llm_usage=[])
    world.advance(60)

    report = run_sync(settings, now=world.now)

    assert report.ok, report.error or [f.error for f in report.failed]
    after = loaded_runs(settings.duckdb_path)  # no usage row without its run
    assert_matches(after, expected_runs(world))
    assert len(after[changed]["llm_usage"]) == 1 and after[emptied]["llm_usage"] == []
    table = open_pipeline(settings.duckdb_path).default_schema.tables[endpoint.LLM_USAGE_TABLE]
    assert "parent" not in table
    # a second sync changes nothing and duplicates nothing
    assert run_sync(settings, now=world.now).ok
    assert loaded_runs(settings.duckdb_path) == after
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        (stale,) = con.execute(
            "select count(*) from stackai.flow_runs__llm_usage u join stackai.flow_runs r"
            " using (run_id) where u._dlt_load_id <> r._dlt_load_id"
        ).fetchone()
    assert stale == 0, "every usage row was rewritten with its run by the full first sync"
