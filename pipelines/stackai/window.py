"""Which runs a sync of one flow reads, and the state it leaves: pure functions, no I/O.

A run's `date` is its start time and never changes, but its state, tokens, outputs and feedback
do (API-NOTES: "a pure start-date cursor would freeze them"). So each flow's state keeps
  - `cursor`: the newest run `date` loaded (the true value: lookbacks are applied only when a
    request is built, never stored);
  - `open_runs`: runs last seen PENDING, PAUSED or RESUMED, with their `date` and when they were
    last re-checked;
  - `feedback_pass_at`: when the optional long feedback re-read last ran.
Each sync reads a *tail* (from `cursor - lookback` to the pinned `now`), and re-checks each open
run older than the tail (but younger than `max_open_run_age`) with a narrow window around its own
`date`, so that one run paused for days does not make every sync re-read days of runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.stackai.dates import iso, parse_api_datetime

RECHECK_MARGIN = timedelta(seconds=1)
"""Half-width of an open run's re-check window: bound inclusivity is undocumented (API-NOTES),
so the window straddles the run's `date` rather than starting exactly on it."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class WindowRules:
    """The configured rules (`[sources.stackai]` keys in parentheses).

    Attributes:
        initial_start: First sync of a flow starts here; None = whole history
            (`initial_start_date`).
        lookback: Tail re-read before the cursor on every sync (`lookback`, default 1 hour).
        max_open_run_age: Open runs older than this (from now) are no longer re-checked
            (`max_open_run_age`, default 7 days).
        max_open_run_checks: At most this many open-run re-checks per flow per sync; the least
            recently checked go first (`max_open_run_checks`, default 50).
        feedback_lookback: A longer tail re-read for late feedback (`feedback_lookback`, default
            3 days; None = off) ...
        feedback_interval: ... done at most once per this interval (`feedback_interval`,
            default 1 day).
    """

    initial_start: datetime | None = None
    lookback: timedelta = timedelta(hours=1)
    max_open_run_age: timedelta = timedelta(days=7)
    max_open_run_checks: int = 50
    feedback_lookback: timedelta | None = timedelta(days=3)
    feedback_interval: timedelta = timedelta(days=1)
    """With the defaults, feedback given up to 2 days after a run is stored within a day of
    being given: the daily pass re-reads 3 days (2 days of feedback delay + 1 day between
    passes), whatever the time of day the feedback came."""


@dataclass(frozen=True)
class SyncWindow:
    """One sync's frame, shared by every flow.

    Attributes:
        now: The sync's start (aware UTC), sent as `end_date` on every request: runs that start
            while a flow is paging cannot shift its pages; the next sync reads them.
        rules: The configured window rules.
        since / until: A backfill window for this sync (`--since`/`--until`); the cursor still
            never moves backwards.
        full_refresh: Flows (`ORG_ID/FLOW_ID`) whose state is ignored and rebuilt this sync.
    """

    now: datetime
    rules: WindowRules = field(default_factory=WindowRules)
    since: datetime | None = None
    until: datetime | None = None
    full_refresh: frozenset[str] = frozenset()


@dataclass
class OpenRun:
    date: datetime
    checked_at: datetime | None = None


@dataclass
class FlowState:
    """A flow's dlt resource state, typed. Stored as `to_dict()` (JSON-safe ISO-8601 strings)."""

    cursor: datetime | None = None
    open_runs: dict[str, OpenRun] = field(default_factory=dict)
    feedback_pass_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowState:
        """Read state written by `to_dict` (or an empty dict for a new flow).

        Raises:
            ValueError: a stored date-time is not ISO-8601 (a bad manual edit).
        """

        def instant(value: Any) -> datetime | None:
            return parse_api_datetime(value) if value else None

        return cls(
            cursor=instant(data.get("cursor")),
            open_runs={
                run_id: OpenRun(parse_api_datetime(v["date"]), instant(v.get("checked_at")))
                for run_id, v in (data.get("open_runs") or {}).items()
            },
            feedback_pass_at=instant(data.get("feedback_pass_at")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cursor": iso(self.cursor),
            "open_runs": {
                run_id: {"date": iso(run.date), "checked_at": iso(run.checked_at)}
                for run_id, run in sorted(self.open_runs.items())
            },
            "feedback_pass_at": iso(self.feedback_pass_at),
        }


@dataclass(frozen=True)
class FlowPlan:
    """The requests one flow's sync makes, decided before the first one.

    Attributes:
        tail: (start_date, end_date) of the main window, or None when nothing is to be read
            (a cursor in the future). start None = from the beginning of history.
        rechecks: (run_id, start_date, end_date) for each open run re-checked this sync.
        rechecks_left_out: Open runs that were due but beyond `max_open_run_checks`.
        aged_out: Open runs older than `max_open_run_age`, dropped from the state unread.
        feedback_pass: Whether the tail was widened by `feedback_lookback` this sync.
        future_cursor: The stored cursor was later than `now` (clock skew or a bad edit).
        state: The state the plan was made from (the full-refresh flows start empty).
    """

    tail: tuple[datetime | None, datetime] | None
    rechecks: tuple[tuple[str, datetime, datetime], ...] = ()
    rechecks_left_out: int = 0
    aged_out: tuple[str, ...] = ()
    feedback_pass: bool = False
    future_cursor: bool = False
    state: FlowState = field(default_factory=FlowState)


def plan_flow(state: FlowState, window: SyncWindow, flow: str) -> FlowPlan:
    """Decide what a sync of `flow` reads, from its stored state and the sync's window.

    Args:
        state: The flow's stored state (empty for a new flow).
        window: This sync's frame and rules.
        flow: `ORG_ID/FLOW_ID`, to look up `window.full_refresh`.

    Returns:
        A `FlowPlan`. Never raises.
    """
    rules = window.rules
    now = window.now
    if flow in window.full_refresh:
        state = FlowState()
    end = window.until or now

    if state.cursor is not None and state.cursor > now and window.since is None:
        return FlowPlan(tail=None, future_cursor=True, state=state)

    feedback_pass = False
    if window.since is not None:
        start: datetime | None = window.since
    elif state.cursor is None:
        start = rules.initial_start
        # reading the whole history (or from initial_start) sees every feedback so far
        feedback_pass = rules.feedback_lookback is not None
    else:
        start = state.cursor - rules.lookback
        if rules.feedback_lookback is not None and (
            state.feedback_pass_at is None
            or now - state.feedback_pass_at >= rules.feedback_interval
        ):
            start = min(start, state.cursor - rules.feedback_lookback)
            feedback_pass = True

    oldest_allowed = now - rules.max_open_run_age
    aged_out = tuple(
        sorted(run_id for run_id, run in state.open_runs.items() if run.date < oldest_allowed)
    )
    due = [
        (run_id, run)
        for run_id, run in state.open_runs.items()
        if run.date >= oldest_allowed and start is not None and run.date < start
    ]
    due.sort(key=lambda item: (item[1].checked_at or _EPOCH, item[1].date, item[0]))
    chosen = due[: rules.max_open_run_checks]
    rechecks = tuple(
        (run_id, run.date - RECHECK_MARGIN, run.date + RECHECK_MARGIN) for run_id, run in chosen
    )
    return FlowPlan(
        tail=(start, end),
        rechecks=rechecks,
        rechecks_left_out=len(due) - len(chosen),
        aged_out=aged_out,
        feedback_pass=feedback_pass,
        state=state,
    )


@dataclass
class Observations:
    """What the reads of one flow saw, gathered page by page (memory: open runs only)."""

    newest: datetime | None = None
    opened: dict[str, datetime] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    watched: frozenset[str] | None = None
    """The runs open in the stored state: only their closing matters, so only they are
    remembered as closed (None: remember every run, for tests)."""

    def see_batch(
        self,
        newest: datetime | None,
        opened: Iterable[tuple[str, datetime]],
        closed: Iterable[str],
    ) -> None:
        """What a batch of runs showed, at once (`batch.FlowBatcher` loads each run once a sync).

        Args:
            newest: The batch's newest run `date` (UTC), None for an empty batch.
            opened: `(run_id, date)` of its runs in an open state.
            closed: run_ids of its runs in any other state (only watched ones are kept).
        """
        if newest is not None and (self.newest is None or newest > self.newest):
            self.newest = newest
        for run_id, date in opened:
            self.opened[run_id] = date
            self.closed.discard(run_id)
        for run_id in closed:
            if self.watched is None or run_id in self.watched:
                self.closed.add(run_id)
            self.opened.pop(run_id, None)


def next_state(plan: FlowPlan, seen: Observations, window: SyncWindow) -> FlowState:
    """The state to commit with this sync's data, once every read of the flow succeeded.

    Returns:
        cursor = the newest `date` ever loaded (never moves backwards; a future cursor is
        pulled back to `now` so the next sync reads again), open runs updated (closed ones and
        aged-out ones removed, newly seen open ones added, re-checked ones stamped), and the
        feedback pass time.
    """
    old = plan.state
    cursor = old.cursor
    if plan.future_cursor:
        cursor = window.now
    if seen.newest is not None and (cursor is None or seen.newest > cursor):
        cursor = seen.newest
    open_runs = {
        run_id: OpenRun(run.date, run.checked_at)
        for run_id, run in old.open_runs.items()
        if run_id not in seen.closed and run_id not in plan.aged_out
    }
    for run_id, _, _ in plan.rechecks:
        if run_id in open_runs:
            open_runs[run_id].checked_at = window.now
    for run_id, date in seen.opened.items():
        if date >= window.now - window.rules.max_open_run_age:
            previous = open_runs.get(run_id)
            open_runs[run_id] = OpenRun(date, previous.checked_at if previous else None)
    return FlowState(
        cursor=cursor,
        open_runs=open_runs,
        feedback_pass_at=window.now if plan.feedback_pass else old.feedback_pass_at,
    )
