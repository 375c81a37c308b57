"""`stackai-runs report`: a one-screen summary of the analysis views, and a chart of them.

Reads the DuckDB file read-only, from the views of `sql/` (see `pipelines.views`): per flow runs,
outcomes, failure rate, p95 latency and tokens (`stackai.runs`); the most frequent failures
(`stackai.runs.error_pattern`, as `stackai.top_errors` groups them); the models that used the
most tokens (`stackai.daily_llm_usage`); and per day and flow runs, failures and p95 latency
(`stackai.daily_flow_runs`) for the chart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.stackai.flows import FlowRef

REQUIRED_VIEWS = ("runs", "daily_flow_runs", "daily_llm_usage", "flow_completeness")
TOP_ERRORS = 5
TOP_MODELS = 5
CHART_FLOWS = 8
"""Flows drawn one line each in the chart (the busiest); the rest are summed into one line."""
CHART_SIZE_IN = (12.0, 7.0)
CHART_DPI = 100
"""12 x 7 in at 100 dpi: a 1200 x 700 px PNG, readable in a browser or a chat message."""


class ReportError(RuntimeError):
    """The file cannot be reported on: not readable, locked by a writer, or no views yet."""


@dataclass(frozen=True)
class FlowSummary:
    """One flow's figures over the report's window (or all flows', for the total row)."""

    org_id: str | None
    flow_id: str | None
    name: str | None
    runs: int
    completed: int
    failed: int
    cancelled: int
    open: int
    failure_rate: float | None
    """failed / (completed + failed + cancelled); None when no run finished."""
    p95_latency_seconds: float | None
    tokens: int
    users: int

    @property
    def label(self) -> str:
        return flow_label(self.org_id, self.flow_id, self.name)


@dataclass(frozen=True)
class ErrorSummary:
    org_id: str
    flow_id: str
    name: str | None
    error_pattern: str
    runs: int
    last_seen: datetime


@dataclass(frozen=True)
class ModelSummary:
    provider: str | None
    model_id: str | None
    calls: int
    runs: int
    tokens: int


@dataclass(frozen=True)
class ShortFlow:
    """A flow whose stored runs fall short of the API's own count (`flow_completeness`)."""

    org_id: str
    flow_id: str
    name: str | None
    total_runs: int
    stored_runs: int


@dataclass(frozen=True)
class FlowDay:
    org_id: str
    flow_id: str
    run_date: date
    runs: int
    failed: int
    p95_latency_seconds: float | None


@dataclass
class Report:
    """Everything `print_report` and `write_chart` show, read in one go."""

    source: str
    since: date | None
    flow: FlowRef | None
    first_run: datetime | None
    last_run: datetime | None
    flows: list[FlowSummary] = field(default_factory=list)
    total: FlowSummary | None = None
    errors: list[ErrorSummary] = field(default_factory=list)
    models: list[ModelSummary] = field(default_factory=list)
    days: list[FlowDay] = field(default_factory=list)
    short: list[ShortFlow] = field(default_factory=list)

    @property
    def names(self) -> dict[tuple[str, str], str | None]:
        return {(f.org_id, f.flow_id): f.name for f in self.flows if f.org_id and f.flow_id}


def flow_label(org_id: str | None, flow_id: str | None, name: str | None = None) -> str:
    """A short, recognisable name: `Support triage (2fc21d2b)`, or `9a8fa0f3/2fc21d2b`."""
    if org_id is None or flow_id is None:
        return "all flows"
    if name:
        return f"{name} ({flow_id[:8]})"
    return f"{org_id[:8]}/{flow_id[:8]}"


@contextmanager
def open_read_only(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to `path`, in UTC, after checking that the views exist.

    Raises:
        ReportError: no such file, the file is not DuckDB or is locked by a writer, or the
            views have not been created.
    """
    if not path.is_file():
        raise ReportError(f"no DuckDB file at {path}")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise ReportError(
            f"cannot open {path} read-only (a sync or another writer holding it?): {exc}"
        ) from None
    try:
        con.execute("set timezone = 'UTC'")
        found = {
            name
            for (name,) in con.execute(
                "select view_name from duckdb_views() where schema_name = 'stackai'"
            ).fetchall()
        }
        missing = [name for name in REQUIRED_VIEWS if name not in found]
        if missing:
            raise ReportError(
                f"{path} has no view stackai.{missing[0]}: create the views first"
                f" (stackai-runs views --duckdb {path})"
            )
        yield con
    finally:
        con.close()


def _window(since: date | None, flow: FlowRef | None) -> tuple[str, dict[str, Any]]:
    """A `where` clause (or "") on run_date / org_id / flow_id, and its named parameters."""
    conditions, params = [], {}
    if since is not None:
        conditions.append("run_date >= $since")
        params["since"] = since
    if flow is not None:
        conditions.append("org_id = $org_id and flow_id = $flow_id")
        params.update(org_id=flow.org_id, flow_id=flow.flow_id)
    return ("where " + " and ".join(conditions)) if conditions else "", params


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> list[dict[str, Any]]:
    result = con.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


FLOW_NAMES_SQL = """
select org_id, flow_id, flow_name as name
from stackai.flows
where flow_name is not null
"""

SHORT_SQL = """
select org_id, flow_id, flow_name as name, total_runs, stored_runs
from stackai.flow_completeness
where is_short {flow}
order by total_runs - stored_runs desc, org_id, flow_id
"""

FLOWS_SQL = """
select
    org_id,
    flow_id,
    grouping(org_id, flow_id) <> 0 as is_total,
    count(*) as runs,
    count(*) filter (where state = 'COMPLETED') as completed,
    count(*) filter (where state = 'FAILED') as failed,
    count(*) filter (where state = 'CANCELLED') as cancelled,
    count(*) filter (where is_open) as open,
    cast(count(*) filter (where state = 'FAILED') as double)
    / nullif(count(*) filter (where is_final), 0) as failure_rate,
    quantile_cont(latency_seconds, 0.95) as p95_latency_seconds,
    cast(coalesce(sum(total_tokens), 0) as bigint) as tokens,
    count(distinct user_id) as users,
    min(date) as first_run,
    max(date) as last_run
from stackai.runs
{where}
group by grouping sets ((org_id, flow_id), ())
order by is_total, runs desc, org_id, flow_id
"""

ERRORS_SQL = """
select
    org_id,
    flow_id,
    coalesce(error_pattern, '(no error message)') as error_pattern,
    count(*) as runs,
    max(date) as last_seen
from stackai.runs
{where}
group by all
order by runs desc, last_seen desc, error_pattern
limit {limit}
"""

MODELS_SQL = """
select
    provider,
    model_id,
    cast(sum(calls) as bigint) as calls,
    cast(sum(runs) as bigint) as runs,
    cast(sum(tokens) as bigint) as tokens
from stackai.daily_llm_usage
{where}
group by provider, model_id
order by tokens desc, calls desc, provider, model_id
limit {limit}
"""

DAYS_SQL = """
select org_id, flow_id, run_date, runs, failed, p95_latency_seconds
from stackai.daily_flow_runs
{where}
order by run_date, org_id, flow_id
"""


def build_report(
    con: duckdb.DuckDBPyConnection,
    since: date | None = None,
    flow: FlowRef | None = None,
    source: str = "",
) -> Report:
    """Read the report's figures from the views (see `open_read_only`).

    Args:
        con: a connection to a file with the views.
        since: only runs that started on this UTC day or later.
        flow: only this flow.
        source: what to call the data in the report (the file's path).
    """
    where, params = _window(since, flow)
    names = {(r["org_id"], r["flow_id"]): r["name"] for r in _rows(con, FLOW_NAMES_SQL, {})}
    report = Report(source=source, since=since, flow=flow, first_run=None, last_run=None)
    for row in _rows(con, FLOWS_SQL.format(where=where), params):
        first_run, last_run = row.pop("first_run"), row.pop("last_run")
        is_total = row.pop("is_total")
        summary = FlowSummary(**row, name=names.get((row["org_id"], row["flow_id"])))
        if is_total:
            if summary.runs:  # the grand total of an empty selection is a row of zeros
                report.total, report.first_run, report.last_run = summary, first_run, last_run
        else:
            report.flows.append(summary)
    failed_where = f"{where} and state = 'FAILED'" if where else "where state = 'FAILED'"
    for row in _rows(con, ERRORS_SQL.format(where=failed_where, limit=TOP_ERRORS), params):
        report.errors.append(ErrorSummary(**row, name=names.get((row["org_id"], row["flow_id"]))))
    for row in _rows(con, MODELS_SQL.format(where=where, limit=TOP_MODELS), params):
        report.models.append(ModelSummary(**row))
    report.days = [FlowDay(**row) for row in _rows(con, DAYS_SQL.format(where=where), params)]
    only = "and org_id = $org_id and flow_id = $flow_id" if flow else ""
    ids = {"org_id": flow.org_id, "flow_id": flow.flow_id} if flow else {}
    short = _rows(con, SHORT_SQL.format(flow=only), ids)
    report.short = [ShortFlow(**row) for row in short]
    return report


def format_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def format_seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _when(instant: datetime | None) -> str:
    return "-" if instant is None else instant.strftime("%Y-%m-%d %H:%M")


def print_report(report: Report, out: Console) -> None:
    """Print the report on `out` (`pipelines.console.stdout` from the CLI): a header, runs per
    flow with a total row, the top failures, the top models."""
    scope = [f"since {report.since.isoformat()}" if report.since else "all history"]
    if report.flow:
        scope.append(f"flow {report.flow}")
    out.print(f"[bold]stackai-runs report[/] {escape(report.source)} ({', '.join(scope)})")
    for flow in report.short:
        out.print(
            f"[yellow]warning[/]: {escape(flow_label(flow.org_id, flow.flow_id, flow.name))}:"
            f" {flow.total_runs - flow.stored_runs:,} of the {flow.total_runs:,} runs the API"
            f" counts are not stored (stackai.flow_completeness); rebuild it with"
            f" stackai-runs sync --full-refresh --flow {flow.org_id}/{flow.flow_id}",
            highlight=False,
            soft_wrap=True,
        )
    if report.total is None:
        out.print("no runs match", highlight=False)
        return
    out.print(
        f"{report.total.runs:,} runs started {_when(report.first_run)} to"
        f" {_when(report.last_run)} UTC in {len(report.flows)}"
        f" flow{'' if len(report.flows) == 1 else 's'}",
        highlight=False,
    )

    flows = Table(title="runs per flow", title_justify="left")
    flows.add_column("flow")
    for column in ("runs", "completed", "failed", "cancelled", "open"):
        flows.add_column(column, justify="right")
    flows.add_column("failure rate", justify="right")
    flows.add_column("p95 latency (s)", justify="right")
    flows.add_column("tokens", justify="right")
    flows.add_column("users", justify="right")
    for summary in [*report.flows, report.total]:
        flows.add_row(
            escape(summary.label),
            f"{summary.runs:,}",
            f"{summary.completed:,}",
            f"{summary.failed:,}",
            f"{summary.cancelled:,}",
            f"{summary.open:,}",
            format_rate(summary.failure_rate),
            format_seconds(summary.p95_latency_seconds),
            f"{summary.tokens:,}",
            f"{summary.users:,}",
            end_section=summary is report.flows[-1] if report.flows else False,
            style="bold" if summary is report.total else None,
        )
    out.print(flows)
    out.print(
        "failure rate = failed / finished (completed + failed + cancelled) runs; open runs are"
        " not counted until they finish",
        style="dim",
        highlight=False,
    )

    if report.errors:
        errors = Table(title=f"top {TOP_ERRORS} failures", title_justify="left")
        errors.add_column("flow")
        errors.add_column("error (ids and numbers masked)")
        errors.add_column("runs", justify="right")
        errors.add_column("last seen (UTC)")
        for error in report.errors:
            errors.add_row(
                escape(flow_label(error.org_id, error.flow_id, error.name)),
                escape(error.error_pattern),
                f"{error.runs:,}",
                _when(error.last_seen),
            )
        out.print(errors)
    else:
        out.print("no failed runs", highlight=False)

    if report.models:
        models = Table(title=f"top {TOP_MODELS} models by tokens", title_justify="left")
        for column in ("provider", "model"):
            models.add_column(column)
        for column in ("calls", "runs", "tokens"):
            models.add_column(column, justify="right")
        for model in report.models:
            models.add_row(
                escape(model.provider or "-"),
                escape(model.model_id or "-"),
                f"{model.calls:,}",
                f"{model.runs:,}",
                f"{model.tokens:,}",
            )
        out.print(models)


@dataclass
class _Series:
    label: str
    runs: list[float]
    failed: list[float]
    p95: list[float] | None
    """None for the summed "other flows" line: percentiles do not add up."""


def _chart_series(report: Report) -> tuple[list[date], list[_Series]]:
    """Per-flow daily series over every day from the first to the last (no-run days are 0)."""
    if not report.days:
        return [], []
    first = min(d.run_date for d in report.days)
    last = max(d.run_date for d in report.days)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    index = {day: n for n, day in enumerate(days)}
    busiest = [(f.org_id, f.flow_id) for f in report.flows[:CHART_FLOWS]]
    names = report.names
    series = {
        key: _Series(
            flow_label(*key, names.get(key)),
            [0.0] * len(days),
            [0.0] * len(days),
            [float("nan")] * len(days),
        )
        for key in busiest
    }
    others = {(d.org_id, d.flow_id) for d in report.days} - set(busiest)
    other = _Series(f"other flows ({len(others)})", [0.0] * len(days), [0.0] * len(days), None)
    for day in report.days:
        line = series.get((day.org_id, day.flow_id), other)
        n = index[day.run_date]
        line.runs[n] += day.runs
        line.failed[n] += day.failed
        if line.p95 is not None and day.p95_latency_seconds is not None:
            line.p95[n] = day.p95_latency_seconds
    return days, [*series.values(), *([other] if others else [])]


def write_chart(report: Report, path: Path) -> Path:
    """Write a PNG (1200 x 700 px) of daily runs, failed runs and p95 latency per flow.

    Three stacked panels sharing a UTC date axis: runs and failed runs per day as bars stacked
    by flow (the bar's height is the day's total), p95 latency as one line per flow; one colour
    per flow (the `CHART_FLOWS` busiest; the rest summed in grey), the legend to the right.

    Raises:
        OSError: the file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    days, series = _chart_series(report)
    figure = Figure(figsize=CHART_SIZE_IN, dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    runs_axes, failed_axes, latency_axes = figure.subplots(
        3, 1, sharex=True, height_ratios=(1.2, 0.8, 1.0)
    )
    scope = f"since {report.since.isoformat()}" if report.since else "all history"
    if report.flow:
        key = (report.flow.org_id, report.flow.flow_id)
        scope += f", {flow_label(*key, report.names.get(key))}"
    figure.suptitle(f"StackAI runs per UTC day ({scope})", fontsize=13)
    runs_bottom = [0.0] * len(days)
    failed_bottom = [0.0] * len(days)
    for n, line in enumerate(series):
        colour = "0.65" if line.p95 is None else f"C{n % 10}"
        runs_axes.bar(
            days, line.runs, bottom=runs_bottom, width=0.8, color=colour, label=line.label
        )
        failed_axes.bar(days, line.failed, bottom=failed_bottom, width=0.8, color=colour)
        runs_bottom = [a + b for a, b in zip(runs_bottom, line.runs, strict=True)]
        failed_bottom = [a + b for a, b in zip(failed_bottom, line.failed, strict=True)]
        if line.p95 is not None:
            latency_axes.plot(days, line.p95, color=colour, linewidth=1.4, marker="o", markersize=3)
    for axes, ylabel in (
        (runs_axes, "runs"),
        (failed_axes, "failed runs"),
        (latency_axes, "p95 latency (s)"),
    ):
        axes.set_ylabel(ylabel)
        axes.grid(True, axis="y", color="0.9")
        axes.set_axisbelow(True)
        axes.set_ylim(bottom=0)
        axes.spines[["top", "right"]].set_visible(False)
    runs_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    failed_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not days:
        runs_axes.text(0.5, 0.5, "no runs", transform=runs_axes.transAxes, ha="center")
    locator = AutoDateLocator()
    latency_axes.xaxis.set_major_locator(locator)
    latency_axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if series:
        figure.legend(loc="outside right upper", title="flow", fontsize=9, frameon=False)
    figure.savefig(path, format="png", dpi=CHART_DPI)
    return path
