"""Sections 7 and 8 of `run.py`: where the sync waits on the API, not on the machine (issue 16).

7. **Busy flow** (`--only busy`): one flow of `busy_runs` runs behind an API `busy_latency`
   seconds late per request (the simulator's `slow` fault on every request), page_size
   `busy_page_size`: `run_sync` (default settings) vs a serial client (a plain `requests` loop,
   page 0, 1, 2 ... until a short page, orjson-decoding each page, nothing written: the floor
   of any one-request-at-a-time client); then `busy_flows` such flows with `run_sync`.
8. **Rate limit** (`--only ratelimit`): the same latency, and an API that serves `limit`
   requests at once and answers 429 above (`World.concurrency_limit`), with and without a
   `Retry-After` header; `run_sync` of `limit_flows` flows with adaptive concurrency (the
   default) and with it off (a fixed limit of `max_concurrent_requests`).

Each sync runs in a fresh worker process as in the other sections (`run.run_worker`) and is
checked against the simulator's ground truth (`run.verdict`); the serial client's runs are
checked the same way (`run.compare`, from the worker's summary of what it read).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.benchworld import min_requests, truth_of

if TYPE_CHECKING:
    from benchmarks.run import Row, Sizes
    from pipelines.simulator import World

MAX_CONCURRENT_REQUESTS = 8
"""The sync's default `max_concurrent_requests` (`HttpSettings`), for the floors in the notes."""


@dataclass(frozen=True)
class ConcurrencySizes:
    """How big sections 7 and 8 are (`Sizes.concurrency`); latencies in seconds."""

    busy_runs: int = 20_000
    """Section 7: runs of each flow (reached by cloning `busy_base_per_flow` generated runs)."""
    busy_flows: int = 8
    """Section 7: flows of the many-flows row (the single-flow rows read the first)."""
    busy_page_size: int = 500
    busy_latency: float = 0.3
    """Section 7: seconds added to every request (`slow` fault)."""
    busy_base_per_flow: int = 5_000
    """Section 7: at most this many runs generated per flow; the rest are clones."""
    limit_runs: int = 5_000
    """Section 8: runs of each flow."""
    limit_flows: int = 8
    limit_page_size: int = 500
    limit_latency: float = 0.3
    """Section 8: seconds added to every request the API serves (not to its 429s)."""
    limit: int = 4
    """Section 8: requests the API serves at once (`World.concurrency_limit`)."""
    limit_retry_after: float | None = 1.0
    """Section 8: the `Retry-After` seconds of the variants that send one (None: no such
    variants; the smoke test leaves them out to stay fast)."""
    limit_http: tuple[tuple[str, Any], ...] = ()
    """Section 8: `HttpSettings` fields the syncs change, as (name, value) pairs (none: the
    defaults a user gets); the smoke test shortens the backoffs to stay fast."""


FULL_CONCURRENCY = ConcurrencySizes()
QUICK_CONCURRENCY = ConcurrencySizes(
    busy_runs=4_000, busy_latency=0.1, limit_runs=2_000, limit_latency=0.1
)


def _world(seed: int, flows: int, runs: int, base_max: int, **kwargs: Any) -> World:
    """`flows` flows of about `runs` runs each (`base_max` generated, the rest cloned)."""
    from benchmarks.run import equal_flows_world

    copies = max(1, math.ceil(runs / base_max))
    world = equal_flows_world(seed, flows, runs // copies, **kwargs)
    world.grow(copies)
    return world


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


def bench_busy_flow(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """7. One busy flow behind a slow API: `run_sync` vs a serial client; then many flows."""
    from benchmarks.run import (
        Row,
        compare,
        flow_names,
        met,
        page_requests,
        progress,
        ratio,
        run_worker,
        sync_spec,
        verdict,
    )
    from pipelines.simulator import SimulatorServer

    size = sizes.concurrency
    page_size, latency = size.busy_page_size, size.busy_latency
    section = (
        f"7 busy flow ({size.busy_runs:,} runs a flow, {_ms(latency)} a request,"
        f" page_size {page_size})"
    )
    progress(f"{section}: generating {size.busy_flows} flows")
    chaos = {"fault_rate": 1.0, "fault_kinds": (f"slow:{latency:g}",)}
    world = _world(seed + 7, size.busy_flows, size.busy_runs, size.busy_base_per_flow, **chaos)
    names = flow_names(world)
    rows = []
    with SimulatorServer(world) as sim:
        for key, label, flows, task in (
            ("serial", "serial client: requests loop, 1 flow", names[:1], "serial_client"),
            ("one", "ours: run_sync, 1 flow", names[:1], "sync"),
            ("many", f"ours: run_sync, {len(names)} flows", names, "sync"),
        ):
            progress(f"{section}: {label}")
            db = workdir / f"busy_{key}.duckdb"
            spec = sync_spec(sim, flows, db, page_size) | {"task": task}
            truth = truth_of(world, [tuple(name.split("/")) for name in flows])
            before = len(world.requests)
            world.reset_concurrency_counters()
            served_cpu = time.process_time()
            result = run_worker(spec, workdir, f"busy_{key}")
            result["simulator_cpu_seconds"] = round(time.process_time() - served_cpu, 3)
            result["server_max_in_flight"] = world.max_in_flight
            if task == "serial_client":
                ok = result.get("ok")
                check = compare(result["summary"], truth) if ok else f"FAILED: {result['error']}"
            else:
                check = verdict(result, db, truth)
            rows.append(
                Row(
                    section,
                    label,
                    runs=truth.runs,
                    seconds=result.get("seconds"),
                    requests=page_requests(world, before),
                    min_requests=min_requests(truth.runs_per_flow.values(), page_size),
                    rss_mb=result.get("rss_peak_mb"),
                    check=check,
                    details=result,
                )
            )
    serial, one, many = rows
    serial.compared = "1.00x serial"
    vs_serial = ratio(one.seconds, serial.seconds)
    one.compared = f"{vs_serial or 0:.2f}x serial"
    one.target = f"<=0.5x serial {met(vs_serial, lambda v: v <= 0.5)}"
    vs_one = ratio(many.seconds, one.seconds)
    many.compared = (
        f"{vs_one or 0:.2f}x 1 flow, {ratio(many.seconds, serial.seconds) or 0:.2f}x serial"
    )
    many.target = f"<=1.5x 1 flow {met(vs_one, lambda v: v <= 1.5)}"
    for row in rows:
        found = row.details
        row.details["note"] = f"the API had at most {found['server_max_in_flight']} in flight"
        if found.get("ok") and "slices" in found:
            row.details["note"] += (
                f"; {found['slices']} time slices, {found['probes']} probes,"
                f" {found.get('retries', 0)} retries"
            )
    serial.details["note"] += f"; floor: {serial.min_requests} requests x {_ms(latency)}"
    if many.min_requests:
        # the paging minimum over max_concurrent_requests at once, each a latency long
        per_request = latency / MAX_CONCURRENT_REQUESTS
        floor, made = many.min_requests * per_request, (many.requests or 0) * per_request
        many.details["note"] += (
            f"; floor at max_concurrent_requests {MAX_CONCURRENT_REQUESTS}:"
            f" {many.min_requests} requests / {MAX_CONCURRENT_REQUESTS} x {_ms(latency)}"
            f" = {floor:.2f} s"
            + (f" = {floor / serial.seconds:.2f}x serial" if serial.seconds else "")
            + f" (at the {many.requests or 0} requests made: {made:.2f} s);"
            f" {len(names)} flows need {len(names)}x the requests of one, so <=1.5x 1 flow"
            f" needs 1 flow >= {floor / 1.5:.2f} s"
            + (f" = {floor / 1.5 / serial.seconds:.2f}x serial" if serial.seconds else "")
        )
    return rows


def bench_rate_limit(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """8. An API that serves `limit` requests at once and answers 429 above: `run_sync` with
    adaptive concurrency vs a fixed limit, with and without `Retry-After`."""
    from benchmarks.run import (
        Row,
        flow_names,
        met,
        page_requests,
        progress,
        ratio,
        run_worker,
        sync_spec,
        verdict,
    )
    from pipelines.simulator import SimulatorServer

    size = sizes.concurrency
    page_size, latency, limit = size.limit_page_size, size.limit_latency, size.limit
    section = (
        f"8 rate limit (API serves {limit} at once, 429 above; {size.limit_flows} flows x"
        f" {size.limit_runs:,} runs, {_ms(latency)} a request, page_size {page_size})"
    )
    progress(f"{section}: generating {size.limit_flows} flows")
    chaos = {"fault_rate": 1.0, "fault_kinds": (f"slow:{latency:g}",)}
    world = _world(seed + 8, size.limit_flows, size.limit_runs, size.busy_base_per_flow, **chaos)
    world.concurrency_limit = limit
    names = flow_names(world)
    truth = truth_of(world)
    variants = [
        ("adaptive", "ours: adaptive concurrency (default), no Retry-After", True, None),
        ("fixed", "ours: adaptive_concurrency false, no Retry-After", False, None),
    ]
    wait = size.limit_retry_after
    if wait is not None:
        variants += [
            ("adaptive_ra", f"ours: adaptive concurrency, Retry-After {wait:g} s", True, wait),
            ("fixed_ra", f"ours: adaptive_concurrency false, Retry-After {wait:g} s", False, wait),
        ]
    rows = []
    with SimulatorServer(world) as sim:
        for key, label, adaptive, retry_after in variants:
            progress(f"{section}: {label}")
            world.rate_limit_retry_after = retry_after
            db = workdir / f"ratelimit_{key}.duckdb"
            http = dict(size.limit_http) | {"adaptive_concurrency": adaptive}
            spec = sync_spec(sim, names, db, page_size) | {"http": http}
            before = len(world.requests)
            world.reset_concurrency_counters()
            served_cpu = time.process_time()
            result = run_worker(spec, workdir, f"ratelimit_{key}")
            # this process only serves the simulator meanwhile: its CPU is the server's
            result["simulator_cpu_seconds"] = round(time.process_time() - served_cpu, 3)
            result["server_429s"] = world.rate_limited
            result["server_max_in_flight"] = world.max_in_flight
            row = Row(
                section,
                label,
                runs=truth.runs,
                seconds=result.get("seconds"),
                requests=page_requests(world, before),
                min_requests=min_requests(truth.runs_per_flow.values(), page_size),
                rss_mb=result.get("rss_peak_mb"),
                check=verdict(result, db, truth),
                details=result,
            )
            if not adaptive and _gave_up_on_429(result):
                # the baseline as a user gets it may give up (a request refused max_attempts
                # times): an outcome to report, as long as what it committed is right
                row.runs, row.check = _committed(db, world, names)
                result["gave_up"] = True
            rows.append(row)
    for adaptive, fixed in zip(rows[::2], rows[1::2], strict=True):
        ours, theirs = adaptive.details["server_429s"], fixed.details["server_429s"]
        fixed.compared = f"1.00x fixed; {theirs:,} 429s"
        adaptive.compared = (
            f"{ratio(adaptive.seconds, fixed.seconds) or 0:.2f}x fixed; {ours:,} 429s"
        )
        if fixed.details.get("gave_up"):
            fixed.compared = f"sync FAILED (429s); {theirs:,} 429s"
            adaptive.compared = f"fixed FAILED at {fixed.seconds or 0:.1f} s; {ours:,} 429s"
        adaptive.target = f"fewer 429s {met(ours, lambda v, t=theirs: v < t)}"
    for row in rows:
        found = row.details
        note = (
            (
                f"the sync FAILED after {row.seconds or 0:.1f} s"
                f" ({str(found['error']).split(' from ')[0]});"
                f" it committed {row.runs:,} of {truth.runs:,} runs, checked as a subset of"
                " the truth without duplicates; "
            )
            if found.get("gave_up")
            else ""
        ) + (
            f"{found['server_429s']:,} 429s, at most {found['server_max_in_flight']} in flight"
            f" at the API; floor {row.min_requests} requests / {limit} x {_ms(latency)}"
            f" = {(row.min_requests or 0) / limit * latency:.2f} s"
        )
        figures = found.get("limit")
        if figures:
            note += (
                f"; client limit {figures['maximum']} -> lowest {figures['lowest']}"
                f" ({figures['backoffs']} cuts), final {figures['final']},"
                f" {figures['throttled']} throttled answers"
            )
        note += f", {found.get('retries', 0)} retries"
        found["note"] = note
    return rows


def _gave_up_on_429(result: dict[str, Any]) -> bool:
    """Whether a sync ran and failed because the API kept answering 429."""
    error = str(result.get("error"))
    return result.get("seconds") is not None and not result.get("ok") and "429" in error


def _committed(db: Path, world: World, names: list[str]) -> tuple[int, str]:
    """Runs in the DuckDB file of a sync that failed, and "ok" when they are a subset of the
    flows' runs in the world (each at most once), else "MISMATCH: ..."."""
    import duckdb

    with world._lock:  # benchmark code reads the simulator's internals (see benchworld.py)
        truth = {
            run.run_id.lower()
            for name in names
            for run in world._runs_of(*name.split("/"))
            if run.instant <= world.now
        }
    if not db.exists():
        return 0, "ok"
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            tables = {
                t
                for (t,) in con.execute(
                    "select table_name from information_schema.tables"
                    " where table_schema = 'stackai'"
                ).fetchall()
            }
            loaded = (
                [
                    i
                    for (i,) in con.sql(
                        "select lower(run_id::varchar) from stackai.flow_runs"
                    ).fetchall()
                ]
                if "flow_runs" in tables
                else []
            )
    except duckdb.Error as exc:
        return 0, f"MISMATCH: cannot read the table ({str(exc).splitlines()[0]})"
    wrong = []
    if len(set(loaded)) != len(loaded):
        wrong.append(f"{len(loaded) - len(set(loaded))} duplicate run_ids")
    if not set(loaded) <= truth:
        wrong.append(f"{len(set(loaded) - truth)} run_ids not in the truth")
    return len(loaded), "MISMATCH: " + "; ".join(wrong) if wrong else "ok"


__all__ = [
    "FULL_CONCURRENCY",
    "QUICK_CONCURRENCY",
    "ConcurrencySizes",
    "bench_busy_flow",
    "bench_rate_limit",
]
