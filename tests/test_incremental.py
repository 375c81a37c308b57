"""Issue "Incremental sync that never loses or doubles a run": the window rules end to end.

Every test runs the real sync (`run_sync`) over real HTTP against the simulator and loads a real
DuckDB file; the sync's pinned end is the simulator clock. Expected values always come from the
simulator's ground truth (`tests/support/truth.py`) or from the requests the simulator recorded,
never from DuckDB or from the product's own code (which only reads its stored state back).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.load import pipelines_dir_for, run_sync
from pipelines.load.destination import choose
from pipelines.load.destination import pipelines_dir_for as pipelines_dir_of
from pipelines.settings import SyncSettings
from pipelines.simulator import SimulatorServer, World
from pipelines.simulator.contract import FINAL_STATES, OPEN_STATES
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.progress import SyncReport
from pipelines.stackai.window import RECHECK_MARGIN, WindowRules
from tests.conftest import DESTINATIONS
from tests.support.state import stored_state
from tests.support.store import execute, query, restore, scalar, snapshot
from tests.support.truth import assert_matches, expected_run, expected_runs, loaded_runs

ANCHOR = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=10)
"""Ten days back, so that tests can move the clock (or the sync's `now`) by days and stay in the
past."""
PAGE_SIZE = 10
"""Small, so a flow's history takes several pages."""


# ------------------------------------------------------------------------------------ fixtures


def small_world(seed: int) -> World:
    return World(seed, anchor=ANCHOR, orgs=1, flows_per_org=2, runs_per_flow=30)


@pytest.fixture
def world() -> World:
    """One org of two flows, about 30 runs each."""
    return small_world(seed=11)


@pytest.fixture
def settings(
    simulator: SimulatorServer, flows, duckdb_path: Path, destination, request
) -> SyncSettings:
    target = None
    if destination != "duckdb":
        request.getfixturevalue("postgres_url")
        target = choose(destination)
    return SyncSettings(
        base_url=simulator.url,
        api_key=simulator.world.api_key,
        flows=flows,
        duckdb_path=duckdb_path,
        page_size=PAGE_SIZE,
        destination=target,
        # the daily feedback pass off: these tests pin the tail each rule reads; the pass's own
        # tests set it (the defaults in test_by_default_feedback_...)
        rules=WindowRules(feedback_lookback=None),
    )


# ------------------------------------------------------------------------------------- helpers


def sync(settings: SyncSettings, world: World, now: datetime | None = None) -> SyncReport:
    """One sync pinned to the simulator clock (or `now`); it must succeed."""
    report = run_sync(settings, now=now or world.now)
    assert report.ok, [(f.flow, f.error) for f in report.failed] or report.error
    return report


def requests_of(world: World, flow: FlowRef, mark: int = 0) -> list[dict]:
    """Query params of the flow's requests served since `world.requests[mark]`, in order."""
    path = "/" + flow.path
    return [r["params"] for r in world.requests[mark:] if r["path"] == path]


def instant(params: dict, key: str) -> datetime | None:
    return datetime.fromisoformat(params[key]) if key in params else None


Window = tuple[datetime | None, datetime | None]


def windows_of(world: World, flow: FlowRef, mark: int = 0) -> list[Window]:
    """(start_date, end_date) of each window the flow read since `mark` (one per first page)."""
    return [
        (instant(p, "start_date"), instant(p, "end_date"))
        for p in requests_of(world, flow, mark)
        if p.get("page", "0") == "0"
    ]


def tail_start(world: World, flow: FlowRef, mark: int) -> datetime | None:
    """Start of the flow's main window read since `mark`: the first window that ends at the
    clock (open-run re-checks end elsewhere; the time slices of a window of more than a page
    come after its first page, tests/test_slices.py). None = from the beginning of history."""
    starts = [start for start, end in windows_of(world, flow, mark) if end == world.now]
    assert starts, f"flow {flow} read no window ending at the clock"
    return starts[0]


def covers(window: Window, when: datetime) -> bool:
    start, end = window
    return (start is None or start <= when) and (end is None or when <= end)


def newest(world: World, flow: FlowRef) -> datetime:
    """Ground truth: the newest run date of a flow."""
    return max(run["date"] for run in expected_runs(world, [flow]).values())


def of_flow(runs: dict[str, dict], flow: FlowRef) -> dict[str, dict]:
    return {
        run_id: run
        for run_id, run in runs.items()
        if (run["org_id"], run["flow_id"]) == (flow.org_id, flow.flow_id)
    }


def horizon(world: World, settings: SyncSettings) -> datetime:
    """Runs dated before this are out of the rules' reach (only presence and date are kept)."""
    return world.now - settings.rules.max_open_run_age


def old_final_run(world: World, flow: FlowRef, age: timedelta) -> str:
    """Ground truth: the finished run of `flow` whose date is nearest to `now - age`."""
    target = world.now - age
    candidates = [
        run["run_id"]
        for run in world.runs(flow.org_id, flow.flow_id)
        if run["state"] in FINAL_STATES
    ]
    return min(candidates, key=lambda run_id: abs(world.run_instant(run_id) - target))


def row_as_served(settings: SyncSettings, world: World, flow: FlowRef, run_id: str) -> tuple:
    """(the stored row, the row the served run should give), restricted to the compared fields."""
    want = expected_run(flow.org_id, flow.flow_id, world.get_run(run_id))
    got = loaded_runs(settings)[run_id.lower()]
    return {name: got.get(name) for name in want}, want


# ----------------------------------------------------------- 1. runs that appear while paging


@pytest.mark.parametrize("sort_order", ["newest_first", "oldest_first"])
def test_runs_started_while_a_flow_pages_are_neither_lost_nor_doubled(settings, world, sort_order):
    """Rule: the sync pins its end (`now`). Runs that appear while a flow is paging may shift
    its pages, yet every run that existed when the sync started is stored, each run once, and
    runs dated after the pinned end are left for the next sync, which picks every newcomer up."""
    world.sort_order = sort_order
    flow = settings.flows[0]
    existing = set(expected_runs(world))
    end = world.now
    inside, after_end = [], []

    def add_runs_on_second_page(org_id: str, flow_id: str, params: dict) -> None:
        if (org_id, flow_id) != (flow.org_id, flow.flow_id) or params.get("page") != "1":
            return
        if inside:
            return
        for offset in (timedelta(minutes=-20), timedelta(seconds=-1)):
            inside.append(world.add_run(org_id, flow_id, date=end + offset)["run_id"].lower())
        after_end.append(
            world.add_run(org_id, flow_id, date=end + timedelta(seconds=1))["run_id"].lower()
        )

    world.before_page = add_runs_on_second_page
    report = sync(settings, world)
    world.before_page = None
    assert inside, "precondition: the flow should take more than one page"

    loaded = loaded_runs(settings)  # fails on a duplicate run_id
    assert existing <= set(loaded), f"lost: {sorted(existing - set(loaded))[:3]}"
    assert set(loaded) - existing <= set(inside), "only newcomers dated inside the window"
    assert after_end[0] not in loaded, "a run dated after the pinned end was read"
    assert report.flows[str(flow)].runs == len(of_flow(loaded, flow))

    world.advance(15 * 60)
    sync(settings, world)
    loaded = loaded_runs(settings)
    assert set(inside + after_end) <= set(loaded)
    assert_matches(loaded, expected_runs(world), horizon(world, settings))


def test_a_run_shown_on_two_pages_is_stored_and_counted_once(settings, world):
    """Rule: page drift (a run inserted before the page being read, newest_first order) makes
    the API serve one run on two consecutive pages; it is stored once and the report's `runs`
    counts it once."""
    world.sort_order = "newest_first"
    flow = settings.flows[0]
    existing = set(expected_runs(world, [flow]))
    on_both_pages: list[str] = []

    def insert_before_the_current_page(org_id: str, flow_id: str, params: dict) -> None:
        if (org_id, flow_id) != (flow.org_id, flow.flow_id) or params.get("page") != "1":
            return
        if on_both_pages:
            return
        window = {
            "start": instant(params, "start_date"),
            "end": instant(params, "end_date"),
            "page_size": int(params["page_size"]),
        }
        first = {r["run_id"] for r in world.query_runs(org_id, flow_id, page=0, **window)}
        world.add_run(org_id, flow_id, date=world.now - timedelta(seconds=5))
        second = {r["run_id"] for r in world.query_runs(org_id, flow_id, page=1, **window)}
        on_both_pages.extend(first & second)

    world.before_page = insert_before_the_current_page
    report = sync(settings, world)
    world.before_page = None
    assert on_both_pages, "precondition: the API should have served a run on two pages"

    loaded = of_flow(loaded_runs(settings), flow)  # fails on a duplicate run_id
    assert existing <= set(loaded)
    assert on_both_pages[0].lower() in loaded
    assert report.flows[str(flow)].runs == len(loaded)


# --------------------------------------------------------------- 2. open runs older than the tail


def test_an_open_run_older_than_the_tail_is_rechecked_with_a_narrow_window(settings, world):
    """Rule: a run last seen open, older than the tail (`lookback`) but younger than
    `max_open_run_age`, is re-read with a narrow window straddling its own date, and its row is
    updated in place when it completes."""
    flow = settings.flows[0]
    run_id = world.add_run(
        flow.org_id, flow.flow_id, date=world.now - timedelta(days=2), state="PENDING"
    )["run_id"]
    date = world.run_instant(run_id)
    sync(settings, world)
    assert loaded_runs(settings)[run_id.lower()]["state"] == "PENDING"

    world.complete_run(run_id)
    world.advance(30 * 60)
    mark = len(world.requests)
    sync(settings, world)

    windows = windows_of(world, flow, mark)
    covering = [w for w in windows if covers(w, date)]
    assert len(covering) == 1, windows
    start, end = covering[0]
    assert start < date < end, "the re-check window should straddle the run's date"
    assert end < tail_start(world, flow, mark), "the tail should not reach back to the run"
    assert end - start < settings.rules.lookback, "the re-check window should be narrow"

    got, want = row_as_served(settings, world, flow, run_id)
    assert got == want
    assert_matches(loaded_runs(settings), expected_runs(world), horizon(world, settings))


def test_an_open_run_older_than_max_open_run_age_is_no_longer_rechecked(settings, world):
    """Rule (by design, documented here): a run still open when it is older than
    `max_open_run_age` is not re-checked: its row stays as first loaded, and no request window
    of a later sync covers its date."""
    flow = settings.flows[0]
    age = settings.rules.max_open_run_age + timedelta(days=1)
    served = world.add_run(flow.org_id, flow.flow_id, date=world.now - age, state="PENDING")
    run_id, date = served["run_id"], world.run_instant(served["run_id"])
    first_loaded = expected_run(flow.org_id, flow.flow_id, served)
    sync(settings, world)

    world.complete_run(run_id)
    world.advance(30 * 60)
    mark = len(world.requests)
    sync(settings, world)

    got, now_served = row_as_served(settings, world, flow, run_id)
    assert now_served["state"] != "PENDING", "precondition: the API shows the run finished"
    assert got == first_loaded
    assert not [w for w in windows_of(world, flow, mark) if covers(w, date)]


# ------------------------------------------------------------------- 3. the cap on re-checks


def test_open_run_rechecks_are_capped_per_sync_and_rotate(settings, world):
    """Rule: at most `max_open_run_checks` open runs are re-checked per flow per sync, the least
    recently checked first (so successive syncs check different runs), and the flow's report
    notes the runs left out."""
    rules = WindowRules(max_open_run_checks=1)
    capped = replace(settings, rules=rules)
    flow = settings.flows[0]
    for days in (2, 3, 4):
        world.add_run(
            flow.org_id, flow.flow_id, date=world.now - timedelta(days=days), state="PENDING"
        )
    sync(capped, world)  # the whole history: every open run is seen open

    def due(f: FlowRef) -> dict[str, datetime]:
        """Ground truth: open runs older than the tail, younger than max_open_run_age."""
        tail_begins = newest(world, f) - rules.lookback
        return {
            run_id: run["date"]
            for run_id, run in expected_runs(world, [f]).items()
            if run["state"] in OPEN_STATES
            and world.now - rules.max_open_run_age <= run["date"] < tail_begins
        }

    expected_due = {f: due(f) for f in capped.flows}
    assert len(expected_due[flow]) >= 3
    checked: list[str] = []
    for _ in expected_due[flow]:
        mark = len(world.requests)
        report = sync(capped, world)
        for f in capped.flows:
            flow_report = report.flows[str(f)]
            rechecks = [w for w in windows_of(world, f, mark) if w[1] != world.now]
            assert flow_report.rechecks == len(rechecks) == min(1, len(expected_due[f]))
            capped_note = any("max_open_run_checks" in note for note in flow_report.notes)
            assert capped_note == (len(expected_due[f]) > 1), flow_report.notes
        rechecked = [
            run_id
            for run_id, date in expected_due[flow].items()
            for window in windows_of(world, flow, mark)
            if window[1] != world.now and covers(window, date)
        ]
        assert len(rechecked) == 1
        checked += rechecked
    assert sorted(checked) == sorted(expected_due[flow]), "each open run checked once in turn"


# ---------------------------------------------------------------------------- 4. late feedback


def reaching_back(world: World, mark: int, before: datetime) -> int:
    """How many flows read a window since `mark` that starts at or before `before` (a window
    read as time slices counts once; an open run's re-check, a window of 2 x RECHECK_MARGIN
    around that run's date, is not such a window)."""
    return len(
        {
            r["path"]
            for r in world.requests[mark:]
            if r["params"].get("page", "0") == "0"
            and "start_date" in r["params"]
            and instant(r["params"], "start_date") <= before
            and not is_recheck(r["params"])
        }
    )


def is_recheck(params: dict) -> bool:
    """The request reads an open run's re-check window (`window.RECHECK_MARGIN` either side)."""
    start, end = instant(params, "start_date"), instant(params, "end_date")
    return start is not None and end is not None and end - start <= 2 * RECHECK_MARGIN


def test_by_default_feedback_given_two_days_after_a_run_is_stored_within_a_day(settings, world):
    """Rule (defaults): feedback given up to two days after a run is in the table at the first
    sync a day after it was given, with no configuration; a week-old run's feedback needs a
    longer `feedback_lookback`."""
    settings = replace(settings, rules=WindowRules())  # the defaults
    flow = settings.flows[0]
    recent = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(hours=47))
    old = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(days=7))
    sync(settings, world)  # the whole history: counts as a feedback pass
    world.set_feedback(recent["run_id"], f"late feedback for {recent['run_id']}")
    world.set_feedback(old["run_id"], f"late feedback for {old['run_id']}")

    sync(settings, world)  # within the day: the tail only
    got, want = row_as_served(settings, world, flow, recent["run_id"])
    assert got["feedback"] != want["feedback"]

    world.advance(24 * 3600)
    mark = len(world.requests)
    sync(settings, world)  # a day later: the pass reaches 3 days back
    got, want = row_as_served(settings, world, flow, recent["run_id"])
    assert got == want
    assert reaching_back(world, mark, world.run_instant(recent["run_id"])) == len(settings.flows)
    got, want = row_as_served(settings, world, flow, old["run_id"])
    assert got["feedback"] != want["feedback"], "the defaults do not reach a week back"

    world.advance(24 * 3600)
    with_lookback = replace(settings, rules=WindowRules(feedback_lookback=timedelta(days=10)))
    sync(with_lookback, world)
    got, want = row_as_served(settings, world, flow, old["run_id"])
    assert got == want


def test_the_feedback_pass_can_be_turned_off(settings, world):
    flow = settings.flows[0]
    run_id = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(hours=20))[
        "run_id"
    ]
    off = replace(settings, rules=WindowRules(feedback_lookback=None))
    sync(off, world)
    world.set_feedback(run_id, "late")
    world.advance(24 * 3600)
    mark = len(world.requests)
    sync(off, world)
    assert reaching_back(world, mark, world.run_instant(run_id)) == 0
    got, want = row_as_served(settings, world, flow, run_id)
    assert got["feedback"] != want["feedback"]


def test_the_feedback_pass_runs_once_per_feedback_interval(settings, world):
    """Rule: the `feedback_lookback` re-read happens at most once per `feedback_interval`; a
    change in between is captured by the next pass."""
    rules = WindowRules(feedback_lookback=timedelta(days=8), feedback_interval=timedelta(hours=6))
    with_lookback = replace(settings, rules=rules)
    flow = settings.flows[0]
    run_id = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(days=7))["run_id"]
    date = world.run_instant(run_id)
    sync(with_lookback, world)  # the whole history, which counts as the first pass

    mark = len(world.requests)
    sync(with_lookback, world)
    assert reaching_back(world, mark, date) == 0, "the whole-history read was the first pass"

    world.set_feedback(run_id, f"late feedback for {run_id}")
    world.advance(rules.feedback_interval.total_seconds() / 2)
    mark = len(world.requests)
    sync(with_lookback, world)
    assert reaching_back(world, mark, date) == 0, "too soon for another pass"
    got, want = row_as_served(settings, world, flow, run_id)
    assert got["feedback"] != want["feedback"]

    world.advance(rules.feedback_interval.total_seconds() / 2)
    mark = len(world.requests)
    sync(with_lookback, world)
    assert reaching_back(world, mark, date) == len(settings.flows), "interval elapsed"
    got, want = row_as_served(settings, world, flow, run_id)
    assert got == want


# ---------------------------------------------------------------------- 5. cursors per flow


def test_flows_with_cursors_days_apart_each_read_from_their_own(settings, world):
    """Rule: each flow has its own cursor (its newest loaded run date): a flow synced days ago
    reads from its own cursor minus `lookback`, a flow never synced reads its whole history."""
    stale, fresh = settings.flows
    sync(replace(settings, flows=(stale,)), world)
    cursor_stale = stored_state(settings, stale).cursor
    assert cursor_stale == newest(world, stale)

    world.advance(timedelta(days=3).total_seconds(), new_runs=False)
    world.add_run(fresh.org_id, fresh.flow_id, date=world.now - timedelta(minutes=10))
    mark = len(world.requests)
    sync(settings, world)

    assert tail_start(world, stale, mark) == cursor_stale - settings.rules.lookback
    assert tail_start(world, fresh, mark) is None
    for flow in settings.flows:
        assert stored_state(settings, flow).cursor == newest(world, flow)
    assert newest(world, fresh) - newest(world, stale) > timedelta(days=2)
    # the 3 days also completed open runs that are now past max_open_run_age: last seen, by design
    assert_matches(loaded_runs(settings), expected_runs(world), horizon(world, settings))


@pytest.mark.parametrize("initial_start_age", [None, timedelta(days=9)], ids=["history", "9d"])
def test_a_flow_added_later_starts_from_initial_start(settings, world, initial_start_age):
    """Rule: a flow added to the configuration later starts from `initial_start` (None = the
    whole history), and the other flows' cursors are untouched."""
    initial = None if initial_start_age is None else world.now - initial_start_age
    configured = replace(settings, rules=WindowRules(initial_start=initial))
    first, added = configured.flows
    sync(replace(configured, flows=(first,)), world)
    state_first = stored_state(configured, first)

    mark = len(world.requests)
    sync(configured, world)

    assert tail_start(world, added, mark) == initial
    assert tail_start(world, first, mark) == state_first.cursor - configured.rules.lookback
    assert stored_state(configured, first).cursor == state_first.cursor == newest(world, first)
    assert stored_state(configured, added).cursor == newest(world, added)
    wanted = {
        run_id: run
        for run_id, run in expected_runs(world).items()
        if initial is None or run["date"] >= initial
    }
    assert_matches(loaded_runs(configured.duckdb_path), wanted)


# -------------------------------------------------------------------------------- 6. backfill


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_backfill_rereads_its_window_merges_and_keeps_the_cursor(settings, world):
    """Rule: `since`/`until` re-read exactly that window for every flow, merge on run_id (an
    edited old run lands in place), and never move a cursor backwards."""
    flow = settings.flows[0]
    sync(settings, world)
    cursors = {f: stored_state(settings, f).cursor for f in settings.flows}

    run_id = old_final_run(world, flow, timedelta(days=20))
    before = world.get_run(run_id)
    world.update_run(
        run_id, feedback=f"edited {run_id}", total_tokens=(before["total_tokens"] or 0) + 1
    )
    date = world.run_instant(run_id)
    since, until = date - timedelta(days=1), date + timedelta(days=1)
    mark = len(world.requests)
    sync(replace(settings, since=since, until=until), world)

    for f in settings.flows:
        requests = requests_of(world, f, mark)
        assert requests, f"flow {f} was not read"
        assert {(instant(p, "start_date"), instant(p, "end_date")) for p in requests} == {
            (since, until)
        }
        assert stored_state(settings, f).cursor == cursors[f], "the cursor moved"
    got, want = row_as_served(settings, world, flow, run_id)
    assert got == want
    assert_matches(loaded_runs(settings), expected_runs(world))


# ---------------------------------------------------------------------------- 7. full refresh


def load_ids(settings: SyncSettings, flow: FlowRef) -> dict[str, str]:
    rows = query(
        settings,
        "select run_id, _dlt_load_id from stackai.flow_runs where org_id = %s and flow_id = %s",
        flow.org_id,
        flow.flow_id,
    )
    return {r["run_id"]: r["_dlt_load_id"] for r in rows}


STALE_RUN_ID = "00000000-0000-4000-8000-00000000dead"


def insert_stale_run(settings: SyncSettings, flow: FlowRef, date: datetime) -> str:
    """A stored run (and one usage row) that the API does not return, with the flow's ids."""
    load_id = scalar(
        settings, "select max(_dlt_load_id) from stackai.flow_runs where flow_id = %s", flow.flow_id
    )
    execute(
        settings,
        "insert into stackai.flow_runs (run_id, org_id, flow_id, date, state, _dlt_load_id,"
        " _dlt_id) values (%s, %s, %s, %s, 'COMPLETED', %s, 'stale-run-dlt-id')",
        STALE_RUN_ID,
        flow.org_id,
        flow.flow_id,
        date,
        load_id,
    )
    execute(
        settings,
        "insert into stackai.flow_runs__llm_usage (run_id, provider, model_id, _dlt_root_id,"
        " _dlt_parent_id, _dlt_list_idx, _dlt_id, _dlt_load_id) values (%s, 'OpenAI',"
        " 'gpt-4o', 'stale-run-dlt-id', 'stale-run-dlt-id', 0, 'stale-usage-dlt-id', %s)",
        STALE_RUN_ID,
        load_id,
    )
    return STALE_RUN_ID


def usage_rows_of(settings: SyncSettings, run_id: str) -> int:
    return scalar(
        settings, "select count(*) from stackai.flow_runs__llm_usage where run_id = %s", run_id
    )


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_full_refresh_rebuilds_one_flow_and_leaves_the_others_alone(settings, world):
    """Rule: `full_refresh` of a flow ignores its state, reloads its whole history (an old run
    edited outside every window lands), deletes its rows the API no longer returns (with their
    usage rows), and leaves other flows' rows and state as they were."""
    target, other = settings.flows
    sync(settings, world)
    run_id = old_final_run(world, target, timedelta(days=20))
    world.update_run(run_id, feedback=f"edited {run_id}")
    stale = insert_stale_run(settings, target, world.now - timedelta(days=3))
    assert stale in loaded_runs(settings) and usage_rows_of(settings, stale) == 1
    other_rows, other_state = load_ids(settings, other), stored_state(settings, other)

    mark = len(world.requests)
    sync(replace(settings, full_refresh=True, flows=(target,)), world)

    assert tail_start(world, target, mark) is None, "the flow's state was not dropped"
    assert not requests_of(world, other, mark)
    loaded = loaded_runs(settings)
    assert stale not in loaded
    assert usage_rows_of(settings, stale) == 0
    assert_matches(of_flow(loaded, target), expected_runs(world, [target]))
    assert stored_state(settings, target).cursor == newest(world, target)
    assert load_ids(settings, other) == other_rows
    assert stored_state(settings, other) == other_state
    assert_matches(loaded, expected_runs(world))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_full_refresh_keeps_a_run_whose_record_is_now_rejected(settings, world):
    """A run the API still returns, in a record that cannot be loaded this time, is not gone:
    it keeps its last good version (as a normal sync would) and the record is in
    flow_runs_rejected."""
    target = settings.flows[0]
    sync(settings, world)
    run_id = old_final_run(world, target, timedelta(days=20))
    before = loaded_runs(settings)[run_id.lower()]
    world.update_run(run_id, total_tokens="12x")

    report = sync(replace(settings, full_refresh=True, flows=(target,)), world)

    assert report.flows[str(target)].rejected == 1
    assert loaded_runs(settings)[run_id.lower()] == before
    reasons = query(settings, "select reason from stackai.flow_runs_rejected")
    assert reasons == [{"reason": "total_tokens: '12x' is not a valid bigint"}]


# ------------------------------------------------------------------------- 8. a future cursor


def test_a_cursor_in_the_future_is_reset_to_now_without_reading(settings, world):
    """Rule: a stored cursor later than the sync's `now` (clock skew, a bad edit) is reported
    ("in the future"), nothing is read for that flow this sync, the sync still succeeds, and
    the cursor is set to `now` so the next sync reads normally."""
    ahead, other = settings.flows
    now = world.now
    world.add_run(ahead.org_id, ahead.flow_id, date=now + timedelta(days=5))
    sync(settings, world, now=now + timedelta(days=6))
    assert stored_state(settings, ahead).cursor == newest(world, ahead) > now

    mark = len(world.requests)
    report = sync(settings, world, now=now)
    notes = report.flows[str(ahead)].notes
    assert any("in the future" in note for note in notes), notes
    assert not requests_of(world, ahead, mark)
    assert requests_of(world, other, mark)
    assert stored_state(settings, ahead).cursor == now

    mark = len(world.requests)
    report = sync(settings, world, now=now)
    assert not report.flows[str(ahead)].notes
    assert tail_start(world, ahead, mark) == now - settings.rules.lookback
    assert_matches(loaded_runs(settings), expected_runs(world))


# -------------------------------------------------------------- 9. state belongs with the data


def test_state_belongs_to_the_duckdb_file(settings, world, tmp_path):
    """Rule: the state lives with the data. A new DuckDB file starts from the whole history;
    a file whose local dlt working directory was deleted gets its state back from the file
    (its next sync starts at cursor - lookback, not at the beginning)."""
    sync(settings, world)
    cursors = {flow: newest(world, flow) for flow in settings.flows}

    other_file = replace(settings, duckdb_path=tmp_path / "other" / "runs.duckdb")
    mark = len(world.requests)
    sync(other_file, world)
    for flow in settings.flows:
        assert tail_start(world, flow, mark) is None
    assert_matches(loaded_runs(other_file.duckdb_path), expected_runs(world))

    working_dir = pipelines_dir_for(settings.duckdb_path.resolve())
    assert working_dir.is_dir(), "precondition: the sync keeps its working dir beside the file"
    shutil.rmtree(working_dir)
    world.advance(30 * 60)
    mark = len(world.requests)
    sync(settings, world)
    for flow in settings.flows:
        assert tail_start(world, flow, mark) == cursors[flow] - settings.rules.lookback
    assert_matches(loaded_runs(settings), expected_runs(world), horizon(world, settings))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_destination_restored_from_an_older_copy_catches_up(settings, world, tmp_path, caplog):
    """Rule: the destination's state is the truth. A destination restored from a copy made
    before the last sync, beside the working folder that sync left (newer cursors), reads again
    from the copy's cursors: the runs loaded after the copy are loaded again, none is lost."""
    sync(settings, world)
    copy = snapshot(settings, tmp_path)
    copied_cursors = {flow: newest(world, flow) for flow in settings.flows}
    world.advance(3 * 3600)
    sync(settings, world)
    restore(settings, copy)
    assert len(loaded_runs(settings)) < len(expected_runs(world)), "precondition: runs lost"

    world.advance(10 * 60)
    mark = len(world.requests)
    with caplog.at_level("WARNING"):
        sync(settings, world)
    assert "older than the working folder" in caplog.text
    for flow in settings.flows:
        assert tail_start(world, flow, mark) == copied_cursors[flow] - settings.rules.lookback
    assert_matches(loaded_runs(settings), expected_runs(world), horizon(world, settings))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_new_destination_beside_an_old_working_folder_starts_from_the_beginning(
    settings, world, caplog
):
    """A destination emptied (or a new database at the same address) while the working folder
    keeps its cursors: the history is read from the beginning, not from those cursors."""
    sync(settings, world)
    if settings.target().name == "postgres":
        execute(settings, "drop schema stackai cascade")
        execute(settings, "drop schema stackai_staging cascade")
    else:
        settings.duckdb_path.unlink()
    world.advance(30 * 60)
    mark = len(world.requests)
    sync(settings, world)
    for flow in settings.flows:
        assert tail_start(world, flow, mark) is None
    assert_matches(loaded_runs(settings), expected_runs(world))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_a_lost_working_folder_is_rebuilt_from_the_destination(settings, world):
    sync(settings, world)
    cursors = {flow: newest(world, flow) for flow in settings.flows}
    shutil.rmtree(pipelines_dir_of(settings.target()))
    world.advance(30 * 60)
    mark = len(world.requests)
    sync(settings, world)
    for flow in settings.flows:
        assert tail_start(world, flow, mark) == cursors[flow] - settings.rules.lookback
    assert_matches(loaded_runs(settings), expected_runs(world), horizon(world, settings))


# ------------------------------------------------------------------ 10. random event sequences

STEPS = st.one_of(
    st.tuples(st.just("advance"), st.integers(min_value=60, max_value=3 * 3600)),
    st.tuples(
        st.just("open"),
        st.integers(min_value=0, max_value=1),
        st.integers(min_value=0, max_value=59 * 60),
        st.sampled_from(sorted(OPEN_STATES)),
    ),
    st.tuples(st.just("complete"), st.integers(min_value=0, max_value=1000)),
    st.tuples(
        st.just("feedback"),
        st.integers(min_value=0, max_value=1000),
        st.sampled_from(["thumbs up", "wrong answer", "später: 👍", None]),
    ),
    st.tuples(st.just("sync")),
)


def apply_step(world: World, step: tuple) -> None:
    """Apply one non-sync event to the world (a no-op when it has nothing to act on)."""
    kind, *args = step
    if kind == "advance":
        world.advance(args[0])
    elif kind == "open":
        flow = world.flows()[args[0]]
        world.add_run(
            flow.org_id,
            flow.flow_id,
            date=world.now - timedelta(seconds=args[1]),
            state=args[2],
        )
    elif kind == "complete":
        open_runs = sorted(r["run_id"] for _, _, r in world.all_runs() if r["state"] in OPEN_STATES)
        if open_runs:
            world.complete_run(open_runs[args[0] % len(open_runs)])
    elif kind == "feedback":
        recent = sorted(
            r["run_id"]
            for _, _, r in world.all_runs()
            if world.run_instant(r["run_id"]) >= world.now - timedelta(hours=1)
        )
        if recent:
            world.set_feedback(recent[args[0] % len(recent)], args[1])


@hypothesis.settings(max_examples=8, deadline=None, database=None)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    stuck_open_hours=st.lists(st.integers(min_value=2, max_value=9 * 24), min_size=1, max_size=3),
    steps=st.lists(STEPS, min_size=1, max_size=4),
)
def test_any_sequence_of_events_ends_in_the_ground_truth(seed, stuck_open_hours, steps):
    """Rule, as a property: after any sequence of events ending with a sync, the table equals
    the ground truth for every run not older than `max_open_run_age`.

    The world starts with a few runs stuck open for hours or days (beside its history). A first
    sync, then 1-4 random steps among: the clock moving (new runs arrive, open runs finish), a
    run added open in the last hour, a random open run completing, feedback on a random run of
    the last hour, a sync; then a final sync. The events are chosen so that the invariant is
    exactly what the default rules promise: every change is either to a run last seen open
    (re-checked while younger than `max_open_run_age`; older ones are only checked for presence
    and date) or to a run of the last hour (inside the next sync's tail, since a cursor never
    passes the clock). Feedback on an older finished run needs `feedback_lookback` and is not
    generated; nor are runs that appear after a sync with a date older than the tail (the API
    does not produce them).
    """
    world = small_world(seed)
    for index, hours in enumerate(stuck_open_hours):
        flow = world.flows()[index % len(world.flows())]
        world.add_run(
            flow.org_id, flow.flow_id, date=world.now - timedelta(hours=hours), state="PENDING"
        )
    with SimulatorServer(world) as simulator, tempfile.TemporaryDirectory() as folder:
        settings = SyncSettings(
            base_url=simulator.url,
            api_key=world.api_key,
            flows=tuple(FlowRef(f.org_id, f.flow_id) for f in world.flows()),
            duckdb_path=Path(folder) / "runs.duckdb",
            page_size=PAGE_SIZE,
        )
        for step in [("sync",), *steps, ("sync",)]:
            if step[0] == "sync":
                sync(settings, world)
            else:
                apply_step(world, step)
        assert_matches(loaded_runs(settings), expected_runs(world), horizon(world, settings))
