"""`report` and `views` on PostgreSQL: the report's figures equal DuckDB's for the same
simulator data (each query written once, in DuckDB's SQL, and transpiled), and the commands'
errors are one line naming the destination, never its password."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from pipelines.analysis import report as reporting
from pipelines.load import open_pipeline, run_sync
from pipelines.stackai.flows import FlowRef
from tests.support import postgres
from tests.support.cli import stackai_runs


def plain(value: Any) -> Any:
    """A report as nested dicts and lists, numbers rounded (sums in another order)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float | Decimal):
        return round(float(value), 9)
    return value


@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_the_reports_figures_on_postgres_equal_duckdbs(settings, world, tmp_path):
    assert run_sync(settings, now=world.now).ok
    on_duckdb = replace(settings, destination=None, duckdb_path=tmp_path / "same.duckdb")
    assert run_sync(on_duckdb, now=world.now).ok
    target = settings.target()
    flow = settings.flows[2]
    windows = [
        (None, None),
        ((world.now - timedelta(days=10)).date(), None),
        (world.now - timedelta(days=3, hours=5, minutes=17), None),
        (None, flow),
        ((world.now - timedelta(days=20)).date(), flow),
        # quotes, a backslash and a percent sign in an id select nothing, and break nothing
        (None, FlowRef("o'rg\\", "fl%ow's")),
    ]
    with (
        reporting.open_destination(open_pipeline(target), target.describe()) as client,
        reporting.open_read_only(on_duckdb.duckdb_path) as con,
    ):
        for since, selected in windows:
            on_postgres = reporting.build_report(client, since, selected, "same")
            on_duck = reporting.build_report(con, since, selected, "same")
            assert plain(on_postgres) == plain(on_duck), (since, selected)
            if selected is not None and selected.org_id == flow.org_id:
                assert [(f.org_id, f.flow_id) for f in on_postgres.flows] == [
                    (flow.org_id, flow.flow_id)
                ]
            elif selected is not None:
                assert on_postgres.total is None and not on_postgres.flows
            else:
                assert on_postgres.total is not None and on_postgres.total.runs > 0
                assert on_postgres.errors and on_postgres.models and on_postgres.days

    # a view missing on PostgreSQL: the report says which and the command that creates it
    with open_pipeline(target).sql_client() as client:
        client.execute_sql("drop view stackai.flow_completeness")
    result = stackai_runs("report", "--destination", "postgres")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {target.describe()} has no view stackai.flow_completeness: create the views"
        " first (stackai-runs views --destination postgres)"
    ]
    views = stackai_runs("views", "--destination", "postgres")
    assert views.returncode == 0, views.stderr
    assert stackai_runs("report", "--destination", "postgres").returncode == 0


@pytest.mark.parametrize("command", ["views", "report"])
def test_an_unknown_destination_exits_2_naming_it(command):
    result = stackai_runs(command, "--destination", "nosuch")
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "unknown destination 'nosuch'" in line
    assert result.stdout == ""


def test_a_wrong_postgres_password_exits_1_naming_host_and_database_not_the_password(
    postgres_server, postgres_url
):
    database = postgres_url.rsplit("/", 1)[1]
    wrong = "wrong-pass-n0t-this-1"
    url = postgres_server.url(database, password=wrong)
    for command in ("views", "report"):
        result = stackai_runs(
            command, "--destination", "postgres", env={"DESTINATION__POSTGRES__CREDENTIALS": url}
        )
        assert result.returncode == 1, result.stdout + result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert f"{postgres_server.host}:{postgres_server.port}/{database}" in line
        assert "password authentication failed" in line
        assert line.startswith("error: cannot connect to postgres at"), line
        output = result.stdout + result.stderr
        assert wrong not in output and postgres.PASSWORD not in output
