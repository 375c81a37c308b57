"""Normalise a flow's runs a batch of pages at a time: DuckDB types plain runs, Python the rest.

`normalise_run` (one dict in, one row out) is the reference for what a row is. It costs tens of
microseconds a run in Python, which caps a first sync of millions of runs at a few thousand runs a
second. So a batch (a few thousand runs, kept as the pages' bytes) is typed in DuckDB:

* a batch whose every record is **plain** (every field already has its column's JSON type: the
  usual case; `is_plain` says what plain is) is checked as plain in SQL (`json_structure` of the
  whole batch, then its values row by row) and typed by DuckDB straight from the bytes
  (`read_json` with declared column types) into one Arrow table; its LLM-usage rows and what the
  incremental rules need are Arrow compute on that table. No Python runs per record;
* any other batch is decoded and checked record by record: its plain records are typed by
  DuckDB as above, every other record (unknown fields, values needing coercion, rejects) goes
  through `normalise_run`, then into Arrow.

Both routes give the same rows for a plain run (tests compare them on generated records, and
check that the SQL check takes no record `is_plain` refuses). The Arrow tables carry the link
columns dlt's own normaliser would give a nested `llm_usage` table (`_dlt_id`, and
`_dlt_root_id`/`_dlt_parent_id`/`_dlt_list_idx` on `flow_runs__llm_usage`), so users' joins on
`_dlt_root_id = _dlt_id` keep working; the table itself is merged on `run_id` (dlt cannot write a
nested table from Arrow).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

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


_UTC_DATE = "CASE WHEN date[-1] = 'Z' OR date[-6] IN ('+', '-') THEN date ELSE date || 'Z' END"
"""An explicit offset, so the session's time zone (ICU's, if loaded) cannot matter."""


def _run_select(date: str | None = None) -> str:
    # `date`: a column already holding the date as a TIMESTAMPTZ, else it is cast here
    parts = []
    for name in endpoint.RUN_COLUMNS:
        if name in ("org_id", "flow_id"):
            parts.append(f"${name} AS {name}")
        elif name == "date":
            parts.append(f"{date or f'CAST({_UTC_DATE} AS TIMESTAMPTZ)'} AS date")
        elif name.startswith("parent_"):
            nested = f"coalesce({name}, parent.{name.removeprefix('parent_')})"
            parts.append(f"{'lower' if name in endpoint.ID_FIELDS else ''}({nested}) AS {name}")
        elif name in endpoint.ID_FIELDS:
            parts.append(f"lower({name}) AS {name}")
        else:
            parts.append(f'"{name}"')
    return ", ".join(parts)


_TYPE_SQL = f"SELECT {_run_select()}, llm_usage, md5(lower(run_id)) AS _dlt_id FROM raw_batch"
"""One statement types a batch: its Arrow result is all the SQL there is. What follows (the
usage rows, the observations) is Arrow compute on it, which costs a fraction of more queries."""

# --- the same check, a batch at a time in SQL -------------------------------------------------
#
# `is_plain` costs several microseconds a record in Python. A batch is checked in DuckDB
# instead, in two steps that together accept no record `is_plain` refuses (they may refuse a
# few it accepts: such a batch takes the record-by-record path, which gives the same rows):
#
# 1. the keys and JSON types: `json_structure` of the batch's array is the union of its
#    records' shapes (a key with values of two JSON types says JSON), so one look at it covers
#    every record. A union hides nulls, though: a null record, a null `llm_usage` item, a null
#    `run_id` or `date` pass it, and are caught by step 2.
# 2. the values, row by row (`_PLAIN_ROW`): ids, dates, latency, null usage items. Integers
#    beyond int64 and keys given twice in one object fail the typing itself (an error).

_INTEGERS = frozenset({"UBIGINT", "BIGINT", "HUGEINT"})
_SHAPE_TYPES = {
    "text": frozenset({"VARCHAR", "NULL"}),
    "bool": frozenset({"BOOLEAN", "NULL"}),
    "double": frozenset({"DOUBLE", "NULL"} | _INTEGERS),
    "bigint": frozenset({"NULL"} | _INTEGERS),
    "timestamp": frozenset({"VARCHAR", "NULL"}),  # a null date is refused row by row
}
"""`json_structure`'s names for the JSON types a column takes as it is (see `_JSON_TYPES`)."""


def _shape_types(columns: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    return {
        name: _SHAPE_TYPES[column["data_type"]]
        for name, column in columns.items()
        if name not in _SERVED_ONLY
    }


_RUN_SHAPE = _shape_types(endpoint.RUN_COLUMNS)
_USAGE_SHAPE = _shape_types(endpoint.LLM_USAGE_COLUMNS)
_PARENT_SHAPE = {name: _SHAPE_TYPES["text"] for name in _PARENT_TYPES}


def _plain_object(shape: Any, types: Mapping[str, frozenset[str]]) -> bool:
    return isinstance(shape, dict) and all(
        isinstance(kind, str) and kind in types.get(key, ()) for key, kind in shape.items()
    )


def _plain_structure(shape: Any) -> bool:
    """Whether `json_structure` of a batch's array says every record has only the contract's
    fields, each with a JSON type its column takes as it is (as `is_plain` checks one record)."""
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], dict)):
        return False  # not an array of objects
    record = dict(shape[0])
    parent, usage = record.pop("parent", "NULL"), record.pop("llm_usage", "NULL")
    if not _plain_object(record, _RUN_SHAPE):
        return False
    if parent != "NULL" and not (
        isinstance(parent, dict)
        # other keys of `parent` are not read (`normalise_run`): any type will do
        and _plain_object({k: v for k, v in parent.items() if k in _PARENT_SHAPE}, _PARENT_SHAPE)
    ):
        return False
    if usage == "NULL" or usage == ["NULL"]:  # no lists, or only empty ones
        return True
    return isinstance(usage, list) and len(usage) == 1 and _plain_object(usage[0], _USAGE_SHAPE)


_STRIPPED = "[" + "".join(f"\\x{ord(c):02x}" for c in map(chr, range(128)) if c.isspace()) + "]"
"""A regular expression of the ASCII characters `str.strip()` removes."""


def _plain_id_sql(value: str) -> str:
    # `_plain_id`: ASCII (one byte a character) with nothing `str.strip()` would remove
    return (
        f"({value} IS NULL OR (strlen({value}) = length({value})"
        f" AND NOT regexp_matches({value}, '^{_STRIPPED}|{_STRIPPED}$')))"
    )


_STRICT_ISO = (
    r"\d{4}-(0[1-9]|1[0-2])-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
    r"(Z|[+-](0\d|1[0-5]):[0-5]\d)?"
)
"""`PLAIN_ISO` within the ranges `datetime.fromisoformat` takes (and offsets under 16 hours, as
`_plain_date` wants); the day and year 0 are checked apart."""

_PLAIN_ROW = " AND ".join(
    [
        "run_id IS NOT NULL AND run_id <> ''",
        _plain_id_sql("run_id"),
        _plain_id_sql("ran_by_id"),
        _plain_id_sql("parent_run_id"),
        _plain_id_sql("parent.run_id"),
        f"date IS NOT NULL AND regexp_full_match(date, '{_STRICT_ISO}')",
        "left(date, 4) <> '0000' AND TRY_CAST(left(date, 10) AS DATE) IS NOT NULL",
        # in years 1 to 9999 once in UTC, as Python's datetime
        "_date BETWEEN TIMESTAMPTZ '0001-01-01 00:00:00+00'"
        " AND TIMESTAMPTZ '9999-12-31 23:59:59.999999+00'",
        # an integer latency beyond 2^53 is not plain; read as a double it may round to 2^53
        # itself, so neither is that, integer or float
        f"(latency IS NULL OR (isfinite(latency) AND abs(latency) < {_MAX_EXACT_INT}))",
    ]
)
"""Whether a row's values are plain; null `llm_usage` items are looked for in Arrow (`_typed`)."""

_CHECKED_SQL = (
    f"SELECT {_run_select('_date')}, llm_usage, md5(lower(run_id)) AS _dlt_id,"
    f" coalesce({_PLAIN_ROW}, false) AS _plain"
    f" FROM (SELECT *, TRY_CAST({_UTC_DATE} AS TIMESTAMPTZ) AS _date FROM raw_batch)"
)

_USAGE_FIELDS = [name for name in endpoint.LLM_USAGE_COLUMNS if name != "run_id"]
_OPEN_STATES = pa.array(sorted(endpoint.OPEN_STATES), pa.string())
_ENUMS = {field: pa.array(allowed, pa.string()) for field, allowed in ENUM_FIELDS.items()}


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
        self._watched_ids = pa.array(sorted(self._watched), pa.string())
        # the pending batch: its pages as they came, JSON array bodies without brackets (a
        # batch holds about its size in JSON, not the decoded objects: several times more)
        self._pages: list[bytes] = []
        self._pending_runs = 0

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            con = duckdb.connect(config={"threads": 1})
            con.execute("CREATE TEMP TABLE seen (run_id VARCHAR)")
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
            body: The response body it was decoded from (None: re-encoded from `records`).

        Only the page's bytes are kept: `flush` types the batch. A run shown twice in a batch
        (page drift) is taken once there, its first copy in page order, as `normalise_run` row
        by row would.
        """
        self._pending_runs += len(records)
        if not records:
            return
        if body is None:
            body = orjson.dumps(list(records))
        inner = body.strip()[1:-1].strip()
        if inner:
            self._pages.append(inner)

    def flush(self) -> Batch:
        """Type the pending batch.

        A batch whose every record is plain (`is_plain`; checked in SQL, see `_PLAIN_ROW`:
        the usual case) is typed by DuckDB from its bytes; any other batch is decoded, and its
        plain records typed by DuckDB, the others by `normalise_run`.

        Returns:
            A `Batch`. Records that cannot become rows are in `rejected` with the reason
            (`RejectedRun`'s words); runs already loaded earlier in this sync are left out.
        """
        batch = Batch()
        pages, total = self._pages, self._pending_runs
        self._pages, self._pending_runs = [], 0
        if not pages:
            return batch
        body = b"[" + b",".join(pages) + b"]"
        del pages
        if self._con is None and total < self.small_batch:
            # An incremental sync's few runs: Python types them faster than DuckDB starts.
            self._by_record(orjson.loads(body), batch, duckdb_types=False)
            return batch
        try:
            if self._duckdb_path(body, batch, checked=True):
                return batch
        except duckdb.Error as exc:
            # e.g. an integer beyond int64, or a key twice in one object: is_plain decides
            log.debug("flow %s/%s: batch not plain (%s)", self.org_id, self.flow_id, exc)
        self._by_record(orjson.loads(body), batch)
        return batch

    # -- Python: the reference path, for anything not plain ------------------------------

    def _by_record(self, records: Any, batch: Batch, duckdb_types: bool = True) -> None:
        """Type a batch record by record: plain records by DuckDB (or, with `duckdb_types`
        False, by `normalise_run` too), the others by `normalise_run`; rejects into `batch`."""
        taken: set[str] = set()
        plain: list[Any] = []
        rows: list[dict[str, Any]] = []
        for record in records if isinstance(records, list) else [records]:
            if duckdb_types and is_plain(record):
                run_id = record["run_id"].lower()  # plain ids have nothing to strip
                if run_id not in taken:
                    taken.add(run_id)
                    plain.append(record)
                continue
            try:
                row = normalise_run(record, self.org_id, self.flow_id)
            except RejectedRun as exc:
                batch.rejected.append((record, exc.reason))
                continue
            if row["run_id"] not in taken:
                taken.add(row["run_id"])
                rows.append(row)
        if rows:
            self._load_rows(rows, batch)
        if not plain:
            return
        body = orjson.dumps(plain)
        try:
            self._duckdb_path(body, batch, checked=False)
        except duckdb.Error as exc:
            # Never expected (the records were checked plain), but no reason to lose them:
            # the reference path types them instead, slower.
            log.warning(
                "flow %s/%s: DuckDB could not type a batch (%s); typing it in Python",
                self.org_id,
                self.flow_id,
                exc,
            )
            self._load_rows([normalise_run(r, self.org_id, self.flow_id) for r in plain], batch)

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

    def _duckdb_path(self, body: bytes, batch: Batch, checked: bool) -> bool:
        """Type a batch's records in DuckDB from `body` (a JSON array) into `batch`.

        Args:
            checked: The records were not checked one by one (`is_plain`): check the batch
                in SQL first, and type nothing unless every record is plain.

        Returns:
            False when `checked` and not every record is plain (`batch` left as it was).
        """
        con = self._duckdb()
        typed = _typed(con, body, {"org_id": self.org_id, "flow_id": self.flow_id}, checked)
        if typed is None:
            return False
        fresh = self._unseen(con, typed)
        if not fresh.num_rows:
            return True
        # DuckDB hands TIMESTAMPTZ over in the session's time zone: the same instants in UTC
        runs = fresh.drop_columns(["llm_usage"]).cast(RUNS_SCHEMA)
        usage = _usage_rows(runs, fresh.column("llm_usage"))
        dates, states, run_ids = runs.column("date"), runs.column("state"), runs.column("run_id")
        new_runs = runs.num_rows
        if self.cursor is not None:
            new_runs = pc.sum(pc.greater(dates, pa.scalar(self.cursor, dates.type))).as_py() or 0
        is_open = pc.is_in(states, value_set=_OPEN_STATES)
        opened = runs.filter(is_open).select(["run_id", "date"]).to_pylist()
        closed: list[str] = []
        if self._watched:
            watching = pc.is_in(run_ids, value_set=self._watched_ids)
            closed = run_ids.filter(pc.and_(pc.invert(is_open), watching)).to_pylist()
        unknown = _unknown_values(runs, usage)
        # Only now, with nothing left that can fail, are these runs remembered as loaded.
        con.register("batch_ids", pa.table({"run_id": run_ids}))
        try:
            con.execute("INSERT INTO seen SELECT run_id FROM batch_ids")
        finally:
            con.unregister("batch_ids")
        batch.loaded += runs.num_rows
        batch.new_runs += new_runs
        newest = pc.max(dates).as_py().astimezone(UTC)
        if batch.newest is None or newest > batch.newest:
            batch.newest = newest
        batch.opened.extend((row["run_id"], row["date"].astimezone(UTC)) for row in opened)
        batch.closed.extend(closed)
        batch.unknown.extend(unknown)
        batch.runs.append(runs)
        if usage.num_rows:
            batch.usage.append(usage)
        return True

    def _unseen(self, con: duckdb.DuckDBPyConnection, typed: pa.Table) -> pa.Table:
        """`typed` without the runs loaded earlier this sync, and with the first copy only of a
        run shown twice in it (page drift): in the usual batch, neither, and nothing is copied."""
        run_ids = typed.column("run_id")
        con.register("batch_ids", pa.table({"run_id": run_ids}))
        try:
            ((loaded,),) = con.execute(
                "SELECT count(*) FROM batch_ids JOIN seen USING (run_id)"
            ).fetchall()
            if not loaded and pc.count_distinct(run_ids).as_py() == typed.num_rows:
                return typed
            con.unregister("batch_ids")
            con.register(
                "batch_ids",
                pa.table({"run_id": run_ids, "i": pa.array(range(typed.num_rows), pa.int64())}),
            )
            first = [
                index
                for (index,) in con.execute(
                    "SELECT min(i) AS i FROM batch_ids"
                    " WHERE run_id NOT IN (SELECT run_id FROM seen) GROUP BY run_id ORDER BY i"
                ).fetchall()
            ]
        finally:
            con.unregister("batch_ids")
        return typed.take(pa.array(first, pa.int64()))


def _typed(
    con: duckdb.DuckDBPyConnection, body: bytes, params: dict[str, str], checked: bool
) -> pa.Table | None:
    """A batch's records (`body`, a JSON array) as typed runs, each with its `llm_usage` list
    and `_dlt_id`; with `checked`, None unless every record is plain (see `_PLAIN_ROW`)."""
    if checked:
        # decode(): the bytes as text in DuckDB, not a Python str of them
        ((shape,),) = con.execute("SELECT json_structure(decode(?)::JSON)", [body]).fetchall()
        if not _plain_structure(json.loads(shape)):
            return None
    con.read_json(io.BytesIO(body), format="array", columns=_COLUMNS).create_view(
        "raw_batch", replace=True
    )
    if not checked:
        return con.sql(_TYPE_SQL, params=params).to_arrow_table()
    typed = con.sql(_CHECKED_SQL, params=params).to_arrow_table()
    if not pc.all(typed.column("_plain")).as_py():
        return None
    if pc.list_flatten(typed.column("llm_usage")).null_count:
        return None  # a null LLM call: `normalise_run` rejects the run
    return typed.drop_columns(["_plain"])


def _usage_rows(runs: pa.Table, lists: pa.ChunkedArray) -> pa.Table:
    """`flow_runs__llm_usage` rows of typed runs: one per LLM call (`_dlt_list_idx` its place in
    the run's list) and a marker row for each run without a call."""
    calls = lists.combine_chunks() if lists.num_chunks != 1 else lists.chunk(0)
    keys = runs.column(ROW_KEY)
    parent = pc.list_parent_indices(calls)
    items = pc.list_flatten(calls)
    # a call's place in its run's list: its place among all calls, less its list's start
    position = pc.cumulative_sum(pc.add(pc.multiply(parent, 0), 1))  # 1, 2, 3, ...
    start = pc.cast(pc.take(calls.offsets, parent), pa.int64())
    index = pc.subtract(pc.add(position, calls.offsets[0].as_py() - 1), start)
    call_keys = pc.take(keys, parent)
    columns: dict[str, Any] = {"run_id": pc.take(runs.column("run_id"), parent)}
    for name in _USAGE_FIELDS:
        columns[name] = pc.struct_field(items, name)
    calls_table = pa.table(
        {
            **columns,
            ROOT_KEY: call_keys,
            PARENT_KEY: call_keys,
            LIST_INDEX: index,
            ROW_KEY: pc.binary_join_element_wise(call_keys, pc.cast(index, pa.string()), "_"),
            endpoint.DELETED_COLUMN: pa.nulls(len(items), pa.bool_()),
        }
    )
    without = pc.fill_null(pc.equal(pc.list_value_length(calls), 0), True)
    marked = runs.filter(without)
    count = marked.num_rows
    marker_keys = marked.column(ROW_KEY)
    markers = pa.table(
        {
            "run_id": marked.column("run_id"),
            **{name: pa.nulls(count, USAGE_SCHEMA.field(name).type) for name in _USAGE_FIELDS},
            ROOT_KEY: marker_keys,
            PARENT_KEY: marker_keys,
            LIST_INDEX: pa.repeat(pa.scalar(MARKER_INDEX, pa.int64()), count),
            ROW_KEY: pc.binary_join_element_wise(marker_keys, "deleted", "_"),
            endpoint.DELETED_COLUMN: pa.repeat(pa.scalar(True), count),
        }
    )
    return pa.concat_tables([calls_table.cast(USAGE_SCHEMA), markers.cast(USAGE_SCHEMA)])


def _unknown_values(runs: pa.Table, usage: pa.Table) -> list[tuple[str, str, int]]:
    """`(field, value, count)` of enum values the contract does not list (`ENUM_FIELDS`)."""
    found = []
    for name, allowed in _ENUMS.items():
        table = usage if name.startswith("llm_usage.") else runs
        values = table.column(name.removeprefix("llm_usage."))
        odd = values.filter(
            pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=allowed)))
        )
        if len(odd):
            counts = pc.value_counts(odd)
            found.extend(
                (name, value, count)
                for value, count in zip(
                    counts.field("values").to_pylist(),
                    counts.field("counts").to_pylist(),
                    strict=True,
                )
            )
    return found


_COLUMNS = _read_json_columns()
