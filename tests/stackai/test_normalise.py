"""The pure normaliser: dates, types, parent runs, llm_usage, lossless text, rejects."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.stackai.dates import format_api_datetime, parse_api_datetime
from pipelines.stackai.normalise import RejectedRun, coerce, normalise_run, unknown_enum_values

RUN = {
    "run_id": "6F1C2B3A-0000-4000-8000-00000000ABCD",
    "date": "2026-11-29T10:15:30.123456",
    "is_flow_successful": True,
    "state": "COMPLETED",
    "error": None,
    "latency": 2,
    "total_tokens": 30.0,
    "user_id": "u-1",
    "inputs": '{"q": "hi"}',
    "outputs": "plain text ✓ 🚀",
    "llms": '["gpt-4o"]',
    "feedback": None,
    "llm_usage": [
        {"provider": "OpenAI", "model_id": "gpt-4o", "tokens": 30, "input_tokens": 20.0},
    ],
}

instants = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.just(UTC),
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)


@given(instant=instants, offset=offsets, micro=st.booleans())
def test_parse_any_offset_gives_the_same_utc_instant(instant, offset, micro):
    if not micro:
        instant = instant.replace(microsecond=0)
    local = instant.astimezone(offset)
    spec = "microseconds" if micro else "seconds"
    for text in (
        local.isoformat(timespec=spec),
        instant.replace(tzinfo=None).isoformat(timespec=spec),  # naive = UTC
        instant.replace(tzinfo=None).isoformat(timespec=spec) + "Z",
    ):
        parsed = parse_api_datetime(text)
        assert parsed == instant, text
        assert parsed.utcoffset() == timedelta(0)


@given(instant=instants)
def test_format_round_trips_and_carries_an_explicit_offset(instant):
    text = format_api_datetime(instant)
    assert text.endswith("+00:00")
    assert datetime.fromisoformat(text) == instant


@given(st.text(max_size=40))
def test_parser_rejects_or_returns_aware_utc_never_crashes(text):
    try:
        parsed = parse_api_datetime(text)
    except ValueError:
        return
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [None, 12, "", "yesterday", "2026-13-01T00:00:00"])
def test_bad_dates_are_value_errors(value):
    with pytest.raises(ValueError):
        parse_api_datetime(value)


def test_types_and_ids():
    row = normalise_run(RUN, "org-1", "flow-1")
    assert row["org_id"] == "org-1" and row["flow_id"] == "flow-1"
    assert row["run_id"] == "6f1c2b3a-0000-4000-8000-00000000abcd"
    assert row["date"] == datetime(2026, 11, 29, 10, 15, 30, 123456, tzinfo=UTC)
    assert isinstance(row["latency"], float) and row["latency"] == 2.0
    assert isinstance(row["total_tokens"], int) and row["total_tokens"] == 30
    usage = row["llm_usage"][0]
    assert usage["run_id"] == row["run_id"]
    assert isinstance(usage["input_tokens"], int)


def test_input_is_not_mutated_and_text_is_kept_verbatim():
    before = repr(RUN)
    row = normalise_run(RUN, "o", "f")
    assert repr(RUN) == before
    for key in ("inputs", "outputs", "llms", "feedback", "error", "user_id"):
        assert row[key] == RUN[key]


@given(st.text())
def test_text_fields_are_lossless(text):
    row = normalise_run({**RUN, "inputs": text, "outputs": text, "error": text}, "o", "f")
    assert row["inputs"] == row["outputs"] == row["error"] == text


def test_parent_fields_nested_or_flat_land_flat():
    parent_id = "AAAAAAAA-0000-4000-8000-000000000001"
    nested = normalise_run(
        {**RUN, "parent": {"run_id": parent_id, "project_id": "p", "project_name": "Parent"}},
        "o",
        "f",
    )
    flat = normalise_run(
        {
            **RUN,
            "parent_run_id": parent_id,
            "parent_project_id": "p",
            "parent_project_name": "Parent",
        },
        "o",
        "f",
    )
    for row in (nested, flat):
        assert row["parent_run_id"] == parent_id.lower()
        assert row["parent_project_id"] == "p"
        assert row["parent_project_name"] == "Parent"
        assert "parent" not in row


def test_unknown_fields_land_as_text_and_unknown_enum_values_are_kept_and_listed():
    raw = {**RUN, "state": "ARCHIVED", "new_field": 7, "new_object": {"a": [1, "é"]}}
    raw["llm_usage"] = [{"provider": "NewCo", "model_id": "m", "connection_origin": "stack_ai"}]
    row = normalise_run(raw, "o", "f")
    assert row["state"] == "ARCHIVED"
    assert row["new_field"] == "7"
    assert json.loads(row["new_object"]) == {"a": [1, "é"]}
    assert unknown_enum_values(row) == [("state", "ARCHIVED"), ("llm_usage.provider", "NewCo")]
    assert unknown_enum_values(normalise_run(RUN, "o", "f")) == []


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("total_tokens", "12", 12),
        ("total_tokens", 12.0, 12),
        ("total_tokens", None, None),
        ("latency", "1.5", 1.5),
        ("latency", 3, 3.0),
        ("is_flow_successful", "false", False),
        ("inputs", {"q": "hi"}, '{"q":"hi"}'),
        ("error", 404, "404"),
    ],
)
def test_lossless_type_changes_are_coerced(field, value, stored):
    row = normalise_run({**RUN, field: value}, "o", "f")
    assert row[field] == stored
    assert type(row[field]) is type(stored)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("total_tokens", "12x"),
        ("total_tokens", 12.5),
        ("total_tokens", True),
        ("total_tokens", 2**63),
        ("latency", "fast"),
        ("latency", float("inf")),
        ("is_flow_successful", "maybe"),
        ("llm_usage", {"provider": "OpenAI"}),
        ("llm_usage", ["not an object"]),
        ("llm_usage", [{"provider": "OpenAI", "tokens": "many"}]),
    ],
)
def test_lossy_type_changes_reject_the_run_naming_the_field(field, value):
    with pytest.raises(RejectedRun) as info:
        normalise_run({**RUN, field: value}, "o", "f")
    assert field in info.value.reason


def test_missing_or_null_usage_is_an_empty_list():
    assert normalise_run({**RUN, "llm_usage": None}, "o", "f")["llm_usage"] == []
    without = {k: v for k, v in RUN.items() if k != "llm_usage"}
    assert normalise_run(without, "o", "f")["llm_usage"] == []


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_bigint_accepts_every_int64_in_any_lossless_form(number):
    assert coerce(number, "bigint", "f") == number
    assert coerce(str(number), "bigint", "f") == number
    if abs(number) < 2**53:
        assert coerce(float(number), "bigint", "f") == number


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_double_round_trips_numbers_and_their_text(number):
    assert coerce(number, "double", "f") == number
    assert coerce(repr(number), "double", "f") == number


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (["not", "an", "object"], "not a JSON object"),
        ({**RUN, "run_id": None}, "no run_id"),
        ({**RUN, "run_id": "  "}, "no run_id"),
        ({k: v for k, v in RUN.items() if k != "date"}, "no date"),
        ({**RUN, "date": "last tuesday"}, "unparseable"),
    ],
)
def test_unloadable_records_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(RejectedRun) as info:
        normalise_run(raw, "o", "f")
    assert reason in info.value.reason
