"""The batch path: DuckDB types plain runs, `normalise_run` the rest; both must give the same rows.

`normalise_run` is the reference. Every test here compares the batch path's Arrow rows with what
the reference makes of the same records, on records generated to cover the plain forms (which
DuckDB types) and the odd ones (which must fall back to Python).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipelines.stackai import batch as batch_module
from pipelines.stackai.batch import Batch, FlowBatcher, is_plain, row_key
from pipelines.stackai.normalise import RejectedRun, normalise_run, unknown_enum_values

ORG, FLOW = "org-1", "flow-1"

PLAIN = {
    "run_id": "6f1c2b3a-0000-4000-8000-00000000abcd",
    "date": "2026-11-29T10:15:30.123456",
    "is_flow_successful": True,
    "state": "COMPLETED",
    "error": None,
    "latency": 2.5,
    "total_tokens": 30,
    "user_id": "u-1",
    "inputs": '{"q": "hi"}',
    "outputs": "plain text ✓ 🚀 \x00 nul",
    "llms": '["gpt-4o"]',
    "feedback": None,
    "run_type": "api",
    "ran_by_type": "user",
    "ran_by_id": "AB-12",
    "ran_by_display_name": "lea@example.com",
    "llm_usage": [{"provider": "OpenAI", "model_id": "gpt-4o", "tokens": 30, "input_tokens": 20}],
}


def normalise(batcher: FlowBatcher, pages: list[tuple[list[Any], bytes | None]]) -> Batch:
    """`add` each `(records, body)` page, then `flush`: one batch, as the source makes it."""
    for records, body in pages:
        batcher.add(records, body)
    return batcher.flush()


def batch_rows(records: list[Any], body: bytes | None = None, **kwargs: Any):
    """Run one batch; return (runs by run_id, rejected reasons, the Batch)."""
    kwargs.setdefault("small_batch", 0)  # DuckDB for every batch: what these tests compare
    with FlowBatcher(ORG, FLOW, kwargs.pop("cursor", None), **kwargs) as batcher:
        batch = normalise(batcher, [(records, orjson.dumps(records) if body is None else body)])
    usage: dict[str, list[dict]] = defaultdict(list)
    for table in batch.usage:
        for row in table.to_pylist():
            usage[row.pop("_dlt_root_id")].append(row)
    runs = {}
    for table in batch.runs:
        for row in table.to_pylist():
            items = sorted(usage.pop(row["_dlt_id"], []), key=lambda u: u["_dlt_list_idx"])
            # a run with no LLM calls sends one marker row instead (it deletes earlier calls)
            markers = [u for u in items if u["_deleted"]]
            items = [u for u in items if not u["_deleted"]]
            assert len(markers) == (0 if items else 1)
            assert all(m["_dlt_list_idx"] == -1 and m["run_id"] == row["run_id"] for m in markers)
            assert [u["_dlt_list_idx"] for u in items] == list(range(len(items)))
            assert all(u["_dlt_parent_id"] == row["_dlt_id"] for u in items)
            row.pop("_dlt_id")
            row["llm_usage"] = [
                {k: v for k, v in u.items() if not k.startswith("_dlt") and v is not None}
                for u in items
            ]
            runs[row["run_id"]] = {k: v for k, v in row.items() if v is not None}
    assert not usage, "usage rows without a run"
    return runs, [reason for _, reason in batch.rejected], batch


def reference(records: list[Any]):
    """What `normalise_run` makes of the records: (rows by run_id, first one wins; reasons)."""
    runs, reasons = {}, []
    for raw in records:
        try:
            row = normalise_run(raw, ORG, FLOW)
        except RejectedRun as exc:
            reasons.append(exc.reason)
            continue
        row["llm_usage"] = [{k: v for k, v in u.items() if v is not None} for u in row["llm_usage"]]
        runs.setdefault(row["run_id"], {k: v for k, v in row.items() if v is not None})
    return runs, reasons


# -- generated records -------------------------------------------------------------------------

offsets = st.integers(min_value=-(15 * 60 + 59), max_value=15 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
instants = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1))


@st.composite
def api_dates(draw) -> str:
    instant = draw(instants)
    digits = draw(st.integers(min_value=0, max_value=6))
    text = instant.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{instant.microsecond:06d}"[:digits]
    suffix = draw(st.sampled_from(["", "Z", "offset"]))
    if suffix == "offset":
        offset = draw(offsets)
        text = instant.replace(tzinfo=offset).isoformat(timespec="seconds")[:19] + text[19:]
        minutes = int(offset.utcoffset(None).total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text + ("Z" if suffix == "Z" else "")


texts = st.one_of(st.none(), st.text(max_size=30))
json_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson decodes
odd_values = st.one_of(
    st.none(),
    st.booleans(),
    json_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.sampled_from(["12", " 7 ", "true", "1e3", "12x", "ÄB-1", " ab ", ""]),
    st.lists(json_ints, max_size=2),
    st.dictionaries(st.sampled_from(["a", "run_id"]), json_ints, max_size=2),
)
usage_items = st.fixed_dictionaries(
    {},
    optional={
        "provider": st.one_of(st.sampled_from(["OpenAI", "Anthropic", "Nope"]), odd_values),
        "model_id": texts,
        "tokens": st.one_of(st.integers(min_value=0, max_value=10**6), odd_values),
        "input_tokens": st.integers(min_value=0, max_value=10**6),
        "output_tokens": st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
        "connection_id": texts,
        "connection_origin": st.sampled_from(["stack_ai", "external_db", "elsewhere"]),
        "is_local_model": st.one_of(st.booleans(), odd_values),
        "should_charge": st.booleans(),
        "run_id": texts,
        "brand_new": odd_values,
    },
)


@st.composite
def records(draw, index: int) -> Any:
    if draw(st.integers(min_value=0, max_value=30)) == 0:
        return draw(st.one_of(st.none(), json_ints, st.text(max_size=5), st.lists(st.none())))
    run_id = draw(st.sampled_from(["", None, " ", f"RUN-{index}", f"run-{index} ", f"Ünï-{index}"]))
    if draw(st.integers(min_value=0, max_value=3)):
        run_id = f"6F1C2B3A-0000-4000-8000-{index:012d}"
    record = draw(
        st.fixed_dictionaries(
            {"run_id": st.just(run_id), "date": st.one_of(api_dates(), odd_values)},
            optional={
                "state": st.sampled_from(["PENDING", "COMPLETED", "FAILED", "ARCHIVED", None]),
                "is_flow_successful": st.one_of(st.booleans(), odd_values),
                "latency": st.one_of(
                    st.floats(allow_nan=False, allow_infinity=False),
                    json_ints,
                    odd_values,
                    st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2.0**53, 1e300]),
                ),
                "total_tokens": st.one_of(
                    st.integers(min_value=-(2**63), max_value=2**63 - 1), odd_values
                ),
                "error": texts,
                "inputs": st.one_of(texts, odd_values),
                "outputs": texts,
                "user_id": texts,
                "run_type": st.sampled_from(["api", "form", "telepathy"]),
                "ran_by_id": st.one_of(texts, st.just("AbC-9")),
                "parent_run_id": st.one_of(texts, st.just("P-1")),
                "parent_project_id": texts,
                "parent": st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "run_id": st.one_of(texts, st.just("PARENT-1"), odd_values),
                            "project_id": texts,
                            "project_name": texts,
                            "other": odd_values,
                        },
                    ),
                    odd_values,
                ),
                "llm_usage": st.one_of(st.none(), st.lists(usage_items, max_size=3), odd_values),
                "a_new_field": odd_values,
            },
        )
    )
    return record


ascii_ids = st.from_regex(r"[A-Za-z0-9_.-]{0,14}", fullmatch=True)
plain_texts = st.one_of(st.none(), st.text(max_size=40))
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
plain_usage = st.fixed_dictionaries(
    {},
    optional={
        "provider": st.one_of(st.sampled_from(["OpenAI", "Groq", "Other"]), plain_texts),
        "model_id": plain_texts,
        "tokens": st.one_of(st.none(), int64),
        "input_tokens": st.one_of(st.none(), int64),
        "output_tokens": st.one_of(st.none(), int64),
        "connection_id": plain_texts,
        "connection_origin": st.sampled_from(["stack_ai", "external_db", "elsewhere"]),
        "is_local_model": st.one_of(st.none(), st.booleans()),
        "should_charge": st.one_of(st.none(), st.booleans()),
        "run_id": plain_texts,
    },
)


@st.composite
def plain_records(draw, index: int) -> dict[str, Any]:
    """Records whose every value has its column's JSON type: the ones DuckDB types."""
    run_id = f"6F1C2B3A-0000-4000-8000-{index:012d}"
    return draw(
        st.fixed_dictionaries(
            {
                "run_id": st.sampled_from([run_id, run_id.lower()]),
                "date": api_dates(),
            },
            optional={
                "conversation_id": plain_texts,
                "is_flow_successful": st.one_of(st.none(), st.booleans()),
                "state": st.sampled_from(["PENDING", "PAUSED", "COMPLETED", "ARCHIVED", None]),
                "error": plain_texts,
                "latency": st.one_of(
                    st.none(),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(min_value=-(2**53), max_value=2**53),
                ),
                "total_tokens": st.one_of(st.none(), int64),
                "user_id": plain_texts,
                "inputs": plain_texts,
                "outputs": plain_texts,
                "llms": plain_texts,
                "feedback": plain_texts,
                "run_type": st.sampled_from(["api", "form", "telepathy", None]),
                "ran_by_type": st.sampled_from(["user", "robot", None]),
                "ran_by_id": st.one_of(st.none(), ascii_ids),
                "ran_by_display_name": plain_texts,
                "parent_run_id": st.one_of(st.none(), ascii_ids),
                "parent_project_id": plain_texts,
                "parent_project_name": plain_texts,
                "parent": st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "run_id": st.one_of(st.none(), ascii_ids),
                            "project_id": plain_texts,
                            "project_name": plain_texts,
                            "ignored": odd_values,
                        },
                    ),
                ),
                "llm_usage": st.one_of(st.none(), st.lists(plain_usage, max_size=3)),
            },
        )
    )


@st.composite
def pages(draw) -> list[Any]:
    count = draw(st.integers(min_value=0, max_value=12))
    return [draw(st.one_of(records(index), plain_records(index))) for index in range(count)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=8, unique=True).flatmap(
    lambda ids: st.tuples(*(plain_records(i) for i in ids))))  # fmt: skip
def test_plain_records_are_typed_by_duckdb_as_python_would(page):
    page = list(page)
    assert all(is_plain(record) for record in page)
    runs, reasons, batch = batch_rows(page)
    assert (runs, reasons) == reference(page)
    assert batch.loaded == len(page)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages())
def test_the_batch_path_gives_the_reference_rows(page):
    runs, reasons, batch = batch_rows(page)
    want_runs, want_reasons = reference(page)
    assert runs == want_runs
    assert sorted(reasons) == sorted(want_reasons)
    assert batch.loaded == len(want_runs)


@settings(max_examples=150, deadline=None)
@given(date=api_dates())
def test_duckdb_reads_the_api_dates_as_python_does(date):
    record = {**PLAIN, "date": date}
    assert is_plain(record), date  # else this test would not test DuckDB
    runs, _, _ = batch_rows([record])
    assert runs[PLAIN["run_id"]]["date"] == reference([record])[0][PLAIN["run_id"]]["date"]


def test_a_plain_page_is_typed_by_duckdb_from_its_bytes():
    body = orjson.dumps([PLAIN])
    runs, reasons, _ = batch_rows([PLAIN], body=b"  " + body + b"\n")
    assert reasons == []
    row = runs[PLAIN["run_id"]]
    assert row["outputs"] == PLAIN["outputs"]  # NUL and emoji byte for byte
    assert row["ran_by_id"] == "ab-12"
    assert row["date"] == datetime(2026, 11, 29, 10, 15, 30, 123456, tzinfo=UTC)
    assert row["llm_usage"] == [
        {"run_id": PLAIN["run_id"], "provider": "OpenAI", "model_id": "gpt-4o", "tokens": 30,
         "input_tokens": 20}
    ]  # fmt: skip
    assert runs == reference([PLAIN])[0]


@pytest.mark.parametrize(
    "change",
    [
        {"total_tokens": "12"},
        {"total_tokens": 12.0},
        {"total_tokens": True},
        {"total_tokens": 2**63},
        {"latency": 2**60},
        {"is_flow_successful": "true"},
        {"inputs": {"q": 1}},
        {"run_id": " padded "},
        {"run_id": "ÜNICODE-1"},
        {"ran_by_id": "Ä"},
        {"date": "2026-11-29T10:15:30+16:00"},
        {"date": "2026-11-29 10:15:30"},
        {"date": "2026-02-30T10:15:30"},
        {"date": None},
        {"brand_new_field": "x"},
        {"org_id": "spoofed"},
        {"parent": {"run_id": 5}},
        {"parent": "not an object"},
        {"llm_usage": [{"provider": "OpenAI", "tokens": "3"}]},
        {"llm_usage": [{"provider": "OpenAI", "cost": 1.5}]},
        {"llm_usage": ["not an object"]},
        {"llm_usage": {"provider": "OpenAI"}},
    ],
)
def test_anything_needing_coercion_takes_the_python_path(change):
    record = {**PLAIN, **change}
    assert not is_plain(record)
    assert batch_rows([record, PLAIN | {"run_id": "other"}])[:2] == reference(
        [record, PLAIN | {"run_id": "other"}]
    )


def test_a_run_shown_twice_loads_once_per_sync():
    later = PLAIN | {"state": "FAILED"}
    with FlowBatcher(ORG, FLOW, None, small_batch=0) as batcher:
        first = normalise(batcher, [([PLAIN, later], None)])
        again = normalise(batcher, [([later], orjson.dumps([later]))])
        odd = normalise(batcher, [([later | {"total_tokens": "30"}], None)])
    assert (first.loaded, again.loaded, odd.loaded) == (1, 0, 0)
    assert sum(t.num_rows for t in first.runs) == 1
    assert again.runs == [] and odd.runs == []


def test_batch_observations_match_the_rows():
    cursor = datetime(2026, 11, 29, 12, tzinfo=UTC)
    page = [
        PLAIN | {"run_id": "a", "date": "2026-11-29T11:00:00Z", "state": "PENDING"},
        PLAIN | {"run_id": "b", "date": "2026-11-29T13:00:00Z", "state": "COMPLETED"},
        PLAIN | {"run_id": "c", "date": "2026-11-29T14:00:00+01:00", "state": "PAUSED"},
        PLAIN | {"run_id": "w", "date": "2026-11-29T09:00:00Z", "state": "ARCHIVED",
                 "llm_usage": [{"provider": "Nope"}, {"provider": "Nope"}]},
        PLAIN | {"run_id": "x", "date": "2026-11-29T09:00:00Z", "state": "FAILED",
                 "total_tokens": "4"},
    ]  # fmt: skip
    _, _, batch = batch_rows(page, cursor=cursor, watched={"w", "x", "gone"})
    assert batch.newest == datetime(2026, 11, 29, 13, tzinfo=UTC)
    assert batch.new_runs == 2
    assert sorted(batch.opened) == [
        ("a", datetime(2026, 11, 29, 11, tzinfo=UTC)),
        ("c", datetime(2026, 11, 29, 13, tzinfo=UTC)),
    ]
    assert sorted(batch.closed) == ["w", "x"]
    counted: Counter = Counter()
    for field, value, n in batch.unknown:
        counted[f"{field}={value}"] += n
    want: Counter = Counter()
    for raw in page:
        for field, value in unknown_enum_values(normalise_run(raw, ORG, FLOW)):
            want[f"{field}={value}"] += 1
    assert counted == want == Counter({"state=ARCHIVED": 1, "llm_usage.provider=Nope": 2})


def test_small_batches_skip_duckdb_until_a_large_one_and_still_load_each_run_once():
    runs = [PLAIN | {"run_id": f"run-{i}"} for i in range(12)]
    with FlowBatcher(ORG, FLOW, None, small_batch=10) as batcher:
        small = normalise(batcher, [(runs[:6], orjson.dumps(runs[:6]))])
        assert batcher._con is None, "a small batch opened DuckDB"
        large = normalise(batcher, [(runs, orjson.dumps(runs))])
        assert batcher._con is not None
        again = normalise(batcher, [(runs[:3], orjson.dumps(runs[:3]))])
    assert (small.loaded, large.loaded, again.loaded) == (6, 6, 0)
    rows = [row for batch in (small, large) for table in batch.runs for row in table.to_pylist()]
    assert sorted(row["run_id"] for row in rows) == sorted(r["run_id"] for r in runs)


@pytest.mark.parametrize("small_batch", [0, 1000])
@pytest.mark.parametrize("plain_first", [True, False])
def test_a_run_shown_twice_in_a_batch_keeps_its_first_copy_whichever_path_types_it(
    small_batch, plain_first
):
    plain = PLAIN | {"state": "PENDING", "total_tokens": 3}
    odd = PLAIN | {"state": "COMPLETED", "total_tokens": "3"}  # a string: not plain
    first, second = (plain, odd) if plain_first else (odd, plain)
    pages = [([first], orjson.dumps([first])), ([second], orjson.dumps([second]))]
    with FlowBatcher(ORG, FLOW, None, small_batch=small_batch) as batcher:
        batch = normalise(batcher, pages)
    rows = [row for table in batch.runs for row in table.to_pylist()]
    assert [row["state"] for row in rows] == [first["state"]]
    assert rows[0]["run_id"] == reference([first, second])[0][PLAIN["run_id"]]["run_id"]
    assert [run_id for run_id, _ in batch.opened] == ([PLAIN["run_id"]] if plain_first else [])


@pytest.mark.parametrize(
    "date", ["9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00+01:00", "10000-01-01T00:00:00"]
)
def test_a_date_outside_years_1_to_9999_in_utc_is_rejected_not_a_crash(date):
    record = PLAIN | {"date": date}
    assert not is_plain(record)
    with pytest.raises(RejectedRun, match="date"):
        normalise_run(record, ORG, FLOW)
    runs, reasons, _ = batch_rows([record, PLAIN | {"run_id": "other"}])
    assert list(runs) == ["other"] and len(reasons) == 1


def test_observed_dates_are_utc_whatever_the_hosts_time_zone(monkeypatch):
    time = pytest.importorskip("time")
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        page = [PLAIN | {"state": "PENDING", "date": "2026-01-01T00:00:00.000001Z"}]
        _, _, batch = batch_rows(page)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert batch.newest.utcoffset() == timedelta(0)
    assert batch.newest == datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert [date.utcoffset() for _, date in batch.opened] == [timedelta(0)]
    assert batch.newest.isoformat() == "2026-01-01T00:00:00.000001+00:00"


def test_both_routes_give_a_run_the_same_row_key():
    """`_dlt_id` is md5(run_id) whichever route typed the run, so a run keeps its key across
    syncs and its usage rows stay linked (`_dlt_root_id`)."""
    keys = []
    for small_batch in (0, 1000):  # DuckDB, then Python
        with FlowBatcher(ORG, FLOW, None, small_batch=small_batch) as batcher:
            batch = normalise(batcher, [([PLAIN], orjson.dumps([PLAIN]))])
        (row,) = batch.runs[0].to_pylist()
        usage = batch.usage[0].to_pylist()
        keys.append((row["_dlt_id"], [(u["_dlt_root_id"], u["_dlt_id"]) for u in usage]))
    key = row_key(PLAIN["run_id"])
    assert keys[0] == keys[1] == (key, [(key, f"{key}_0")])


# -- the batch-wide check in SQL ---------------------------------------------------------------


_CHECKER = duckdb.connect(config={"threads": 1})


def sql_says_plain(records: list[Any]) -> bool:
    """Whether the SQL check (`json_structure` and `_PLAIN_ROW`) takes these records as they
    are: a batch typed without looking at each record in Python."""
    try:
        params = {"org_id": ORG, "flow_id": FLOW}
        return batch_module._typed(_CHECKER, orjson.dumps(records), params, True) is not None
    except duckdb.Error:
        return False  # e.g. an integer beyond int64: the record-by-record path then


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages())
def test_the_sql_check_takes_no_record_is_plain_refuses(page):
    """Sound: a batch the SQL check takes is one whose every record `is_plain`, alone or in a
    batch (a union of shapes must not hide an odd record among plain ones)."""
    if sql_says_plain(page):
        assert all(is_plain(record) for record in page)
    for record in page:
        if sql_says_plain([record, PLAIN]):
            assert is_plain(record), record


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8, unique=True)
       .flatmap(lambda ids: st.tuples(*(plain_records(i) for i in ids))))  # fmt: skip
def test_a_batch_of_plain_records_is_checked_in_sql_not_record_by_record(page):
    page = list(page)
    # a float latency from 2^53 on is plain but refused by the SQL check (which cannot tell
    # it from an integer): such a batch takes the record-by-record path
    assume(all(abs(record.get("latency") or 0) < 2**53 for record in page))
    # nor can it tell an empty object from an odd value when a batch has no other: only `{}`
    # as LLM calls, or as parents (never seen from the API)
    calls = [call for record in page for call in record.get("llm_usage") or []]
    parents = [record["parent"] for record in page if record.get("parent") is not None]
    assume(not (calls and all(call == {} for call in calls)))
    assume(not (parents and all(parent == {} for parent in parents)))
    assert sql_says_plain(page)
    with mock.patch.object(FlowBatcher, "_by_record", None):  # a call would fail the test
        runs, reasons, _ = batch_rows(page)
    assert (runs, reasons) == reference(page)


@pytest.mark.parametrize(
    "change",
    [
        {"run_id": None},
        {"run_id": ""},
        {"run_id": "ab\x1f"},
        {"run_id": "\tab"},
        {"ran_by_id": "é"},
        {"parent": {"run_id": " P-1"}},
        {"date": "2026-11-29T24:00:00"},
        {"date": "0000-01-01T00:00:00"},
        {"date": "2026-11-29T10:15:60Z"},
        {"date": "2026-11-29T10:15:30.1234567"},
        {"date": "\uff12\uff10\uff12\uff16-11-29T10:15:30"},  # full-width digits
        {"latency": 2**53 + 1},
        {"total_tokens": 2**63},
        {"llm_usage": [None]},
        {"llm_usage": [{"tokens": 2**63}]},
        {"llm_usage": [{"provider": "OpenAI"}, None]},
        {"llm_usage": [[]]},
    ],
)
def test_the_sql_check_refuses_what_is_plain_refuses(change):
    record = {**PLAIN, **change}
    assert not is_plain(record)
    assert not sql_says_plain([PLAIN | {"run_id": "other"}, record])
    assert batch_rows([record, PLAIN | {"run_id": "other"}])[:2] == reference(
        [record, PLAIN | {"run_id": "other"}]
    )


@pytest.mark.parametrize(
    "change",
    [
        {"latency": 1e300},
        {"latency": 2**53},
        {"parent": {}},
        {"llm_usage": [{}]},
        {"date": "2026-11-29T10:15:30+05:60"},  # Python reads it as +06:00
    ],
)
def test_a_plain_batch_the_sql_check_refuses_is_typed_record_by_record(change):
    """Stricter than `is_plain` where SQL cannot tell (a float latency beyond 2^53 from an
    integer, an empty object from an odd value): those batches take the record-by-record
    path, which gives the same rows."""
    record = {**PLAIN, **change}
    assert not sql_says_plain([record])
    assert batch_rows([record])[:2] == reference([record])


def test_a_null_record_among_plain_ones_is_rejected_not_typed():
    runs, reasons, _ = batch_rows([PLAIN, None])
    assert list(runs) == [PLAIN["run_id"]] and len(reasons) == 1
    assert not sql_says_plain([PLAIN, None])
