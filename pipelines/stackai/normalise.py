"""Turn one run as the API sends it into one row for `stackai.flow_runs`: pure functions, no I/O.

The shapes come from `components.schemas.ProjectRunSummary` and `LLMUsageData` in
the vendor contract (`tests/contract/analytics-openapi.yml`); what it leaves open (date formats,
nested parent objects, text fields that may or may not be JSON) is in the project's API notes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from pipelines.stackai import endpoint
from pipelines.stackai.dates import parse_api_datetime

PARENT_FIELDS = ("run_id", "project_id", "project_name")
"""Keys of a nested `parent` object, flattened to `parent_<key>` (the contract's flat names)."""


class RejectedRun(ValueError):
    """A record that cannot become a row: not an object, no `run_id`, or an unparseable `date`.

    `reason` says what was wrong, in words fit for the `flow_runs_rejected` table and a log line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _lowercase_id(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def coerce(value: Any, data_type: str, field: str) -> Any:
    """Coerce a JSON value to a column's dlt data type when that loses nothing.

    Args:
        value: The decoded JSON value (None stays None).
        data_type: dlt's type of the column: `text`, `bool`, `double` or `bigint`.
        field: The field's name, for the error.

    Returns:
        `text`: strings as received; any other value as its compact JSON text. `bool`: booleans
        and "true"/"false". `double`: finite numbers and numeric strings, as float. `bigint`:
        integers, integral floats (12.0) and integer strings ("12"), as int within int64.

    Raises:
        RejectedRun: the value cannot be stored in the column without loss.
    """
    if value is None:
        return None
    if data_type == "text":
        return value if isinstance(value, str) else _json_text(value)
    if data_type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    elif data_type == "double" and not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, int | float | str) else math.nan
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    elif data_type == "bigint" and not isinstance(value, bool):
        number = None
        if isinstance(value, int):
            number = value
        elif (isinstance(value, float) and math.isfinite(value) and value.is_integer()) or (
            isinstance(value, str) and _INTEGER_TEXT.fullmatch(value)
        ):
            number = int(value)
        if number is not None and -endpoint.BIGINT_MAX - 1 <= number <= endpoint.BIGINT_MAX:
            return number
    elif data_type not in ("double", "bigint"):
        raise ValueError(f"no coercion for data type {data_type!r}")
    raise RejectedRun(f"{field}: {value!r} is not a valid {data_type}")


def _typed(record: Mapping[str, Any], columns: Mapping[str, Any], where: str) -> dict[str, Any]:
    # Declared columns get their declared type; fields the contract does not know (new API
    # fields) land as text, so a later change of their JSON type can never add a variant column.
    typed: dict[str, Any] = {}
    for key, value in record.items():
        column = columns.get(key)
        data_type = column["data_type"] if column else "text"
        if data_type == "timestamp":
            typed[key] = value
        else:
            typed[key] = coerce(value, data_type, f"{where}{key}")
    return typed


def _normalise_usage(items: Any, run_id: str) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise RejectedRun(f"llm_usage is not a list but {type(items).__name__}")
    usage = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise RejectedRun(f"llm_usage[{index}] is not an object but {type(item).__name__}")
        typed = _typed(item, endpoint.LLM_USAGE_COLUMNS, f"llm_usage[{index}].")
        typed["run_id"] = run_id
        usage.append(typed)
    return usage


ENUM_FIELDS: dict[str, tuple[str, ...]] = {
    "state": endpoint.WORKFLOW_STATES,
    "run_type": endpoint.RUN_TYPES,
    "ran_by_type": endpoint.RAN_BY_TYPES,
    "llm_usage.provider": endpoint.LLM_PROVIDERS,
    "llm_usage.connection_origin": endpoint.CONNECTION_ORIGINS,
}
"""Enum fields of the contract and their documented values."""


def unknown_enum_values(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Values of enum fields that the contract does not list (a sign the API changed).

    Args:
        row: A row from `normalise_run`.

    Returns:
        `(field, value)` pairs, e.g. `("state", "ARCHIVED")`, `("llm_usage.provider", "Foo")`.
    """
    found = []
    for field, allowed in ENUM_FIELDS.items():
        if field.startswith("llm_usage."):
            key = field.removeprefix("llm_usage.")
            values = [u.get(key) for u in row.get("llm_usage") or []]
        else:
            values = [row.get(field)]
        found.extend((field, v) for v in values if v is not None and v not in allowed)
    return found


def normalise_run(raw: Any, org_id: str, flow_id: str) -> dict[str, Any]:
    """Turn one `ProjectRunSummary` into a `flow_runs` row.

    Args:
        raw: One element of the endpoint's JSON array, as decoded.
        org_id: The org the run was read from (path parameter of the request).
        flow_id: The flow the run was read from (path parameter of the request).

    Returns:
        A new dict: every field of `raw` under its API name, plus `org_id` and `flow_id`;
        each contract field coerced to its column's type (`endpoint.RUN_COLUMNS`, see `coerce`):
        `date` an aware UTC `pendulum.DateTime`, `latency` a float, `total_tokens` an int;
        uuid fields lowercase; parent-run fields flat (`parent_run_id`, `parent_project_id`,
        `parent_project_name`) even when the API nests them in a `parent` object; `llm_usage`
        a list (empty when absent) of typed dicts that each carry the run's `run_id`. Strings
        (`inputs`, `outputs`, `llms`, `feedback`, `error`, ...) are kept exactly as received;
        fields the contract does not know are kept as text (JSON text for non-strings).

    Raises:
        RejectedRun: `raw` is not an object, has no usable `run_id`, its `date` is missing or
            not an ISO-8601 date-time, `llm_usage` is not a list of objects, or a field cannot
            be stored in its column's type without loss (e.g. `total_tokens: "12x"`).
    """
    if not isinstance(raw, Mapping):
        raise RejectedRun(f"run is not a JSON object but {type(raw).__name__}")
    run_id = raw.get("run_id")
    if not isinstance(run_id, str) or not run_id.strip():
        raise RejectedRun(f"run has no run_id (got {run_id!r})")
    if raw.get("date") is None:
        raise RejectedRun("run has no date")
    try:
        date = parse_api_datetime(raw["date"])
    except ValueError as exc:
        raise RejectedRun(f"run date is unparseable: {exc}") from None

    row = dict(raw)
    parent = row.pop("parent", None)
    if isinstance(parent, Mapping):
        for key in PARENT_FIELDS:
            if row.get(f"parent_{key}") is None:
                row[f"parent_{key}"] = parent.get(key)
    for key in endpoint.ID_FIELDS:
        if key in row:
            row[key] = _lowercase_id(row[key])
    usage = row.pop("llm_usage", None)
    row = _typed(row, endpoint.RUN_COLUMNS, "")
    row["org_id"] = org_id
    row["flow_id"] = flow_id
    row["date"] = date
    row["llm_usage"] = _normalise_usage(usage, row["run_id"])
    return row
