"""A flaky API and bad input, through the simulator's fault modes over real HTTP: retries, failure
isolation, quarantine, lossless text, stable types, and two syncs of one file at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
import requests

from pipelines.load import open_pipeline, run_sync
from pipelines.stackai.client import _detail
from pipelines.stackai.source import rejected_record_hash
from tests.conftest import DESTINATIONS
from tests.support.store import execute, query
from tests.support.truth import assert_matches, expected_runs, loaded_runs

ROOT = Path(__file__).resolve().parents[1]


def cursor(settings, flow) -> str | None:
    resources = open_pipeline(settings.duckdb_path).state["sources"]["stackai"]["resources"]
    return resources.get(str(flow), {}).get("cursor")


def requests_for(world, flow) -> list[dict]:
    return [r for r in world.requests if f"/flows/{flow.flow_id}" in r["path"]]


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("status", {"status": 429, "retry_after": "1"}),
        ("status", {"status": 429, "retry_after": "0"}),
        ("status", {"status": 503, "retry_after": "-5"}),
        ("status", {"status": 500}),
        ("status", {"status": 502}),
        ("slow", {"seconds": 1.5}),
        ("truncated", {}),
        ("reset", {}),
        ("html", {}),
        ("bad_json", {}),
        ("object", {}),
        ("wrong_content_type", {}),
    ],
)
def test_transient_faults_are_retried_and_nothing_is_lost(settings, world, kind, params):
    flow = settings.flows[0]
    fast = (
        replace(
            settings,
            http=settings.http.__class__(**{**settings.http.__dict__, "read_timeout": 0.5}),
        )
        if kind == "slow"
        else settings
    )
    world.inject(kind, count=2, flow_id=flow.flow_id, **params)
    report = run_sync(fast, now=world.now)
    assert report.ok, report.flows[str(flow)].error
    assert report.flows[str(flow)].retries == 2
    faulted = [r for r in requests_for(world, flow) if r["fault"] == kind]
    assert len(faulted) == 2
    assert_matches(loaded_runs(settings.duckdb_path), expected_runs(world))


def test_a_burst_longer_than_the_attempts_fails_that_flow_only(settings, world):
    broken, healthy = settings.flows[0], settings.flows[1:]
    world.inject("status", count=settings.http.max_attempts, flow_id=broken.flow_id, status=503)
    report = run_sync(settings, now=world.now)
    assert [f.flow for f in report.failed] == [str(broken)]
    error = report.flows[str(broken)].error
    assert error.startswith("HTTP 503 from http://127.0.0.1") and broken.flow_id in error
    assert report.flows[str(broken)].retries == settings.http.max_attempts - 1
    assert cursor(settings, broken) is None
    assert_matches(loaded_runs(settings.duckdb_path), expected_runs(world, healthy))
    assert run_sync(settings, now=world.now).ok
    assert_matches(loaded_runs(settings.duckdb_path), expected_runs(world))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("html", "not JSON (content type)"),
        ("wrong_content_type", "not JSON (content type)"),
        ("bad_json", "not valid JSON"),
        ("object", "a JSON dict, not an array"),
    ],
)
def test_a_page_that_is_not_a_json_array_fails_the_flow_clearly(settings, world, kind, message):
    """Retried like a 5xx (a proxy's error page is usually transient); when every attempt gets
    one, the flow fails naming the URL, status and content type, and its cursor stays."""
    assert run_sync(settings, now=world.now).ok
    flow = settings.flows[0]
    before = cursor(settings, flow)
    world.advance(1800)
    world.inject(kind, flow_id=flow.flow_id, count=settings.http.max_attempts)
    report = run_sync(settings, now=world.now)
    assert [f.flow for f in report.failed] == [str(flow)]
    error = report.flows[str(flow)].error
    assert message in error
    assert f"/analytics/org/{flow.org_id}/flows/{flow.flow_id}" in error
    assert "HTTP 200" in error and "'" in error  # the status and the content type
    assert settings.api_key not in error
    assert cursor(settings, flow) == before
    assert run_sync(settings, now=world.now).ok
    horizon = world.now - settings.rules.max_open_run_age
    assert_matches(loaded_runs(settings.duckdb_path), expected_runs(world), horizon)


@pytest.mark.parametrize("time_slices", [False, True])
def test_an_expired_key_fails_clearly_without_retrying(settings, world, time_slices):
    world.expire_key_after(2)
    report = run_sync(replace(settings, time_slices=time_slices), now=world.now)
    failed = report.failed
    assert failed
    assert all(f.error.startswith("API key rejected (HTTP 401)") for f in failed)
    assert all(f.retries == 0 for f in report.flows.values())
    # one request per failed flow, no retries (the org summary, read for names while the flows
    # are read, may meet the expired key too: it only warns)
    expired = [
        r
        for r in world.requests
        if r["fault"] == "key_expired" and r["path"].startswith("/analytics/org/")
    ]
    if not time_slices:
        assert len(expired) == len(failed)
    else:  # slices and probes already in flight when the key expired get their 401 too
        assert len(failed) <= len(expired) <= len(failed) * settings.http.max_concurrent_requests


def test_bad_records_are_quarantined_and_the_rest_of_the_page_loads(settings, world):
    flow = settings.flows[0]
    world.inject("records", flow_id=flow.flow_id)
    report = run_sync(settings, now=world.now)
    assert report.ok
    assert report.rejected == 4
    assert_matches(loaded_runs(settings.duckdb_path), expected_runs(world))
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows = con.execute(
            "select org_id, flow_id, raw, reason from stackai.flow_runs_rejected order by reason"
        ).fetchall()
    assert {(r[0], r[1]) for r in rows} == {(flow.org_id, flow.flow_id)}
    reasons = " | ".join(r[3] for r in rows)
    for expected in ("not a JSON object", "no run_id", "date is unparseable", "total_tokens"):
        assert expected in reasons
    assert json.loads(next(r[2] for r in rows if "not a JSON object" in r[3])) == "not an object"


def test_rejected_records_exit_0_with_a_warning_or_1_when_asked(simulator, world, flows, tmp_path):
    env = {**os.environ, "STACKAI_API_KEY": world.api_key}
    base = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "sync",
        "--base-url",
        simulator.url,
        "--flow",
        str(flows[0]),
    ]
    world.inject("records", flow_id=flows[0].flow_id)
    ok = subprocess.run(
        [*base, "--duckdb", str(tmp_path / "a.duckdb")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "4 records could not be loaded" in ok.stdout
    world.inject("records", flow_id=flows[0].flow_id)
    strict = subprocess.run(
        [*base, "--duckdb", str(tmp_path / "b.duckdb"), "--fail-on-rejected"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert strict.returncode == 1


TEXTS = {
    "unicode": "Grüße, 東京, Ελληνικά",
    "emoji": "done 🚀👩‍💻",
    "control": "tab\tnewline\ncarriage\rbell\x07escape\x1b",
    "nul": "before\x00after",
    "large": "x" * 1_000_000,
    "json": '{"a": [1, 2.50, "é"], "b": null}',
}


def test_text_fields_round_trip_byte_for_byte(settings, world):
    flow = settings.flows[0]
    runs = world.runs(flow.org_id, flow.flow_id)
    for (name, text), run in zip(TEXTS.items(), runs, strict=False):
        world.update_run(
            run["run_id"], inputs=text, outputs=text[::-1], feedback=text, error=text, llms=text
        )
        TEXTS_BY_RUN[run["run_id"].lower()] = name
    assert run_sync(settings, now=world.now).ok
    loaded = loaded_runs(settings.duckdb_path)
    for run_id, name in TEXTS_BY_RUN.items():
        text = TEXTS[name]
        row = loaded[run_id]
        assert row["inputs"] == text and row["outputs"] == text[::-1], name
        assert row["feedback"] == row["error"] == row["llms"] == text, name


TEXTS_BY_RUN: dict[str, str] = {}


def test_type_changes_are_coerced_and_no_variant_column_appears(settings, world):
    flow = settings.flows[0]
    first, second, third = world.runs(flow.org_id, flow.flow_id)[:3]
    world.update_run(first["run_id"], total_tokens="12", latency=2)
    world.update_run(second["run_id"], total_tokens=12.0, latency="3.5")
    world.update_run(third["run_id"], new_fields={"brand_new_field": {"nested": True}})
    assert run_sync(settings, now=world.now).ok
    world.update_run(third["run_id"], new_fields={"brand_new_field": 7})  # its type changes
    world.update_run(first["run_id"], total_tokens=13)
    assert run_sync(replace(settings, since=world.anchor.replace(year=2000)), now=world.now).ok
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        columns = dict(
            con.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = 'stackai' and table_name = 'flow_runs'"
            ).fetchall()
        )
        values = dict(
            con.execute(
                "select run_id, total_tokens from stackai.flow_runs where run_id in (?, ?)",
                [first["run_id"].lower(), second["run_id"].lower()],
            ).fetchall()
        )
        new_field = con.execute(
            "select brand_new_field from stackai.flow_runs where run_id = ?",
            [third["run_id"].lower()],
        ).fetchone()[0]
    assert not [c for c in columns if "__v_" in c]
    assert columns["brand_new_field"] == "VARCHAR"
    assert new_field == "7"
    assert values == {first["run_id"].lower(): 13, second["run_id"].lower(): 12}


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("under-a-file/runs.duckdb", "cannot create"),
        ("a-folder", "is a folder"),
        ("not-duckdb.duckdb", "is not a DuckDB database"),
        ("empty.duckdb", "is not a DuckDB database"),
    ],
)
def test_an_unusable_duckdb_path_is_one_line_and_exit_2(
    simulator, world, flows, tmp_path, where, message
):
    (tmp_path / "under-a-file").write_text("a file, not a folder")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "not-duckdb.duckdb").write_text("SQLite format 3 and more bytes")
    (tmp_path / "empty.duckdb").write_bytes(b"")
    env = {**os.environ, "STACKAI_API_KEY": world.api_key}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "sync",
            "--base-url",
            simulator.url,
            "--flow",
            str(flows[0]),
            "--duckdb",
            str(tmp_path / where),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert world.request_count == 0


def test_a_second_sync_of_the_same_file_exits_with_a_clear_message(
    simulator, world, flows, tmp_path
):
    """The first sync holds the file's lock while the simulator serves its first page; the
    second process runs to completion inside that moment, so the overlap is certain."""
    env = {**os.environ, "STACKAI_API_KEY": world.api_key}
    command = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "sync",
        "--base-url",
        simulator.url,
        "--duckdb",
        str(tmp_path / "runs.duckdb"),
        "--flow",
        str(flows[0]),
    ]
    second: list[subprocess.CompletedProcess] = []

    def run_the_second_sync(org_id: str, flow_id: str, params: dict) -> None:
        if not second:
            second.append(
                subprocess.run(
                    command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
                )
            )

    world.before_page = run_the_second_sync
    try:
        first = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240
        )
    finally:
        world.before_page = None
    assert first.returncode == 0, first.stderr
    (blocked,) = second
    assert blocked.returncode == 1
    assert "another stackai-runs sync is using" in blocked.stderr
    assert "Traceback" not in blocked.stderr
    assert set(loaded_runs(tmp_path / "runs.duckdb")) == set(expected_runs(world, flows[:1]))


def test_unknown_enum_values_are_kept_and_counted(settings, world):
    flow = settings.flows[0]
    run = world.runs(flow.org_id, flow.flow_id)[0]
    world.update_run(run["run_id"], state="ARCHIVED", run_type="voice")
    report = run_sync(settings, now=world.now)
    assert report.ok
    assert report.unknown_values == {"state=ARCHIVED": 1, "run_type=voice": 1}
    row = loaded_runs(settings.duckdb_path)[run["run_id"].lower()]
    assert (row["state"], row["run_type"]) == ("ARCHIVED", "voice")


def test_a_field_that_disappears_leaves_nulls(settings, world):
    flow = settings.flows[0]
    run = world.runs(flow.org_id, flow.flow_id)[0]
    world.update_run(run["run_id"], new_fields={"region": "eu-west"})
    assert run_sync(settings, now=world.now).ok
    world.update_run(run["run_id"], new_fields={"region": None})
    assert run_sync(replace(settings, since=world.anchor.replace(year=2000)), now=world.now).ok
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        (region,) = con.execute(
            "select region from stackai.flow_runs where run_id = ?", [run["run_id"].lower()]
        ).fetchone()
    assert region is None


def test_a_child_whose_parent_flow_is_not_synced_is_kept(settings, world):
    children = [(flow, run) for _, flow, run in world.all_runs() if run.get("parent_run_id")]
    flow_id, child = children[0]
    only_child_flow = tuple(f for f in settings.flows if f.flow_id == flow_id)
    assert run_sync(replace(settings, flows=only_child_flow), now=world.now).ok
    loaded = loaded_runs(settings.duckdb_path)
    assert child["parent_run_id"].lower() not in loaded
    assert loaded[child["run_id"].lower()]["parent_run_id"] == child["parent_run_id"].lower()


def test_a_422_shows_the_servers_detail(simulator, world):
    response = requests.get(
        f"{simulator.url}/analytics/org/{world.flows()[0].org_id}/flows/{world.flows()[0].flow_id}",
        params={"page": -1},
        headers={"Authorization": f"Bearer {world.api_key}"},
        timeout=10,
    )
    assert response.status_code == 422
    assert _detail(response).startswith("query.page: Input should be greater than or equal to 0")


def test_a_reader_in_another_process_makes_the_sync_fail_cleanly(settings, world):
    """DuckDB lets a process write only while no other process has the file open, even
    read-only: the sync says so in one line, commits nothing, and the next sync catches up."""
    assert run_sync(settings, now=world.now).ok
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1],"
            " read_only=True); print('open', flush=True); sys.stdin.read()",
            str(settings.duckdb_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        world.advance(1800)
        report = run_sync(settings, now=world.now)
    finally:
        reader.communicate("", timeout=30)
    assert not report.ok
    assert "open in another process" in report.error and f"PID {reader.pid}" in report.error
    assert run_sync(settings, now=world.now).ok
    horizon = world.now - settings.rules.max_open_run_age
    assert_matches(loaded_runs(settings.duckdb_path), expected_runs(world), horizon)


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_rejected_record_is_stored_once_with_first_and_last_seen_and_count(settings, world):
    """Three syncs read the same four bad records: four rows, each seen three times; a record
    whose content changes is a new row; rows of an earlier version get the columns."""
    flow = settings.flows[0]
    world.inject("records", flow_id=flow.flow_id)
    first = run_sync(settings, now=world.now)
    assert first.ok and first.rejected == 4
    for _ in range(2):
        world.inject("records", flow_id=flow.flow_id)  # a fault serves its records once
        report = run_sync(replace(settings, full_refresh=True, flows=(flow,)), now=world.now)
        assert report.ok and report.rejected == 4
    rows = query(settings, "select * from stackai.flow_runs_rejected")
    assert len(rows) == 4
    for row in rows:
        assert row["times_seen"] == 3
        assert row["first_seen_at"] < row["last_seen_at"] == row["seen_at"]
        assert row["record_hash"] == rejected_record_hash(row["org_id"], row["flow_id"], row["raw"])
    assert len({r["record_hash"] for r in rows}) == 4

    # an old-style row (no hash, no counts), as versions before this one wrote them
    execute(
        settings,
        "insert into stackai.flow_runs_rejected (org_id, flow_id, raw, reason, seen_at,"
        " _dlt_load_id, _dlt_id) select org_id, flow_id, raw, reason, seen_at, '1', 'old-row'"
        " from stackai.flow_runs_rejected where reason like %s",
        "%no run_id%",
    )
    world.inject("records", flow_id=flow.flow_id)
    report = run_sync(replace(settings, full_refresh=True, flows=(flow,)), now=world.now)
    assert report.ok
    rows = query(settings, "select * from stackai.flow_runs_rejected")
    assert len(rows) == 4 and not [r for r in rows if r["_dlt_id"] == "old-row"]
    counts = sorted(r["times_seen"] for r in rows)
    assert counts == [4, 4, 4, 5]  # the old row counted once more for that record


def test_a_changed_rejected_record_is_a_new_row(settings, world):
    flow = settings.flows[0]
    run = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(minutes=3))
    world.update_run(run["run_id"], total_tokens="12x")
    assert run_sync(settings, now=world.now).ok
    world.update_run(run["run_id"], total_tokens="13x")
    assert run_sync(settings, now=world.now).ok
    assert run_sync(settings, now=world.now).ok
    rows = query(settings, "select reason, times_seen from stackai.flow_runs_rejected")
    assert sorted((r["reason"], r["times_seen"]) for r in rows) == [
        ("total_tokens: '12x' is not a valid bigint", 1),
        ("total_tokens: '13x' is not a valid bigint", 2),
    ]
