"""`stackai-runs report`: a one-screen summary of the analysis views, and a chart of them.

Reads the views of `sql/` (see `pipelines.analysis.views`): per flow runs, outcomes, failure
rate, p95 latency, tokens and cost (`stackai.runs`, `stackai.run_costs`); the most frequent
failures (`stackai.runs.error_pattern`, as `stackai.top_errors` groups them); the models that
used the most tokens, with their cost (`stackai.daily_llm_usage`); the users who cost the most;
and per day and flow runs, failures, p95 latency and cost (`stackai.daily_flow_runs`) for the
chart. A DuckDB file is read read-only; any other destination through dlt's SQL client, each
query written once in DuckDB's SQL and transpiled (`dialects.transpile`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.analysis import dialects
from pipelines.stackai.flows import FlowRef

REQUIRED_VIEWS = ("runs", "run_costs", "daily_flow_runs", "daily_llm_usage", "flow_completeness")
TOP_ERRORS = 5
TOP_MODELS = 5
TOP_USERS = 5
CHART_FLOWS = 8
"""Flows drawn one line each in the chart (the busiest); the rest are summed into one line."""
CHART_SIZE_IN = (12.0, 8.5)
CHART_DPI = 100
"""12 x 8.5 in at 100 dpi: a 1200 x 850 px PNG, readable in a browser or a chat message."""


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
    cost_usd: float = 0.0
    """USD of the runs' priced LLM calls."""
    unpriced_calls: int = 0

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
    cost_usd: float | None = None
    """None when no call of the model has a price."""


@dataclass(frozen=True)
class UserSummary:
    """An end user (the runs' `user_id`, per org) and what their runs cost."""

    org_id: str
    user_id: str | None
    runs: int
    tokens: int
    cost_usd: float


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
    cost_usd: float = 0.0


@dataclass
class Report:
    """Everything `print_report` and `write_chart` show, read in one go."""

    source: str
    since: date | datetime | None
    flow: FlowRef | None
    first_run: datetime | None
    last_run: datetime | None
    flows: list[FlowSummary] = field(default_factory=list)
    total: FlowSummary | None = None
    errors: list[ErrorSummary] = field(default_factory=list)
    models: list[ModelSummary] = field(default_factory=list)
    users: list[UserSummary] = field(default_factory=list)
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
        ReportError: no such file, the file is not DuckDB or is locked by a writer, nothing was
            synced into it, or the views have not been created.
    """
    if not path.is_file():
        raise ReportError(
            f"no DuckDB file at {path}: sync first (stackai-runs sync --duckdb {path})"
        )
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise ReportError(
            f"cannot open {path} read-only (a sync or another writer holding it?): {exc}"
        ) from None
    try:
        con.execute("set timezone = 'UTC'")
        _check_views(_rows(con, VIEWS_SQL), f"--duckdb {path}", str(path))
        yield con
    finally:
        con.close()


@contextmanager
def open_destination(pipeline: Any, where: str) -> Iterator[Any]:
    """dlt's SQL client to the pipeline's destination (any but a DuckDB file), after checking
    that the views exist. `where` names it in messages (`postgres at host:5432/db`).

    Raises:
        ReportError: the server refused the connection (one line naming `where`, never the
            password), nothing synced there, or no views yet.
    """
    with ExitStack() as stack:
        try:
            client = stack.enter_context(pipeline.sql_client())
        except Exception as exc:  # entering only connects: the driver's refusal, as it is
            raise ReportError(f"cannot connect to {where}: {_first_line(exc)}") from None
        _check_views(
            _rows(client, VIEWS_SQL),
            f"--destination {pipeline.destination.destination_name}",
            where,
        )
        yield client


def _first_line(exc: BaseException) -> str:
    """The first line of a driver's error, any secret in it masked (a DSN in a message)."""
    from pipelines.stackai.http import redact

    text = str(exc).strip()
    line = redact(text.splitlines()[0] if text else type(exc).__name__)
    line = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", line)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", line, flags=re.IGNORECASE)


VIEWS_SQL = """
select table_name as name, table_type as kind
from information_schema.tables
where table_schema = 'stackai'
"""


def _check_views(found: list[dict[str, Any]], flag: str, where: str) -> None:
    views = {r["name"] for r in found if "VIEW" in str(r["kind"]).upper()}
    tables = {r["name"] for r in found} - views
    if "flow_runs" not in tables:
        raise ReportError(f"{where} holds no synced run yet: sync first (stackai-runs sync {flag})")
    missing = [name for name in REQUIRED_VIEWS if name not in views]
    if missing:
        raise ReportError(
            f"{where} has no view stackai.{missing[0]}: create the views first"
            f" (stackai-runs views {flag})"
        )


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _window(since: date | datetime | None, flow: FlowRef | None) -> str:
    """A `where` clause (or "") on the runs' start and the flow, with its values inlined as
    literals (ids are validated `FlowRef`s; one text works on every dialect). A date `since` is
    a UTC day (`run_date`), a date-time an instant (`date`): every figure of the report, the
    daily ones included, counts the same runs."""
    conditions = []
    if isinstance(since, datetime):
        conditions.append(
            f"date >= cast({_literal(since.astimezone(UTC).isoformat())} as timestamptz)"
        )
    elif since is not None:
        conditions.append(f"run_date >= date {_literal(since.isoformat())}")
    if flow is not None:
        conditions.append(
            f"org_id = {_literal(flow.org_id)} and flow_id = {_literal(flow.flow_id)}"
        )
    return ("where " + " and ".join(conditions)) if conditions else ""


def _rows(con: Any, sql: str) -> list[dict[str, Any]]:
    """Rows of `sql` (DuckDB's SQL) from a DuckDB connection, or from dlt's SQL client of any
    destination (transpiled to its dialect)."""
    if isinstance(con, duckdb.DuckDBPyConnection):
        result = con.execute(sql)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    (statement,) = dialects.transpile(sql, con.capabilities.sqlglot_dialect)
    with con.execute_query(statement) as cursor:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


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
with runs_in_window as (
    select runs.*, run_costs.cost_usd, run_costs.unpriced_calls
    from stackai.runs as runs
    inner join stackai.run_costs as run_costs on runs.run_id = run_costs.run_id
)
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
    cast(coalesce(sum(cost_usd), 0) as double) as cost_usd,
    cast(coalesce(sum(unpriced_calls), 0) as bigint) as unpriced_calls,
    min(date) as first_run,
    max(date) as last_run
from runs_in_window
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
group by org_id, flow_id, coalesce(error_pattern, '(no error message)')
order by runs desc, last_seen desc, error_pattern
limit {limit}
"""

MODELS_SQL = """
select
    provider,
    model_id,
    count(*) as calls,
    count(distinct run_id) as runs,
    cast(coalesce(sum(tokens), 0) as bigint) as tokens,
    cast(sum(cost_usd) as double) as cost_usd
from stackai.llm_usage_costs
{where}
group by provider, model_id
order by tokens desc, calls desc, provider, model_id
limit {limit}
"""

USERS_SQL = """
with runs_in_window as (
    select runs.*, run_costs.cost_usd
    from stackai.runs as runs
    inner join stackai.run_costs as run_costs on runs.run_id = run_costs.run_id
)
select
    org_id,
    user_id,
    count(*) as runs,
    cast(coalesce(sum(total_tokens), 0) as bigint) as tokens,
    cast(coalesce(sum(cost_usd), 0) as double) as cost_usd
from runs_in_window
{where}
group by org_id, user_id
-- cost to the nano-dollar: sums in another order (another destination) keep the ranking
order by cast(coalesce(sum(cost_usd), 0) as decimal(38, 9)) desc, tokens desc, org_id, user_id
limit {limit}
"""

DAYS_SQL = """
with runs_in_window as (
    select runs.*, run_costs.cost_usd
    from stackai.runs as runs
    inner join stackai.run_costs as run_costs on runs.run_id = run_costs.run_id
)
select
    org_id,
    flow_id,
    run_date,
    count(*) as runs,
    count(*) filter (where state = 'FAILED') as failed,
    quantile_cont(latency_seconds, 0.95) as p95_latency_seconds,
    cast(coalesce(sum(cost_usd), 0) as double) as cost_usd
from runs_in_window
{where}
group by org_id, flow_id, run_date
order by run_date, org_id, flow_id
"""
"""As `stackai.daily_flow_runs` computes them, over the runs of the report's window (a
date-time `since` cuts its first day too)."""


def build_report(
    con: Any,
    since: date | datetime | None = None,
    flow: FlowRef | None = None,
    source: str = "",
) -> Report:
    """Read the report's figures from the views (see `open_read_only`, `open_destination`).

    Args:
        con: a DuckDB connection to a file with the views, or dlt's SQL client of a
            destination with them.
        since: only runs that started on this UTC day or later (a date), or at this instant or
            later (an aware date-time; daily figures from its UTC day).
        flow: only this flow.
        source: what to call the data in the report (the file's path, the destination).
    """
    where = _window(since, flow)
    names = {(r["org_id"], r["flow_id"]): r["name"] for r in _rows(con, FLOW_NAMES_SQL)}
    report = Report(source=source, since=since, flow=flow, first_run=None, last_run=None)
    for row in _rows(con, FLOWS_SQL.format(where=where)):
        first_run, last_run = row.pop("first_run"), row.pop("last_run")
        is_total = row.pop("is_total")
        summary = FlowSummary(**row, name=names.get((row["org_id"], row["flow_id"])))
        if is_total:
            if summary.runs:  # the grand total of an empty selection is a row of zeros
                report.total, report.first_run, report.last_run = summary, first_run, last_run
        else:
            report.flows.append(summary)
    failed_where = f"{where} and state = 'FAILED'" if where else "where state = 'FAILED'"
    for row in _rows(con, ERRORS_SQL.format(where=failed_where, limit=TOP_ERRORS)):
        report.errors.append(ErrorSummary(**row, name=names.get((row["org_id"], row["flow_id"]))))
    for row in _rows(con, MODELS_SQL.format(where=where, limit=TOP_MODELS)):
        report.models.append(ModelSummary(**row))
    report.users = [
        UserSummary(**row) for row in _rows(con, USERS_SQL.format(where=where, limit=TOP_USERS))
    ]
    report.days = [FlowDay(**row) for row in _rows(con, DAYS_SQL.format(where=where))]
    only = (
        f"and org_id = {_literal(flow.org_id)} and flow_id = {_literal(flow.flow_id)}"
        if flow
        else ""
    )
    report.short = [ShortFlow(**row) for row in _rows(con, SHORT_SQL.format(flow=only))]
    return report


def format_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def format_usd(amount: float | None) -> str:
    """`$12.35`, `$0.0042` for less than a cent, `-` for no price."""
    if amount is None:
        return "-"
    if 0 < abs(amount) < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def describe_since(since: date | datetime | None) -> str:
    if since is None:
        return "all history"
    if isinstance(since, datetime):
        return f"since {since.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC"
    return f"since {since.isoformat()}"


def format_seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _when(instant: datetime | None) -> str:
    return "-" if instant is None else instant.strftime("%Y-%m-%d %H:%M")


def print_report(report: Report, out: Console) -> None:
    """Print the report on `out` (`pipelines.console.stdout` from the CLI): a header, runs per
    flow with a total row, the top failures, the top models."""
    scope = [describe_since(report.since)]
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
    flows.add_column("cost (USD)", justify="right")
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
            format_usd(summary.cost_usd),
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
    if report.total.unpriced_calls:
        out.print(
            f"[yellow]note[/]: {report.total.unpriced_calls:,} LLM calls have no known price and"
            " are not in the costs (stackai.unpriced_models lists their models; set"
            " \\[sources.stackai.model_prices] for them)",
            highlight=False,
            soft_wrap=True,
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
        for column in ("calls", "runs", "tokens", "cost (USD)"):
            models.add_column(column, justify="right")
        for model in report.models:
            models.add_row(
                escape(model.provider or "-"),
                escape(model.model_id or "-"),
                f"{model.calls:,}",
                f"{model.runs:,}",
                f"{model.tokens:,}",
                format_usd(model.cost_usd),
            )
        out.print(models)

    if report.users:
        users = Table(title=f"top {TOP_USERS} users by cost", title_justify="left")
        users.add_column("org")
        users.add_column("user_id")
        for column in ("runs", "tokens", "cost (USD)"):
            users.add_column(column, justify="right")
        for user in report.users:
            users.add_row(
                escape(user.org_id[:8]),
                escape(user.user_id if user.user_id is not None else "(none)"),
                f"{user.runs:,}",
                f"{user.tokens:,}",
                format_usd(user.cost_usd),
            )
        out.print(users)


@dataclass
class _Series:
    label: str
    runs: list[float]
    failed: list[float]
    cost: list[float]
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
            [0.0] * len(days),
            [float("nan")] * len(days),
        )
        for key in busiest
    }
    others = {(d.org_id, d.flow_id) for d in report.days} - set(busiest)
    other = _Series(
        f"other flows ({len(others)})",
        [0.0] * len(days),
        [0.0] * len(days),
        [0.0] * len(days),
        None,
    )
    for day in report.days:
        line = series.get((day.org_id, day.flow_id), other)
        n = index[day.run_date]
        line.runs[n] += day.runs
        line.failed[n] += day.failed
        line.cost[n] += day.cost_usd
        if line.p95 is not None and day.p95_latency_seconds is not None:
            line.p95[n] = day.p95_latency_seconds
    return days, [*series.values(), *([other] if others else [])]


class EmptyChart(ValueError):
    """Nothing to draw: no run in the report's range."""


def write_chart(report: Report, path: Path) -> Path:
    """Write `chart_figure(report)` as a PNG (1200 x 850 px) at `path`.

    Raises:
        EmptyChart: no run in the report's range (nothing is written).
        OSError: the file cannot be written.
    """
    figure = chart_figure(report)
    figure.savefig(path, format="png", dpi=CHART_DPI)
    return path


def chart_figure(report: Report) -> Any:
    """A matplotlib Figure of daily runs, failed runs, p95 latency and cost per flow.

    Four stacked panels sharing a UTC date axis with one tick per day (fewer when the range is
    long): runs, failed runs and cost (USD) per day as bars stacked by flow (the bar's height is
    the day's total), p95 latency as one line per flow; whole numbers on the count axes; one
    colour per flow (the `CHART_FLOWS` busiest; the rest summed in grey), the legend to the
    right.

    Raises:
        EmptyChart: no run in the report's range.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import (
        AutoDateLocator,
        ConciseDateFormatter,
        DateFormatter,
        DayLocator,
        date2num,
    )
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    days, series = _chart_series(report)
    if not days:
        raise EmptyChart(f"no runs {describe_since(report.since)}: no chart written")
    figure = Figure(figsize=CHART_SIZE_IN, dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    runs_axes, failed_axes, latency_axes, cost_axes = figure.subplots(
        4, 1, sharex=True, height_ratios=(1.2, 0.8, 1.0, 1.0)
    )
    scope = describe_since(report.since)
    if report.flow:
        key = (report.flow.org_id, report.flow.flow_id)
        scope += f", {flow_label(*key, report.names.get(key))}"
    figure.suptitle(f"StackAI runs per UTC day ({scope})", fontsize=13)
    runs_bottom = [0.0] * len(days)
    failed_bottom = [0.0] * len(days)
    cost_bottom = [0.0] * len(days)
    for n, line in enumerate(series):
        colour = "0.65" if line.p95 is None else f"C{n % 10}"
        runs_axes.bar(
            days, line.runs, bottom=runs_bottom, width=0.8, color=colour, label=line.label
        )
        failed_axes.bar(days, line.failed, bottom=failed_bottom, width=0.8, color=colour)
        cost_axes.bar(days, line.cost, bottom=cost_bottom, width=0.8, color=colour)
        runs_bottom = [a + b for a, b in zip(runs_bottom, line.runs, strict=True)]
        failed_bottom = [a + b for a, b in zip(failed_bottom, line.failed, strict=True)]
        cost_bottom = [a + b for a, b in zip(cost_bottom, line.cost, strict=True)]
        if line.p95 is not None:
            latency_axes.plot(days, line.p95, color=colour, linewidth=1.4, marker="o", markersize=3)
    for axes, ylabel in (
        (runs_axes, "runs"),
        (failed_axes, "failed runs"),
        (latency_axes, "p95 latency (s)"),
        (cost_axes, "cost (USD)"),
    ):
        axes.set_ylabel(ylabel)
        axes.grid(True, axis="y", color="0.9")
        axes.set_axisbelow(True)
        axes.set_ylim(bottom=0)
        axes.spines[["top", "right"]].set_visible(False)
    for axes, bottom in ((runs_axes, runs_bottom), (failed_axes, failed_bottom)):
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylim(0, max(1.0, max(bottom) * 1.05))  # a day of no failures: 0 to 1, not 0.05
    if max(cost_bottom) == 0:
        cost_axes.set_ylim(0, 1)
    # one tick per day, at most about 12 of them; days never show hours
    every = max(1, len(days) // 12 + (1 if len(days) % 12 else 0))
    locator = DayLocator(interval=every) if len(days) <= 12 * 31 else AutoDateLocator(minticks=3)
    cost_axes.xaxis.set_major_locator(locator)
    # days spelled out (matplotlib's concise labels show "00:00" for a short range, and a
    # month only where it changes); concise labels for a long range
    if len(days) <= 14:
        formatter = DateFormatter("%Y-%m-%d")
    elif len(days) <= 120:
        formatter = DateFormatter("%b %d")
    else:
        formatter = ConciseDateFormatter(locator)
    cost_axes.xaxis.set_major_formatter(formatter)
    cost_axes.set_xlim(date2num(days[0]) - 0.6, date2num(days[-1]) + 0.6)  # whole bars
    if series:
        figure.legend(loc="outside right upper", title="flow", fontsize=9, frameon=False)
    return figure
