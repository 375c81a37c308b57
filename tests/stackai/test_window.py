"""The pure window rules: what a flow's sync reads and the state it leaves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pipelines.stackai.endpoint import OPEN_STATES
from pipelines.stackai.window import (
    RECHECK_MARGIN,
    FlowState,
    Observations,
    OpenRun,
    SyncWindow,
    WindowRules,
    next_state,
    plan_flow,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
FLOW = "org/flow"


def see(seen: Observations, run_id: str, date: datetime, state: str) -> None:
    """One run as the batcher reports it: open states opened, any other state closed."""
    if state in OPEN_STATES:
        seen.see_batch(date, [(run_id, date)], ())
    else:
        seen.see_batch(date, (), [run_id])


NO_FEEDBACK_PASS = WindowRules(feedback_lookback=None)
"""The rules with the daily feedback pass off: the tests of the other rules read only the tail."""


def window(**kwargs) -> SyncWindow:
    rules = kwargs.pop("rules", NO_FEEDBACK_PASS)
    return SyncWindow(now=kwargs.pop("now", NOW), rules=rules, **kwargs)


def test_by_default_feedback_given_up_to_two_days_after_a_run_is_read_within_a_day():
    """The defaults: a flow's first sync counts as a feedback pass; then once a day the tail
    reaches back 3 days, so a run at any time T whose feedback comes at T + 2 days is read again
    by a pass at most a day later."""
    rules = WindowRules()
    first = plan_flow(FlowState(), window(rules=rules), FLOW)
    assert first.feedback_pass
    run_at = NOW - 10 * DAY
    for last_pass_hours in range(0, 24):  # whenever the last pass was
        last_pass = run_at + 2 * DAY - last_pass_hours * HOUR
        feedback_at = run_at + 2 * DAY  # the latest feedback the promise covers
        state = FlowState(cursor=feedback_at, feedback_pass_at=last_pass)
        # the first sync a day or more after the last pass: at most a day after the feedback
        now = last_pass + DAY
        plan = plan_flow(state, window(rules=rules, now=now), FLOW)
        assert plan.feedback_pass and now - feedback_at <= DAY
        assert plan.tail[0] <= run_at, (last_pass_hours, plan.tail)
    # a sync less than a day after the last pass reads only the tail
    quiet = plan_flow(
        FlowState(cursor=NOW - HOUR, feedback_pass_at=NOW - 23 * HOUR), window(rules=rules), FLOW
    )
    assert not quiet.feedback_pass and quiet.tail == (NOW - 2 * HOUR, NOW)


def test_new_flow_reads_from_initial_start_to_now():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    plan = plan_flow(FlowState(), window(rules=WindowRules(initial_start=start)), FLOW)
    assert plan.tail == (start, NOW)
    assert plan_flow(FlowState(), window(), FLOW).tail == (None, NOW)


def test_tail_is_cursor_minus_lookback_and_the_stored_cursor_is_the_true_newest():
    cursor = NOW - 3 * HOUR
    plan = plan_flow(FlowState(cursor=cursor), window(), FLOW)
    assert plan.tail == (cursor - HOUR, NOW)
    seen = Observations()
    see(seen, "a", cursor - 30 * timedelta(minutes=1), "COMPLETED")
    assert next_state(plan, seen, window()).cursor == cursor  # never backwards, no lookback


def test_open_runs_older_than_the_tail_get_narrow_rechecks():
    cursor = NOW - HOUR
    old = NOW - 2 * DAY
    state = FlowState(cursor=cursor, open_runs={"old": OpenRun(old), "tail": OpenRun(cursor)})
    plan = plan_flow(state, window(), FLOW)
    assert plan.rechecks == (("old", old - RECHECK_MARGIN, old + RECHECK_MARGIN),)


def test_open_runs_past_max_age_are_dropped_and_not_rechecked():
    state = FlowState(cursor=NOW - HOUR, open_runs={"ancient": OpenRun(NOW - 8 * DAY)})
    plan = plan_flow(state, window(), FLOW)
    assert plan.rechecks == ()
    assert plan.aged_out == ("ancient",)
    assert "ancient" not in next_state(plan, Observations(), window()).open_runs


def test_recheck_cap_rotates_least_recently_checked_first():
    runs = {f"r{i}": OpenRun(NOW - DAY - i * HOUR) for i in range(5)}
    state = FlowState(cursor=NOW - HOUR, open_runs=runs)
    rules = WindowRules(max_open_run_checks=2, feedback_lookback=None)
    first = plan_flow(state, window(rules=rules), FLOW)
    assert len(first.rechecks) == 2 and first.rechecks_left_out == 3
    after = next_state(first, Observations(), window(rules=rules))
    second = plan_flow(after, window(rules=rules, now=NOW + HOUR), FLOW)
    first_ids = {r[0] for r in first.rechecks}
    assert first_ids.isdisjoint({r[0] for r in second.rechecks})


def test_closed_runs_leave_open_runs_and_new_open_runs_join():
    state = FlowState(cursor=NOW - HOUR, open_runs={"a": OpenRun(NOW - DAY)})
    plan = plan_flow(state, window(), FLOW)
    seen = Observations()
    see(seen, "a", NOW - DAY, "COMPLETED")
    see(seen, "b", NOW - 10 * timedelta(minutes=1), "PAUSED")
    after = next_state(plan, seen, window())
    assert set(after.open_runs) == {"b"}
    assert after.cursor == NOW - 10 * timedelta(minutes=1)


def test_feedback_pass_widens_the_tail_only_when_due():
    rules = WindowRules(feedback_lookback=7 * DAY, feedback_interval=DAY)
    cursor = NOW - HOUR
    plan = plan_flow(FlowState(cursor=cursor), window(rules=rules), FLOW)
    assert plan.feedback_pass and plan.tail[0] == cursor - 7 * DAY
    after = next_state(plan, Observations(), window(rules=rules))
    later = plan_flow(after, window(rules=rules, now=NOW + HOUR), FLOW)
    assert not later.feedback_pass and later.tail[0] == cursor - HOUR
    next_day = plan_flow(after, window(rules=rules, now=NOW + DAY), FLOW)
    assert next_day.feedback_pass


def test_future_cursor_reads_nothing_and_is_pulled_back_to_now():
    plan = plan_flow(FlowState(cursor=NOW + DAY), window(), FLOW)
    assert plan.tail is None and plan.future_cursor
    assert next_state(plan, Observations(), window()).cursor == NOW


def test_backfill_reads_its_window_and_keeps_the_cursor():
    since, until = NOW - 30 * DAY, NOW - 20 * DAY
    plan = plan_flow(FlowState(cursor=NOW - HOUR), window(since=since, until=until), FLOW)
    assert plan.tail == (since, until)
    seen = Observations()
    see(seen, "x", NOW - 25 * DAY, "COMPLETED")
    assert next_state(plan, seen, window()).cursor == NOW - HOUR


def test_full_refresh_ignores_stored_state():
    state = FlowState(cursor=NOW - HOUR, open_runs={"a": OpenRun(NOW - DAY)})
    plan = plan_flow(state, window(full_refresh=frozenset({FLOW})), FLOW)
    assert plan.tail == (None, NOW) and plan.rechecks == ()
    assert plan_flow(state, window(full_refresh=frozenset({"other/flow"})), FLOW).tail[0]


instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@given(
    cursor=st.none() | instants,
    opened=st.dictionaries(st.uuids().map(str), instants, max_size=5),
    checked=st.none() | instants,
)
def test_state_round_trips_through_its_stored_form(cursor, opened, checked):
    state = FlowState(
        cursor=cursor,
        open_runs={k: OpenRun(v, checked) for k, v in opened.items()},
        feedback_pass_at=checked,
    )
    assert FlowState.from_dict(state.to_dict()) == state


@given(cursor=instants, dates=st.lists(instants, max_size=20))
def test_cursor_never_moves_backwards(cursor, dates):
    now = max([cursor, *dates]) + HOUR
    w = window(now=now)
    plan = plan_flow(FlowState(cursor=cursor), w, FLOW)
    seen = Observations()
    for i, d in enumerate(dates):
        see(seen, str(i), d, "COMPLETED")
    assert next_state(plan, seen, w).cursor == max([cursor, *dates])
