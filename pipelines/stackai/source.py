"""The dlt source: one resource per configured flow, all loading into `stackai.flow_runs`.

Each flow is its own dlt resource so that it has its own resource state (its cursor) and dlt's
extract thread pool fetches flows concurrently (`parallelized=True`, at most `[extract] workers`
at once). A flow that fails is reported and leaves its state untouched; the other flows load.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dlt
import pendulum
from dlt.extract import DltResource, DltSource

from pipelines.stackai import endpoint
from pipelines.stackai.client import FlowRef, RunsClient
from pipelines.stackai.normalise import RejectedRun, normalise_run, parse_api_datetime
from pipelines.stackai.report import SyncReport

log = logging.getLogger(__name__)

SOURCE_NAME = "stackai"
REJECTED_TABLE = "flow_runs_rejected"

REJECTED_COLUMNS = endpoint.named_columns(
    {
        "org_id": {"data_type": "text", "nullable": False},
        "flow_id": {"data_type": "text", "nullable": False},
        "raw": {"data_type": "text", "nullable": True, "description": "The record as JSON text"},
        "reason": {"data_type": "text", "nullable": False},
        "seen_at": {"data_type": "timestamp", "timezone": True, "nullable": False},
    }
)


@dataclass(frozen=True)
class SyncWindow:
    """How far back each flow's requests reach, and the pinned end of this sync.

    Attributes:
        now: The sync's start (aware UTC): sent as `end_date` on every page of every flow, so
            runs that start while a flow is paging cannot shift its pages; the next sync reads
            them.
        initial_start: Where a flow with no state starts; None reads its whole history.
        lookback: How far before a flow's cursor (its newest loaded run `date`) each sync
            re-reads, to catch runs that changed (completed, got tokens) after they were loaded.
        since: Backfill: read from here instead, whatever the state says (the cursor still
            never moves backwards).
        until: Backfill: end of the window instead of `now`.
    """

    now: datetime
    initial_start: datetime | None = None
    lookback: timedelta = timedelta(hours=1)
    since: datetime | None = None
    until: datetime | None = None

    def bounds(self, cursor: datetime | None) -> tuple[datetime | None, datetime]:
        """The (start_date, end_date) to request for a flow whose cursor is `cursor`."""
        end = self.until or self.now
        if self.since is not None:
            return self.since, end
        if cursor is None:
            return self.initial_start, end
        return cursor - self.lookback, end


def _rejected_row(raw: Any, reason: str, flow: FlowRef) -> dict[str, Any]:
    try:
        text = json.dumps(raw, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(raw)
    return {
        "org_id": flow.org_id,
        "flow_id": flow.flow_id,
        "raw": text,
        "reason": reason,
        "seen_at": pendulum.now("UTC"),
    }


def _safe_error(exc: BaseException) -> str:
    # Our StackAIError messages are written to be shown; others get their type for context.
    from pipelines.stackai.client import StackAIError

    if isinstance(exc, StackAIError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def flow_runs(
    flow: FlowRef, client: RunsClient, window: SyncWindow, report: SyncReport
) -> DltResource:
    """The dlt resource for one flow's runs.

    Args:
        flow: The org/flow to read; the resource is named `ORG_ID/FLOW_ID`, which is where its
            state lives (`sources.stackai.resources["ORG_ID/FLOW_ID"]`: `{"cursor": ISO-8601}`).
        client: Shared HTTP client.
        window: The sync's window rules.
        report: Filled in with this flow's pages, runs, errors and cursors.

    Returns:
        A parallelized resource yielding normalised runs (pages of dicts) into `flow_runs`
        (merge on `run_id`), and unloadable records into `flow_runs_rejected` (append).
    """
    name = str(flow)

    @dlt.resource(
        name=name,
        table_name=endpoint.RUNS_TABLE,
        write_disposition="merge",
        primary_key=endpoint.PRIMARY_KEY,
        columns=endpoint.RUN_COLUMNS,
        nested_hints={"llm_usage": {"columns": endpoint.LLM_USAGE_COLUMNS}},
        parallelized=True,
    )
    def runs() -> Any:
        state = dlt.current.resource_state()
        flow_report = report.flow(name)
        cursor = parse_api_datetime(state["cursor"]) if state.get("cursor") else None
        flow_report.cursor_before = flow_report.cursor_after = state.get("cursor")
        start, end = window.bounds(cursor)
        flow_report.window_start = start.isoformat() if start else None
        flow_report.window_end = end.isoformat()
        report.start(flow_report)
        log.info("flow %s: reading runs from %s to %s", name, start or "the beginning", end)

        newest = cursor
        try:
            for page in client.iter_pages(flow, start, end):
                rows, rejected = [], []
                for raw in page:
                    try:
                        row = normalise_run(raw, flow.org_id, flow.flow_id)
                    except RejectedRun as exc:
                        rejected.append(_rejected_row(raw, exc.reason, flow))
                        continue
                    rows.append(row)
                    if newest is None or row["date"] > newest:
                        newest = row["date"]
                report.page(flow_report, len(rows), len(rejected))
                if rows:
                    yield rows
                if rejected:
                    log.warning(
                        "flow %s: %d record(s) rejected: %s",
                        name,
                        len(rejected),
                        rejected[0]["reason"],
                    )
                    yield dlt.mark.with_hints(
                        rejected,
                        dlt.mark.make_hints(
                            table_name=REJECTED_TABLE,
                            write_disposition="append",
                            primary_key=(),
                            columns=REJECTED_COLUMNS,
                        ),
                        create_table_variant=True,
                    )
        except Exception as exc:  # one flow's failure must not stop the others
            message = _safe_error(exc)
            log.error("flow %s failed: %s", name, message)
            log.debug("flow %s failure details", name, exc_info=True)
            report.finish(flow_report, error=message)
            return

        if newest is not None:
            # Only now, with every page read, may the cursor move: state is committed with
            # this load package, so it never runs ahead of the data.
            state["cursor"] = newest.isoformat()
        flow_report.cursor_after = state.get("cursor")
        report.finish(flow_report)
        log.info("flow %s: %d runs in %d pages", name, flow_report.runs, flow_report.pages)

    return runs


def stackai_source(
    flows: Sequence[FlowRef], client: RunsClient, window: SyncWindow, report: SyncReport
) -> DltSource:
    """The `stackai` dlt source: one `flow_runs` resource per flow.

    Args:
        flows: Distinct org/flow pairs to sync.
        client: HTTP client shared by every flow.
        window: The sync's window rules (pinned end, lookback, backfill).
        report: Receives each flow's progress and result.

    Returns:
        A `DltSource` named `stackai`.
    """

    @dlt.source(name=SOURCE_NAME, max_table_nesting=1)
    def stackai() -> list[DltResource]:
        return [flow_runs(flow, client, window, report) for flow in flows]

    return stackai()
