"""The benchmark (benchmarks/run.py) at a tiny size: every measured load is correct.

No timing is asserted: on a shared CI machine any threshold would be flaky. What must hold at
any size is the correctness column, and that the checker would catch a wrong table.
"""

from __future__ import annotations

import os
import pickle
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from benchmarks import startup
from benchmarks.benchworld import BenchWorld, min_requests, served_pages, truth_of
from benchmarks.concurrency import ConcurrencySizes
from benchmarks.run import SECTIONS, Row, Sizes, render, run_benchmark, run_worker, verdict
from pipelines.simulator import World
from tests.support.postgres import REQUIRE_ENV

TINY = Sizes(
    load_runs=400,
    naive_runs=100,
    load_flows=4,
    load_page_size=50,
    e2e_flows=2,
    e2e_pages=2,
    e2e_page_size=50,
    latency=0.01,
    mem_runs=(200, 400),
    mem_flows=2,
    mem_page_size=100,
    mem_base_per_flow=100,
    noop_orgs=1,
    noop_flows_per_org=3,
    noop_runs_per_flow=20,
    pg_runs=400,
    pg_flows=4,
    pg_page_size=50,
    price_calls=400,
    price_sample=100,
    price_flows=2,
    price_base_per_flow=100,
    concurrency=ConcurrencySizes(
        busy_runs=300,
        busy_flows=2,
        busy_page_size=100,
        busy_latency=0.01,
        busy_base_per_flow=100,
        limit_runs=200,
        limit_flows=4,
        limit_page_size=50,
        limit_latency=0.01,
        limit=2,
        limit_retry_after=None,
        limit_http=(
            ("backoff_factor", 0.05),
            ("jitter", 0.05),
            ("max_retry_delay", 0.2),
            ("max_attempts", 20),
        ),
    ),
)


def _skipped_allowed(row: Row) -> bool:
    """A PostgreSQL row may say SKIPPED (no server binaries, or no ADBC driver for its
    variant) unless the run requires PostgreSQL (`.ci/run` sets REQUIRE_ENV); the ADBC
    variant may always skip (the driver is not a dependency of the project)."""
    if not row.check.startswith("SKIPPED"):
        return False
    if "adbc" in row.check:
        return True
    return not os.environ.get(REQUIRE_ENV)


@pytest.mark.parametrize("section", SECTIONS)
def test_every_measurement_of_a_tiny_benchmark_is_correct(
    section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One section apiece (`run.py --only SECTION`; together, every section of a whole run),
    so that a parallel run spreads them."""
    # Start-up: one fresh process per figure, not the median of 5 (no timing is asserted)
    monkeypatch.setattr(startup, "REPEATS", 1)
    rows = run_benchmark(TINY, tmp_path, seed=1, sections=[section])
    table = render(rows, "tiny")
    assert rows, section
    assert all(row.check == "ok" or _skipped_allowed(row) for row in rows), table
    number = str(SECTIONS.index(section) + 1)
    assert {row.section.split()[0] for row in rows} == {number}, table
    for row in rows:
        if row.requests is not None and "nothing new" not in row.variant:
            assert row.requests >= row.min_requests, table
    if section == "pricing":
        assert number == "6" and len(rows) == 4, table
        # in memory, calc_price, price_calls, price_calls again
        assert rows[2].runs and rows[2].details["parent"]["usage"] == rows[2].runs, table
        assert rows[3].details == {} and rows[3].compared == "0 calls priced", table


def test_the_checker_reports_a_wrong_table(tmp_path: Path) -> None:
    world = BenchWorld(seed=2, orgs=1, flows_per_org=2, runs_per_flow=50)
    pages = {
        f"{f.org_id}/{f.flow_id}": served_pages(world, f.org_id, f.flow_id, 20)
        for f in world.flows()
    }
    (tmp_path / "pages.pkl").write_bytes(pickle.dumps(pages))
    db = tmp_path / "raw.duckdb"
    spec = {
        "task": "load_raw",
        "pages": str(tmp_path / "pages.pkl"),
        "duckdb": str(db),
        "pipelines_dir": str(tmp_path / "raw"),
    }
    result = run_worker(spec, tmp_path, "raw")
    truth = truth_of(world)
    assert verdict(result, db, truth, nested_usage=False) == "ok"
    with duckdb.connect(str(db)) as con:
        con.execute("update stackai.flow_runs set total_tokens = total_tokens + 1")
    assert verdict(result, db, truth, nested_usage=False).startswith("MISMATCH")
    with duckdb.connect(str(db)) as con:
        con.execute("update stackai.flow_runs set total_tokens = total_tokens - 1")
        con.execute(
            "delete from stackai.flow_runs where run_id = (select min(run_id)"
            " from stackai.flow_runs)"
        )
    assert verdict(result, db, truth, nested_usage=False).startswith("MISMATCH")
    assert verdict({"ok": False, "error": "boom"}, db, truth) == "FAILED: boom"


@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_bench_world_pages_like_the_simulator(order: str) -> None:
    stock = World(seed=3, orgs=1, flows_per_org=2, runs_per_flow=120, sort_order=order)
    fast = BenchWorld(seed=3, orgs=1, flows_per_org=2, runs_per_flow=120, sort_order=order)
    windows = [
        (None, None),
        (stock.now - timedelta(days=10), stock.now - timedelta(days=2)),
        (None, stock.now - timedelta(days=20)),
    ]
    for flow in stock.flows():
        for start, end in windows:
            for page in range(4):
                args = (flow.org_id, flow.flow_id)
                kwargs = {"start": start, "end": end, "page": page, "page_size": 40}
                assert fast.query_runs(*args, **kwargs) == stock.query_runs(*args, **kwargs)


def test_bench_world_trims_grows_and_pages_its_truth() -> None:
    world = BenchWorld(seed=4, orgs=1, flows_per_org=2, runs_per_flow=60)
    world.trim(30)
    assert truth_of(world).runs_per_flow == dict.fromkeys(truth_of(world).runs_per_flow, 30)
    world.grow(3)
    truth = truth_of(world)
    assert truth.runs == 180
    flow = world.flows()[0]
    pages = served_pages(world, flow.org_id, flow.flow_id, 25)
    assert len(pages) == min_requests([90], 25) == 4
    assert pages[-1] != b"[]"  # 90 runs: the fourth page is short, no empty page needed
