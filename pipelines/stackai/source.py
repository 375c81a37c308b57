"""The dlt source: one resource per configured flow, all loading into `stackai.flow_runs`.

Each flow is its own dlt resource so that it has its own resource state (its cursor) and dlt's
extract thread pool fetches flows concurrently (`parallelized=True`, at most `[extract] workers`
at once). A flow that fails is reported and leaves its state untouched; the other flows load.

Pages are typed a batch at a time (`batch.py`) and yielded as Arrow tables for `flow_runs` and
`flow_runs__llm_usage` (dlt loads them as parquet), and as rows for `flow_runs_rejected`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import dlt
import pendulum
from dlt.extract import DltResource, DltSource

from pipelines.stackai import endpoint
from pipelines.stackai.batch import BATCH_RUNS, FlowBatcher
from pipelines.stackai.client import (
    RunsClient,
    StackAIError,
    describe_transport_error,
)
from pipelines.stackai.dates import iso
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.http import redact
from pipelines.stackai.progress import FlowReport, SyncReport
from pipelines.stackai.window import (
    FlowPlan,
    FlowState,
    Observations,
    SyncWindow,
    next_state,
    plan_flow,
)

log = logging.getLogger(__name__)

SOURCE_NAME = "stackai"

SCHEMA_CONTRACT = {"tables": "evolve", "columns": "evolve", "data_type": "freeze"}
"""New API fields become new (text) columns; a value of another type than its column is never
turned into a variant column: `normalise_run` coerces it or rejects the run to
`flow_runs_rejected` first, and `freeze` makes any slip a loud error instead of a silent
`__v_` column."""
PROGRESS_EVERY_PAGES = 50
"""A long first sync logs a progress line this often, for logs read off a terminal."""


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


def _read(
    flow: FlowRef,
    client: RunsClient,
    plan: FlowPlan,
    seen: Observations,
    report: SyncReport,
    flow_report: FlowReport,
) -> Iterator[Any]:
    """Read the plan's tail and open-run re-checks; yield pages of rows and of rejects."""
    name = str(flow)
    if plan.future_cursor:
        flow_report.notes.append(
            f"cursor {iso(plan.state.cursor)} is in the future: nothing read, cursor reset to now"
        )
        log.warning("flow %s: %s", name, flow_report.notes[-1])
        return
    if plan.rechecks_left_out:
        flow_report.notes.append(
            f"{plan.rechecks_left_out} open runs not re-checked this sync"
            " (max_open_run_checks reached)"
        )
        log.warning("flow %s: %s", name, flow_report.notes[-1])
    if plan.aged_out:
        log.info(
            "flow %s: %d open runs older than max_open_run_age no longer re-checked",
            name,
            len(plan.aged_out),
        )
    start, end = plan.tail
    if start is not None and start > end:
        flow_report.notes.append(
            f"the window starts after it ends ({iso(start)} > {iso(end)}): nothing to read"
        )
        log.warning("flow %s: %s", name, flow_report.notes[-1])
    flow_report.window_start = iso(start)
    flow_report.window_end = iso(end)
    log.info("flow %s: reading runs from %s to %s", name, iso(start) or "the beginning", end)
    windows = [(start, end)] + [(lo, hi) for _, lo, hi in plan.rechecks]
    flow_report.rechecks = len(plan.rechecks)
    with FlowBatcher(
        flow.org_id, flow.flow_id, plan.state.cursor, watched=plan.state.open_runs
    ) as batcher:
        for lo, hi in windows:
            for page in client.iter_pages(flow, lo, hi):
                report.page(flow_report)
                if flow_report.pages % PROGRESS_EVERY_PAGES == 0:
                    log.info(
                        "flow %s: %d pages, %d runs so far",
                        name,
                        flow_report.pages,
                        flow_report.runs + batcher.pending_runs,
                    )
                batcher.add(page, getattr(page, "body", None))
                if batcher.pending_runs >= BATCH_RUNS:
                    yield from _load_batch(batcher, flow, seen, report, flow_report)
        if batcher.pending_runs:
            yield from _load_batch(batcher, flow, seen, report, flow_report)


def _load_batch(
    batcher: FlowBatcher,
    flow: FlowRef,
    seen: Observations,
    report: SyncReport,
    flow_report: FlowReport,
) -> Iterator[Any]:
    """Type a batch of pages; yield its Arrow tables and rejects, and record what it showed."""
    batch = batcher.flush()
    seen.see_batch(batch.newest, batch.opened, batch.closed)
    flow_report.new_runs += batch.new_runs
    for field, value, count in batch.unknown:
        flow_report.count_unknown(field, value, count)
    report.loaded(flow_report, batch.loaded, len(batch.rejected))
    for table in batch.runs:
        yield dlt.mark.with_table_name(table, endpoint.RUNS_TABLE)
    for table in batch.usage:
        yield dlt.mark.with_table_name(table, endpoint.LLM_USAGE_TABLE)
    if batch.rejected:
        log.warning(
            "flow %s: %d record(s) rejected, e.g. %s",
            flow,
            len(batch.rejected),
            batch.rejected[0][1],
        )
        rows = [_rejected_row(raw, reason, flow) for raw, reason in batch.rejected]
        yield dlt.mark.with_table_name(rows, endpoint.REJECTED_TABLE)


def _safe_error(exc: BaseException) -> str:
    # Our StackAIError messages are written to be shown; others get their type for context.
    if isinstance(exc, StackAIError):
        return str(exc)
    return redact(describe_transport_error(exc) or f"{type(exc).__name__}: {exc}")


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
        write_disposition={
            "disposition": "merge",
            "strategy": "delete-insert",
            "deduplicated": True,
        },
        primary_key=endpoint.PRIMARY_KEY,
        columns={**endpoint.RUN_COLUMNS, **endpoint.ROW_KEY_COLUMN},
        schema_contract=SCHEMA_CONTRACT,
        parallelized=True,
        file_format="parquet",
    )
    def runs() -> Any:
        resource_state = dlt.current.resource_state()
        flow_report = report.flow(name)
        report.start(flow_report)
        try:
            plan = plan_flow(FlowState.from_dict(resource_state), window, name)
            flow_report.cursor_before = flow_report.cursor_after = iso(plan.state.cursor)
            seen = Observations(watched=frozenset(plan.state.open_runs))
            yield from _read(flow, client, plan, seen, report, flow_report)
        except Exception as exc:  # one flow's failure must not stop the others
            message = _safe_error(exc)
            log.error("flow %s failed: %s", name, message)
            log.debug("flow %s failure details", name, exc_info=True)
            report.finish(flow_report, error=message)
            return
        # Only now, with every read of this flow done, may its state move: dlt commits the
        # state with this load package, so it never runs ahead of the data.
        state = next_state(plan, seen, window)
        resource_state.clear()
        resource_state.update(state.to_dict())
        flow_report.cursor_after = iso(state.cursor)
        flow_report.open_runs = len(state.open_runs)
        report.finish(flow_report)
        log.info(
            "flow %s: ok, %d runs in %d pages (%d open-run re-checks), cursor %s",
            name,
            flow_report.runs,
            flow_report.pages,
            flow_report.rechecks,
            flow_report.cursor_after,
        )

    # The other tables are variants of this resource's hints. A variant starts as a copy of the
    # resource's (merge on run_id, the run columns): clear those first, then give it its own.
    # LLM usage: merge_key run_id, so a re-read run's rows replace all of its earlier ones (a run
    # re-read with no usage at all is cleaned up after the load, `upkeep.drop_superseded_usage`).
    runs.apply_hints(
        table_name=endpoint.LLM_USAGE_TABLE,
        create_table_variant=True,
        primary_key=(),
        merge_key=endpoint.PRIMARY_KEY,
        columns={},
    )
    runs.apply_hints(
        table_name=endpoint.LLM_USAGE_TABLE,
        create_table_variant=True,
        columns={**endpoint.LLM_USAGE_COLUMNS, **endpoint.USAGE_LINK_COLUMNS},
    )
    # Rejected records: append-only; JSON lines, which keep NUL bytes (insert_values would not).
    runs.apply_hints(
        table_name=endpoint.REJECTED_TABLE,
        create_table_variant=True,
        write_disposition="append",
        primary_key=(),
        columns={},
        file_format="jsonl",
    )
    runs.apply_hints(
        table_name=endpoint.REJECTED_TABLE,
        create_table_variant=True,
        columns=endpoint.REJECTED_COLUMNS,
    )
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
