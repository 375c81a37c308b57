"""Normalise a flow's runs a batch of pages at a time: DuckDB types plain runs, Python the rest.

`normalise_run` (one dict in, one row out) is the reference for what a row is. It costs tens of
microseconds a run in Python, which caps a first sync of millions of runs at a few thousand runs a
second. So a batch (a few thousand runs) is split:

* **plain** runs, whose every field already has its column's JSON type (the usual case, checked in
  Python by `is_plain`), are typed by DuckDB straight from the page bytes (`read_json` with
  declared column types) into Arrow tables, several times faster than any per-row Python;
* every other record (unknown fields, values needing coercion, rejects) goes through
  `normalise_run` exactly as before, then into Arrow.

Both routes give the same rows for a plain run (tests compare them on generated records). The
Arrow tables carry the link columns dlt's own normaliser would give a nested `llm_usage` table
(`_dlt_id`, and `_dlt_root_id`/`_dlt_parent_id`/`_dlt_list_idx` on `flow_runs__llm_usage`), so
users' joins on `_dlt_root_id = _dlt_id` keep working; the table itself is merged on `run_id`
(dlt cannot write a nested table from Arrow).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from pipelines.stackai import endpoint
from pipelines.stackai.dates import PLAIN_ISO
from pipelines.stackai.normalise import (
    ENUM_FIELDS,
    RejectedRun,
    normalise_run,
    unknown_enum_values,
)

log = logging.getLogger(__name__)

ROW_KEY = "_dlt_id"
ROOT_KEY = "_dlt_root_id"
PARENT_KEY = "_dlt_parent_id"
LIST_INDEX = "_dlt_list_idx"
MARKER_INDEX = -1
"""`_dlt_list_idx` of the marker row a run with no LLM calls sends (`endpoint.DELETED_COLUMN`)."""

SMALL_BATCH = 500
"""Fewer runs than this, before any large batch, are typed in Python: no DuckDB to start."""
BATCH_RUNS = 5_000
"""Runs typed together: large enough that DuckDB's per-query cost (about a millisecond) is
noise, small enough that a batch's Arrow tables stay a few MB."""

_ARROW_TYPES = {
    "text": pa.string(),
    "bool": pa.bool_(),
    "double": pa.float64(),
    "bigint": pa.int64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_DUCKDB_TYPES = {
    "text": "VARCHAR",
    "bool": "BOOLEAN",
    "double": "DOUBLE",
    "bigint": "BIGINT",
    "timestamp": "VARCHAR",  # cast after reading, with an explicit offset (`_run_select`)
}

# --- what a plain record is --------------------------------------------------------------------

_MAX_EXACT_INT = 2**53
_MAX_OFFSET = 16 * 3600  # seconds; DuckDB reads UTC offsets up to +/-15:59

_SERVED_ONLY = frozenset({"org_id", "flow_id"})
"""Columns the sync sets from the request path; a record carrying them takes the Python path."""

_NONE = type(None)
_JSON_TYPES: dict[str, frozenset[type]] = {
    "text": frozenset({str, _NONE}),
    "bool": frozenset({bool, _NONE}),
    "double": frozenset({float, int, _NONE}),
    "bigint": frozenset({int, _NONE}),
    "timestamp": frozenset({str}),
}
"""The decoded JSON types a column takes as they are (`type() is`: a bool is no int here)."""


def _allowed(columns: Mapping[str, Any]) -> dict[str, frozenset[type]]:
    return {
        name: _JSON_TYPES[column["data_type"]]
        for name, column in columns.items()
        if name not in _SERVED_ONLY
    }


_RUN_TYPES = {
    **_allowed(endpoint.RUN_COLUMNS),
    "parent": frozenset({dict, _NONE}),
    "llm_usage": frozenset({list, _NONE}),
}
_USAGE_TYPES = _allowed(endpoint.LLM_USAGE_COLUMNS)
_USAGE_BIGINTS = tuple(
    name for name, column in endpoint.LLM_USAGE_COLUMNS.items() if column["data_type"] == "bigint"
)
_PARENT_TYPES = {
    "run_id": _JSON_TYPES["text"],
    "project_id": _JSON_TYPES["text"],
    "project_name": _JSON_TYPES["text"],
}


def _plain_id(value: Any) -> bool:
    # ASCII with nothing to strip: Python's `.strip().lower()` and DuckDB's `lower()` agree.
    return value is None or (value.isascii() and value.strip() == value)


def _plain_date(value: str) -> bool:
    if not PLAIN_ISO.fullmatch(value):
        return False
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None and parsed.year in (1, 9999):  # UTC may leave 1-9999
            parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    offset = parsed.utcoffset()
    return offset is None or abs(offset.total_seconds()) < _MAX_OFFSET


def _plain_usage(items: list[Any]) -> bool:
    for item in items:
        if type(item) is not dict:
            return False
        for key, value in item.items():
            allowed = _USAGE_TYPES.get(key)
            if allowed is None or type(value) not in allowed:
                return False  # unknown key: a new column, Python's job
        for key in _USAGE_BIGINTS:
            value = item.get(key)
            # orjson decodes nothing below int64's minimum
            if value is not None and value > endpoint.BIGINT_MAX:
                return False
    return True


def _plain_parent(parent: dict[str, Any]) -> bool:
    for key, allowed in _PARENT_TYPES.items():
        if type(parent.get(key)) not in allowed:
            return False
    return _plain_id(parent.get("run_id"))


def is_plain(record: Any) -> bool:
    """Whether DuckDB may type this record (else `normalise_run` does).

    Args:
        record: One element of a page's JSON array, as decoded.

    Returns:
        True when the record is an object with a non-empty `run_id`, a `date` in the API's
        ISO-8601 form, only fields the contract lists (`ProjectRunSummary`, a nested `parent`,
        `llm_usage` items of `LLMUsageData`), ASCII uuid fields with nothing to strip, and every
        value already of its column's JSON type (null, a string for text, a boolean, an integer
        within int64, a finite number). Such a record needs no coercion, so typing it in SQL
        gives the row `normalise_run` would.
    """
    if type(record) is not dict:
        return False
    for key, value in record.items():
        allowed = _RUN_TYPES.get(key)
        if allowed is None or type(value) not in allowed:
            return False
    run_id = record.get("run_id")
    if not run_id or not _plain_id(run_id) or not _plain_date(record.get("date") or ""):
        return False
    if not (_plain_id(record.get("ran_by_id")) and _plain_id(record.get("parent_run_id"))):
        return False
    latency = record.get("latency")
    if latency is not None and not (
        math.isfinite(latency)
        if type(latency) is float
        else -_MAX_EXACT_INT <= latency <= _MAX_EXACT_INT
    ):
        return False
    tokens = record.get("total_tokens")
    if tokens is not None and tokens > endpoint.BIGINT_MAX:
        return False
    parent = record.get("parent")
    if parent is not None and not _plain_parent(parent):
        return False
    usage = record.get("llm_usage")
    return not usage or _plain_usage(usage)


# --- the SQL that types plain records ----------------------------------------------------------


def _struct(columns: Mapping[str, Any], names: Iterable[str]) -> str:
    fields = ", ".join(f'"{name}" {_DUCKDB_TYPES[columns[name]["data_type"]]}' for name in names)
    return f"STRUCT({fields})"


def _read_json_columns() -> dict[str, str]:
    run = endpoint.RUN_COLUMNS
    columns = {
        name: _DUCKDB_TYPES[column["data_type"]]
        for name, column in run.items()
        if name not in _SERVED_ONLY
    }
    columns["parent"] = "STRUCT(run_id VARCHAR, project_id VARCHAR, project_name VARCHAR)"
    usage = endpoint.LLM_USAGE_COLUMNS
    columns["llm_usage"] = _struct(usage, usage) + "[]"
    return columns


def _run_select() -> str:
    parts = []
    for name in endpoint.RUN_COLUMNS:
        if name in ("org_id", "flow_id"):
            parts.append(f"${name} AS {name}")
        elif name == "date":
            # an explicit offset, so the session's time zone (ICU's, if loaded) cannot matter
            parts.append(
                "CAST(CASE WHEN date[-1] = 'Z' OR date[-6] IN ('+', '-') THEN date"
                " ELSE date || 'Z' END AS TIMESTAMPTZ) AS date"
            )
        elif name.startswith("parent_"):
            nested = f"coalesce({name}, parent.{name.removeprefix('parent_')})"
            parts.append(f"{'lower' if name in endpoint.ID_FIELDS else ''}({nested}) AS {name}")
        elif name in endpoint.ID_FIELDS:
            parts.append(f"lower({name}) AS {name}")
        else:
            parts.append(f'"{name}"')
    return ", ".join(parts)


_TYPE_SQL = f"SELECT {_run_select()}, llm_usage, md5(lower(run_id)) AS _dlt_id FROM raw_batch"

_USAGE_FIELDS = ", ".join(
    f'u."{name}" AS "{name}"' for name in endpoint.LLM_USAGE_COLUMNS if name != "run_id"
)
_USAGE_SQL = f"""
SELECT run_id, {_USAGE_FIELDS},
    _dlt_id AS _dlt_root_id, _dlt_id AS _dlt_parent_id, idx AS _dlt_list_idx,
    _dlt_id || '_' || CAST(idx AS VARCHAR) AS _dlt_id, NULL::BOOLEAN AS {endpoint.DELETED_COLUMN}
FROM (
    SELECT run_id, _dlt_id, unnest(llm_usage) AS u,
        unnest(generate_series(0, len(llm_usage) - 1)) AS idx
    FROM fresh WHERE len(llm_usage) > 0
)
UNION ALL
SELECT run_id, {", ".join(f'NULL AS "{n}"' for n in endpoint.LLM_USAGE_COLUMNS if n != "run_id")},
    _dlt_id AS _dlt_root_id, _dlt_id AS _dlt_parent_id, {MARKER_INDEX} AS _dlt_list_idx,
    _dlt_id || '_deleted' AS _dlt_id, true AS {endpoint.DELETED_COLUMN}
FROM fresh WHERE coalesce(len(llm_usage), 0) = 0
"""


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + "]"


def _unknown_enums_sql() -> str:
    parts = []
    for name, allowed in ENUM_FIELDS.items():
        listed = _sql_list(allowed)
        if name.startswith("llm_usage."):
            key = name.removeprefix("llm_usage.")
            parts.append(
                f"SELECT '{name}' AS field, value, count(*) AS n FROM ("
                f"SELECT unnest(list_transform(llm_usage, lambda u: u.{key})) AS value FROM fresh)"
                f" WHERE value IS NOT NULL AND NOT list_contains({listed}, value) GROUP BY value"
            )
        else:
            parts.append(
                f"SELECT '{name}' AS field, {name} AS value, count(*) AS n FROM fresh"
                f" WHERE {name} IS NOT NULL AND NOT list_contains({listed}, {name}) GROUP BY {name}"
            )
    return " UNION ALL ".join(parts)


_UNKNOWN_ENUMS_SQL = _unknown_enums_sql()
_OPEN = _sql_list(sorted(endpoint.OPEN_STATES))


# --- Arrow schemas ----------------------------------------------------------------------------


def _schema(columns: Mapping[str, Any]) -> pa.Schema:
    # Nullability as in the column hints, or dlt warns that the Arrow schema differs.
    return pa.schema(
        [
            pa.field(name, _ARROW_TYPES[column["data_type"]], column.get("nullable", True))
            for name, column in columns.items()
        ]
    )


RUNS_SCHEMA = _schema({**endpoint.RUN_COLUMNS, **endpoint.ROW_KEY_COLUMN})
USAGE_SCHEMA = _schema(
    {**endpoint.LLM_USAGE_COLUMNS, **endpoint.USAGE_LINK_COLUMNS, **endpoint.USAGE_MARKER_COLUMNS}
)


def _with_extra_text(schema: pa.Schema, rows: Sequence[Mapping[str, Any]]) -> pa.Schema:
    # Fields the contract does not know are text (normalise_run made them so).
    known = set(schema.names)
    extra = sorted({key for row in rows for key in row if key not in known})
    return pa.schema([*schema, *(pa.field(name, pa.string()) for name in extra)])


def _to_arrow(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=_with_extra_text(schema, rows))


def row_key(run_id: str) -> str:
    """A run's `_dlt_id`: md5 of its (lowercase) run_id, as DuckDB's `md5()` computes it.

    The same for every version of a run, so `flow_runs__llm_usage` rows stay linked to their run
    (`_dlt_root_id = _dlt_id`) even when a crash leaves one table's merge applied and the
    other's pending; the rows of a usage list are `ROW_KEY_idx`.
    """
    return hashlib.md5(run_id.encode("utf-8")).hexdigest()


def usage_marker(run_id: str, key: str) -> dict[str, Any]:
    """The `flow_runs__llm_usage` row a run with no LLM calls sends: it deletes the run's
    earlier calls and is not stored itself (`endpoint.USAGE_MARKER_COLUMNS`)."""
    return {
        "run_id": run_id,
        ROOT_KEY: key,
        PARENT_KEY: key,
        LIST_INDEX: MARKER_INDEX,
        ROW_KEY: f"{key}_deleted",
        endpoint.DELETED_COLUMN: True,
    }


# --- one batch --------------------------------------------------------------------------------


@dataclass
class Batch:
    """What one batch of pages became.

    `runs`/`usage` are Arrow tables for `flow_runs`/`flow_runs__llm_usage` (possibly several,
    when some records took the Python path); `rejected` rows for `flow_runs_rejected`; the rest
    is what the incremental rules and the report need.
    """

    runs: list[pa.Table] = field(default_factory=list)
    usage: list[pa.Table] = field(default_factory=list)
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    loaded: int = 0
    new_runs: int = 0
    newest: datetime | None = None
    opened: list[tuple[str, datetime]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    unknown: list[tuple[str, str, int]] = field(default_factory=list)


class FlowBatcher:
    """Types one flow's runs for one sync, batch by batch; remembers the run_ids it has
    loaded, so a run that page drift shows twice loads once.

    Args:
        org_id, flow_id: Where the runs were read (they fill the `org_id`/`flow_id` columns).
        cursor: The flow's cursor before this sync (UTC), to count runs newer than it.
        watched: run_ids the flow's state holds open; only their closing is reported.
        small_batch: Until a batch has this many runs, batches are typed in Python.

    Not thread-safe: one per flow resource, used from that resource's thread. Call `close()`.
    """

    def __init__(
        self,
        org_id: str,
        flow_id: str,
        cursor: datetime | None,
        watched: Iterable[str] = (),
        small_batch: int = SMALL_BATCH,
    ) -> None:
        self.org_id = org_id
        self.small_batch = small_batch
        self.flow_id = flow_id
        self.cursor = cursor
        self._watched = frozenset(watched)
        # run_ids loaded so far this sync: a set until DuckDB is first needed, then a table
        # there (a few bytes a run instead of ~100 in a Python set, for first syncs of millions)
        self._seen: set[str] = set()
        self._con: duckdb.DuckDBPyConnection | None = None
        # the pending batch: plain records as JSON array bodies without brackets, the others
        # already normalised or rejected, and the run_ids taken into it
        self._plain: list[bytes] = []
        self._rows: list[dict[str, Any]] = []
        self._rejected: list[tuple[Any, str]] = []
        self._taken: set[str] = set()
        self._pending_runs = 0

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            con = duckdb.connect(config={"threads": 1})
            con.execute("CREATE TEMP TABLE seen (run_id VARCHAR)")
            con.execute("CREATE TEMP TABLE watched (run_id VARCHAR)")
            if self._watched:
                con.execute("INSERT INTO watched SELECT unnest(?)", [sorted(self._watched)])
            if self._seen:
                con.execute("INSERT INTO seen SELECT unnest(?)", [sorted(self._seen)])
                self._seen.clear()
            self._con = con
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()

    def __enter__(self) -> FlowBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending_runs(self) -> int:
        """Records taken by `add` since the last `flush`."""
        return self._pending_runs

    def add(self, records: Sequence[Any], body: bytes | None = None) -> None:
        """Take one page into the pending batch.

        Args:
            records: The page's decoded JSON array.
            body: The response body it was decoded from (None: re-encoded when needed).

        A run shown twice in a batch (page drift) is taken once, its first copy in page
        order, as `normalise_run` row by row would. Records that are not plain are normalised
        here (they are few); a plain page is kept as its bytes only, so a batch holds about its
        size in JSON, not the decoded objects (several times more).
        """
        self._pending_runs += len(records)
        taken = self._taken
        plain: list[Any] = []
        as_received = body is not None
        for record in records:
            if is_plain(record):
                run_id = record["run_id"].lower()  # plain ids have nothing to strip
                if run_id in taken:
                    as_received = False
                    continue
                taken.add(run_id)
                plain.append(record)
                continue
            as_received = False
            try:
                row = normalise_run(record, self.org_id, self.flow_id)
            except RejectedRun as exc:
                self._rejected.append((record, exc.reason))
                continue
            if row["run_id"] not in taken:
                taken.add(row["run_id"])
                self._rows.append(row)
        if as_received:
            inner = body.strip()[1:-1].strip()  # type: ignore[union-attr]
            if inner:
                self._plain.append(inner)
        elif plain:
            self._plain.append(orjson.dumps(plain)[1:-1])

    def flush(self) -> Batch:
        """Type the pending batch.

        Returns:
            A `Batch`. Records that cannot become rows are in `rejected` with the reason
            (`RejectedRun`'s words); runs already loaded earlier in this sync are left out.
        """
        batch = Batch(rejected=self._rejected)
        rows, plain, total = self._rows, self._plain, self._pending_runs
        self._rows, self._plain, self._rejected, self._taken = [], [], [], set()
        self._pending_runs = 0
        body = b"[" + b",".join(plain) + b"]" if plain else None
        if body and self._con is None and total < self.small_batch:
            # An incremental sync's few runs: Python types them faster than DuckDB starts.
            rows += self._normalise_plain(body)
            body = None
        if rows:
            self._load_rows(rows, batch)
        if body:
            try:
                self._duckdb_path(body, batch)
            except duckdb.Error as exc:
                # Never expected (the records were checked plain), but no reason to lose them:
                # the reference path types them instead, slower.
                log.warning(
                    "flow %s/%s: DuckDB could not type a batch (%s); typing it in Python",
                    self.org_id,
                    self.flow_id,
                    exc,
                )
                self._load_rows(self._normalise_plain(body), batch)
        return batch

    # -- Python: the reference path, for anything not plain ------------------------------

    def _normalise_plain(self, body: bytes) -> list[dict[str, Any]]:
        # plain records always normalise (that is what plain means)
        return [normalise_run(raw, self.org_id, self.flow_id) for raw in orjson.loads(body)]

    def _load_rows(self, rows: list[dict[str, Any]], batch: Batch) -> None:
        already = self._already_seen([row["run_id"] for row in rows])
        fresh = [row for row in rows if row["run_id"] not in already]
        if not fresh:
            return
        if self._con is None:
            self._seen.update(row["run_id"] for row in fresh)
        else:
            self._con.execute(
                "INSERT INTO seen SELECT unnest(?)", [[row["run_id"] for row in fresh]]
            )
        runs, usage = [], []
        for row in fresh:
            for field_name, value in unknown_enum_values(row):
                batch.unknown.append((field_name, value, 1))
            row = dict(row)
            key = row_key(row["run_id"])
            calls = row.pop("llm_usage")
            for index, item in enumerate(calls):
                usage.append(
                    {
                        **item,
                        ROOT_KEY: key,
                        PARENT_KEY: key,
                        LIST_INDEX: index,
                        ROW_KEY: f"{key}_{index}",
                    }
                )
            if not calls:
                usage.append(usage_marker(row["run_id"], key))
            row[ROW_KEY] = key
            runs.append(row)
            self._see(batch, row["run_id"], row["date"], row.get("state"))
        batch.runs.append(_to_arrow(runs, RUNS_SCHEMA))
        if usage:
            batch.usage.append(_to_arrow(usage, USAGE_SCHEMA))
        batch.loaded += len(runs)

    def _already_seen(self, ids: list[str]) -> set[str]:
        if self._con is None:
            return self._seen.intersection(ids)
        return {
            run_id
            for (run_id,) in self._con.execute(
                "SELECT run_id FROM (SELECT unnest(?) AS run_id)"
                " WHERE run_id IN (SELECT run_id FROM seen)",
                [ids],
            ).fetchall()
        }

    def _see(self, batch: Batch, run_id: str, date: datetime, state: Any) -> None:
        if batch.newest is None or date > batch.newest:
            batch.newest = date
        if self.cursor is None or date > self.cursor:
            batch.new_runs += 1
        if state in endpoint.OPEN_STATES:
            batch.opened.append((run_id, date))
        elif run_id in self._watched:
            batch.closed.append(run_id)

    # -- DuckDB: plain records, straight from the bytes ----------------------------------

    def _duckdb_path(self, body: bytes, batch: Batch) -> None:
        con = self._duckdb()
        con.read_json(io.BytesIO(body), format="array", columns=_COLUMNS).create_view(
            "raw_batch", replace=True
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE fresh AS " + _TYPE_SQL,
            {"org_id": self.org_id, "flow_id": self.flow_id},
        )
        # Page drift can show a run twice: keep its first copy, once per sync. Checked on the
        # run_id column alone, so the usual batch without repeats is not copied again.
        repeats = (
            "run_id IN (SELECT run_id FROM seen)"
            " OR rowid NOT IN (SELECT min(rowid) FROM fresh GROUP BY run_id)"
        )
        if con.execute(f"SELECT count(*) FROM fresh WHERE {repeats}").fetchone()[0]:
            con.execute(f"DELETE FROM fresh WHERE {repeats}")
        count, newest, new_runs = con.execute(
            "SELECT count(*), max(date), count(*) FILTER (WHERE $cursor IS NULL OR date > $cursor)"
            " FROM fresh",
            {"cursor": self.cursor},
        ).fetchone()
        if not count:
            return
        opened = con.execute(
            f"SELECT run_id, date FROM fresh WHERE list_contains({_OPEN}, state)"
        ).fetchall()
        closed = con.execute(
            f"SELECT run_id FROM fresh WHERE NOT coalesce(list_contains({_OPEN}, state), false)"
            " AND run_id IN (SELECT run_id FROM watched)"
        ).fetchall()
        unknown = con.execute(_UNKNOWN_ENUMS_SQL).fetchall()
        runs = con.sql("SELECT * EXCLUDE (llm_usage) FROM fresh").to_arrow_table()
        usage = con.sql(_USAGE_SQL).to_arrow_table()
        # Only now, with nothing left that can fail, are these runs remembered as loaded.
        con.execute("INSERT INTO seen SELECT run_id FROM fresh")
        batch.loaded += count
        batch.new_runs += new_runs
        # DuckDB hands TIMESTAMPTZ to Python in the host's time zone (when ICU is loaded)
        newest = newest.astimezone(UTC)
        if batch.newest is None or newest > batch.newest:
            batch.newest = newest
        batch.opened.extend((run_id, date.astimezone(UTC)) for run_id, date in opened)
        batch.closed.extend(run_id for (run_id,) in closed)
        batch.unknown.extend(unknown)
        batch.runs.append(runs.cast(RUNS_SCHEMA))
        if usage.num_rows:
            batch.usage.append(usage.cast(USAGE_SCHEMA))


_COLUMNS = _read_json_columns()
