"""What the CLI shows a person: logging setup, live progress, and the end-of-sync summary."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipelines.stackai.progress import FlowReport, ProgressCallback, SyncReport


# Off a terminal (cron mail, log files) rich would wrap at 80 columns and split the flow ids
# (two uuids) over lines; a wide fixed width keeps one flow per line.
class _Console(Console):
    def on_broken_pipe(self) -> None:
        # `stackai-runs report | head -1`: the reader has what it wanted; a normal end (rich
        # exits 1 here by default)
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0)


stdout = _Console() if sys.stdout.isatty() else _Console(width=200)
stderr = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Log to stderr: rich on a terminal, plain timestamped lines elsewhere (cron mail, logs)."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    if stderr.is_terminal:
        # imported here: rich.logging pulls in rich.traceback, which `--help` never needs
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=stderr, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        formatter = logging.Formatter(
            "%(asctime)sZ %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
        )
        formatter.converter = time.gmtime  # UTC, like every other time the tool prints
        handler.setFormatter(formatter)
    root = logging.getLogger("pipelines")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@contextmanager
def live_progress(enabled: bool) -> Iterator[ProgressCallback | None]:
    """A per-flow progress display (pages, runs) on a terminal; nothing elsewhere."""
    if not enabled or not stderr.is_terminal:
        yield None
        return
    lock = threading.Lock()
    tasks: dict[str, TaskID] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    ) as progress:

        def update(report: FlowReport) -> None:
            detail = f"{report.status}: {report.pages} pages, {report.runs} runs"
            with lock:
                if report.flow not in tasks:
                    tasks[report.flow] = progress.add_task(report.flow, total=None, detail="")
                progress.update(tasks[report.flow], detail=detail)

        yield update


def _short(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def print_sync_summary(report: SyncReport) -> None:
    """One screen: each flow with status, pages, runs, rejected, new cursor, seconds, error."""
    table = Table(title="stackai-runs sync", title_justify="left")
    columns = ("flow", "name", "status", "pages", "runs", "rejected", "cursor (UTC)", "seconds")
    for column in columns:
        table.add_column(column, justify="right" if column in ("pages", "runs") else "left")
    if not report.flows:  # the sync failed before any flow was known (e.g. discovery)
        if report.error:
            stdout.print(f"[red]error[/]: {escape(report.error)}", highlight=False, soft_wrap=True)
        return
    for flow in report.flows.values():
        status = (
            f"[green]{flow.status}[/]"
            if flow.status == "ok"
            else f"[yellow]{flow.status}[/]"
            if flow.ok
            else f"[red]{flow.status}[/]"
        )
        table.add_row(
            escape(flow.flow),
            escape(flow.name or "-"),
            status,
            str(flow.pages),
            str(flow.runs),
            str(flow.rejected),
            _short(flow.cursor_after),
            f"{flow.seconds:.1f}",
        )
    stdout.print(table)
    for flow in report.failed:
        stdout.print(
            f"[red]failed[/] {escape(flow.flow)}: {escape(flow.error or '')}",
            highlight=False,
            soft_wrap=True,
        )
    if report.error:
        stdout.print(f"[red]error[/]: {escape(report.error)}", highlight=False, soft_wrap=True)
    if report.rejected:
        stdout.print(
            f"[yellow]warning[/]: {report.rejected} records could not be loaded and were kept"
            " in stackai.flow_runs_rejected with the reason",
            highlight=False,
            soft_wrap=True,
        )
    if report.calls_unpriced:
        listed = ", ".join(f"{k} ({n})" for k, n in sorted(report.unpriced_models.items()))
        stdout.print(
            f"[yellow]note[/]: {report.calls_unpriced} LLM calls have no known price (cost"
            f" NULL; see stackai.unpriced_models, or set \\[sources.stackai.model_prices]):"
            f" {escape(listed)}",
            highlight=False,
            soft_wrap=True,
        )
    if report.nul_replaced:
        stdout.print(
            f"[yellow]note[/]: {report.nul_replaced} runs had NUL characters, which PostgreSQL"
            " cannot store: each was replaced by U+FFFD (the run ids are in the log)",
            highlight=False,
            soft_wrap=True,
        )
    if report.unknown_values:
        listed = ", ".join(f"{k} ({n})" for k, n in sorted(report.unknown_values.items()))
        stdout.print(
            f"[yellow]note[/]: values the API contract does not list (kept as text): "
            f"{escape(listed)}",
            highlight=False,
            soft_wrap=True,
        )
    for flow in report.flows.values():
        for note in flow.notes:
            stdout.print(f"[yellow]note[/] {escape(flow.flow)}: {escape(note)}", soft_wrap=True)
    throttled = report.concurrency.describe() if report.concurrency else None
    if throttled:
        stdout.print(f"[yellow]note[/]: {escape(throttled)}", soft_wrap=True)
    if report.flows_discovered is not None:
        stdout.print(
            f"flows: {report.flows_discovered} listed by the org summary,"
            f" {len(report.flows_new)} new, {len(report.flows_unlisted)} no longer listed"
            + (
                f" ({', '.join(report.flows_unlisted)}: not read, runs kept)"
                if report.flows_unlisted
                else ""
            ),
            highlight=False,
            soft_wrap=True,
        )
    runs = sum(f.runs for f in report.flows.values())
    ok = sum(1 for f in report.flows.values() if f.ok)
    new = sum(f.new_runs for f in report.flows.values())
    into = f" into {report.destination}" if report.destination else ""
    stdout.print(
        f"{runs} runs read ({new or 'no'} new runs) from {ok}/{len(report.flows)} flows in"
        f" {report.seconds:.1f} s{into}",
        highlight=False,
        soft_wrap=True,
    )


def summary_dict(report: SyncReport | None, error: str | None = None) -> dict:
    """The `--json` summary: `{"ok", "destination" (where it loaded, no secret), "seconds",
    "error", "runs", "rejected", "nul_replaced"
    (runs whose NUL characters became U+FFFD for PostgreSQL), "calls_priced", "calls_unpriced",
    "unpriced_models" (LLM calls priced by this sync, those with no known price, and those by
    `PROVIDER/MODEL_ID`), "flows_discovered",
    "flows_new", "flows_unlisted", "flows": [...]}` (discovered: flows the org summary listed
    for `orgs`, null without; new and unlisted: `ORG_ID/FLOW_ID` lists), each flow with its
    name, status, runs, new runs, rejected, pages, requests, retries, open-run
    re-checks, open runs, the time slices and probes its window was read with (0: page after
    page), the tail's window and the cursor before/after (ISO-8601 UTC), seconds, notes,
    unknown enum values and error; "concurrency": the request limit, `{"maximum", "lowest",
    "final", "throttled" (answers HTTP 429/503), "backoffs" (cuts), "adaptive"}`, null when the
    sync made no request."""
    if report is None:
        return {
            "ok": False,
            "destination": None,
            "seconds": 0.0,
            "error": error,
            "runs": 0,
            "rejected": 0,
            "nul_replaced": 0,
            "calls_priced": 0,
            "calls_unpriced": 0,
            "unpriced_models": {},
            "flows_discovered": None,
            "flows_new": [],
            "flows_unlisted": [],
            "concurrency": None,
            "flows": [],
        }
    flows = [
        {
            "flow": f.flow,
            "name": f.name,
            "status": f.status,
            "runs": f.runs,
            "new_runs": f.new_runs,
            "rejected": f.rejected,
            "pages": f.pages,
            "requests": f.requests,
            "retries": f.retries,
            "rechecks": f.rechecks,
            "open_runs": f.open_runs,
            "slices": f.slices,
            "probes": f.probes,
            "window_start": f.window_start,
            "window_end": f.window_end,
            "cursor_before": f.cursor_before,
            "cursor_after": f.cursor_after,
            "seconds": round(f.seconds, 3),
            "notes": f.notes,
            "unknown_values": f.unknown_values,
            "error": f.error,
        }
        for f in report.flows.values()
    ]
    return {
        "ok": report.ok,
        "destination": report.destination,
        "seconds": round(report.seconds, 3),
        "error": report.error,
        "runs": sum(f.runs for f in report.flows.values()),
        "rejected": report.rejected,
        "nul_replaced": report.nul_replaced,
        "calls_priced": report.calls_priced,
        "calls_unpriced": report.calls_unpriced,
        "unpriced_models": report.unpriced_models,
        "flows_discovered": report.flows_discovered,
        "flows_new": report.flows_new,
        "flows_unlisted": report.flows_unlisted,
        "concurrency": asdict(report.concurrency) if report.concurrency else None,
        "flows": flows,
    }


def print_json_summary(report: SyncReport | None, error: str | None = None) -> None:
    """Print `summary_dict` as one JSON document on stdout."""
    sys.stdout.write(json.dumps(summary_dict(report, error), indent=2) + "\n")
    sys.stdout.flush()
