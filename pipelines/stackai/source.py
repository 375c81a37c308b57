"""The dlt source: one resource per configured flow, all loading into `stackai.flow_runs`.

Each flow is its own dlt resource so that it has its own resource state (its cursor) and dlt's
extract thread pool fetches flows concurrently (`parallelized=True`, at most `[extract] workers`
at once). A flow that fails is reported and leaves its state untouched; the other flows load.

Pages are typed a batch at a time (`batch.py`) and yielded as Arrow tables for `flow_runs` and
`flow_runs__llm_usage` (dlt loads them as parquet), and as rows for `flow_runs_rejected`.
Everything the tables' guarantees need is in the source and its hints (merge keys, dlt's
`hard_delete` marker for a run re-read with no LLM calls, `_dlt_load_id` on every row), so a
pipeline of anyone's runs it the same as `stackai-runs sync`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dlt
import pendulum
import pyarrow as pa
from dlt.common.typing import TSecretStrValue
from dlt.extract import DltResource

from pipelines.pricing import PriceBook
from pipelines.pricing.calls import COST_COLUMNS, price_batch
from pipelines.stackai import endpoint
from pipelines.stackai.batch import BATCH_RUNS, FlowBatcher
from pipelines.stackai.client import (
    FlowInterrupted,
    FlowNotFound,
    RunsClient,
    SliceTally,
    StackAIError,
    describe_transport_error,
)
from pipelines.stackai.config import SECTION, ConfigError, StackAIConfiguration
from pipelines.stackai.dates import iso
from pipelines.stackai.discovery import Discovery, discover, flow_rows
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.http import RequestStats, make_session, redact
from pipelines.stackai.progress import FlowReport, SyncReport
from pipelines.stackai.window import (
    FlowPlan,
    FlowState,
    Observations,
    SyncWindow,
    WindowRules,
    next_state,
    plan_flow,
)

log = logging.getLogger(__name__)

SOURCE_NAME = SECTION

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
    now = pendulum.now("UTC")
    return {
        "org_id": flow.org_id,
        "flow_id": flow.flow_id,
        "raw": text,
        "reason": reason,
        "seen_at": now,
        "record_hash": rejected_record_hash(flow.org_id, flow.flow_id, text),
        "first_seen_at": now,
        "last_seen_at": now,
        "times_seen": 1,
    }


def rejected_record_hash(org_id: str, flow_id: str, raw: str | None) -> str:
    """The identity of a rejected record: md5 (hex) of `ORG_ID/FLOW_ID/raw` in UTF-8, as SQL's
    `md5(org_id || '/' || flow_id || '/' || coalesce(raw, ''))` computes it on DuckDB and
    PostgreSQL (so rows written before the column existed get the same value)."""
    return hashlib.md5(f"{org_id}/{flow_id}/{raw or ''}".encode()).hexdigest()


def _read(
    flow: FlowRef,
    client: RunsClient,
    plan: FlowPlan,
    seen: Observations,
    report: SyncReport,
    flow_report: FlowReport,
    stored_cursor: datetime | None,
    prices: PriceBook | None = None,
) -> Iterator[Any]:
    """Read the plan's tail and open-run re-checks; yield pages of rows and of rejects.

    Runs dated after `stored_cursor` (the flow's cursor before this sync, also when a full
    refresh ignores it) count as new: not stored before."""
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
    rejects: set[str] = set()  # record hashes rejected this sync (slices overlap)
    cap_before = getattr(client, "page_size_cap", None)
    flow_report.rechecks = len(plan.rechecks)
    with FlowBatcher(
        flow.org_id, flow.flow_id, stored_cursor, watched=plan.state.open_runs
    ) as batcher:
        for index, (lo, hi) in enumerate(windows):
            if index == 0 and hasattr(client, "iter_window"):
                tally = SliceTally()
                pages = client.iter_window(flow, lo, hi, report.stop, tally)
            else:
                tally, pages = None, client.iter_pages(flow, lo, hi)
            for page in pages:
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
                    yield from _load_batch(
                        batcher, flow, seen, report, flow_report, prices, rejects
                    )
                cap = getattr(client, "page_size_cap", None)
                if cap != cap_before and cap is not None:
                    cap_before = cap
                    flow_report.notes.append(
                        f"the API serves at most {cap} runs a page (page_size asks more): this"
                        f" flow and the next are read with pages of {cap}"
                    )
                if report.stop.is_set():
                    # an interrupt: no next request; the flow fails, so its state stays
                    raise FlowInterrupted(
                        f"flow {name}: interrupted before it finished; its cursor did not move"
                        " (the next sync reads it again)"
                    )
            if tally is not None and tally.slices:
                flow_report.slices, flow_report.probes = tally.slices, tally.probes
        if batcher.pending_runs:
            yield from _load_batch(batcher, flow, seen, report, flow_report, prices, rejects)


def _load_batch(
    batcher: FlowBatcher,
    flow: FlowRef,
    seen: Observations,
    report: SyncReport,
    flow_report: FlowReport,
    prices: PriceBook | None = None,
    rejects: set[str] | None = None,
) -> Iterator[Any]:
    """Type a batch of pages; yield its Arrow tables, rejects and (with `prices`) the costs of
    its LLM calls, and record what it showed. `rejects` holds the record hashes already
    rejected this sync: a record read twice (overlapping time slices, a window's first page
    read again by its slice) is stored once, as runs are."""
    batch = batcher.flush()
    seen.see_batch(batch.newest, batch.opened, batch.closed)
    flow_report.new_runs += batch.new_runs
    for field, value, count in batch.unknown:
        flow_report.count_unknown(field, value, count)
    rows = [_rejected_row(raw, reason, flow) for raw, reason in batch.rejected]
    if rejects is not None:
        fresh = []
        for row in rows:
            if row["record_hash"] not in rejects:
                rejects.add(row["record_hash"])
                fresh.append(row)
        rows = fresh
    report.loaded(flow_report, batch.loaded, len(rows))
    load_id = dlt.current.load_package_state()["load_id"]
    for table in batch.runs:
        yield dlt.mark.with_table_name(_with_load_id(table, load_id), endpoint.RUNS_TABLE)
    for table in batch.usage:
        yield dlt.mark.with_table_name(_with_load_id(table, load_id), endpoint.LLM_USAGE_TABLE)
    if prices is not None:
        costs, priced = price_batch(batch.runs, batch.usage, prices)
        if costs is not None:
            report.count_priced(priced.priced, priced.unpriced, priced.unpriced_models or {})
            yield dlt.mark.with_table_name(costs, endpoint.COSTS_TABLE)
    if rows:
        log.warning("flow %s: %d record(s) rejected, e.g. %s", flow, len(rows), rows[0]["reason"])
        yield dlt.mark.with_table_name(rows, endpoint.REJECTED_TABLE)


def _with_load_id(table: pa.Table, load_id: str) -> pa.Table:
    # dlt adds `_dlt_load_id` to rows it normalises, but to Arrow tables only when its parquet
    # normaliser is configured to (`add_dlt_load_id`); the full refresh and users' SQL need it
    # whatever pipeline runs the source.
    column = pa.array([load_id] * table.num_rows, pa.string())
    return table.append_column(pa.field("_dlt_load_id", pa.string(), nullable=False), column)


def _safe_error(exc: BaseException) -> str:
    # Our StackAIError messages are written to be shown; others get their type for context.
    if isinstance(exc, StackAIError):
        return str(exc)
    return redact(describe_transport_error(exc) or f"{type(exc).__name__}: {exc}")


def flow_runs(
    flow: FlowRef,
    client: RunsClient,
    window: SyncWindow,
    report: SyncReport,
    discovered: bool = False,
    deduplicate: bool = True,
    prices: PriceBook | None = None,
) -> DltResource:
    """The dlt resource for one flow's runs.

    Args:
        flow: The org/flow to read; the resource is named `ORG_ID/FLOW_ID`, which is where its
            state lives (`sources.stackai.resources["ORG_ID/FLOW_ID"]`: `FlowState.to_dict()`,
            i.e. `cursor`, `open_runs` and `feedback_pass_at`, ISO-8601 UTC).
        client: Shared HTTP client.
        window: The sync's window rules.
        report: Filled in with this flow's pages, runs, errors and cursors.
        discovered: The flow was found in the org summary, not configured: a 404 (deleted
            since the summary was read) skips it with a warning instead of failing it.
        deduplicate: Let dlt's merge drop copies in its staging tables (see `stackai`).

    Returns:
        A parallelized resource yielding Arrow tables of typed runs into `flow_runs` (merge on
        `run_id`) and of their LLM calls into `flow_runs__llm_usage` (merge on `run_id`), and
        unloadable records into `flow_runs_rejected` (append).
    """
    name = str(flow)
    # The batcher loads each run once a sync, but a resumed load can stage a file twice
    # (dlt-hub/dlt#3023): dlt's staging dedup drops the copy, or the caller removes copies after
    # loading a resumed package (`stackai-runs sync` does, and skips the dedup's cost).
    merge = {"disposition": "merge", "strategy": "delete-insert", "deduplicated": not deduplicate}

    @dlt.resource(
        name=name,
        table_name=endpoint.RUNS_TABLE,
        write_disposition=merge,
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
        # what the sync learned of the server's page size, kept in the source's state
        server = dlt.current.source_state().setdefault("server", {})
        remember = getattr(client, "remember", None)
        if remember is not None:
            remember(server)
        try:
            stored = FlowState.from_dict(resource_state)
            plan = plan_flow(stored, window, name)
            flow_report.cursor_before = flow_report.cursor_after = iso(stored.cursor)
            seen = Observations(watched=frozenset(plan.state.open_runs))
            yield from _read(flow, client, plan, seen, report, flow_report, stored.cursor, prices)
        except Exception as exc:  # one flow's failure must not stop the others
            if discovered and isinstance(exc, FlowNotFound):
                log.warning("flow %s skipped: deleted since the org summary listed it", name)
                report.finish(flow_report, skipped=True)
                return
            message = _safe_error(exc)
            log.error("flow %s failed: %s", name, message)
            log.debug("flow %s failure details", name, exc_info=True)
            report.finish(flow_report, error=message)
            return
        finally:
            if remember is not None:
                remember(server)
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
    # re-read with no usage at all sends a marker row, `endpoint.USAGE_MARKER_COLUMNS`).
    runs.apply_hints(
        table_name=endpoint.LLM_USAGE_TABLE,
        create_table_variant=True,
        write_disposition=merge,
        primary_key=endpoint.USAGE_PRIMARY_KEY,
        merge_key=endpoint.PRIMARY_KEY,
        columns={},
    )
    runs.apply_hints(
        table_name=endpoint.LLM_USAGE_TABLE,
        create_table_variant=True,
        columns={
            **endpoint.LLM_USAGE_COLUMNS,
            **endpoint.USAGE_LINK_COLUMNS,
            **endpoint.USAGE_MARKER_COLUMNS,
        },
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
    # What each LLM call cost (with `prices`): merged on call_id, the call's `_dlt_id`.
    runs.apply_hints(
        table_name=endpoint.COSTS_TABLE,
        create_table_variant=True,
        write_disposition=merge,
        primary_key="call_id",
        columns={},
    )
    runs.apply_hints(
        table_name=endpoint.COSTS_TABLE, create_table_variant=True, columns=COST_COLUMNS
    )
    return runs


def flows_table(
    flows: list[FlowRef],
    discovery: Discovery | None,
    client: RunsClient,
    initial_start: datetime | None,
    now: datetime,
    progress: SyncReport,
) -> DltResource:
    """The `flows` resource: one row per flow read or known (names, the summary's totals, when
    first and last listed, whether still listed), merged on (org_id, flow_id). Its state keeps
    what each flow's row needs when the summary no longer lists it. Without a `discovery` (no
    org asked for), it reads the summary itself, for names only."""

    @dlt.resource(
        name=endpoint.FLOWS_TABLE,
        table_name=endpoint.FLOWS_TABLE,
        write_disposition="merge",
        primary_key=endpoint.FLOWS_PRIMARY_KEY,
        columns=endpoint.FLOW_COLUMNS,
        schema_contract=SCHEMA_CONTRACT,
    )
    def flows_resource() -> Any:
        state = dlt.current.resource_state()
        summary = discovery or discover(client, (), now)
        for flow in flows:
            project = summary.projects.get(flow.flow_id)
            progress.flow(str(flow)).name = project.get("project_name") if project else None
        rows, known, new, unlisted = flow_rows(
            flows, summary, state.get("flows", {}), now, initial_start
        )
        state["flows"] = known
        progress.flows_new = new
        progress.flows_unlisted = unlisted
        for key in unlisted:
            log.warning("flow %s is no longer listed by the org summary: not read, runs kept", key)
        yield rows

    return flows_resource


@dlt.source(name=SECTION, section=SECTION, max_table_nesting=1, spec=StackAIConfiguration)
def stackai(
    flows: list[Any] | None = dlt.config.value,
    orgs: list[str] | None = None,
    api_key: TSecretStrValue | None = dlt.secrets.value,
    base_url: str = endpoint.DEFAULT_BASE_URL,
    page_size: int = endpoint.DEFAULT_PAGE_SIZE,
    initial_start_date: str | None = None,
    lookback: Any = "PT1H",
    max_open_run_age: Any = "P7D",
    max_open_run_checks: int = 50,
    feedback_lookback: Any | None = "P3D",
    feedback_interval: Any = "P1D",
    max_concurrent_requests: int = 8,
    connect_timeout: float = 10.0,
    allow_insecure_http: bool = False,
    adaptive_concurrency: bool = True,
    time_slices: bool = True,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    full_refresh: bool = False,
    now: datetime | None = None,
    rules: WindowRules | None = None,
    client: RunsClient | None = None,
    progress: SyncReport | None = None,
    deduplicate: bool = True,
    prices: PriceBook | None = None,
) -> list[DltResource]:
    """The `stackai` dlt source: the runs of StackAI flows, one resource per flow.

    Every argument before `*` is a `[sources.stackai]` key (README, "Configuration"), resolved
    the dlt way when not given: `SOURCES__STACKAI__<KEY>`, `STACKAI_API_KEY` for the key,
    `.dlt/secrets.toml`, `.dlt/config.toml`. Tables (dataset of the caller's choice):
    `flow_runs` (merge on `run_id`), `flow_runs__llm_usage` (a re-read run's calls replace its
    earlier ones, also by none), `flow_runs_rejected` (records that could not be loaded, with
    the reason). Each flow's state (cursor, open runs) is committed with its data.

    Args:
        flows: `"ORG_ID/FLOW_ID"` strings (or dicts with `org_id`, `flow_id`).
        api_key: StackAI API key (Bearer); never logged or stored.
        base_url: API root; https, or http to a loopback host (the simulator).
        page_size: Runs per request (contract: `page_size`, minimum 1).
        initial_start_date: Where a flow's first sync starts (ISO-8601, UTC if naive).
        lookback, max_open_run_age, max_open_run_checks, feedback_lookback, feedback_interval:
            The incremental rules (`window.WindowRules`); durations ISO-8601 or seconds.
        max_concurrent_requests: Requests in flight at once over all flows and time slices.
        adaptive_concurrency: Lower that number while the API answers 429/503 (AIMD).
        time_slices: Read a window of more than a page as concurrent time slices.
        connect_timeout: Seconds to open a connection (read timeout and retries: dlt's
            `[runtime]` request settings).
        allow_insecure_http: Accept a plain http base_url to a non-loopback host.
        since, until: Re-read this window (aware datetimes) for every flow; cursors never move
            back.
        full_refresh: Re-read every flow's whole history, ignoring its state (the CLI's
            `--full-refresh` also removes the runs the API no longer returns, after the load).
        now: The pinned end of every flow's window (aware UTC); default the current time.
        rules: Already parsed incremental rules, instead of the keys above.
        client: The `RunsClient` to read with (anything with its `iter_pages`), instead of one
            made here from `base_url`, `api_key`, `page_size` and the HTTP settings.
        progress: Receives each flow's progress and result (the CLI's summary).
        deduplicate: Let dlt's merge drop duplicate rows in its staging tables, which a load
            resumed after a crash can leave (dlt-hub/dlt#3023). False skips that work (15-20%
            of a large load) for a caller that removes such copies itself, as `stackai-runs
            sync` does after loading a resumed package (`load.upkeep`).
        prices: Price each batch's LLM calls into `llm_call_costs` (merge on `call_id`) with
            these prices (`pipelines.pricing.PriceBook`); None: no costs table. `stackai-runs
            sync` passes its overrides, and re-prices stored calls when the prices change
            (`pipelines.load.costs.price_calls`).

    Returns:
        The source's resources, one per flow, named `ORG_ID/FLOW_ID`.

    Raises:
        ConfigError: a missing key or flow, or a value that cannot work, naming the key.
    """
    config = StackAIConfiguration()
    for name, value in {
        "flows": flows,
        "orgs": orgs,
        "api_key": api_key,
        "base_url": base_url,
        "page_size": page_size,
        "initial_start_date": initial_start_date,
        "lookback": lookback,
        "max_open_run_age": max_open_run_age,
        "max_open_run_checks": max_open_run_checks,
        "feedback_lookback": feedback_lookback,
        "feedback_interval": feedback_interval,
        "max_concurrent_requests": max_concurrent_requests,
        "connect_timeout": connect_timeout,
        "allow_insecure_http": allow_insecure_http,
        "adaptive_concurrency": adaptive_concurrency,
        "time_slices": time_slices,
    }.items():
        setattr(config, name, value)
    config.on_resolved()
    configured = config.flow_refs()
    if since and until and since > until:
        raise ConfigError(f"since ({iso(since)}) is after until ({iso(until)})")
    if client is None:
        stats = RequestStats()
        session = make_session(
            config.http_settings(), stats, max_connections=config.max_concurrent_requests
        )
        client = RunsClient(
            config.base_url,
            config.api_key,
            session,
            config.page_size,
            concurrency=config.max_concurrent_requests,
            time_slices=config.time_slices,
            current_limit=(lambda: stats.limit.limit) if stats.limit else None,
        )
    now = now or pendulum.now("UTC")
    rules = rules or config.window_rules()
    progress = progress if progress is not None else SyncReport()
    orgs = config.org_ids()
    # Which flows an org has must be known now, to make a resource per flow; names alone are
    # read by the `flows` resource when the pipeline runs, so making the source reads nothing.
    discovery = discover(client, orgs, now) if orgs else None
    listed = discovery.listed if discovery else []
    refs = list(dict.fromkeys([*configured, *listed]))
    progress.flows_discovered = len(listed) if orgs else None
    window = SyncWindow(
        now=now,
        rules=rules,
        since=since,
        until=until,
        full_refresh=frozenset(str(f) for f in refs) if full_refresh else frozenset(),
    )
    by_hand = set(configured)
    return [
        *(
            flow_runs(f, client, window, progress, f not in by_hand, deduplicate, prices)
            for f in refs
        ),
        flows_table(refs, discovery, client, rules.initial_start, now, progress),
    ]
