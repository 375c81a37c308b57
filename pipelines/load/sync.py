"""Run one sync: lock the destination, load what an earlier sync left pending, extract every
flow with the `stackai` source, load, finish the tables' upkeep, refresh the views."""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dlt
from dlt.common.destination.exceptions import DestinationException
from dlt.common.pipeline import LoadInfo
from dlt.extract import DltSource
from dlt.pipeline.exceptions import PipelineStepFailed

from pipelines.analysis.views import SourceTablesMissing, ViewError, create_views
from pipelines.load import upkeep
from pipelines.load.costs import price_calls
from pipelines.load.destination import adapt_source, lock_for
from pipelines.load.duckdb_file import check_duckdb_path
from pipelines.load.pipeline import configure_dlt, open_pipeline
from pipelines.load.state import follow_destination_state
from pipelines.pricing import PriceBook
from pipelines.stackai.client import RunsClient, StackAIError, describe_transport_error
from pipelines.stackai.config import ConfigError
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.http import RequestStats, make_session, redact
from pipelines.stackai.progress import ProgressCallback, SyncReport
from pipelines.stackai.source import stackai

if TYPE_CHECKING:  # pipelines.settings imports this package (the destination's choice)
    from pipelines.settings import SyncSettings

log = logging.getLogger(__name__)


def _explain(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    if isinstance(exc, PipelineStepFailed):
        cause = exc.__cause__ or exc.exception
    full = str(cause)
    text = full.splitlines()[0] if full else type(cause).__name__
    if "conflicting lock" in full.lower() or "could not set lock" in full.lower():
        holder = re.search(r"\(PID (\d+)\)", full)
        who = f" (PID {holder.group(1)})" if holder else ""
        return (
            f"the DuckDB file is open in another process{who}, read-only or not: DuckDB lets a"
            " process write only while no other process has the file open. Close it (a"
            " notebook, a DuckDB CLI) and rerun"
        )
    if isinstance(cause, StackAIError | ConfigError):
        return redact(text)  # written to be shown: the org, the flow, the key's fate
    transport = describe_transport_error(cause)
    if transport:
        return redact(transport)
    step = f"{exc.step} step failed: " if isinstance(exc, PipelineStepFailed) else ""
    return redact(f"{step}{type(cause).__name__}: {text}")


def _from_the_destination(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationException):
            return True
        seen = seen.__cause__ or getattr(seen, "exception", None)
        if seen is exc:
            return False
    return False


def run_sync(
    settings: SyncSettings,
    on_progress: ProgressCallback | None = None,
    now: datetime | None = None,
    report: SyncReport | None = None,
) -> SyncReport:
    """Sync every configured flow into the destination (default the DuckDB file) once.

    Args:
        settings: Validated settings (see `pipelines.settings.load_settings`).
        on_progress: Called (from extract threads) whenever a flow starts, reads a page or ends.
        now: The sync's pinned end (aware UTC); default the current time. Tests pass the
            simulator's clock.
        report: The report to fill in (its `stop` event stops every flow before its next
            request: what the CLI's signal handler sets); default a new one.

    Returns:
        A `SyncReport`: per flow ok/failed, pages, runs, requests, retries, cursors;
        `report.ok` is True only when every flow synced and the load committed. A flow's
        failure, a failed load or an unwritable DuckDB path is reported, not raised.

    Raises:
        DuckDBPathError: the DuckDB file cannot be used where it is (see `check_duckdb_path`).
        SyncLocked: another sync of the same destination is running (see `lock_timeout`).
        DestinationUnreachable: a PostgreSQL server refused the lock's connection.
        KeyboardInterrupt: interrupted; whatever was extracted is finished by the next sync.
    """
    if report is None:
        report = SyncReport()
    report.on_progress = on_progress
    for flow in settings.flows:
        report.flow(str(flow))
    started = time.monotonic()
    target = settings.target()
    report.destination = target.describe()
    if target.duckdb_path is not None:
        check_duckdb_path(target.duckdb_path)
    with lock_for(target, settings.lock_timeout):
        _sync_locked(settings, report, now)
    report.seconds = time.monotonic() - started
    return report


def load_source(pipeline: dlt.Pipeline, source: DltSource) -> LoadInfo:
    """Extract, normalise and load `source` as a sync does.

    Upgrades a file written by 0.1 first (`upkeep.upgrade_usage_table`). Raises what
    `pipeline.run` raises (`PipelineStepFailed`).
    """
    upkeep.upgrade_usage_table(pipeline)
    return pipeline.run(source)


def _sync_locked(settings: SyncSettings, report: SyncReport, now: datetime | None) -> None:
    configure_dlt(settings.max_concurrent_flows, settings.target().name)
    stats = RequestStats()
    connections = max(settings.max_concurrent_flows, settings.http.max_concurrent_requests)
    session = make_session(settings.http, stats, max_connections=connections)
    try:
        pipeline = open_pipeline(settings.target())
        if pipeline.has_pending_data:
            # An earlier sync stopped after extracting (killed, disk full, ...). Its package
            # holds runs *and* the state that goes with them: load it first, or dlt's run()
            # would load only it and skip this sync's extract.
            log.warning("loading data left pending by an earlier sync that did not finish")
            pipeline.run()
            upkeep.remove_copies_left_by_a_resumed_load(pipeline)
            upkeep.keep_each_rejected_record_once(pipeline)
        pipeline = follow_destination_state(pipeline)
        prices = PriceBook(list(settings.model_prices))
        source = stackai(
            flows=[str(flow) for flow in settings.flows],
            orgs=list(settings.orgs),
            api_key=settings.api_key,
            base_url=settings.base_url,
            page_size=settings.page_size,
            allow_insecure_http=settings.allow_insecure_http,
            since=settings.since,
            until=settings.until,
            full_refresh=settings.full_refresh,
            now=now,
            rules=settings.rules,
            client=RunsClient(
                settings.base_url,
                settings.api_key,
                session,
                settings.page_size,
                concurrency=settings.http.max_concurrent_requests,
                time_slices=settings.time_slices,
                current_limit=(lambda: stats.limit.limit) if stats.limit else None,
            ),
            progress=report,
            # copies a resumed load leaves are removed above, after `pipeline.run()`
            deduplicate=False,
            prices=prices,
        )
        info = load_source(pipeline, adapt_source(source, pipeline, report))
        upkeep.index_tables(pipeline)
        upkeep.keep_each_rejected_record_once(pipeline)
        if settings.full_refresh:
            # a skipped flow (deleted since the summary listed it) read nothing: keep its runs
            done = [FlowRef.parse(n) for n, f in report.flows.items() if f.status == "ok"]
            if done:
                upkeep.drop_rows_not_loaded_by(pipeline, done, info.loads_ids)
        _price_calls(pipeline, settings, report)
        _refresh_views(pipeline, settings.sql_dir, report)
    except Exception as exc:  # reported per flow and as the sync's error, never a traceback
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise exc.__cause__ from None
        message = _explain(exc)
        target = settings.target()
        if not target.is_duckdb_file and _from_the_destination(exc):
            message = f"{target.describe()}: {message}"
        log.error("sync failed: %s", message)
        log.debug("sync failure details", exc_info=True)
        report.fail_all(message)
    finally:
        session.close()
        report.concurrency = stats.limit.figures() if stats.limit is not None else None
        for name, flow_report in report.flows.items():
            suffix = "/" + FlowRef.parse(name).path
            flow_report.requests = sum(n for p, n in stats.requests.items() if p.endswith(suffix))
            flow_report.retries = sum(n for p, n in stats.retries.items() if p.endswith(suffix))


def _price_calls(pipeline: dlt.Pipeline, settings: SyncSettings, report: SyncReport) -> None:
    """Price the LLM calls that need it (`costs.price_calls`); a failure here never undoes the
    load: the next sync prices what this one did not."""
    try:
        pricing = price_calls(pipeline, PriceBook(list(settings.model_prices)))  # stale only
    except Exception as exc:
        report.error = f"LLM call costs not updated (the data is loaded): {_explain(exc)}"
        log.error("%s", report.error)
        log.debug("pricing failure details", exc_info=True)
        return
    report.count_priced(pricing.priced, pricing.unpriced, pricing.unpriced_models or {})


def _refresh_views(pipeline: dlt.Pipeline, sql_dir: Path | None, report: SyncReport) -> None:
    """Create or replace the views (shipped, then `sql_dir`'s) after a load; a broken view never
    undoes the load."""
    try:
        created = create_views(pipeline, sql_dir=sql_dir)
    except SourceTablesMissing:
        log.info("views not created yet: no run has been loaded")
    except ViewError as exc:
        report.error = f"views not refreshed (the data is loaded): {exc}"
        log.error("%s", report.error)
    else:
        log.info("%d views created or replaced", len(created))
