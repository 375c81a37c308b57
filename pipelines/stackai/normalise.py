"""Turn one run as the API sends it into one row for `stackai.flow_runs`: pure functions, no I/O.

The shapes come from `components.schemas.ProjectRunSummary` and `LLMUsageData` in
`shared/stackai/analytics-openapi.yml`; what the contract leaves open (date formats, nested parent
objects, text fields that may or may not be JSON) is described in `shared/stackai/API-NOTES.md`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pendulum
from pendulum.parsing.exceptions import ParserError

PARENT_FIELDS = ("run_id", "project_id", "project_name")
"""Keys of a nested `parent` object, flattened to `parent_<key>` (the contract's flat names)."""

LOWERCASE_ID_FIELDS = ("run_id", "ran_by_id", "parent_run_id")
"""uuid fields (`format: uuid` in the contract), stored lowercase so joins never miss on case."""


class RejectedRun(ValueError):
    """A record that cannot become a row: not an object, no `run_id`, or an unparseable `date`.

    `reason` says what was wrong, in words fit for the `flow_runs_rejected` table and a log line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_api_datetime(value: Any) -> pendulum.DateTime:
    """Parse a date-time as the API emits it into an aware UTC instant.

    Args:
        value: An ISO-8601 string: `Z`, `+hh:mm` or any other offset, or naive (read as UTC,
            API-NOTES: "treat naive as UTC"); with or without fractional seconds (up to
            microseconds). A `datetime` is accepted too (naive = UTC).

    Returns:
        A `pendulum.DateTime` in UTC.

    Raises:
        ValueError: the value is not a string or datetime, or not an ISO-8601 date-time.
    """
    if isinstance(value, datetime):
        instant = pendulum.instance(value, tz="UTC")
    elif isinstance(value, str):
        try:
            parsed = pendulum.parse(value.strip(), tz="UTC", strict=True)
        except (ValueError, ParserError) as exc:
            raise ValueError(f"not an ISO-8601 date-time: {value!r}") from exc
        if not isinstance(parsed, pendulum.DateTime):
            raise ValueError(f"not an ISO-8601 date-time (no time of day): {value!r}")
        instant = parsed
    else:
        raise ValueError(f"expected an ISO-8601 string, got {type(value).__name__}: {value!r}")
    return instant.in_timezone("UTC")


def format_api_datetime(instant: datetime) -> str:
    """Format an instant for a `start_date`/`end_date` query parameter.

    Args:
        instant: An aware datetime (naive is taken as UTC).

    Returns:
        ISO-8601 in UTC with an explicit `+00:00` offset and microseconds, e.g.
        `2026-11-30T16:15:00.000000+00:00` (API-NOTES: "send UTC with an explicit offset").
    """
    return parse_api_datetime(instant).format("YYYY-MM-DDTHH:mm:ss.SSSSSSZ")


def _lowercase_id(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _as_float(value: Any) -> Any:
    # JSON numbers arrive as int when whole ("latency": 2); the column is DOUBLE from the start.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    return value


def _as_int(value: Any) -> Any:
    # A lossless float (12.0) is an integer the server happened to serialise as a float.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _normalise_usage(item: Any, run_id: str) -> Any:
    if not isinstance(item, Mapping):
        return item
    usage = dict(item)
    usage["run_id"] = run_id
    for key in ("tokens", "input_tokens", "output_tokens"):
        if key in usage:
            usage[key] = _as_int(usage[key])
    return usage


def normalise_run(raw: Any, org_id: str, flow_id: str) -> dict[str, Any]:
    """Turn one `ProjectRunSummary` into a `flow_runs` row.

    Args:
        raw: One element of the endpoint's JSON array, as decoded.
        org_id: The org the run was read from (path parameter of the request).
        flow_id: The flow the run was read from (path parameter of the request).

    Returns:
        A new dict: every field of `raw` under its API name (unknown fields are kept, so new API
        fields become new columns), plus `org_id` and `flow_id`, with `date` an aware UTC
        `pendulum.DateTime`, `latency` a float, `total_tokens` an int, uuid fields lowercase,
        parent-run fields flat (`parent_run_id`, `parent_project_id`, `parent_project_name`) even
        when the API nests them in a `parent` object, and `llm_usage` a list of dicts that each
        carry the run's `run_id`. Text fields (`inputs`, `outputs`, `llms`, `feedback`, `error`)
        are left exactly as received.

    Raises:
        RejectedRun: `raw` is not an object, has no usable `run_id`, or its `date` is missing or
            not an ISO-8601 date-time.
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
    for key in LOWERCASE_ID_FIELDS:
        if key in row:
            row[key] = _lowercase_id(row[key])
    row["org_id"] = org_id
    row["flow_id"] = flow_id
    row["date"] = date
    if "latency" in row:
        row["latency"] = _as_float(row["latency"])
    if "total_tokens" in row:
        row["total_tokens"] = _as_int(row["total_tokens"])
    usage = row.get("llm_usage")
    if isinstance(usage, list):
        row["llm_usage"] = [_normalise_usage(item, row["run_id"]) for item in usage]
    return row
