"""Run one sync: build the dlt pipeline for a DuckDB file, extract every flow, load, report."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path

import dlt
import pendulum
from dlt.pipeline.exceptions import PipelineStepFailed

from pipelines.settings import SyncSettings
from pipelines.stackai import endpoint
from pipelines.stackai.client import FlowRef, RunsClient, make_session
from pipelines.stackai.report import ProgressCallback, SyncReport
from pipelines.stackai.source import REJECTED_TABLE, stackai_source
from pipelines.stackai.window import SyncWindow

log = logging.getLogger(__name__)

PIPELINE_NAME = "stackai_runs"
DATASET_NAME = "stackai"


def pipelines_dir_for(duckdb_path: Path) -> Path:
    """dlt's working directory for a DuckDB file: beside it, named after it.

    Keeping it per file means the local state of one file can never be applied to another
    (pointing `--duckdb` elsewhere starts that file from its own state, restored from the file).
    """
    return duckdb_path.with_name(duckdb_path.name + ".dlt")


def open_pipeline(duckdb_path: Path) -> dlt.Pipeline:
    """The dlt pipeline that loads into `duckdb_path`, dataset `stackai`.

    Raises:
        OSError: the file's folder cannot be created.
    """
    duckdb_path = duckdb_path.expanduser().resolve()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=str(pipelines_dir_for(duckdb_path)),
        destination=dlt.destinations.duckdb(str(duckdb_path)),
        dataset_name=DATASET_NAME,
    )


def run_sync(
    settings: SyncSettings,
    on_progress: ProgressCallback | None = None,
    now: datetime | None = None,
) -> SyncReport:
    """Sync every configured flow into the DuckDB file once.

    Args:
        settings: Validated settings (see `pipelines.settings.load_settings`).
        on_progress: Called (from extract threads) whenever a flow starts, reads a page or ends.
        now: The sync's pinned end (aware UTC); default the current time. Tests pass the
            simulator's clock.

    Returns:
        A `SyncReport`: per flow ok/failed, pages, runs, cursors; `report.ok` is True only when
        every flow synced and the load committed. Nothing is raised for a flow's failure.
    """
    report = SyncReport(on_progress=on_progress)
    for flow in settings.flows:
        report.flow(str(flow))
    started = time.monotonic()
    # dlt's extract pool size is how many flows are fetched at once (flows are parallelized
    # resources); it is read from config when the pipeline extracts.
    os.environ["EXTRACT__WORKERS"] = str(settings.max_concurrent_flows)
    session = make_session(max_connections=settings.max_concurrent_flows * 2)
    client = RunsClient(settings.base_url, settings.api_key, session, settings.page_size)
    refreshed = frozenset(str(f) for f in settings.flows) if settings.full_refresh else frozenset()
    window = SyncWindow(
        now=now or pendulum.now("UTC"),
        rules=settings.rules,
        since=settings.since,
        until=settings.until,
        full_refresh=refreshed,
    )
    pipeline = open_pipeline(settings.duckdb_path)
    try:
        if pipeline.has_pending_data:
            # An earlier sync stopped after extracting (killed, disk full, ...). Its package
            # holds runs *and* the state that goes with them: load it first, or dlt's run()
            # would load only it and skip this sync's extract.
            log.warning("loading data left pending by an earlier sync that did not finish")
            pipeline.run()
        info = pipeline.run(stackai_source(settings.flows, client, window, report))
    except PipelineStepFailed as exc:
        cause = exc.__cause__ or exc
        log.error("sync failed at the %s step: %s", exc.step, cause)
        report.fail_all(f"{exc.step} step failed: {type(cause).__name__}: {cause}")
    else:
        done = [f for f in settings.flows if str(f) in refreshed and report.flows[str(f)].ok]
        if done:
            _drop_rows_not_loaded_by(pipeline, done, info.loads_ids)
    finally:
        session.close()
    report.seconds = time.monotonic() - started
    return report


def _drop_rows_not_loaded_by(
    pipeline: dlt.Pipeline, flows: list[FlowRef], load_ids: list[str]
) -> None:
    """Full refresh, last step: delete the flows' rows that this sync's loads did not write.

    Runs only after the reload committed, so a crash at any point leaves every run stored
    (at worst a few stale ones, removed by the next full refresh), never a gap.
    """
    if not load_ids:
        return
    table = endpoint.RUNS_TABLE
    ids = ", ".join("'" + load_id.replace("'", "''") + "'" for load_id in load_ids)
    with pipeline.sql_client() as client, client.begin_transaction():
        runs = client.make_qualified_table_name(table)
        usage = client.make_qualified_table_name(endpoint.LLM_USAGE_TABLE)
        rejected = client.make_qualified_table_name(REJECTED_TABLE)
        existing = {
            t.lower()
            for (t,) in client.execute_sql(
                "select table_name from information_schema.tables where table_schema = %s",
                pipeline.dataset_name,
            )
        }
        for flow in flows:
            stale = (
                f"select _dlt_id from {runs} where org_id = %s and flow_id = %s"
                f" and _dlt_load_id not in ({ids})"
            )
            if endpoint.LLM_USAGE_TABLE in existing:
                client.execute_sql(
                    f"delete from {usage} where _dlt_root_id in ({stale})",
                    flow.org_id,
                    flow.flow_id,
                )
            client.execute_sql(
                f"delete from {runs} where _dlt_id in ({stale})", flow.org_id, flow.flow_id
            )
            if REJECTED_TABLE in existing:
                client.execute_sql(
                    f"delete from {rejected} where org_id = %s and flow_id = %s"
                    f" and _dlt_load_id not in ({ids})",
                    flow.org_id,
                    flow.flow_id,
                )
            log.info("flow %s: full refresh done, rows not re-read were removed", flow)
