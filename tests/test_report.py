"""`stackai-runs report`: its key figures (runs and failure rate per flow, the top failure) equal
the simulator's ground truth, the filters select what they say, and `--chart` writes a PNG of
the documented size."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import struct
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
from rich.console import Console

from pipelines.analysis import report as reporting
from pipelines.settings import SyncSettings
from pipelines.stackai.flows import FlowRef
from tests.conftest import DESTINATIONS
from tests.support.cli import ROOT, cli_command, environment, stackai_runs
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

    assert png_size(chart) == (1200, 850)
    assert f"chart written to {chart}" in result.stdout


@contextmanager
def report_source(synced: Path | SyncSettings) -> Iterator[Any]:
    """What `build_report` reads: the DuckDB file read-only, or the PostgreSQL destination
    through dlt's SQL client (what `sync_with_views` returned)."""
    if isinstance(synced, SyncSettings):
        from pipelines.load import open_pipeline

        target = synced.target()
        with reporting.open_destination(open_pipeline(target), target.describe()) as client:
            yield client
    else:
        with reporting.open_read_only(synced) as con:
            yield con


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_report_filters_by_day_and_flow(settings, world):
    path = sync_with_views(settings, world)
    runs = truth(world)
    flow = world.flows()[1]
    since = (world.now - timedelta(days=10)).date()
    selected = [r for r in runs if r["flow_id"] == flow.flow_id and r["org_id"] == flow.org_id]
    selected = [r for r in selected if r["day"] >= since]

    with report_source(path) as con:
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


def test_a_chart_of_an_empty_range_says_so_and_writes_nothing(settings, world, tmp_path):
    path = sync_with_views(settings, world)
    with reporting.open_read_only(path) as con:
        report = reporting.build_report(con, since=world.now.date() + timedelta(days=1))
    assert report.total is None and not report.days
    with pytest.raises(reporting.EmptyChart, match="no runs since"):
        reporting.write_chart(report, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
    chart = tmp_path / "cli.png"
    result = stackai_runs(
        "report", "--duckdb", str(path), "--since", "2030-01-01", "--chart", str(chart)
    )
    assert result.returncode == 0, result.stderr
    assert "no runs since 2030-01-01: no chart written" in result.stdout
    assert not chart.exists()


def test_a_one_day_chart_has_day_ticks_and_whole_number_counts(settings, world):
    path = sync_with_views(settings, world)
    flow = world.flows()[0]
    day = max(r["day"] for r in truth(world) if r["flow_id"] == flow.flow_id)
    with reporting.open_read_only(path) as con:
        report = reporting.build_report(con, day, FlowRef(flow.org_id, flow.flow_id))
    assert {d.run_date for d in report.days} == {day}
    figure = reporting.chart_figure(report)
    runs_axes, failed_axes, _, cost_axes = figure.axes
    figure.canvas.draw()
    labels = [t.get_text() for t in cost_axes.get_xticklabels() if t.get_text()]
    assert labels and not [t for t in labels if ":" in t], labels  # days, never hours
    for axes in (runs_axes, failed_axes):
        ticks = [t for t in axes.get_yticks() if axes.get_ylim()[0] <= t <= axes.get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    if not report.days[0].failed:
        assert failed_axes.get_ylim() == (0.0, 1.0)  # not 0 to 0.05
    assert cost_axes.get_ylabel() == "cost (USD)"


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


def test_report_into_a_closed_pipe_exits_0_silently(settings, world):
    path = sync_with_views(settings, world)
    command = [*cli_command("report", "--duckdb", str(path)), "|", "head", "-1"]
    result = subprocess.run(
        " ".join(shlex.quote(c) if c != "|" else c for c in command) + "; exit ${PIPESTATUS[0]}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=environment(),
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stackai-runs report")
    assert result.stderr == ""


def test_report_since_takes_the_date_times_sync_takes(settings, world):
    path = sync_with_views(settings, world)
    runs = truth(world)
    instant = sorted(r["date"] for r in runs)[len(runs) // 2]
    since = instant.astimezone(timezone(timedelta(hours=-5))).isoformat()  # any offset
    with reporting.open_read_only(path) as con:
        report = reporting.build_report(con, since=instant)
    assert report.total is not None
    assert report.total.runs == sum(r["date"] >= instant for r in runs)
    result = stackai_runs("report", "--duckdb", str(path), "--since", since)
    assert result.returncode == 0, result.stderr
    assert f"{report.total.runs:,} runs started" in result.stdout
    for bad in ("", "yesterday", "2026-13-01"):
        refused = stackai_runs("report", "--duckdb", str(path), "--since", bad)
        assert refused.returncode == 2 and "--since" in refused.stderr


def test_the_command_a_message_names_then_works(settings, world, tmp_path):
    """An empty file: report says to sync, with the command; that sync works; with the views
    gone, report says to create them, with the command; that command works; report then works."""
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    env = {
        "STACKAI_API_KEY": settings.api_key,
        "SOURCES__STACKAI__BASE_URL": settings.base_url,
        "SOURCES__STACKAI__FLOWS": json.dumps([str(f) for f in settings.flows]),
    }
    said = stackai_runs("report", "--duckdb", str(path), env=env)
    assert said.returncode == 1 and "sync first" in said.stderr
    command = re.search(r"\((stackai-runs [^)]*)\)", said.stderr).group(1)
    assert command.startswith("stackai-runs sync")
    ran = stackai_runs(*shlex.split(command)[1:], "--quiet", env=env)
    assert ran.returncode == 0, ran.stderr
    with duckdb.connect(str(path)) as con:
        for (name,) in con.execute(
            "select view_name from duckdb_views() where not internal and schema_name = 'stackai'"
        ).fetchall():
            con.execute(f"drop view if exists stackai.{name} cascade")
    said = stackai_runs("report", "--duckdb", str(path), env=env)
    assert said.returncode == 1 and "create the views first" in said.stderr
    command = re.search(r"\((stackai-runs [^)]*)\)", said.stderr).group(1)
    assert command.startswith("stackai-runs views")
    ran = stackai_runs(*shlex.split(command)[1:], env=env)
    assert ran.returncode == 0, ran.stderr
    assert stackai_runs("report", "--duckdb", str(path), env=env).returncode == 0


def test_views_on_a_file_with_nothing_synced_names_the_sync_that_works(settings, tmp_path):
    path = tmp_path / "nothing.duckdb"
    duckdb.connect(str(path)).close()
    said = stackai_runs("views", "--duckdb", str(path))
    assert said.returncode == 1 and "sync first" in said.stderr
    assert f"stackai-runs sync --duckdb {path}" in said.stderr


def read_only(folder: Path) -> Callable[[], None]:
    """Make `folder` read-only, for root too (chattr +i where the file system has it); returns
    the undo."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make a folder read-only for root here: {made.stderr!r}")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_views_in_a_read_only_folder_is_one_line(settings, world, tmp_path):
    sync_with_views(settings, world)
    folder = settings.duckdb_path.parent
    (folder / (settings.duckdb_path.name + ".lock")).unlink()
    undo = read_only(folder)
    try:
        assert not os.access(folder, os.W_OK) or os.geteuid() == 0
        result = stackai_runs("views", "--duckdb", str(settings.duckdb_path))
    finally:
        undo()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot create the lock file beside" in result.stderr


@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_views_and_report_on_postgres_match_duckdb(settings, world, tmp_path):
    from pipelines.load import run_sync

    assert run_sync(settings, now=world.now).ok
    on_duckdb = replace(settings, destination=None, duckdb_path=tmp_path / "same.duckdb")
    assert run_sync(on_duckdb, now=world.now).ok
    views = stackai_runs("views", "--destination", "postgres")
    assert views.returncode == 0, views.stderr
    assert "postgres at 127.0.0.1:" in views.stdout
    postgres = stackai_runs("report", "--destination", "postgres")
    duck = stackai_runs("report", "--duckdb", str(on_duckdb.duckdb_path))
    assert postgres.returncode == duck.returncode == 0, postgres.stderr + duck.stderr
    assert "postgres at 127.0.0.1:" in postgres.stdout.splitlines()[0]
    rows = table_rows(postgres.stdout)
    for (org_id, flow_id), runs in group(
        truth(world), lambda r: (r["org_id"], r["flow_id"])
    ).items():
        assert flow_cells(rows, org_id, flow_id)[1] == f"{len(runs):,}"
    # the same figures, below the first line (which names where the data is)
    assert postgres.stdout.splitlines()[1:] == duck.stdout.splitlines()[1:]
