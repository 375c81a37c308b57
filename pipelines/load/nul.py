"""PostgreSQL's text cannot hold NUL (U+0000): replace it with U+FFFD before dlt writes a file.

dlt's paths into PostgreSQL either drop a NUL silently (`insert_values`) or fail the whole load
(CSV `COPY`, jsonb). Neither is acceptable: the load must not fail for one character, and a
value must not change without a trace. So on PostgreSQL every NUL in a text value becomes
U+FFFD (the Unicode replacement character), each affected run is counted in the sync summary
and `--json` (`nul_replaced`), and the run ids are logged at warning level. DuckDB keeps text
byte for byte and is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stackai import endpoint
from pipelines.stackai.progress import SyncReport

log = logging.getLogger(__name__)

NUL = "\x00"
REPLACEMENT = "\ufffd"


def replace_nul_in_table(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """`table` with NUL replaced in every string column, and the run_ids of changed rows.

    Args:
        table: An Arrow table of runs, usage rows or rejects (a `run_id` column if any).

    Returns:
        (the table, unchanged when there was no NUL; sorted distinct run_ids of the rows where
        a NUL was replaced, "?" for a row without a run_id).
    """
    hit = None
    columns = list(table.columns)
    for index, field in enumerate(table.schema):
        if not pa.types.is_string(field.type) and not pa.types.is_large_string(field.type):
            continue
        column = table.column(index)
        found = pc.fill_null(pc.match_substring(column, NUL), False)
        if not pc.any(found).as_py():
            continue
        hit = found if hit is None else pc.or_(hit, found)
        columns[index] = pc.replace_substring(column, NUL, REPLACEMENT)
    if hit is None:
        return table, []
    rows = table.filter(hit)
    if endpoint.PRIMARY_KEY in rows.column_names:
        ids = {
            str(v) if v is not None else "?" for v in rows.column(endpoint.PRIMARY_KEY).to_pylist()
        }
    else:
        ids = {"?"}
    return pa.Table.from_arrays(columns, schema=table.schema), sorted(ids)


def replace_nul_in_row(row: dict[str, Any]) -> bool:
    """Replace NUL in `row`'s string values, in place (nested lists and dicts included).

    Returns:
        True when anything was replaced.
    """
    changed = False

    def fix(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str) and NUL in value:
            changed = True
            return value.replace(NUL, REPLACEMENT)
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    for key, value in list(row.items()):
        row[key] = fix(value)
    return changed


def nul_replacer(report: SyncReport | None) -> Callable[[Any], Any]:
    """A dlt `add_map` function: items out with NUL replaced, counts into `report`."""

    def replace(item: Any) -> Any:
        ids: list[str] = []
        if isinstance(item, pa.Table):
            item, ids = replace_nul_in_table(item)
        elif isinstance(item, dict):
            if replace_nul_in_row(item):
                ids = [str(item.get(endpoint.PRIMARY_KEY) or "?")]
        elif isinstance(item, list):
            ids = [
                str(r.get(endpoint.PRIMARY_KEY) or "?")
                for r in item
                if isinstance(r, dict) and replace_nul_in_row(r)
            ]
        if ids:
            if report is not None:
                report.count_nul(ids)
            log.warning(
                "NUL characters replaced by U+FFFD (PostgreSQL text cannot hold them) in run(s) %s",
                ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else ""),
            )
        return item

    return replace
