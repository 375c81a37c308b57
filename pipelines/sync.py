"""Run one sync: build the dlt pipeline for a DuckDB file, extract every flow, load, report."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import pendulum
from dlt.common.pipeline import LoadInfo
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.extract import DltSource
from dlt.pipeline.exceptions import PipelineStepFailed
from filelock import FileLock, Timeout

from pipelines.settings import SyncSettings
from pipelines.stackai import endpoint
from pipelines.stackai.client import FlowRef, RunsClient
from pipelines.stackai.http import RequestStats, make_session, redact
from pipelines.stackai.report import ProgressCallback, SyncReport
from pipelines.stackai.source import stackai_source
from pipelines.stackai.window import SyncWindow
from pipelines.views import SourceTablesMissing, ViewError, create_views

log = logging.getLogger(__name__)

PIPELINE_NAME = "stackai_runs"
DATASET_NAME = endpoint.DATASET_NAME


def pipelines_dir_for(duckdb_path: Path) -> Path:
    """dlt's working directory for a DuckDB file: beside it, named after it.

    Keeping it per file means the local state of one file can never be applied to another
    (pointing `--duckdb` elsewhere starts that file from its own state, restored from the file).
    """
    return duckdb_path.with_name(duckdb_path.name + ".dlt")


def open_pipeline(duckdb_path: Path, memory_limit: str | None = None) -> dlt.Pipeline:
    """The dlt pipeline that loads into `duckdb_path`, dataset `stackai`.

    Args:
        duckdb_path: The DuckDB file.
        memory_limit: DuckDB's `memory_limit` while loading (e.g. "512MB"); None = DuckDB's
            default, 80% of RAM. Measured (benchmarks/): a 1,000,000-run load peaks at 1.7 GB
            by default and at about 0.4 GB with 256MB, for a slightly slower load.

    Raises:
        OSError: the file's folder cannot be created.
    """
    duckdb_path = duckdb_path.expanduser().resolve()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    config = {"preserve_insertion_order": False}
    if memory_limit:
        config["memory_limit"] = memory_limit
    credentials = DuckDbCredentials(str(duckdb_path), global_config=config)
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=str(pipelines_dir_for(duckdb_path)),
        # dlt 1.31 leaves DuckDB's `supports_transactions` unset, so a merge without DDL (a
        # table without nested tables) runs its DELETE and INSERT in autocommit: a kill between
        # them leaves the runs deleted until the package is loaded again. DuckDB's transactions
        # are atomic (tests/test_crash.py kills a sync there).
        destination=dlt.destinations.duckdb(credentials, supports_transactions=True),
        dataset_name=DATASET_NAME,
    )


class DuckDBPathError(ValueError):
    """The DuckDB file cannot be used: an unwritable place, a folder, or not a DuckDB file."""


DUCKDB_MAGIC = b"DUCK"
"""Bytes 8-11 of every DuckDB database file."""


def check_duckdb_path(duckdb_path: Path) -> Path:
    """Make sure the DuckDB file and its lock and working folder can live at `duckdb_path`.

    Returns:
        The absolute path (its folder created if missing).

    Raises:
        DuckDBPathError: naming the path and the reason (no permission, read-only file system,
            a folder, not a DuckDB database).
    """
    path = duckdb_path.expanduser().resolve()
    if path.is_dir():
        raise DuckDBPathError(f"{path} is a folder; --duckdb wants a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Creating the lock file proves the folder is writable before any work is done (and
        # gives the real reason, which a lock library would only report as "busy").
        lock_path_for(path).touch(exist_ok=True)
    except OSError as exc:
        raise DuckDBPathError(
            f"cannot create {path} or the files beside it: {exc.strerror or exc}"
        ) from None
    if path.is_file():
        with path.open("rb") as file:
            header = file.read(12)
        if header[8:12] != DUCKDB_MAGIC:
            raise DuckDBPathError(f"{path} exists and is not a DuckDB database")
    return path


class SyncLocked(RuntimeError):
    """Another sync holds the DuckDB file's lock and did not release it within `lock_timeout`."""


def lock_path_for(duckdb_path: Path) -> Path:
    """The lock file that serialises syncs of one DuckDB file (`PATH.lock`)."""
    return duckdb_path.with_name(duckdb_path.name + ".lock")


@contextmanager
def sync_lock(duckdb_path: Path, timeout: float) -> Iterator[None]:
    """Hold the DuckDB file's sync lock: one sync (or demo) per file at a time.

    Args:
        duckdb_path: The DuckDB file (its folder must exist).
        timeout: Seconds to wait for another sync to finish; 0 = do not wait.

    Raises:
        SyncLocked: the lock is held by another process after `timeout` seconds.
    """
    lock = FileLock(str(lock_path_for(duckdb_path)))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        waited = f" after waiting {timeout:g} s" if timeout else ""
        raise SyncLocked(
            f"another stackai-runs sync is using {duckdb_path}{waited}; this run did nothing"
            " (raise [sources.stackai] lock_timeout to wait longer)"
        ) from None
    try:
        yield
    finally:
        lock.release()


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
    step = f"{exc.step} step failed: " if isinstance(exc, PipelineStepFailed) else ""
    return redact(f"{step}{type(cause).__name__}: {text}")


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
        A `SyncReport`: per flow ok/failed, pages, runs, requests, retries, cursors;
        `report.ok` is True only when every flow synced and the load committed. A flow's
        failure, a failed load or an unwritable DuckDB path is reported, not raised.

    Raises:
        DuckDBPathError: the DuckDB file cannot be used where it is (see `check_duckdb_path`).
        SyncLocked: another sync of the same DuckDB file is running (see `lock_timeout`).
        KeyboardInterrupt: interrupted; whatever was extracted is finished by the next sync.
    """
    report = SyncReport(on_progress=on_progress)
    for flow in settings.flows:
        report.flow(str(flow))
    started = time.monotonic()
    path = check_duckdb_path(settings.duckdb_path)
    with sync_lock(path, settings.lock_timeout):
        _sync_locked(settings, report, now)
    report.seconds = time.monotonic() - started
    return report


def configure_dlt(max_concurrent_flows: int) -> None:
    """Set the dlt settings a sync depends on (dlt reads them from the environment).

    Args:
        max_concurrent_flows: dlt's extract pool size: how many flows (parallelized resources)
            are fetched at once.
    """
    os.environ["EXTRACT__WORKERS"] = str(max_concurrent_flows)
    # dlt gzips its intermediate files by default: 15% of the load path's time for files that
    # live a few seconds on local disk (benchmarks/).
    os.environ.setdefault("DATA_WRITER__DISABLE_COMPRESSION", "true")
    # Runs arrive as Arrow tables (batch.py); dlt adds `_dlt_load_id` to them only when asked,
    # and full refresh and the users' SQL rely on it.
    os.environ["NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID"] = "true"


def load_source(pipeline: dlt.Pipeline, source: DltSource) -> LoadInfo:
    """Extract, normalise and load `source` as a sync does; finish the tables' upkeep.

    Upgrades a file written by 0.1 first, and drops the LLM-usage rows of runs re-read with
    none after. Raises what `pipeline.run` raises (`PipelineStepFailed`).
    """
    upgrade_usage_table(pipeline)
    info = pipeline.run(source)
    _drop_superseded_usage(pipeline)
    return info


def _sync_locked(settings: SyncSettings, report: SyncReport, now: datetime | None) -> None:
    configure_dlt(settings.max_concurrent_flows)
    stats = RequestStats()
    session = make_session(settings.http, stats, max_connections=settings.max_concurrent_flows)
    client = RunsClient(settings.base_url, settings.api_key, session, settings.page_size)
    refreshed = frozenset(str(f) for f in settings.flows) if settings.full_refresh else frozenset()
    window = SyncWindow(
        now=now or pendulum.now("UTC"),
        rules=settings.rules,
        since=settings.since,
        until=settings.until,
        full_refresh=refreshed,
    )
    try:
        pipeline = open_pipeline(settings.duckdb_path, settings.duckdb_memory_limit)
        if pipeline.has_pending_data:
            # An earlier sync stopped after extracting (killed, disk full, ...). Its package
            # holds runs *and* the state that goes with them: load it first, or dlt's run()
            # would load only it and skip this sync's extract.
            log.warning("loading data left pending by an earlier sync that did not finish")
            pipeline.run()
            _remove_copies_left_by_a_resumed_load(pipeline)
            _drop_superseded_usage(pipeline)
        info = load_source(pipeline, stackai_source(settings.flows, client, window, report))
        done = [f for f in settings.flows if str(f) in refreshed and report.flows[str(f)].ok]
        if done:
            _drop_rows_not_loaded_by(pipeline, done, info.loads_ids)
        _refresh_views(settings.duckdb_path, report)
    except Exception as exc:  # reported per flow and as the sync's error, never a traceback
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        message = _explain(exc)
        log.error("sync failed: %s", message)
        log.debug("sync failure details", exc_info=True)
        report.fail_all(message)
    finally:
        session.close()
        for flow in settings.flows:
            flow_report = report.flows[str(flow)]
            suffix = "/" + flow.path
            flow_report.requests = sum(n for p, n in stats.requests.items() if p.endswith(suffix))
            flow_report.retries = sum(n for p, n in stats.retries.items() if p.endswith(suffix))


def _remove_copies_left_by_a_resumed_load(pipeline: dlt.Pipeline) -> None:
    """Delete exact copies of rows (same `_dlt_id`) that resuming a killed load can leave.

    A load job killed after it committed but before dlt recorded it runs again on resume and
    copies its file into the staging dataset twice; dlt's merge deduplicates nested tables and
    single tables by key, but copies a root table with nested tables row by row
    (dlt-hub/dlt#3023, dlt 1.31). `flow_runs` is such a root, and `flow_runs_rejected` is
    appended directly. Copies share `_dlt_id`, so one of each is kept.
    """
    with pipeline.sql_client() as client:
        existing = _existing_tables(pipeline, client)
        for table in (endpoint.RUNS_TABLE, endpoint.LLM_USAGE_TABLE, endpoint.REJECTED_TABLE):
            if table not in existing:
                continue
            name = client.make_qualified_table_name(table)
            client.execute_sql(
                f"delete from {name} where rowid in (select rowid from (select rowid,"
                f" row_number() over (partition by _dlt_id) as copy from {name}) where copy > 1)"
            )


def upgrade_usage_table(pipeline: dlt.Pipeline) -> bool:
    """Make a `flow_runs__llm_usage` written by 0.1 a table of its own, as the batch path loads it.

    0.1 loaded it as dlt's nested table of `flow_runs` (made by dlt's normaliser, no
    `_dlt_load_id`); the batch path loads it as Arrow with the same columns and link values,
    merged on `run_id`, plus `_dlt_load_id`. dlt refuses to change a table's parent and cannot add
    a NOT NULL column to rows, so once: each row gets its run's `_dlt_load_id` (a row whose run
    is gone is dropped), the column becomes NOT NULL, then dlt's stored schema is updated. Every
    step is safe to repeat, so a crash at any point is finished by the next sync.

    Returns:
        True when the file was upgraded, False when there was nothing to do.
    """
    if not pipeline.default_schema_name:
        pipeline.sync_destination()  # the working folder was deleted: the file has the schema
    if not pipeline.default_schema_name:
        return False
    table = pipeline.default_schema.tables.get(endpoint.LLM_USAGE_TABLE)
    if not table or not table.get("parent"):
        return False
    with pipeline.sql_client() as client:
        usage = client.make_qualified_table_name(endpoint.LLM_USAGE_TABLE)
        runs = client.make_qualified_table_name(endpoint.RUNS_TABLE)
        if _existing_tables(pipeline, client) >= {endpoint.LLM_USAGE_TABLE, endpoint.RUNS_TABLE}:
            with client.begin_transaction():
                client.execute_sql(
                    f"alter table {usage} add column if not exists _dlt_load_id text"
                )
                client.execute_sql(
                    f"update {usage} set _dlt_load_id = r._dlt_load_id from {runs} r"
                    f" where r._dlt_id = {usage}._dlt_root_id and {usage}._dlt_load_id is null"
                )
                client.execute_sql(f"delete from {usage} where _dlt_load_id is null")
            # DuckDB cannot add the constraint in the transaction that filled the column
            client.execute_sql(f"alter table {usage} alter column _dlt_load_id set not null")
        with client.with_staging_dataset():
            # dlt's staging copy keeps the last load's rows, which have no `_dlt_load_id`;
            # it is scratch space, recreated by the next load.
            staged = client.make_qualified_table_name(endpoint.LLM_USAGE_TABLE)
            client.execute_sql(f"drop table if exists {staged}")
    # Read again: opening the SQL client reloads the schema (a new instance).
    schema = pipeline.default_schema
    table = schema.tables[endpoint.LLM_USAGE_TABLE]
    del table["parent"]
    for column in table["columns"].values():
        column.pop("root_key", None)  # type: ignore[misc]
        column.pop("parent_key", None)  # type: ignore[misc]
    table["write_disposition"] = "merge"
    table["columns"][endpoint.PRIMARY_KEY]["merge_key"] = True
    table["columns"]["_dlt_load_id"] = {
        "name": "_dlt_load_id",
        "data_type": "text",
        "nullable": False,
    }
    pipeline.schemas.save_schema(schema)
    log.info("upgraded %s to a table merged on run_id (rows kept)", endpoint.LLM_USAGE_TABLE)
    return True


def _existing_tables(pipeline: dlt.Pipeline, client: Any) -> set[str]:
    return {
        name
        for (name,) in client.execute_sql(
            "select table_name from information_schema.tables where table_schema = %s",
            pipeline.dataset_name,
        )
    }


def _drop_superseded_usage(pipeline: dlt.Pipeline) -> None:
    """Delete LLM-usage rows older than their run's row: a run re-read with no usage at all.

    A re-read run's usage rows replace its old ones by merge on `run_id`; a run that now has
    none sends no rows, so its old ones are removed here: their `_dlt_load_id` is older than
    the run's. (dlt's load ids are epoch seconds with the same number of integer digits until
    2286, so they compare as text.) Rows newer than their run are kept: a kill between the two
    tables' merges can apply the usage first, and the run follows when the package is loaded.
    Idempotent, so a crash before it runs is finished by the next sync.
    """
    with pipeline.sql_client() as client:
        if not {endpoint.RUNS_TABLE, endpoint.LLM_USAGE_TABLE} <= _existing_tables(
            pipeline, client
        ):
            return
        runs = client.make_qualified_table_name(endpoint.RUNS_TABLE)
        usage = client.make_qualified_table_name(endpoint.LLM_USAGE_TABLE)
        client.execute_sql(
            f"delete from {usage} where exists (select 1 from {runs} r"
            f" where r.run_id = {usage}.run_id and r._dlt_load_id > {usage}._dlt_load_id)"
        )


def _refresh_views(duckdb_path: Path, report: SyncReport) -> None:
    """Create or replace the `sql/` views after a load; a broken view never undoes the load."""
    try:
        created = create_views(duckdb_path.expanduser().resolve())
    except SourceTablesMissing:
        log.info("views not created yet: no run has been loaded")
    except ViewError as exc:
        report.error = f"views not refreshed (the data is loaded): {exc}"
        log.error("%s", report.error)
    else:
        log.info("%d views created or replaced", len(created))


def _drop_rows_not_loaded_by(
    pipeline: dlt.Pipeline, flows: list[FlowRef], load_ids: list[str]
) -> None:
    """Full refresh, last step: delete the flows' rows that this sync's loads did not write,
    but for runs the API returned in a record that was rejected (their last version stays).

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
        rejected = client.make_qualified_table_name(endpoint.REJECTED_TABLE)
        existing = _existing_tables(pipeline, client)
        # A run the API still returns but whose record was rejected this time is not stale:
        # its last good version stays, as in any sync.
        still_served = ""
        if endpoint.REJECTED_TABLE in existing:
            still_served = (
                f" and run_id not in (select lower(trim(raw ->> '$.run_id')) from {rejected}"
                f" where _dlt_load_id in ({ids}) and json_valid(raw)"
                f" and json_type(raw) = 'OBJECT' and raw ->> '$.run_id' is not null)"
            )
        for flow in flows:
            stale = (
                f"select _dlt_id from {runs} where org_id = %s and flow_id = %s"
                f" and _dlt_load_id not in ({ids}){still_served}"
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
            if endpoint.REJECTED_TABLE in existing:
                client.execute_sql(
                    f"delete from {rejected} where org_id = %s and flow_id = %s"
                    f" and _dlt_load_id not in ({ids})",
                    flow.org_id,
                    flow.flow_id,
                )
            log.info("flow %s: full refresh done, rows not re-read were removed", flow)
