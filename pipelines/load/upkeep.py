"""SQL upkeep of the loaded tables that dlt does not do: upgrades, resumed-load copies, refresh."""

from __future__ import annotations

import json
import logging
from typing import Any

import dlt

from pipelines.stackai import endpoint
from pipelines.stackai.flows import FlowRef

log = logging.getLogger(__name__)

ROW_IDS = {"duckdb": "rowid", "postgres": "ctid"}
"""A row's physical id per sqlglot dialect: what tells exact copies apart."""


def remove_copies_left_by_a_resumed_load(pipeline: dlt.Pipeline) -> None:
    """Delete exact copies of rows (same `_dlt_id`) that resuming a killed load can leave.

    A load job killed after it committed but before dlt recorded it runs again on resume and
    copies its file into the staging dataset twice; dlt's merge deduplicates nested tables and
    single tables by key, but copies a root table with nested tables row by row
    (dlt-hub/dlt#3023, dlt 1.31). `flow_runs` is such a root, and `flow_runs_rejected` is
    appended directly. Copies share `_dlt_id`, so one of each is kept.

    Needs a physical row id: DuckDB's `rowid`, PostgreSQL's `ctid`; on other destinations
    (configured, not tested) the copies are left and logged.
    """
    with pipeline.sql_client() as client:
        row_id = ROW_IDS.get(client.capabilities.sqlglot_dialect)
        if row_id is None:
            log.warning("copies left by a resumed load are not removed on this destination")
            return
        existing = _existing_tables(pipeline, client)
        for table in (endpoint.RUNS_TABLE, endpoint.LLM_USAGE_TABLE, endpoint.REJECTED_TABLE):
            if table not in existing:
                continue
            name = client.make_qualified_table_name(table)
            client.execute_sql(
                f"delete from {name} where {row_id} in (select {row_id} from (select {row_id},"
                f" row_number() over (partition by _dlt_id) as copy from {name}) as numbered"
                " where copy > 1)"
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


def drop_rows_not_loaded_by(
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
    ids = ", ".join(_quote(load_id) for load_id in load_ids)
    with pipeline.sql_client() as client, client.begin_transaction():
        runs = client.make_qualified_table_name(table)
        usage = client.make_qualified_table_name(endpoint.LLM_USAGE_TABLE)
        rejected = client.make_qualified_table_name(endpoint.REJECTED_TABLE)
        existing = _existing_tables(pipeline, client)
        # A run the API still returns but whose record was rejected this time is not stale:
        # its last good version stays, as in any sync. Read in Python: the raw text may not
        # be JSON at all, and JSON functions differ between destinations.
        kept = (
            _rejected_run_ids(client, rejected, ids) if endpoint.REJECTED_TABLE in existing else []
        )
        still_served = ""
        if kept:
            still_served = " and run_id not in (" + ", ".join(_quote(k) for k in kept) + ")"
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


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _rejected_run_ids(client: Any, rejected: str, ids: str) -> list[str]:
    """run_ids (lowercase) of the records rejected by these loads that are JSON objects with one."""
    found = set()
    for (raw,) in client.execute_sql(f"select raw from {rejected} where _dlt_load_id in ({ids})"):
        try:
            record = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            continue
        run_id = record.get("run_id") if isinstance(record, dict) else None
        if run_id is not None:
            found.add(str(run_id).strip().lower())
    return sorted(found)


INDEXES = {
    endpoint.RUNS_TABLE: ("run_id", "_dlt_id"),
    endpoint.LLM_USAGE_TABLE: ("run_id", "_dlt_root_id"),
}
"""Plain (non-unique) indexes made on PostgreSQL, where dlt's own are turned off."""


def index_tables(pipeline: dlt.Pipeline) -> None:
    """Create the indexes of `INDEXES` on PostgreSQL when missing (merges delete by `run_id`,
    the views join usage to runs on `_dlt_root_id`); nothing elsewhere."""
    with pipeline.sql_client() as client:
        if client.capabilities.sqlglot_dialect != "postgres":
            return
        existing = _existing_tables(pipeline, client)
        for table, columns in INDEXES.items():
            if table not in existing:
                continue
            name = client.make_qualified_table_name(table)
            for column in columns:
                client.execute_sql(
                    f"create index if not exists {table}__{column}_idx on {name} ({column})"
                )


def keep_each_rejected_record_once(pipeline: dlt.Pipeline) -> None:
    """One row per rejected record (per flow and content, `record_hash`) in
    `flow_runs_rejected`, with when it was first and last seen and how often.

    Every sync that reads a bad record again appends it (the source cannot see the table);
    this folds the copies into the newest row (its reason and `_dlt_load_id` are the latest)
    with `first_seen_at` the earliest, `last_seen_at` (and `seen_at`) the latest and
    `times_seen` the sum. Rows written before these columns existed get them first. Plain SQL
    that DuckDB and PostgreSQL both run, in one transaction: a crash leaves the copies for the
    next sync to fold.
    """
    with pipeline.sql_client() as client:
        if endpoint.REJECTED_TABLE not in _existing_tables(pipeline, client):
            return
        rejected = client.make_qualified_table_name(endpoint.REJECTED_TABLE)
        columns = {
            name
            for (name,) in client.execute_sql(
                "select column_name from information_schema.columns"
                " where table_schema = %s and table_name = %s",
                pipeline.dataset_name,
                endpoint.REJECTED_TABLE,
            )
        }
        if "record_hash" not in columns:
            return  # no row of this version yet: dlt adds the columns with the first one
        with client.begin_transaction():
            client.execute_sql(
                f"update {rejected} set record_hash = md5(org_id || '/' || flow_id || '/'"
                " || coalesce(raw, '')), first_seen_at = seen_at, last_seen_at = seen_at,"
                " times_seen = 1 where record_hash is null"
            )
            client.execute_sql(
                f"update {rejected} set first_seen_at = folded.first_seen_at,"
                " last_seen_at = folded.last_seen_at, seen_at = folded.last_seen_at,"
                " times_seen = folded.times_seen from (select record_hash,"
                " min(first_seen_at) as first_seen_at, max(last_seen_at) as last_seen_at,"
                f" sum(times_seen) as times_seen from {rejected} group by record_hash"
                " having count(*) > 1) as folded"
                f" where {rejected}.record_hash = folded.record_hash"
            )
            client.execute_sql(
                f"delete from {rejected} where _dlt_id in (select _dlt_id from (select _dlt_id,"
                " row_number() over (partition by record_hash order by _dlt_load_id desc,"
                f" _dlt_id) as copy from {rejected}) as numbered where copy > 1)"
            )
