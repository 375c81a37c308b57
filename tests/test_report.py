"""`stackai-runs report`: its key figures (runs and failure rate per flow, the top failure) equal
the simulator's ground truth, the filters select what they say, and `--chart` writes a PNG of
the documented size."""

from __future__ import annotations

import io
import struct
from datetime import timedelta
from pathlib import Path

import duckdb
from rich.console import Console

from pipelines.analysis import report as reporting
from pipelines.stackai.flows import FlowRef
from tests.support.cli import stackai_runs
from tests.test_views import FINAL, error_pattern, group, sync_with_views, truth

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG spec puts first."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def table_rows(output: str) -> dict[str, list[str]]:
    """Cells of every rich table row, keyed by the first cell."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            rows.setdefault(cells[0], cells)
    return rows


def flow_cells(rows: dict[str, list[str]], org_id: str, flow_id: str) -> list[str]:
    matches = [
        cells
        for first, cells in rows.items()
        if first.endswith(f"({flow_id[:8]})") or first == f"{org_id[:8]}/{flow_id[:8]}"
    ]
    assert len(matches) == 1, f"flow {flow_id} not in the report once: {list(rows)}"
    return matches[0]


def test_report_cli_shows_each_flows_runs_and_failure_rate_and_writes_the_chart(
    settings, world, tmp_path
):
    path = sync_with_views(settings, world)
    chart = tmp_path / "runs.png"
    result = stackai_runs("report", "--duckdb", str(path), "--chart", str(chart))
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)

    runs = truth(world)
    for (org_id, flow_id), flow_runs in group(runs, lambda r: (r["org_id"], r["flow_id"])).items():
        cells = flow_cells(rows, org_id, flow_id)
        failed = sum(r["state"] == "FAILED" for r in flow_runs)
        final = sum(r["state"] in FINAL for r in flow_runs)
        assert cells[1] == f"{len(flow_runs):,}"
        assert cells[3] == f"{failed:,}"
        assert cells[6] == f"{failed / final:.1%}"
    total = rows["all flows"]
    assert total[1] == f"{len(runs):,}"
    failed = sum(r["state"] == "FAILED" for r in runs)
    assert total[6] == f"{failed / sum(r['state'] in FINAL for r in runs):.1%}"

    patterns = group(
        [r for r in runs if r["state"] == "FAILED"],
        lambda r: (r["flow_id"], error_pattern(r["error"])),
    )
    most = max(len(v) for v in patterns.values())
    assert any(pattern in result.stdout for (_, pattern), v in patterns.items() if len(v) == most)
    assert "top 5 models by tokens" in result.stdout

    assert png_size(chart) == (1200, 700)
    assert f"chart written to {chart}" in result.stdout


def test_report_filters_by_day_and_flow(settings, world):
    path = sync_with_views(settings, world)
    runs = truth(world)
    flow = world.flows()[1]
    since = (world.now - timedelta(days=10)).date()
    selected = [r for r in runs if r["flow_id"] == flow.flow_id and r["org_id"] == flow.org_id]
    selected = [r for r in selected if r["day"] >= since]

    with reporting.open_read_only(path) as con:
        report = reporting.build_report(con, since, FlowRef(flow.org_id, flow.flow_id), "test")
    assert [(f.org_id, f.flow_id) for f in report.flows] == [(flow.org_id, flow.flow_id)]
    assert report.total is not None and report.total.runs == len(selected)
    assert report.flows[0].failed == sum(r["state"] == "FAILED" for r in selected)
    assert report.first_run == min(r["date"] for r in selected)
    assert {d.run_date for d in report.days} == {r["day"] for r in selected}
    calls = [c for r in selected for c in r["llm_usage"]]
    assert sum(m.calls for m in report.models) <= len(calls)
    if report.models:
        top = report.models[0]
        tokens = sum(
            c["tokens"] or 0
            for c in calls
            if (c["provider"], c["model_id"]) == (top.provider, top.model_id)
        )
        assert top.tokens == tokens

    out = io.StringIO()
    reporting.print_report(report, Console(file=out, width=200))
    assert f"since {since.isoformat()}" in out.getvalue()
    assert f"{len(selected):,} runs started" in out.getvalue()


def test_report_is_read_only_and_says_when_the_views_are_missing(settings, world, tmp_path):
    from pipelines.load import run_sync

    assert run_sync(settings, now=world.now).ok
    path = settings.duckdb_path
    with duckdb.connect(str(path)) as con:  # the sync created the views: take them away
        for (name,) in con.execute(
            "select view_name from duckdb_views() where not internal and schema_name = 'stackai'"
        ).fetchall():
            con.execute(f"drop view stackai.{name}")
    before = path.stat().st_mtime_ns
    result = stackai_runs("report", "--duckdb", str(path))
    assert result.returncode == 1
    assert "stackai-runs views" in result.stderr
    assert path.stat().st_mtime_ns == before
    with duckdb.connect(str(path), read_only=True) as con:
        views = con.execute("select count(*) from duckdb_views() where not internal").fetchall()
    assert views == [(0,)]

    assert stackai_runs("report", "--duckdb", str(tmp_path / "none.duckdb")).returncode == 2
    result = stackai_runs("report", "--duckdb", str(path), "--since", "last week")
    assert result.returncode == 2
    assert "--since" in result.stderr


def test_chart_of_an_empty_selection_is_still_a_chart(settings, world, tmp_path):
    path = sync_with_views(settings, world)
    with reporting.open_read_only(path) as con:
        report = reporting.build_report(con, since=world.now.date() + timedelta(days=1))
    assert report.total is None and not report.days
    chart = reporting.write_chart(report, tmp_path / "empty.png")
    assert png_size(chart) == (1200, 700)


def test_report_names_flows_and_flags_those_whose_stored_runs_fall_short(settings, world):
    path = sync_with_views(settings, world)
    short = settings.flows[0]
    with duckdb.connect(str(path)) as con:
        con.execute(
            "delete from stackai.flow_runs where run_id in (select run_id from"
            " stackai.flow_runs where org_id = ? and flow_id = ? limit 2)",
            [short.org_id, short.flow_id],
        )
    with reporting.open_read_only(path) as con:
        data = reporting.build_report(con, source=str(path))
    out = Console(file=io.StringIO(), width=250, color_system=None)
    reporting.print_report(data, out)
    text = out.file.getvalue()
    names = {(f.org_id, f.flow_id): f.name for f in world.flows()}
    for summary in data.flows:
        assert (
            summary.label == f"{names[(summary.org_id, summary.flow_id)]} ({summary.flow_id[:8]})"
        )
        assert summary.label in text
    (flagged,) = data.short
    assert (flagged.org_id, flagged.flow_id, flagged.name) == (
        short.org_id,
        short.flow_id,
        names[(short.org_id, short.flow_id)],
    )
    assert flagged.total_runs - flagged.stored_runs == 2
    assert f"2 of the {flagged.total_runs:,} runs the API counts are not stored" in text
    assert f"--full-refresh --flow {short}" in text
