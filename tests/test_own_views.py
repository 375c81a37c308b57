"""Views of the user's own (`--sql-dir`, `sql_dir`): applied after the shipped ones, with the
same error handling."""

from __future__ import annotations

import duckdb

from pipelines.analysis.views import SQL_DIR
from tests.support.cli import stackai_runs

SHIPPED = sorted(path.stem.split("_", 1)[1] for path in SQL_DIR.glob("*.sql"))


def views_in(path) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            name
            for (name,) in con.execute(
                "select view_name from duckdb_views() where schema_name = 'stackai'"
            ).fetchall()
        }


def test_own_views_are_applied_after_the_shipped_ones(simulator, world, flows, tmp_path):
    own = tmp_path / "my_sql"
    own.mkdir()
    # reads a shipped view, so it only works when applied after them
    (own / "010_runs_per_flow.sql").write_text(
        "create or replace view stackai.runs_per_flow as"
        " select flow_id, count(*) as runs from stackai.runs group by flow_id\n",
        encoding="utf-8",
    )
    path = tmp_path / "runs.duckdb"
    args = ["sync", "--base-url", simulator.url, "--duckdb", str(path), "--sql-dir", str(own)]
    for flow in flows:
        args += ["--flow", str(flow)]
    result = stackai_runs(*args, env={"STACKAI_API_KEY": world.api_key})
    assert result.returncode == 0, result.stderr
    assert views_in(path) == {*SHIPPED, "runs_per_flow"}
    with duckdb.connect(str(path), read_only=True) as con:
        counts = dict(con.execute("select flow_id, runs from stackai.runs_per_flow").fetchall())
    expected: dict[str, int] = {}
    for _, flow_id, _ in world.all_runs():
        expected[flow_id] = expected.get(flow_id, 0) + 1
    assert counts == expected

    # the config key names the folder too; a broken file there is named and changes nothing
    (own / "020_broken.sql").write_text(
        "create or replace view stackai.broken as select nope from stackai.runs\n",
        encoding="utf-8",
    )
    result = stackai_runs(
        "views", "--duckdb", str(path), env={"SOURCES__STACKAI__SQL_DIR": str(own)}
    )
    assert result.returncode == 1
    assert "020_broken.sql" in result.stderr and "Traceback" not in result.stderr
    assert views_in(path) == {*SHIPPED, "runs_per_flow"}

    result = stackai_runs("views", "--duckdb", str(path), "--sql-dir", str(tmp_path / "none"))
    assert result.returncode == 1
    assert "no SQL folder" in result.stderr
