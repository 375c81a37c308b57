"""Performance and scale of stackai-runs, against the alternatives, measured in one run.

    .venv/bin/python benchmarks/run.py            # full sizes, ~10 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --quick    # small sizes, ~1 minute

Prints one table (see benchmarks/README.md for what each figure means). Every load and sync is
measured in a fresh worker process (`benchmarks/worker.py`); the simulator is served from this
process. Every measured load is checked against the simulator's ground truth (row count, md5 of
the sorted run_ids, sum of total_tokens, LLM-usage rows): a wrong answer says MISMATCH.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dlt
import duckdb

from benchmarks.benchworld import (
    BenchWorld,
    Truth,
    min_requests,
    served_pages,
    truth_of,
)
from benchmarks.concurrency import (
    FULL_CONCURRENCY,
    QUICK_CONCURRENCY,
    ConcurrencySizes,
    bench_busy_flow,
    bench_rate_limit,
)
from benchmarks.startup import bench_startup
from benchmarks.worker import RESULT_PREFIX
from pipelines.simulator import SimulatorServer, World

ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 1800.0
GENERATED_SHARE = 0.7
"""`World` gives each flow within +-30% of `runs_per_flow`: generating `n / 0.7` per flow and
trimming to `n` gives every flow exactly `n` runs."""

SECTIONS = ("load", "e2e", "memory", "noop", "postgres", "pricing", "busy", "ratelimit", "startup")
ANCHOR = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
"""Every world's clock: with the seed, it makes the data identical from run to run (`World`'s
default anchor is the current time, which changes which runs are, e.g., still open). Syncs pin
their end at `world.now`, so the real clock plays no part."""


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is (`FULL`, `QUICK`; the smoke test uses a tiny one)."""

    load_runs: int = 200_000
    """Section 1: runs loaded from pages in memory (split over `load_flows` flows)."""
    naive_runs: int = 50_000
    """Section 1: the naive dlt variant loads only this many (whole flows): its DuckDB
    insert_values load holds ~90 KB of RSS per run (200k runs would need ~18 GB)."""
    load_flows: int = 8
    load_page_size: int = 100
    e2e_flows: int = 8
    e2e_pages: int = 25
    """Section 2: pages per flow, the last one half full (2,450 runs at page_size 100)."""
    e2e_page_size: int = 100
    latency: float = 0.05
    """Section 2: seconds added to every page request by the simulator (`slow` fault)."""
    mem_runs: tuple[int, ...] = (100_000, 1_000_000)
    mem_flows: int = 2
    mem_page_size: int = 1000
    mem_base_per_flow: int = 5_000
    """Section 3: runs generated per flow; the sizes are reached by cloning them."""
    noop_orgs: int = 5
    noop_flows_per_org: int = 10
    noop_runs_per_flow: int = 40
    pg_runs: int = 100_000
    """Section 5: runs loaded into PostgreSQL from pages in memory (split over `pg_flows`)."""
    pg_flows: int = 8
    pg_page_size: int = 100
    price_calls: int = 1_000_000
    """Section 6: calls priced in memory, and about as many usage rows priced from DuckDB."""
    price_sample: int = 20_000
    """Section 6: calls priced with genai-prices' own `calc_price` (scaled to `price_calls`)."""
    price_unknown_share: float = 0.05
    """Section 6: share of the in-memory calls whose model nobody prices."""
    price_flows: int = 8
    price_base_per_flow: int = 5_000
    """Section 6: runs generated per flow; the file's size is reached by cloning them."""
    concurrency: ConcurrencySizes = FULL_CONCURRENCY
    """Sections 7 and 8 (`concurrency.py`): a busy flow, a rate-limited API."""


FULL = Sizes()
QUICK = Sizes(
    load_runs=20_000,
    naive_runs=5_000,
    e2e_pages=5,
    mem_runs=(20_000, 100_000),
    pg_runs=10_000,
    price_calls=50_000,
    price_sample=5_000,
    concurrency=QUICK_CONCURRENCY,
)


@dataclass
class Row:
    """One line of the table."""

    section: str
    variant: str
    runs: int | None = None
    seconds: float | None = None
    compared: str = ""
    target: str = ""
    requests: int | None = None
    min_requests: int | None = None
    rss_mb: float | None = None
    check: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        if self.runs is None or not self.seconds:
            return None
        return self.runs / self.seconds


# --------------------------------------------------------------------------- measurement


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_worker(
    spec: dict[str, Any], workdir: Path, label: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its stderr goes to `workdir/label.log`.

    `env` is added to the worker's environment (e.g. a destination's credentials, which must
    stay out of the spec and so out of the --json output).

    Returns the worker's result, plus `process_seconds` (the whole process, imports included);
    on a crash `{"ok": False, "error": ...}`.
    """
    env = dict(os.environ) | (env or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"  # no network call of dlt's own in a timing
    log = workdir / f"{label}.log"
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as errors:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.worker"],
                input=json.dumps(spec),
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                cwd=ROOT,
                env=env,
                timeout=WORKER_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"worker timed out after {WORKER_TIMEOUT:g} s"}
    elapsed = time.perf_counter() - started
    line = next((x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)), None)
    if proc.returncode != 0 or line is None:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return {"ok": False, "error": f"worker exited {proc.returncode}: {' | '.join(tail)}"}
    result = json.loads(line[len(RESULT_PREFIX) :])
    result["process_seconds"] = round(elapsed, 3)
    return result


def loaded_summary(duckdb_path: Path, *, nested_usage: bool = True) -> dict[str, Any]:
    """Row count, md5 of the sorted lowercase run_ids, sum of total_tokens and LLM-usage rows
    of `stackai.flow_runs` (usage: the nested table, or the raw table's `llm_usage` lists)."""
    ids = "lower(run_id::varchar)"
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        runs, digest, tokens = con.execute(
            f"select count(*), md5(coalesce(string_agg({ids}, ',' order by {ids}), '')),"
            " coalesce(sum(total_tokens), 0) from stackai.flow_runs"
        ).fetchone()
        if nested_usage:
            tables = {
                name
                for (name,) in con.execute(
                    "select table_name from information_schema.tables"
                    " where table_schema = 'stackai'"
                ).fetchall()
            }
            usage = (
                con.execute("select count(*) from stackai.flow_runs__llm_usage").fetchone()[0]
                if "flow_runs__llm_usage" in tables
                else 0
            )
        else:
            usage = con.execute(
                "select coalesce(sum(len(llm_usage)), 0) from stackai.flow_runs"
            ).fetchone()[0]
    return {"runs": runs, "ids_md5": digest, "total_tokens": int(tokens), "usage_rows": usage}


def verdict(result: dict[str, Any], duckdb_path: Path, truth: Truth, **summary: Any) -> str:
    """Return "ok" when the worker succeeded and the table equals the ground truth, else
    "FAILED: <error>" or "MISMATCH: <what differs>"."""
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    try:
        loaded = loaded_summary(duckdb_path, **summary)
    except duckdb.Error as exc:
        return f"MISMATCH: cannot read the table ({str(exc).splitlines()[0]})"
    return compare(loaded, truth)


def _ids_only(result: dict[str, Any], duckdb_path: Path, truth: Truth) -> str:
    """`verdict` on the run ids and count alone."""
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    loaded = loaded_summary(duckdb_path)
    want = truth.as_dict()
    wrong = [
        f"{key} {loaded[key]} != {want[key]}"
        for key in ("runs", "ids_md5")
        if loaded.get(key) != want[key]
    ]
    return "ok" if not wrong else "MISMATCH: " + "; ".join(wrong)


def compare(loaded: dict[str, Any], truth: Truth) -> str:
    """ "ok" when `loaded` (a `loaded_summary`) equals the ground truth, else "MISMATCH: ..."."""
    want = truth.as_dict()
    wrong = [f"{key} {loaded[key]} != {want[key]}" for key in want if loaded[key] != want[key]]
    if wrong:
        return "MISMATCH: " + "; ".join(w if "md5" not in w else "run_ids differ" for w in wrong)
    return "ok"


def postgres_summary(url: str, schema: str, *, nested_usage: bool = True) -> dict[str, Any]:
    """`loaded_summary` of `schema.flow_runs` in a PostgreSQL database, read with psycopg2
    (usage: the nested table's rows, or the plain table's `llm_usage` jsonb arrays)."""
    import psycopg2

    ids = 'lower(run_id::text) collate "C"'  # byte order, as Python's sort in `truth_of`
    con = psycopg2.connect(url)
    try:
        with con.cursor() as cursor:
            cursor.execute(
                f"select count(*), md5(coalesce(string_agg({ids}, ',' order by {ids}), '')),"
                f" coalesce(sum(total_tokens), 0) from {schema}.flow_runs"
            )
            runs, digest, tokens = cursor.fetchone()
            if nested_usage:
                cursor.execute("select to_regclass(%s)", (f"{schema}.flow_runs__llm_usage",))
                usage = 0
                if cursor.fetchone()[0] is not None:
                    cursor.execute(f"select count(*) from {schema}.flow_runs__llm_usage")
                    usage = cursor.fetchone()[0]
            else:
                cursor.execute(
                    "select coalesce(sum(jsonb_array_length(llm_usage)), 0)"
                    f" from {schema}.flow_runs where jsonb_typeof(llm_usage) = 'array'"
                )
                usage = cursor.fetchone()[0]
    finally:
        con.close()
    return {"runs": runs, "ids_md5": digest, "total_tokens": int(tokens), "usage_rows": usage}


def postgres_verdict(
    result: dict[str, Any], url: str, schema: str, truth: Truth, **summary: Any
) -> str:
    """`verdict` for a load into PostgreSQL."""
    import psycopg2

    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    try:
        loaded = postgres_summary(url, schema, **summary)
    except psycopg2.Error as exc:
        return f"MISMATCH: cannot read the table ({str(exc).splitlines()[0]})"
    return compare(loaded, truth)


def sync_spec(sim: SimulatorServer, flows: Iterable[str], duckdb_path: Path, page_size: int):
    return {
        "task": "sync",
        "base_url": sim.url,
        "api_key": sim.world.api_key,
        "flows": list(flows),
        "duckdb": str(duckdb_path),
        "page_size": page_size,
        "now": sim.world.now.isoformat(),
    }


def flow_names(world: World) -> list[str]:
    return [f"{flow.org_id}/{flow.flow_id}" for flow in world.flows()]


def page_requests(world: World, since: int) -> int:
    return sum(1 for r in world.requests[since:] if r["path"].startswith("/analytics/org/"))


def equal_flows_world(seed: int, flows: int, runs_per_flow: int, **kwargs: Any) -> BenchWorld:
    """A world of `flows` flows of exactly `runs_per_flow` generated runs each."""
    world = BenchWorld(
        seed=seed,
        anchor=ANCHOR,
        orgs=1,
        flows_per_org=flows,
        runs_per_flow=math.ceil(runs_per_flow / GENERATED_SHARE) + 1,
        **kwargs,
    )
    world.trim(runs_per_flow)
    return world


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def met(value: float | None, ok: Callable[[float], bool]) -> str:
    if value is None:
        return "n/a"
    return "met" if ok(value) else "MISSED"


# ------------------------------------------------------------------------------ sections


def bench_load(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """1. Pages already fetched (JSON bytes in memory) -> committed rows in DuckDB."""
    section = "1 load path"
    per_flow = sizes.load_runs // sizes.load_flows
    progress(f"{section}: generating {per_flow * sizes.load_flows:,} runs")
    world = equal_flows_world(seed, sizes.load_flows, per_flow)
    names = flow_names(world)
    pages = {name: served_pages(world, *name.split("/"), sizes.load_page_size) for name in names}
    naive_flows = names[: max(1, min(len(names), sizes.naive_runs // max(1, per_flow)))]
    pages_file = workdir / "load_pages.pkl"
    naive_file = workdir / "load_pages_naive.pkl"
    pages_file.write_bytes(pickle.dumps(pages))
    naive_file.write_bytes(pickle.dumps({name: pages[name] for name in naive_flows}))
    truth = truth_of(world)
    naive_truth = truth_of(world, [tuple(name.split("/")) for name in naive_flows])
    now = world.now.isoformat()
    del world, pages

    rows = {}
    for key, label, task, file, want, nested in (
        ("raw", "raw DuckDB: read_json -> create table as", "load_raw", pages_file, truth, False),
        ("ours", "ours: batch typing, Arrow, merge", "load_ours", pages_file, truth, True),
        ("naive", "naive dlt resource (insert_values, inferred)", "load_naive", naive_file,
         naive_truth, True),
    ):  # fmt: skip
        progress(f"{section}: {label} ({want.runs:,} runs)")
        db = workdir / f"load_{key}.duckdb"
        spec = {
            "task": task,
            "pages": str(file),
            "now": now,
            "duckdb": str(db),
            "pipelines_dir": str(workdir / f"load_{key}.dlt"),
        }
        result = run_worker(spec, workdir, f"load_{key}")
        rows[key] = Row(
            section,
            label,
            runs=want.runs,
            seconds=result.get("seconds"),
            rss_mb=result.get("rss_peak_mb"),
            check=verdict(result, db, want, nested_usage=nested),
            details=result,
        )
    raw, ours, naive = rows["raw"], rows["ours"], rows["naive"]
    vs_raw, vs_naive = ratio(ours.rate, raw.rate), ratio(ours.rate, naive.rate)
    raw.compared = "1.00x raw"
    if vs_raw is not None and vs_naive is not None:
        ours.compared = f"{vs_raw:.2f}x raw, {vs_naive:.1f}x naive"
    ours.target = (
        f">=0.6x raw {met(vs_raw, lambda v: v >= 0.6)}, "
        f">=10x naive {met(vs_naive, lambda v: v >= 10)}"
    )
    naive.compared = f"{ratio(naive.rate, raw.rate) or 0:.3f}x raw"
    if naive.runs != ours.runs:
        naive.compared += f" (at {naive.runs:,} runs)"
    return [raw, ours, naive]


def bench_e2e(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """2. run_sync against the simulator with per-request latency, vs dlt's rest_api source."""
    section = "2 end to end"
    latency = f"{sizes.latency * 1000:g} ms" if sizes.latency else "no added latency"
    # the last of the pages half full, as a real history ends: a client that stops at a short
    # page needs `e2e_pages` requests, one that waits for an empty page one more
    per_flow = sizes.e2e_pages * sizes.e2e_page_size - sizes.e2e_page_size // 2
    progress(f"{section}: {sizes.e2e_flows} flows x {per_flow:,} runs, {latency}")
    chaos = {"fault_rate": 1.0, "fault_kinds": (f"slow:{sizes.latency:g}",)}
    world = equal_flows_world(
        seed + 1, sizes.e2e_flows, per_flow, **(chaos if sizes.latency else {})
    )
    names = flow_names(world)
    truth = truth_of(world)
    largest = max(names, key=lambda name: truth.runs_per_flow[name])
    page_size = sizes.e2e_page_size
    rows = []
    with SimulatorServer(world) as sim:
        for key, label, flows, task in (
            ("ours", f"ours: run_sync, {len(names)} flows", names, "sync"),
            ("single", "ours: run_sync, slowest single flow alone", [largest], "sync"),
            ("rest_api", f"dlt rest_api_source, {len(names)} flows", names, "sync_rest_api"),
        ):
            progress(f"{section}: {label}")
            db = workdir / f"e2e_{key}.duckdb"
            spec = sync_spec(sim, flows, db, page_size) | {
                "task": task,
                "pipelines_dir": str(workdir / f"e2e_{key}.dlt"),
            }
            before, served_cpu = len(world.requests), time.process_time()
            result = run_worker(spec, workdir, f"e2e_{key}")
            # this process only serves the simulator meanwhile: its CPU is the server's
            result["simulator_cpu_seconds"] = round(time.process_time() - served_cpu, 3)
            want = truth_of(world, [tuple(name.split("/")) for name in flows])
            rows.append(
                Row(
                    f"{section} ({latency})",
                    label,
                    runs=want.runs,
                    seconds=result.get("seconds"),
                    requests=page_requests(world, before),
                    min_requests=min_requests(want.runs_per_flow.values(), page_size),
                    rss_mb=result.get("rss_peak_mb"),
                    check=verdict(result, db, want),
                    details=result,
                )
            )
    ours, single, rest = rows
    speedup = ratio(ours.rate, rest.rate)
    ours.compared = f"{speedup or 0:.2f}x rest_api"
    ours.target = f">=5x rest_api {met(speedup, lambda v: v >= 5)}"
    concurrency = ratio(ours.seconds, single.seconds)
    single.compared = f"{len(names)} flows = {concurrency or 0:.2f}x this"
    single.target = f"<=1.5x {met(concurrency, lambda v: v <= 1.5)}"
    rest.compared = "1.00x rest_api"
    return rows


def bench_memory(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """3. Peak RSS of run_sync for growing histories (few flows, big pages)."""
    section = f"3 memory (page_size {sizes.mem_page_size})"
    smallest = min(sizes.mem_runs)
    base = min(sizes.mem_base_per_flow, smallest // sizes.mem_flows)
    progress(f"{section}: generating {base * sizes.mem_flows:,} runs to clone")
    started = time.perf_counter()
    world = equal_flows_world(seed + 2, sizes.mem_flows, base)
    names = flow_names(world)
    rows = []
    with SimulatorServer(world) as sim:
        for size in sorted(sizes.mem_runs):
            copies = max(1, round(size / (base * sizes.mem_flows)))
            world.grow(copies)
            truth = truth_of(world)
            built = time.perf_counter() - started
            progress(f"{section}: run_sync of {truth.runs:,} runs (world ready in {built:.0f} s)")
            db = workdir / f"memory_{size}.duckdb"
            before = len(world.requests)
            result = run_worker(
                sync_spec(sim, names, db, sizes.mem_page_size), workdir, f"mem_{size}"
            )
            result["world"] = f"{base * sizes.mem_flows:,} generated runs x {copies}"
            rows.append(
                Row(
                    section,
                    f"ours: run_sync, {len(names)} flows, {truth.runs:,} runs",
                    runs=truth.runs,
                    seconds=result.get("seconds"),
                    requests=page_requests(world, before),
                    min_requests=min_requests(truth.runs_per_flow.values(), sizes.mem_page_size),
                    rss_mb=result.get("rss_peak_mb"),
                    check=verdict(result, db, truth),
                    details=result,
                )
            )
            started = time.perf_counter()
    small, big = rows[0], rows[-1]
    growth = ratio(big.rss_mb, small.rss_mb)
    small.compared = f"imports alone: {small.details.get('rss_imports_mb', 0):.0f} MB"
    big.compared = f"RSS {growth or 0:.2f}x the {small.runs:,} run sync"
    big.target = (
        f"<=1.3x {met(growth, lambda v: v <= 1.3)}, <1 GB {met(big.rss_mb, lambda v: v < 1024)}"
    )
    return rows


def bench_noop(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """4. A second sync with nothing new: wall time and requests."""
    section = "4 incremental no-op"
    flows = sizes.noop_orgs * sizes.noop_flows_per_org
    progress(f"{section}: {flows} flows")
    world = World(
        seed=seed + 3,
        anchor=ANCHOR,
        orgs=sizes.noop_orgs,
        flows_per_org=sizes.noop_flows_per_org,
        runs_per_flow=sizes.noop_runs_per_flow,
    )
    names = flow_names(world)
    truth = truth_of(world)
    db = workdir / "noop.duckdb"
    rows = []
    with SimulatorServer(world) as sim:
        for key, label in (("first", "first sync"), ("second", "second sync, nothing new")):
            progress(f"{section}: {label}")
            before = len(world.requests)
            result = run_worker(sync_spec(sim, names, db, 100), workdir, f"noop_{key}")
            first = key == "first"
            rows.append(
                Row(
                    section,
                    f"ours: run_sync, {flows} flows, {label}",
                    runs=truth.runs if first else None,
                    seconds=result.get("seconds"),
                    requests=page_requests(world, before),
                    min_requests=min_requests(truth.runs_per_flow.values(), 100)
                    if first
                    else flows,
                    rss_mb=result.get("rss_peak_mb"),
                    check=verdict(result, db, truth),
                    details=result,
                )
            )
        # a day later, nothing new: the daily feedback pass is due (feedback_lookback P3D)
        world.advance(24 * 3600, new_runs=False)
        progress(f"{section}: a day later, feedback pass")
        before = len(world.requests)
        result = run_worker(sync_spec(sim, names, db, 100), workdir, "noop_feedback")
        rows.append(
            Row(
                section,
                f"ours: run_sync, {flows} flows, a day later (feedback pass)",
                seconds=result.get("seconds"),
                requests=page_requests(world, before),
                min_requests=flows,
                rss_mb=result.get("rss_peak_mb"),
                # the runs are those of the first check: a day's clock also completes open
                # runs older than max_open_run_age, which are left as last seen by design
                check=_ids_only(result, db, truth),
                details=result,
            )
        )
    second = rows[1]
    rechecks = second.details.get("rechecks", 0)
    second.compared = (
        f"{second.details.get('runs', 0)} runs re-read, {rechecks} open-run re-checks;"
        f" process {second.details.get('process_seconds', 0):.1f} s"
    )
    second.target = f"1 request/flow {met(second.requests, lambda v: v <= flows)}"
    daily = rows[2]
    daily.compared = f"{daily.details.get('runs', 0)} runs re-read: 3 days of each flow, once a day"
    return rows


def bench_postgres(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """5. Pages already fetched -> committed rows in a real PostgreSQL server: the sync's load
    path (CSV COPY), the same with dlt's ADBC parquet job, and a plain COPY of the runs."""
    section = "5 postgres"
    from tests.support import postgres

    try:
        server = postgres.start()
    except postgres.PostgresUnavailable as exc:
        progress(f"{section}: SKIPPED ({exc})")
        return [Row(section, "PostgreSQL server", check=f"SKIPPED: {exc}")]
    try:
        return _bench_postgres(sizes, workdir, seed, server, section)
    finally:
        server.stop()


def _bench_postgres(sizes: Sizes, workdir: Path, seed: int, server: Any, section: str) -> list[Row]:
    import psycopg2

    per_flow = sizes.pg_runs // sizes.pg_flows
    progress(f"{section}: generating {per_flow * sizes.pg_flows:,} runs")
    world = equal_flows_world(seed + 4, sizes.pg_flows, per_flow)
    names = flow_names(world)
    pages = {name: served_pages(world, *name.split("/"), sizes.pg_page_size) for name in names}
    pages_file = workdir / "postgres_pages.pkl"
    pages_file.write_bytes(pickle.dumps(pages))
    truth = truth_of(world)
    now = world.now.isoformat()
    del world, pages
    adbc = importlib.util.find_spec("adbc_driver_postgresql") is not None

    rows = {}
    for key, label, task, file_format in (
        ("copy", "plain COPY: CSV of the runs, copy_expert", "copy_postgres", None),
        ("csv", "ours: adapt_source, CSV COPY, merge", "load_postgres", "csv"),
        ("adbc", "ours with dlt's ADBC parquet job, merge", "load_postgres", "parquet"),
    ):
        if key == "adbc" and not adbc:
            rows[key] = Row(
                section, label, check="SKIPPED: adbc-driver-postgresql is not installed"
            )
            continue
        progress(f"{section}: {label} ({truth.runs:,} runs)")
        url = server.create_database(f"bench_{key}")
        con = psycopg2.connect(url)  # the last variant's writes on disk, not in this one's time
        try:
            con.autocommit = True
            with con.cursor() as cursor:
                cursor.execute("checkpoint")
        finally:
            con.close()
        schema = "plain" if key == "copy" else "stackai"
        spec = {"task": task, "pages": str(pages_file), "now": now, "schema": schema}
        if file_format:
            spec["file_format"] = file_format
        env = {
            "DESTINATION__POSTGRES__CREDENTIALS": url,
            "DLT_DATA_DIR": str(workdir / "postgres.dlt-data"),
        }
        result = run_worker(spec, workdir, f"postgres_{key}", env)
        check = postgres_verdict(result, url, schema, truth, nested_usage=key != "copy")
        # the data jobs' format (the merge adds `sql` jobs); on PostgreSQL dlt loads a parquet
        # file only by its ADBC job, so "parquet" here means the ADBC path ran
        used = [f for f in result.get("file_formats", {}).get("flow_runs", []) if f != "sql"]
        if check == "ok" and file_format and used != [file_format]:
            check = f"FAILED: flow_runs loaded from {used or 'nothing'}, not {file_format}"
        rows[key] = Row(
            section,
            label,
            runs=truth.runs,
            seconds=result.get("seconds"),
            rss_mb=result.get("rss_peak_mb"),
            check=check,
            details=result,
        )
    copy, csv_copy, adbc_row = rows["copy"], rows["csv"], rows["adbc"]
    copy.compared = "1.00x plain COPY"
    if copy.details.get("csv_seconds") is not None:
        copy.details["note"] = (
            f"Python CSV {copy.details['csv_seconds']:.1f} s"
            f" ({copy.details.get('csv_mb', 0):,.0f} MB), COPY {copy.details['copy_seconds']:.1f} s"
        )
    for row in (csv_copy, adbc_row):
        share = ratio(row.rate, copy.rate)
        if share is not None:
            row.compared = f"{share:.2f}x plain COPY"
    return [copy, csv_copy, adbc_row]


def priced_in_parent(duckdb_path: Path) -> dict[str, Any]:
    """Usage rows, cost rows, the sum of `cost_usd` in the file, and the same sum computed here
    with a `PriceBook` over the calls `price_calls` prices (usage joined to its run's date)."""
    from pipelines.pricing import PriceBook

    book = PriceBook()
    costs = []
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        usage = con.execute("select count(*) from stackai.flow_runs__llm_usage").fetchone()[0]
        rows, stored = con.execute(
            "select count(*), sum(cost_usd) from stackai.llm_call_costs"
        ).fetchone()
        cursor = con.execute(
            "select u.provider, u.model_id, r.date, u.input_tokens, u.output_tokens"
            " from stackai.flow_runs__llm_usage u"
            " join stackai.flow_runs r on r._dlt_id = u._dlt_root_id"
        )
        while batch := cursor.fetchmany(100_000):
            for call in batch:
                price = book.price(*call)
                if price is not None:
                    costs.append(float(price.cost_usd))
    return {"usage": usage, "rows": rows, "stored": stored or 0.0, "expected": math.fsum(costs)}


def bench_pricing(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """6. Pricing LLM calls: `PriceBook.price` in memory (vs genai-prices' `calc_price`), and
    `price_calls` on a DuckDB file already holding about as many usage rows."""
    section = "6 pricing (runs = LLM calls)"
    progress(f"{section}: PriceBook.price over {sizes.price_calls:,} calls in memory")
    spec = {
        "task": "price_memory",
        "calls": sizes.price_calls,
        "sample": min(sizes.price_sample, sizes.price_calls),
        "seed": seed + 5,
        "anchor": ANCHOR.isoformat(),
        "unknown_share": sizes.price_unknown_share,
    }
    result = run_worker(spec, workdir, "pricing_memory")
    check = f"FAILED: {result.get('error')}" if not result.get("ok") else "ok"
    if check == "ok" and result["sample_differ"]:
        check = (
            f"MISMATCH: {result['sample_differ']} of {result['sample']} calls' input or output"
            " cost != calc_price's"
        )
    calls = result.get("calls", sizes.price_calls)
    book = Row(
        section,
        f"PriceBook.price, {calls:,} calls in memory",
        runs=calls,
        seconds=result.get("seconds"),
        rss_mb=result.get("rss_peak_mb"),
        check=check,
        details=result,
    )
    sample = result.get("sample") or 0
    library = Row(
        section,
        f"genai_prices.calc_price per call, {sample:,}-call sample x{calls / max(1, sample):g}",
        runs=calls,
        seconds=result["library_seconds"] * calls / sample if sample else None,
        check=check,
        details={"note": f"wall s scaled from {result.get('library_seconds', 0):.2f} s"
                 f" for {sample:,} calls"} if sample else {},
    )  # fmt: skip
    if book.seconds and library.seconds:
        book.compared = (
            f"{book.seconds / calls * 1e6:.1f} us/call;"
            f" {library.seconds / book.seconds:.0f}x calc_price"
        )
        library.compared = f"{library.seconds / calls * 1e6:.1f} us/call (scaled)"
        book.details["note"] = (
            f"{result['unpriced']:,} of {calls:,} calls unpriced (Local, Replicate,"
            f" {sizes.price_unknown_share:.0%} unknown model ids); the sample's"
            f" {result['sample_priced']:,} priced calls: input and output costs equal"
            " calc_price's"
        )
        if result.get("sample_fee_differ"):
            book.details["note"] += (
                f"; {result['sample_fee_differ']:,} of them ("
                + ", ".join(f"{k} {n:,}" for k, n in sorted(result["sample_fee_models"].items()))
                + ") cost less than calc_price's total_price, which adds the model's"
                " per-request fee (requests_kcount): PriceBook prices tokens only"
            )

    # (b) a DuckDB file holding about `price_calls` usage rows, loaded untimed
    target_runs = max(sizes.price_flows, round(sizes.price_calls / 1.6))
    base = min(sizes.price_base_per_flow, max(1, target_runs // sizes.price_flows))
    progress(f"{section}: generating {base * sizes.price_flows:,} runs to clone")
    world = equal_flows_world(seed + 6, sizes.price_flows, base)
    generated = truth_of(world)
    per_run = generated.usage_rows / max(1, generated.runs)
    copies = max(1, round(sizes.price_calls / max(1e-9, per_run) / (base * sizes.price_flows)))
    world.grow(copies)
    truth = truth_of(world)
    names = flow_names(world)
    pages = {name: served_pages(world, *name.split("/"), 1000) for name in names}
    pages_file = workdir / "pricing_pages.pkl"
    pages_file.write_bytes(pickle.dumps(pages))
    now = world.now.isoformat()
    del world, pages
    db = workdir / "pricing.duckdb"
    progress(f"{section}: loading {truth.runs:,} runs, {truth.usage_rows:,} calls (untimed)")
    load = run_worker(
        {
            "task": "load_ours",
            "pages": str(pages_file),
            "now": now,
            "duckdb": str(db),
            "pipelines_dir": str(workdir / "pricing.dlt"),
        },
        workdir,
        "pricing_load",
    )
    pages_file.unlink(missing_ok=True)
    loaded = verdict(load, db, truth)
    label = f"price_calls: DuckDB file of {truth.runs:,} runs, {truth.usage_rows:,} calls"
    if loaded != "ok":
        return [book, library, Row(section, label, check=f"setup load {loaded}", details=load)]
    progress(f"{section}: price_calls over {truth.usage_rows:,} calls, then again")
    result = run_worker({"task": "price_file", "duckdb": str(db)}, workdir, "pricing_file")
    check = f"FAILED: {result.get('error')}" if not result.get("ok") else "ok"
    again_check = check
    if check == "ok":
        found = priced_in_parent(db)
        result["parent"] = found
        wrong = []
        if found["rows"] != found["usage"]:
            wrong.append(f"{found['rows']:,} cost rows != {found['usage']:,} usage rows")
        if result["priced"] != found["usage"]:
            wrong.append(f"{result['priced']:,} priced != {found['usage']:,} usage rows")
        scale = max(abs(found["expected"]), 1e-300)
        if abs(found["stored"] - found["expected"]) / scale > 1e-9:
            wrong.append(f"sum(cost_usd) {found['stored']!r} != {found['expected']!r}")
        check = "MISMATCH: " + "; ".join(wrong) if wrong else "ok"
        if result["again_priced"]:
            again_check = f"MISMATCH: {result['again_priced']:,} calls priced again, not 0"
    first = Row(
        section,
        label,
        runs=result.get("priced", truth.usage_rows),
        seconds=result.get("seconds"),
        rss_mb=result.get("rss_peak_mb"),
        check=check,
        details=result,
    )
    steps = result.get("steps") or {}
    dlt_seconds = sum(steps.get(k, 0.0) for k in ("extract", "normalize", "load"))
    if first.seconds:
        first.compared = f"{first.seconds / max(1, first.runs or 0) * 1e6:.1f} us/call"
        first.details["note"] = (
            f"{result['unpriced']:,} calls unpriced; read + price + delete outside dlt's run"
            f" {first.seconds - dlt_seconds:.1f} s; setup load (untimed) {load['seconds']:.1f} s"
            f" ({copies}x {base * sizes.price_flows:,} generated runs)"
        )
    again = Row(
        section,
        "price_calls again right after: nothing to price",
        runs=None,
        seconds=result.get("again_seconds"),
        compared=f"{result.get('again_priced', 0):,} calls priced",
        check=again_check,
    )
    return [book, library, first, again]


BENCHES: dict[str, Callable[[Sizes, Path, int], list[Row]]] = {
    "load": bench_load,
    "e2e": bench_e2e,
    "memory": bench_memory,
    "noop": bench_noop,
    "postgres": bench_postgres,
    "pricing": bench_pricing,
    "busy": bench_busy_flow,
    "ratelimit": bench_rate_limit,
    "startup": bench_startup,
}


def run_benchmark(
    sizes: Sizes, workdir: Path, seed: int = 0, sections: Sequence[str] = SECTIONS
) -> list[Row]:
    """Run the chosen sections; every figure of the returned rows comes from this call."""
    rows: list[Row] = []
    for name in sections:
        rows.extend(BENCHES[name](sizes, workdir, seed))
    return rows


# ------------------------------------------------------------------------------ printing


def _num(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _short(text: str, limit: int = 60) -> str:
    """A failure message cut to fit the table (the full text is in the --json output)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render(rows: list[Row], title: str, notes: Sequence[str] = ()) -> str:
    """The table as plain text (fixed-width, pastes anywhere)."""
    header = (
        "variant",
        "runs",
        "wall s",
        "runs/s",
        "compared",
        "target",
        "requests",
        "min req",
        "peak RSS MB",
        "check",
    )
    right = {1, 2, 3, 6, 7, 8}
    body: list[tuple[str, ...] | str] = []
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            body.append(section)
        body.append(
            (
                "  " + row.variant,
                _num(row.runs),
                _num(row.seconds, 2),
                _num(row.rate),
                row.compared,
                row.target,
                _num(row.requests),
                _num(row.min_requests),
                _num(row.rss_mb),
                _short(row.check),
            )
        )
    cells = [header, *[line for line in body if isinstance(line, tuple)]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        return " | ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    out = [title, rule.replace("+", "-"), fmt(header), rule]
    for line in body:
        out.append(line if isinstance(line, str) else fmt(line))
    out.append(rule.replace("+", "-"))
    out.extend(notes)
    return "\n".join(out)


def title_line(sizes: Sizes, quick: bool) -> str:
    return (
        f"stackai-runs benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z},"
        f" {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()},"
        f" dlt {dlt.__version__}, duckdb {duckdb.__version__},"
        f" {'--quick' if quick else 'full'} sizes"
    )


def _formats(formats: dict[str, list[str]] | None) -> str:
    """`; files: flow_runs csv, ...`: the format dlt loaded each data table from."""
    if not formats:
        return ""
    shown = {
        table: "/".join(f for f in found if f != "sql")
        for table, found in formats.items()
        if table.startswith("flow_runs")
    }
    return "; files: " + ", ".join(f"{table} {found}" for table, found in shown.items())


def notes_for(rows: list[Row], sizes: Sizes, total: float) -> list[str]:
    notes = [
        "runs/s = runs / wall s; wall s = the measured call in a fresh worker process"
        " (imports excluded); check = row count, md5 of run_ids, sum(total_tokens) and"
        " LLM-usage rows equal the simulator's ground truth.",
        "min req = ceil((runs + 1) / page_size) per flow, the final short or empty page included"
        " (for a no-op sync: one per flow).",
    ]
    for row in rows:
        steps = row.details.get("steps") or {}
        if {"extract", "normalize", "load"} <= set(steps):
            cpu = row.details.get("cpu_seconds")
            served = row.details.get("simulator_cpu_seconds")
            notes.append(
                f"  {row.variant}: extract {steps['extract']:.1f} s, normalize"
                f" {steps['normalize']:.1f} s, load {steps['load']:.1f} s"
                + (f"; CPU {cpu:.1f} s" if cpu is not None else "")
                + (f", simulator CPU {served:.1f} s" if served is not None else "")
                + (f"; world {row.details['world']}" if row.details.get("world") else "")
                + _formats(row.details.get("file_formats"))
            )
    for row in rows:
        if row.details.get("note"):
            notes.append(f"  {row.variant}: {row.details['note']}")
    for row in rows:
        if row.check != "ok":
            notes.append(f"  {row.variant}: {' '.join(row.check.split())}")
    notes.append(f"total benchmark time {total:.0f} s")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (~1 minute)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", help=f"comma-separated sections to run ({','.join(SECTIONS)}); default all"
    )
    parser.add_argument("--workdir", type=Path, help="keep DuckDB files and logs here")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stackai-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        rows = run_benchmark(sizes, workdir, args.seed, sections)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started
    print(render(rows, title_line(sizes, args.quick), notes_for(rows, sizes, total)))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"sizes": asdict(sizes), "rows": [asdict(r) | {"rate": r.rate} for r in rows]},
                indent=2,
                default=str,
            )
        )
    return 0 if all(row.check == "ok" or row.check.startswith("SKIPPED") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["FULL", "QUICK", "SECTIONS", "Row", "Sizes", "main", "run_benchmark"]
