"""Run one sync: build the dlt pipeline for a DuckDB file, extract every flow, load, report."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import dlt
import pendulum
from dlt.pipeline.exceptions import PipelineStepFailed

from pipelines.settings import SyncSettings
from pipelines.stackai.client import RunsClient, make_session
from pipelines.stackai.report import ProgressCallback, SyncReport
from pipelines.stackai.source import SyncWindow, stackai_source

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


def run_sync(settings: SyncSettings, on_progress: ProgressCallback | None = None) -> SyncReport:
    """Sync every configured flow into the DuckDB file once.

    Args:
        settings: Validated settings (see `pipelines.settings.load_settings`).
        on_progress: Called (from extract threads) whenever a flow starts, reads a page or ends.

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
    window = SyncWindow(
        now=pendulum.now("UTC"),
        initial_start=settings.initial_start,
        lookback=settings.lookback,
        since=settings.since,
        until=settings.until,
    )
    pipeline = open_pipeline(settings.duckdb_path)
    try:
        pipeline.run(stackai_source(settings.flows, client, window, report))
    except PipelineStepFailed as exc:
        cause = exc.__cause__ or exc
        log.error("sync failed at the %s step: %s", exc.step, cause)
        report.fail_all(f"{exc.step} step failed: {type(cause).__name__}: {cause}")
    finally:
        session.close()
    report.seconds = time.monotonic() - started
    return report
