"""A flow's big window read as concurrent time slices (`pipelines/stackai/slices.py`): the plan
covers the window whatever the API's bound inclusivity, and syncs over real HTTP equal the
ground truth in every sort order, after drift, a failed slice, an interrupt and a kill -9."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipelines.load import run_sync
from pipelines.simulator import World
from pipelines.stackai import slices
from pipelines.stackai.slices import SLICE_OVERLAP, find_floor, plan_slices, probe_points
from tests.support.cli import ROOT, cli_command, environment, sync_args_for
from tests.support.state import stored_cursors
from tests.support.truth import assert_matches, expected_runs, loaded_runs

END = datetime(2026, 11, 30, 12, tzinfo=UTC)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2026, 11, 30, 11), timezones=st.just(UTC)
)


def covered(date: datetime, piece: tuple[datetime | None, datetime], inclusive: bool) -> bool:
    lo, hi = piece
    above = lo is None or (date >= lo if inclusive else date > lo)
    below = date <= hi if inclusive else date < hi
    return above and below


# --------------------------------------------------------------------------------- the plan


@given(
    start=st.one_of(st.none(), instants),
    dates=st.lists(instants, min_size=2, max_size=50),
    concurrency=st.integers(1, 16),
    descending=st.booleans(),
)
@hypothesis_settings(max_examples=300, deadline=None)
def test_every_run_of_the_window_is_in_a_slice_whatever_the_bounds_inclusivity(
    start, dates, concurrency, descending
):
    """Each run dated in [start, END] falls in some slice, with both bounds inclusive and with
    both exclusive (a run exactly on a boundary too: the slices overlap)."""
    dates = sorted(dates, reverse=descending)
    floor = start or min(dates) - timedelta(days=1)
    plan = plan_slices(start, END, floor, dates[:5], 5, concurrency)
    assert 1 <= len(plan) <= max(2, concurrency)
    assert plan[0][1] == END and plan[-1][0] == start
    assert all(hi > (lo or datetime.min.replace(tzinfo=UTC)) for lo, hi in plan)
    boundaries = [hi for _, hi in plan[1:]]
    for date in [*dates, *boundaries]:
        if start is not None and date < start:
            continue
        for inclusive in (True, False):
            if not inclusive and date in (END, start):
                continue  # the window's own bounds are the API's to honour, not the slices'
            assert any(covered(date, piece, inclusive) for piece in plan), (date, inclusive)


def test_slices_are_newest_first_and_overlap_by_the_margin():
    start = END - timedelta(days=10)
    first_page = [END - timedelta(hours=h) for h in range(100)]  # newest first, 100 hours
    plan = plan_slices(start, END, start, first_page, 100, 4)
    assert len(plan) == 2  # ~2.4 pages in the window, 2 pages a slice
    many = plan_slices(start, END, start, first_page[:10], 10, 4)
    assert len(many) == 4  # ~24 pages: capped at the concurrency
    for newer, older in pairwise(many):
        assert older[1] == newer[0] + SLICE_OVERLAP
    assert many[-1][0] == start


def test_an_unsorted_first_page_takes_the_most_slices():
    start = END - timedelta(days=10)
    jumbled = [END - timedelta(hours=h) for h in (5, 1, 9, 3)]
    assert len(plan_slices(start, END, start, jumbled, 4, 6)) == 6
    spread = [END - timedelta(hours=h) for h in (0, 24, 48, 72)]  # 4 runs in 3 of 10 days
    assert len(plan_slices(start, END, start, spread, 4, 6)) == 2
    assert len(plan_slices(start, END, start, [spread[i] for i in (1, 0, 3, 2)], 4, 6)) == 6


def test_a_window_narrower_than_two_minimum_slices_is_one_slice():
    start = END - slices.MIN_SLICE * 1.5
    plan = plan_slices(start, END, start, [END, END - timedelta(seconds=1)], 2, 8)
    assert plan == [(start, END)]


def test_probe_points_double_their_reach_and_stop_at_the_earliest_date():
    oldest = END - timedelta(hours=1)
    points = probe_points(oldest, END, 0, 4)
    gaps = [oldest - SLICE_OVERLAP - p for p in points]
    assert gaps == [timedelta(hours=h) for h in (0, 1, 3, 7)]
    assert probe_points(oldest, END, 4, 2)[0] == oldest - SLICE_OVERLAP - timedelta(hours=15)
    far = probe_points(datetime(1970, 1, 2, tzinfo=UTC), END, 0, 8)
    assert len(far) == 1  # one span back is already before 1970


def test_the_first_probe_round_is_small_unless_the_first_page_is_newest_first():
    hours = [END - timedelta(hours=h) for h in range(4)]
    assert slices.first_round_size(hours, 8) == 8  # newest first: the start may be far back
    assert slices.first_round_size(hours[::-1], 8) == 1  # oldest first: likely the start
    assert slices.first_round_size([hours[i] for i in (1, 0, 3, 2)], 8) == 2  # no order


@given(oldest=instants, seen=instants, per_round=st.integers(1, 8))
@hypothesis_settings(max_examples=200, deadline=None)
def test_find_floor_returns_a_date_no_run_is_older_than(oldest, seen, per_round):
    oldest = min(oldest, seen)
    rounds = []

    def probe(at: datetime) -> bool:
        return oldest <= at  # a run exists up to `at` (inclusive bound)

    def run(fn, points):
        rounds.append(len(points))
        return [fn(p) for p in points]

    floor, made = find_floor(probe, run, seen, END, per_round, first_round=1)
    assert made == sum(rounds) and all(n <= per_round for n in rounds) and rounds[0] == 1
    if floor is not None:
        assert floor < oldest


# ------------------------------------------------------------- syncs over real HTTP


@pytest.fixture
def busy(world: World, settings):
    """The first flow gets 600 more runs over the last 30 days: 27 pages of 25 at least."""
    flow = settings.flows[0]
    for i in range(600):
        world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(minutes=72 * i + 7))
    return flow


def minimum_requests(world: World, flow) -> int:
    return math.ceil((world.run_count(flow.org_id, flow.flow_id) + 1) / 25)


def requests_of(world: World, flow) -> list[dict]:
    return [r for r in world.requests if f"/flows/{flow.flow_id}" in r["path"]]


@pytest.mark.parametrize("sort_order", ["newest_first", "oldest_first", "unordered"])
def test_a_first_sync_in_slices_equals_the_ground_truth_in_any_sort_order(
    settings, world, busy, sort_order
):
    world.sort_order = sort_order
    report = run_sync(settings, now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world))
    flow = report.flows[str(busy)]
    assert flow.slices >= 2 and flow.probes >= 1
    asked = requests_of(world, busy)
    assert flow.requests == len(asked)
    # every slice ends with one short page; the first page is read again by its slice
    assert len(asked) <= minimum_requests(world, busy) + flow.slices + flow.probes + 1
    probes = [r for r in asked if r["params"].get("page_size") == "1"]
    assert len(probes) == flow.probes
    assert all("start_date" not in r["params"] for r in probes)


def test_a_sync_without_time_slices_reads_page_after_page(settings, world, busy):
    report = run_sync(replace(settings, time_slices=False), now=world.now)
    assert report.ok, report
    assert report.flows[str(busy)].slices == 0
    assert len(requests_of(world, busy)) == minimum_requests(world, busy)
    assert_matches(loaded_runs(settings), expected_runs(world))


def test_a_backfill_is_sliced_from_its_start_without_probes(settings, world, busy):
    assert run_sync(settings, now=world.now).ok
    before = stored_cursors(settings)
    world.advance(600)
    since = world.now - timedelta(days=20)
    report = run_sync(replace(settings, since=since), now=world.now)
    assert report.ok, report
    flow = report.flows[str(busy)]
    assert flow.slices >= 2 and flow.probes == 0
    starts = {r["params"].get("start_date") for r in requests_of(world, busy)[-flow.slices :]}
    assert None not in starts
    assert stored_cursors(settings)[str(busy)] >= before[str(busy)]
    assert_matches(loaded_runs(settings), expected_runs(world), world.now - timedelta(days=7))


@pytest.mark.parametrize("sort_order", ["newest_first", "oldest_first"])
def test_runs_started_while_slices_page_are_neither_lost_nor_doubled(
    settings, world, busy, sort_order
):
    """Runs added while the slices page (inside the window and after its pinned end) shift the
    slices' pages; every run that existed at the start is stored once, later ones next sync."""
    world.sort_order = sort_order
    existing = set(expected_runs(world))
    end = world.now
    added: list[str] = []

    def add_runs_mid_slices(org_id: str, flow_id: str, params: dict) -> None:
        if flow_id != busy.flow_id or params.get("page") != "1" or len(added) >= 6:
            return
        for offset in (timedelta(minutes=-20), timedelta(seconds=-1), timedelta(seconds=1)):
            added.append(world.add_run(org_id, flow_id, date=end + offset)["run_id"].lower())

    world.before_page = add_runs_mid_slices
    try:
        report = run_sync(settings, now=end)
    finally:
        world.before_page = None
    assert report.ok and added and report.flows[str(busy)].slices >= 2
    loaded = loaded_runs(settings)  # fails on a duplicate run_id
    assert existing <= set(loaded)
    assert set(loaded) - existing <= set(added)

    world.advance(900)
    assert run_sync(settings, now=world.now).ok
    loaded = loaded_runs(settings)
    assert set(added) <= set(loaded)
    assert_matches(loaded, expected_runs(world), world.now - timedelta(days=7))


def test_a_failed_slice_fails_the_flow_and_leaves_its_cursor(settings, world, busy):
    """One slice gets HTTP 500 until its retries run out: the flow fails with that error and
    keeps its cursor, the other flows load; the next sync reads it all."""
    assert run_sync(settings, now=world.now).ok
    before = stored_cursors(settings)
    world.advance(600)
    since = world.now - timedelta(days=25)
    broken: list[str] = []

    def fail_a_slice(org_id: str, flow_id: str, params: dict) -> None:
        if flow_id == busy.flow_id and params.get("page") == "1" and not broken:
            broken.append(params["start_date"])  # this slice's pages fail from now on
        if broken and params.get("start_date") == broken[0]:
            raise RuntimeError("this slice is down")  # the simulator answers HTTP 500

    world.before_page = fail_a_slice
    try:
        report = run_sync(replace(settings, since=since), now=world.now)
    finally:
        world.before_page = None
    flow = report.flows[str(busy)]
    assert flow.status == "failed" and "HTTP 500" in flow.error
    assert all(f.ok for name, f in report.flows.items() if name != str(busy))
    assert stored_cursors(settings)[str(busy)] == before[str(busy)]

    assert run_sync(replace(settings, since=since), now=world.now).ok
    assert_matches(loaded_runs(settings), expected_runs(world), world.now - timedelta(days=7))


def test_an_interrupt_mid_slices_stops_the_flow_before_its_next_requests(settings, world, busy):
    """The sync's stop event set while slices page: no slice asks another page after the one in
    flight, the flow fails as interrupted, its cursor stays; the rerun equals the truth."""
    from pipelines.stackai.progress import SyncReport

    report = SyncReport()
    asked_after_stop = []

    def stop_mid_slices(org_id: str, flow_id: str, params: dict) -> None:
        if report.stop.is_set() and flow_id == busy.flow_id:
            asked_after_stop.append(params)
        elif flow_id == busy.flow_id and params.get("page") == "1":
            report.stop.set()

    world.before_page = stop_mid_slices
    try:
        run_sync(settings, now=world.now, report=report)
    finally:
        world.before_page = None
    flow = report.flows[str(busy)]
    assert flow.status == "failed" and "interrupted" in flow.error
    # at most the requests already in flight when the stop came
    assert len(asked_after_stop) <= settings.http.max_concurrent_requests
    assert stored_cursors(settings).get(str(busy)) is None

    assert run_sync(settings, now=world.now).ok
    assert_matches(loaded_runs(settings), expected_runs(world))


def test_killed_mid_slices_moves_no_cursor_and_rerun_equals_ground_truth(settings, world, busy):
    process = subprocess.Popen(
        cli_command(*sync_args_for(settings), "--quiet"),
        env=environment({"STACKAI_API_KEY": settings.api_key}),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pages = []  # the busy flow's page requests (probes aside): its window's first, then slices'
    killed = threading.Event()

    def kill_mid_slices(org_id: str, flow_id: str, params: dict) -> None:
        # the busy flow needs 25 pages at least: its 8th page request is mid-slices, whatever
        # the slice plan (which follows the history's spread, so the clock's time of day)
        if flow_id == busy.flow_id and params.get("page_size") != "1":
            pages.append(params)
            if len(pages) == 8 and not killed.is_set():
                killed.set()
                os.kill(process.pid, signal.SIGKILL)

    world.before_page = kill_mid_slices
    try:
        assert process.wait(timeout=120) == -signal.SIGKILL, process.stderr.read()
    finally:
        world.before_page = None
    assert any("start_date" in params for params in pages), "killed before the slices began"
    assert stored_cursors(settings).get(str(busy)) is None

    report = run_sync(settings, now=world.now)
    assert report.ok, report
    # the killed sync ran on the real clock: open runs it saw as too old may stay as seen
    horizon = datetime.now(UTC) - settings.rules.max_open_run_age
    assert_matches(loaded_runs(settings), expected_runs(world), horizon)


def test_a_quiet_incremental_sync_stays_one_request_per_flow(settings, world, busy):
    """Slicing starts only after a full first page: a sync with nothing new asks each flow one
    page (plus a narrow re-check per open run older than the tail)."""
    first = run_sync(settings, now=world.now)
    assert first.ok and first.flows[str(busy)].slices >= 2
    report = run_sync(settings, now=world.now)
    assert report.ok, report
    for name, flow in report.flows.items():
        assert flow.slices == 0 and flow.probes == 0
        assert flow.requests == 1 + flow.rechecks, name


def test_wide_windows_read_at_once_share_the_request_slots():
    """Each window of more than a page gets concurrency / (wide windows being read), rounded
    up: with 8 slots, the first gets 8, a second one meanwhile 4, a ninth 1; the share is asked
    again while a window is read, so the first narrows to 1 while nine are read and is back to
    8 once the others are done."""
    import requests

    from pipelines.stackai.client import RunsClient

    client = RunsClient("https://api.example.com", "key", requests.Session(), 100, concurrency=8)
    with client._wide_window() as first:
        widths = [first()]
        with client._wide_window() as second:
            widths.append(second())
            with ExitStack() as more:
                for _ in range(7):
                    widths.append(more.enter_context(client._wide_window())())
                assert first() == 1
            assert first() == 4
    assert widths == [8, 4, 3, 2, 2, 2, 2, 1, 1]
    assert first() == 8  # a share asked once every window is done: all the slots
    limit = [3]
    throttled = RunsClient(
        "https://api.example.com", "key", requests.Session(), 100, current_limit=lambda: limit[0]
    )
    with throttled._wide_window() as first, throttled._wide_window() as second:
        assert (first(), second()) == (2, 2)  # the request limit, cut by 429s, is what is shared
        limit[0] = 8
        assert first() == 4  # and grows back with it


def test_a_sliced_read_widens_when_its_share_grows():
    """A window read one slice at a time takes more workers when its share grows: three slices
    wait for each other (a barrier of three) and are only read once the share allows three."""
    from concurrent.futures import ThreadPoolExecutor

    end = datetime(2026, 1, 1, tzinfo=UTC)
    plan = [(end - timedelta(hours=i + 1), end - timedelta(hours=i)) for i in range(6)]
    barrier = threading.Barrier(3, timeout=30)  # a timeout fails the test, it fixes no race

    class Client:
        def iter_pages(self, flow, lo, hi):
            index = plan.index((lo, hi))
            if index in (1, 2, 3):
                barrier.wait()  # BrokenBarrierError unless three slices are read at once
            yield [index]

        def probe(self, flow, end):  # pragma: no cover - not used by read_sliced
            return True

    share = [1]
    with ThreadPoolExecutor(8) as pool:
        pages = slices.read_sliced(Client(), "flow", plan, pool, lambda: share[0])
        seen = [next(pages)]
        share[0] = 3
        seen += list(pages)
    assert sorted(page[0] for page in seen) == list(range(6))


def test_a_sliced_read_narrows_when_its_share_shrinks():
    """Workers over a narrower share stop after their slice: four slices read at once, the
    share drops to 1 while they are read, and the eight slices left are read one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    end = datetime(2026, 1, 1, tzinfo=UTC)
    plan = [(end - timedelta(hours=i + 1), end - timedelta(hours=i)) for i in range(12)]
    lock = threading.Lock()
    started: list[int] = []
    active_later: list[int] = []
    overlaps: list[tuple[int, int]] = []
    share = [4]
    narrowed = threading.Event()

    class Client:
        def iter_pages(self, flow, lo, hi):
            index = plan.index((lo, hi))
            with lock:
                started.append(index)
                if len(started) == 4:  # the first four are all being read: narrow the share
                    share[0] = 1
                    narrowed.set()
                if index >= 4:
                    overlaps.extend((other, index) for other in active_later)
                    active_later.append(index)
            try:
                if index < 4:
                    assert narrowed.wait(timeout=30), "four slices were never read at once"
                yield [index]
            finally:
                with lock:
                    if index in active_later:
                        active_later.remove(index)

        def probe(self, flow, end):  # pragma: no cover - not used by read_sliced
            return True

    with ThreadPoolExecutor(8) as pool:
        seen = list(slices.read_sliced(Client(), "flow", plan, pool, lambda: share[0]))
    assert sorted(page[0] for page in seen) == list(range(12))
    assert sorted(started[:4]) == [0, 1, 2, 3]
    assert overlaps == []
