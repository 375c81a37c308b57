"""The simulator's state: a seeded, thread-safe world of orgs, flows and their runs, with a clock.

The HTTP app (`app.py`) reads it; tests read it as ground truth and move its clock. Everything is
behind one re-entrant lock, because uvicorn serves requests from a thread pool while a test
thread mutates the world.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import random
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import catalog, dates, runs
from .contract import (
    FINAL_STATES,
    OPEN_STATES,
    PARENT_KEYS,
    RUN_KEYS,
    RunType,
)
from .faults import Fault
from .runs import FlowInfo, FlowProfile, OrgProfile

HISTORY = timedelta(days=30)
"""Span of the generated history before the anchor."""
RECENT = timedelta(minutes=10)
"""The newest 1-3 runs of each flow start this close to the anchor, most of them still open."""
LEGACY_BEFORE = timedelta(days=21)
"""Runs older than this may lack the optional keys the API added later (see
`runs.LEGACY_MISSING_KEYS`)."""
OPEN_MAX_AGE = timedelta(minutes=5)
"""`advance` finishes open runs whose `date` is older than this at the new `now`."""
SUB_WORKFLOW_MAX_DELAY = 30.0
"""A sub-workflow run starts up to this many seconds after its parent."""

SORT_ORDERS = ("newest_first", "oldest_first", "unordered")
PARENT_STYLES = ("flat", "nested")
DEFAULT_FAULT_KINDS = ("status:429", "status:503", "slow:0.2")
"""What the seeded chaos (`World.fault_rate`) draws from unless told otherwise."""


class KeyExpiredError(Exception):
    """`World.authorize` was given `World.api_key` after `World.expire_key_after` ran out."""


@dataclass
class _Run:
    org_id: str
    flow_id: str
    instant: datetime
    """The true start time (aware UTC) that `data["date"]` denotes."""
    data: dict
    """What the API serves in the flat parent style."""
    shuffle_key: bytes = field(repr=False)
    """Position in the "unordered" sort order: stable across requests, unrelated to dates."""
    extra: dict = field(default_factory=dict)
    """Keys outside the contract (`update_run(new_fields=...)`): the API growing a field."""

    @property
    def run_id(self) -> str:
        return self.data["run_id"]


@dataclass
class _Draft:
    """A run before its dict is built: linking sub-workflows may still move its instant."""

    flow: FlowProfile
    run_id: str
    instant: datetime
    style: str
    state: str
    run_type: str
    legacy: bool
    parent: _Draft | None = None
    is_parent: bool = False


class World:
    """Seeded in-memory state of the simulated StackAI analytics API.

    Args:
        seed: same seed, anchor and sizes give byte-identical data.
        anchor: aware UTC datetime (naive is read as UTC); all history lies in the 30 days before
            it and `now` starts at it. Default: the current minute minus one hour.
        orgs: number of organisations.
        flows_per_org: flows (projects) per org; sub-workflow runs need at least 2.
        runs_per_flow: mean history size per flow; each flow gets within +-30% of it.
        sort_order: see `sort_order`.
        parent_style: see `parent_style`.
        fault_rate: see `fault_rate` (seeded chaos; 0 = off).
        fault_kinds: see `fault_kinds`.
        concurrency_limit: see `concurrency_limit` (None = no limit).
        rate_limit_retry_after: see `rate_limit_retry_after`.

    Attributes:
        api_key: a Bearer key accepted for every org (`"sk-sim-"` + 32 hex digits).
        org_api_keys: org_id -> a key accepted for that org only.
        now: the simulator clock (aware UTC); only `advance` moves it.
        before_page: if set, called as `(org_id, flow_id, query_params)` before each page of
            the flows endpoint is computed, outside the lock (it may mutate the world).
        requests: every request served, as `{"method", "path", "params", "status", "fault"}`
            dicts; `fault` is the kind of the `Fault` served (or "key_expired" for the 401 of an
            expired key, "rate_limit" for the 429 of `concurrency_limit`), else None; `status`
            is None when no response was sent (`reset`).

    Faults (see `faults.py` for what a client sees): `inject` queues faults for the next
    requests of the flows endpoint, `expire_key_after` retires `api_key`, and `fault_rate`
    turns on seeded random chaos. `concurrency_limit` makes the flows endpoint a rate-limited
    API: requests above that many in flight are answered 429; `in_flight`, `max_in_flight` and
    `rate_limited` count what it did (always counted, also without a limit).

    Flows come and go (a seeded world is the same as ever until one of these is used):
    `add_flow` creates one, `remove_flow` deletes one (optionally leaving it in the org summary,
    as when it is deleted between a client's two calls), and `advance` can do both at random
    (`new_flows_per_hour`, `removed_flows_per_hour`).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        anchor: datetime | None = None,
        orgs: int = 2,
        flows_per_org: int = 3,
        runs_per_flow: int = 400,
        sort_order: str = "newest_first",
        parent_style: str = "flat",
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS,
        concurrency_limit: int | None = None,
        rate_limit_retry_after: float | str | None = None,
    ) -> None:
        if orgs < 1 or flows_per_org < 1 or runs_per_flow < 0:
            raise ValueError("need at least one org and one flow per org, and runs_per_flow >= 0")
        self._lock = threading.RLock()
        self.seed = seed
        if anchor is None:
            anchor = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
        self.anchor = dates.as_utc(anchor)
        self.now = self.anchor
        self.sort_order = sort_order
        self.parent_style = parent_style
        self.before_page: Callable[[str, str, dict], None] | None = None
        self.page_size_cap: int | None = None
        """Stand-in for a server that silently serves at most this many runs a page (asked
        more, it serves pages of this size: page p holds runs [p * cap, (p + 1) * cap))."""
        self.page_size_limit: int | None = None
        """Stand-in for a server that refuses a larger `page_size` with FastAPI's 422."""
        self.requests: list[dict] = []
        self._faults: list[Fault] = []
        self._fault_rng = self._rng_for("faults")
        self.fault_rate = fault_rate
        self.fault_kinds = fault_kinds
        self._flight_lock = threading.Lock()
        """Guards the in-flight counters only: taken on the server's event loop for every
        flows-endpoint request, so never held while a page is computed (`_lock` may be)."""
        self._in_flight = self._max_in_flight = self._rate_limited = 0
        self.concurrency_limit = concurrency_limit
        self.rate_limit_retry_after = rate_limit_retry_after
        self._key_uses_left: int | None = None
        self._runs: dict[str, _Run] = {}
        self._flow_runs: dict[str, list[_Run]] = {}
        self._open: dict[str, _Run] = {}
        """Open runs by id, in insertion order (a dict, not a set: iteration must not depend
        on string hashing, or `advance` would differ between processes)."""
        self._rng = self._rng_for("clock")
        self._flow_rng = self._rng_for("flows")
        """Draws the flows `add_flow` makes (not the seeded ones: those come from "catalog")."""
        self._churn_rng = self._rng_for("flow-churn")
        """Draws when `advance` adds and removes flows, and which flow it removes."""

        rng = self._rng_for("catalog")
        self.api_key = f"sk-sim-{rng.getrandbits(128):032x}"
        self._orgs: dict[str, OrgProfile] = {}
        self._flows: dict[str, FlowProfile] = {}
        """Every flow ever made, removed ones included, in creation order."""
        self._removed: dict[str, bool] = {}
        """Removed flows: flow_id -> whether the org summary still lists it (`remove_flow`)."""
        self._name_start: dict[str, int] = {}
        """Per org: where in `catalog.FLOW_NAMES` its flow names start."""
        self._names_drawn: dict[str, int] = {}
        """Per org: how many names of its sequence (`_flow_name`) are used."""
        self.org_api_keys: dict[str, str] = {}
        for index in range(orgs):
            org = runs.make_org(rng, index)
            self._orgs[org.org_id] = org
            self.org_api_keys[org.org_id] = f"sk-sim-{rng.getrandbits(128):032x}"
            first = rng.randrange(len(catalog.FLOW_NAMES))
            self._name_start[org.org_id] = first
            self._names_drawn[org.org_id] = flows_per_org
            for n in range(flows_per_org):
                flow = runs.make_flow(rng, org, _flow_name(first, n))
                self._flows[flow.info.flow_id] = flow
                self._flow_runs[flow.info.flow_id] = []
        self._generate_history(runs_per_flow)

    # ----------------------------------------------------------------- settings

    @property
    def sort_order(self) -> str:
        """Order of runs in responses: "newest_first" (by date, what the real API likely does),
        "oldest_first", or "unordered" (a seeded shuffle, the same for every request)."""
        return self._sort_order

    @sort_order.setter
    def sort_order(self, value: str) -> None:
        if value not in SORT_ORDERS:
            raise ValueError(f"sort_order must be one of {SORT_ORDERS}, not {value!r}")
        self._sort_order = value

    @property
    def parent_style(self) -> str:
        """ "flat" (the contract's `parent_run_id`, `parent_project_id`, `parent_project_name`)
        or "nested" (an API variant: one `parent` object `{run_id, project_id, project_name}`)."""
        return self._parent_style

    @parent_style.setter
    def parent_style(self, value: str) -> None:
        if value not in PARENT_STYLES:
            raise ValueError(f"parent_style must be one of {PARENT_STYLES}, not {value!r}")
        self._parent_style = value

    @property
    def fault_rate(self) -> float:
        """Probability (0-1) that a flows-endpoint request without a queued fault gets one
        random fault of `fault_kinds`, drawn from the world's own seeded "faults" stream: the
        same seed and the same sequence of requests give the same faults. One draw per such
        request whenever the rate is above 0, also when a queued fault takes precedence."""
        return self._fault_rate

    @fault_rate.setter
    def fault_rate(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, not {value!r}")
        self._fault_rate = float(value)

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        """The faults the chaos draws from (uniformly), as `"kind"` or `"kind:param"` strings
        (`Fault.parse`): e.g. "status:429", "slow:0.2", "truncated"."""
        return tuple(self._chaos_specs)

    @fault_kinds.setter
    def fault_kinds(self, value: Iterable[str]) -> None:
        if isinstance(value, str):
            value = (value,)
        specs = tuple(spec.strip() for spec in value)
        if not specs:
            raise ValueError("fault_kinds needs at least one kind")
        faults = [Fault.parse(spec) for spec in specs]  # ValueError for a bad spec
        with self._lock:
            self._chaos_specs, self._chaos = specs, faults

    @property
    def concurrency_limit(self) -> int | None:
        """The most requests to the flows endpoint served at once (>= 1), or None: no limit.

        A rate-limited API: a request arriving while this many are in flight is answered
        `429 Too Many Requests` with `{"detail": "Too Many Requests"}` (and `Retry-After` when
        `rate_limit_retry_after` is set) at once, before auth and faults (as a gateway's limiter
        answers), and is not counted in flight. A request is in flight from its arrival until
        its response is sent, a `slow` fault's delay included. Logged in `requests` with fault
        "rate_limit"; counted in `rate_limited`. Changing it affects the next request."""
        return self._concurrency_limit

    @concurrency_limit.setter
    def concurrency_limit(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"concurrency_limit must be an int or None, not {value!r}")
        if value is not None and value < 1:
            raise ValueError(f"concurrency_limit must be >= 1, not {value}")
        self._concurrency_limit = value

    @property
    def rate_limit_retry_after(self) -> str | None:
        """The `Retry-After` header of `concurrency_limit`'s 429s, or None: no header. Set as
        seconds (a number, written with `:g`) or a str sent verbatim (e.g. an HTTP date)."""
        return self._rate_limit.retry_after

    @rate_limit_retry_after.setter
    def rate_limit_retry_after(self, value: float | str | None) -> None:
        self._rate_limit = Fault("status", status=429, retry_after=value)  # validates

    @property
    def in_flight(self) -> int:
        """Requests to the flows endpoint in flight now (admitted, response not yet sent)."""
        with self._flight_lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests to the flows endpoint in flight at once since the world was made
        (or `reset_concurrency_counters`)."""
        with self._flight_lock:
            return self._max_in_flight

    @property
    def rate_limited(self) -> int:
        """429s answered because of `concurrency_limit` since the world was made (or
        `reset_concurrency_counters`)."""
        with self._flight_lock:
            return self._rate_limited

    def reset_concurrency_counters(self) -> None:
        """Zero `rate_limited` and restart `max_in_flight` from the requests in flight now."""
        with self._flight_lock:
            self._rate_limited = 0
            self._max_in_flight = self._in_flight

    def begin_flows_request(self) -> Fault | None:
        """Admit a request to the flows endpoint (called by the app as it arrives).

        Returns:
            None: admitted and counted in flight (the caller must call `end_flows_request`
            once its response is sent); else the 429 `Fault` to answer with (`faults.respond`):
            `concurrency_limit` requests are already in flight. Not counted in flight.
        """
        with self._flight_lock:
            limit = self._concurrency_limit
            if limit is not None and self._in_flight >= limit:
                self._rate_limited += 1
                return self._rate_limit
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return None

    def end_flows_request(self) -> None:
        """The response of a request `begin_flows_request` admitted is sent (or abandoned)."""
        with self._flight_lock:
            self._in_flight -= 1

    @property
    def request_count(self) -> int:
        return len(self.requests)

    # ------------------------------------------------------------- ground truth

    def flows(self) -> list[FlowInfo]:
        """The flows that exist (not removed: their runs endpoint answers), orgs in creation
        order and each org's flows in creation order (added flows after the seeded ones)."""
        with self._lock:
            return [
                flow.info for flow in self._in_org_order() if flow.info.flow_id not in self._removed
            ]

    def removed_flows(self) -> list[FlowInfo]:
        """The flows `remove_flow` removed (also those the summary still lists), in the order of
        `flows()`."""
        with self._lock:
            return [
                flow.info for flow in self._in_org_order() if flow.info.flow_id in self._removed
            ]

    def listed_flows(self, org_id: str | None = None) -> list[FlowInfo]:
        """The flows the org summary lists (of one org, or of all), in its order: the existing
        flows plus those removed with `from_summary=False`."""
        with self._lock:
            return [flow.info for flow in self._listed(self._orgs if org_id is None else {org_id})]

    def org_ids(self) -> list[str]:
        return list(self._orgs)

    def runs(self, org_id: str, flow_id: str) -> list[dict]:
        """Deep copies of every run of a flow as the API serves them, in `sort_order`.

        A removed flow still answers here (ground truth: the runs it had when removed), though
        the API no longer serves them.

        Raises:
            KeyError: unknown org or flow (or the flow belongs to another org).
        """
        with self._lock:
            runs_of = self._runs_of(org_id, flow_id, removed=True)
            return [self._served(run) for run in self._sorted(runs_of)]

    def run_count(self, org_id: str, flow_id: str) -> int:
        """Number of runs of a flow (all states, no filter); removed flows too, as `runs`."""
        with self._lock:
            return len(self._runs_of(org_id, flow_id, removed=True))

    def all_runs(self) -> list[tuple[str, str, dict]]:
        """(org_id, flow_id, served run dict) for every run of the flows of `flows()` (removed
        flows' runs are not included), flow by flow in that order."""
        with self._lock:
            return [
                (info.org_id, info.flow_id, run)
                for info in self.flows()
                for run in self.runs(info.org_id, info.flow_id)
            ]

    def get_run(self, run_id: str) -> dict:
        """A deep copy of one run as served. Raises KeyError for an unknown run."""
        with self._lock:
            return self._served(self._runs[run_id])

    def run_instant(self, run_id: str) -> datetime:
        """The true start time (aware UTC) of a run, whatever way its `date` is written."""
        with self._lock:
            return self._runs[run_id].instant

    # ------------------------------------------------------------- API queries

    def authorize(self, api_key: str) -> frozenset[str] | None:
        """The org ids `api_key` may read, or None if the key is not valid.

        Each successful call counts against `expire_key_after`.

        Raises:
            KeyExpiredError: `api_key` is `self.api_key` and it has expired.
        """
        with self._lock:
            if secrets.compare_digest(api_key.encode(), self.api_key.encode()):
                if self._key_uses_left == 0:
                    raise KeyExpiredError("API key expired")
                orgs = frozenset(self._orgs)
            else:
                orgs = next(
                    (
                        frozenset({org_id})
                        for org_id, key in self.org_api_keys.items()
                        if secrets.compare_digest(api_key.encode(), key.encode())
                    ),
                    None,
                )
            if orgs is not None and self._key_uses_left:
                self._key_uses_left -= 1
            return orgs

    def has_flow(self, org_id: str, flow_id: str) -> bool:
        """Whether the runs endpoint serves this flow: it exists in this org, not removed."""
        with self._lock:
            flow = self._flows.get(flow_id)
            return flow is not None and flow.info.org_id == org_id and flow_id not in self._removed

    def query_runs(
        self,
        org_id: str,
        flow_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        user_id: str | None = None,
        states: Iterable[str] | None = None,
        page: int = 0,
        page_size: int = 25,
    ) -> list[dict]:
        """One page of `GET /analytics/org/{org_id}/flows/{flow_id}` (deep copies).

        Filters `start <= date <= end` (both inclusive, on the true instant; naive bounds are
        UTC), `user_id` equality and `state` membership; then sorts by `sort_order` and returns
        the 0-based page `[page * page_size, (page + 1) * page_size)`, empty past the end.
        """
        start = None if start is None else dates.as_utc(start)
        end = None if end is None else dates.as_utc(end)
        wanted = None if states is None else frozenset(states)
        with self._lock:
            selected = [
                run
                for run in self._runs_of(org_id, flow_id)
                if (start is None or run.instant >= start)
                and (end is None or run.instant <= end)
                and (user_id is None or run.data["user_id"] == user_id)
                and (wanted is None or run.data["state"] in wanted)
            ]
            ordered = self._sorted(selected)
            if self.page_size_cap is not None:
                page_size = min(page_size, self.page_size_cap)
            return [self._served(run) for run in ordered[page * page_size : (page + 1) * page_size]]

    def project_summaries(
        self,
        org_ids: Iterable[str],
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        page: int = 0,
        page_size: int = 25,
    ) -> list[dict]:
        """One page of `GET /organizations/analytics/projects-run-summary`.

        One `OrgProjectRunSummary` dict per flow of `listed_flows()` of the given orgs (every
        flow, also those with no run in the window; a flow removed with `from_summary=False`
        too), figures over runs with `start <= date <= end`: `total_runs`, `total_errors`
        (FAILED runs), `total_tokens`, `total_users` (distinct non-null user_id).
        """
        start = None if start is None else dates.as_utc(start)
        end = None if end is None else dates.as_utc(end)
        wanted = set(org_ids)
        with self._lock:
            rows = []
            for flow in self._listed(wanted):
                window = [
                    run.data
                    for run in self._flow_runs[flow.info.flow_id]
                    if (start is None or run.instant >= start)
                    and (end is None or run.instant <= end)
                ]
                rows.append(_summary_row(flow, window))
            return rows[page * page_size : (page + 1) * page_size]

    def record_request(
        self, method: str, path: str, params: dict, status: int | None, fault: str | None = None
    ) -> None:
        """Append to `requests` (called by the app for every response)."""
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "params": dict(params),
                    "status": status,
                    "fault": fault,
                }
            )

    # ------------------------------------------------------------------- faults

    def inject(self, kind: str, *, count: int = 1, flow_id: str | None = None, **params) -> None:
        """Queue `count` faults of `kind` for the next matching flows-endpoint requests.

        A request matches when it passed auth and names an existing flow that is `flow_id`
        (None: any flow); it takes the first matching fault in the queue (others stay queued,
        in order). Queued faults take precedence over the chaos of `fault_rate`.

        Args:
            kind: one of `faults.KINDS`: "status", "slow", "truncated", "reset", "html",
                "object", "bad_json", "wrong_content_type", "records".
            count: how many requests get it (>= 0).
            flow_id: target one flow; None: any.
            **params: the kind's parameters, as `Fault` fields: `status`, `retry_after`
                (status); `seconds` (slow); `records` (records).

        Raises:
            ValueError: unknown kind, bad value, or a parameter the kind does not take
                (TypeError for an unknown parameter name).
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, not {count}")
        fault = Fault(kind, flow_id=flow_id, **params)
        with self._lock:
            self._faults.extend([fault] * count)

    def fail_next(
        self, count: int = 1, *, status: int = 503, retry_after: float | str | None = None
    ) -> None:
        """Shorthand for `inject("status", ...)`: the next `count` flows-endpoint requests get
        `status` (e.g. 429, 503) with `{"detail": <reason phrase>}`; `retry_after` (seconds, or
        a str sent verbatim) adds a `Retry-After` header."""
        self.inject("status", count=count, status=status, retry_after=retry_after)

    def pending_faults(self) -> list[Fault]:
        """The queued faults, next first."""
        with self._lock:
            return list(self._faults)

    def clear_faults(self) -> None:
        """Drop every queued fault (the chaos of `fault_rate` is not affected)."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, flow_id: str) -> Fault | None:
        """The fault for this request of the flows endpoint for `flow_id`, or None.

        Called by the app once per authorised request of an existing flow: pops the first
        queued fault matching `flow_id`, else draws the chaos of `fault_rate`.
        """
        with self._lock:
            chaos = None
            if self._fault_rate > 0 and self._fault_rng.random() < self._fault_rate:
                chaos = self._fault_rng.choice(self._chaos)
            for index, fault in enumerate(self._faults):
                if fault.matches(flow_id):
                    return self._faults.pop(index)
            return chaos

    def expire_key_after(self, n: int | None) -> None:
        """Reject `api_key` (401 `{"detail": "API key expired"}`, for every org) once `n` more
        requests have passed auth (with any key); `n` 0: from the next request on. None lifts
        the expiry. The per-org keys never expire."""
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        with self._lock:
            self._key_uses_left = n

    # ----------------------------------------------------------------- mutators

    def add_flow(
        self,
        org_id: str,
        name: str | None = None,
        *,
        owner_email: str | None = None,
        project_type: str | None = None,
        published: bool | None = None,
        runs_per_hour: float | None = None,
    ) -> FlowInfo:
        """Create a flow (project) in an existing org, with no runs yet; returns its `FlowInfo`.

        It is drawn like the seeded flows (fresh uuid, 1-3 LLM models, an owner among the org's
        members, a `project_type`, published more often than not, 2-6 runs per hour), from the
        world's own seeded "flows" stream: the same seed and the same calls give the same flows.
        From now on the org summary lists it (after the org's earlier flows, totals 0 until it
        has runs), its runs endpoint answers (an empty list), and `advance` and `add_run` give
        it runs like any other flow.

        Args:
            org_id: an org of `org_ids()`.
            name: the project name; default: the next name of the org's sequence (as the seeded
                flows are named: "Support triage", ..., then "Support triage 2", ...), never one
                an earlier flow of the org has.
            owner_email: the owner, by email of one of the org's members; default: drawn.
            project_type: e.g. "workflow" or "agent"; default: drawn.
            published: whether it has a public UI (`is_published`, `public_ui_url`); default:
                drawn.
            runs_per_hour: its mean rate of new runs in `advance` (0: none); default: drawn.

        Raises:
            KeyError: unknown org. ValueError: a bad name, owner, project_type or rate.
        """
        with self._lock:
            org = self._orgs.get(org_id)
            if org is None:
                raise KeyError(f"no org {org_id!r}")
            if name is not None and (not isinstance(name, str) or not name.strip()):
                raise ValueError(f"a flow name must be a non-blank string, not {name!r}")
            if project_type is not None and (
                not isinstance(project_type, str) or not project_type.strip()
            ):
                raise ValueError(f"project_type must be a non-blank string, not {project_type!r}")
            if runs_per_hour is not None and not runs_per_hour >= 0:
                raise ValueError(f"runs_per_hour must be >= 0, not {runs_per_hour!r}")
            owner = None
            if owner_email is not None:
                owner = next((m for m in org.members if m.email == owner_email), None)
                if owner is None:
                    members = ", ".join(m.email for m in org.members)
                    raise ValueError(f"{owner_email!r} is not a member of org {org_id} ({members})")
            rng = self._flow_rng
            flow = runs.make_flow(rng, org, self._next_name(org_id) if name is None else name)
            public_ui_type = flow.public_ui_type
            if published is False:
                public_ui_type = None
            elif published and public_ui_type is None:
                public_ui_type = rng.choice(catalog.PUBLIC_UI_TYPES)
            flow = dataclasses.replace(
                flow,
                owner=owner or flow.owner,
                project_type=project_type or flow.project_type,
                public_ui_type=public_ui_type,
                runs_per_hour=flow.runs_per_hour if runs_per_hour is None else float(runs_per_hour),
            )
            self._flows[flow.info.flow_id] = flow
            self._flow_runs[flow.info.flow_id] = []
            return flow.info

    def remove_flow(self, flow_id: str, *, from_summary: bool = True) -> FlowInfo:
        """Delete a flow (project), as deleting it in StackAI would; returns its `FlowInfo`.

        From now on its runs endpoint answers 404 ("Flow not found"; also for a request already
        under way, e.g. the next page), `has_flow` is False, `flows()` and `all_runs()` leave it
        out, `advance` gives it no runs and its open runs stay open for ever; `add_run`,
        `update_run` and `complete_run` refuse it (KeyError). Ground truth keeps what it had:
        `runs`, `run_count`, `get_run`, `run_instant` still answer, and sub-workflow runs of
        other flows keep naming it as their parent project.

        Args:
            flow_id: a flow of `flows()` (or an already removed one, see `from_summary`).
            from_summary: True: the org summary no longer lists it. False: the summary still
                lists it (with its totals) while its runs endpoint answers 404, as when it was
                deleted between a client's reading of the summary and of its runs; a second
                call with True takes it off the summary too (a removed flow never comes back).

        Raises:
            KeyError: no such flow.
        """
        with self._lock:
            flow = self._flows.get(flow_id)
            if flow is None:
                raise KeyError(f"no flow {flow_id!r}")
            if flow_id in self._removed:
                if from_summary:
                    self._removed[flow_id] = False
                return flow.info
            self._removed[flow_id] = not from_summary
            for run in self._flow_runs[flow_id]:
                self._open.pop(run.run_id, None)
            return flow.info

    def add_run(
        self,
        org_id: str,
        flow_id: str,
        *,
        date: datetime | None = None,
        state: str = "COMPLETED",
        **fields,
    ) -> dict:
        """Add one run and return it as served.

        Args:
            org_id, flow_id: an existing flow.
            date: the run's start (naive is UTC); default `now`. Written in a random style
                that denotes it exactly.
            state: a WorkflowState value; open states have no outcome yet.
            **fields: `ProjectRunSummary` values to set after generation (not run_id/date).
                A `parent_run_id` of an existing run makes a sub-workflow run of it (run_type and
                the other parent keys default from it).
        """
        with self._lock:
            flow = self._flows[self._check_flow(org_id, flow_id)]
            instant = self.now if date is None else dates.as_utc(date)
            style = dates.pick_style(self._rng)
            if dates.snap(instant, style) != instant:
                style = dates.EXACT_STYLE
            parent_run = self._runs.get(fields.get("parent_run_id") or "")
            draft = _Draft(
                flow=flow,
                run_id=runs.new_uuid(self._rng),
                instant=instant,
                style=style,
                state=state,
                run_type=RunType.SUB_WORKFLOW.value if parent_run else self._draw_run_type(),
                legacy=False,
            )
            run = self._build(draft, parent_run)
            self._apply(run, fields)
            return self._served(run)

    def complete_run(self, run_id: str, *, state: str = "COMPLETED", **fields) -> dict:
        """Finish an open run: set a final `state` and fill in its outcome, then `fields`.

        The run's `date` does not change. Raises ValueError if the run is not open or `state`
        is not final, KeyError for an unknown run.
        """
        with self._lock:
            run = self._live_run(run_id)
            if run.data["state"] not in OPEN_STATES:
                raise ValueError(f"run {run_id} is {run.data['state']}, not open")
            if state not in FINAL_STATES:
                raise ValueError(f"{state!r} is not a final state ({sorted(FINAL_STATES)})")
            self._finish(run, state)
            self._apply(run, fields)
            return self._served(run)

    def set_feedback(self, run_id: str, feedback: str | None) -> dict:
        """Set (or clear) a run's `feedback` string; returns the run as served."""
        return self.update_run(run_id, feedback=feedback)

    def update_run(self, run_id: str, *, new_fields: dict | None = None, **fields) -> dict:
        """Overwrite `ProjectRunSummary` fields of a run verbatim (no consistency is enforced:
        use `complete_run` for a consistent completion). `run_id` and `date` cannot change.

        `new_fields` sets keys the contract does not have (the API growing a field; a value of
        None removes such a key again), served after the contract's keys.
        """
        with self._lock:
            run = self._live_run(run_id)
            self._apply(run, fields)
            for key, value in (new_fields or {}).items():
                if key in RUN_KEYS or key == "parent":
                    raise ValueError(f"{key!r} is a contract field: pass it as a keyword")
                if value is None:
                    run.extra.pop(key, None)
                else:
                    run.extra[key] = copy.deepcopy(value)
            return self._served(run)

    # -------------------------------------------------------------------- clock

    def advance(
        self,
        seconds: float,
        *,
        new_runs: bool = True,
        late_feedback: bool = False,
        new_flows_per_hour: float = 0.0,
        removed_flows_per_hour: float = 0.0,
    ) -> None:
        """Move `now` forward by `seconds`.

        With `new_runs`, each flow gets new runs at its seeded rate (2-6 per hour, Poisson
        arrivals) dated inside `(old now, new now]`, some of them open and some sub-workflows.
        Then every open run whose date is more than `OPEN_MAX_AGE` before the new `now` is
        finished (COMPLETED mostly, FAILED or CANCELLED sometimes); its `date` never changes.
        With `late_feedback`, about one run per org per hour, started within the last 7 days,
        receives feedback.

        Flow churn (off by default; drawn from the world's seeded "flow-churn" stream): each
        org gets new flows (`add_flow` with defaults) at `new_flows_per_hour` and loses a
        random flow (`remove_flow`, off the summary too) at `removed_flows_per_hour`, Poisson
        arrivals inside the interval; an org never loses its last flow. A flow added at time t
        gets runs dated after t only, a flow removed at t none after t.
        """
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        if not (new_flows_per_hour >= 0 and removed_flows_per_hour >= 0):
            raise ValueError("flow churn rates must be >= 0")
        with self._lock:
            start, end = self.now, self.now + timedelta(seconds=seconds)
            segment_start = start
            for when, action in self._churn(start, end, new_flows_per_hour, removed_flows_per_hour):
                if new_runs:
                    self._spawn(segment_start, when)
                action()
                segment_start = when
            if new_runs:
                self._spawn(segment_start, end)
            cutoff = end - OPEN_MAX_AGE
            for run in sorted(self._open.values(), key=_chronological):
                if run.instant < cutoff:
                    self._finish(run, runs.weighted(self._rng, runs.FINAL_STATE_WEIGHTS))
            if late_feedback:
                self._late_feedback(start, end)
            self.now = end

    # ---------------------------------------------------------------- internals

    def _rng_for(self, purpose: str) -> random.Random:
        # One stream per purpose, so that e.g. more runs per flow do not change the ids.
        return random.Random(f"stackai-sim:{self.seed}:{purpose}")

    def _check_flow(self, org_id: str, flow_id: str, *, removed: bool = False) -> str:
        """`flow_id` if it is a flow of `org_id` (with `removed`, a removed one too)."""
        flow = self._flows.get(flow_id)
        if flow is None or flow.info.org_id != org_id:
            raise KeyError(f"no flow {flow_id!r} in org {org_id!r}")
        if flow_id in self._removed and not removed:
            raise KeyError(f"flow {flow_id!r} of org {org_id!r} was removed")
        return flow_id

    def _runs_of(self, org_id: str, flow_id: str, *, removed: bool = False) -> list[_Run]:
        return self._flow_runs[self._check_flow(org_id, flow_id, removed=removed)]

    def _live_run(self, run_id: str) -> _Run:
        """The run `run_id`; KeyError if there is none or its flow was removed."""
        run = self._runs[run_id]
        if run.flow_id in self._removed:
            raise KeyError(f"run {run_id!r} belongs to the removed flow {run.flow_id!r}")
        return run

    def _in_org_order(self) -> list[FlowProfile]:
        """Every flow (removed ones too), orgs in creation order, then flows in creation order."""
        rank = {org_id: index for index, org_id in enumerate(self._orgs)}
        return sorted(self._flows.values(), key=lambda flow: rank[flow.info.org_id])

    def _listed(self, org_ids: Iterable[str]) -> list[FlowProfile]:
        """The flows of `org_ids` the summary lists (see `listed_flows`)."""
        wanted = set(org_ids)
        return [
            flow
            for flow in self._in_org_order()
            if flow.info.org_id in wanted and self._removed.get(flow.info.flow_id, True)
        ]

    def _next_name(self, org_id: str) -> str:
        """The next name of the org's sequence that none of its flows has."""
        taken = {flow.info.name for flow in self._flows.values() if flow.info.org_id == org_id}
        while True:
            name = _flow_name(self._name_start[org_id], self._names_drawn[org_id])
            self._names_drawn[org_id] += 1
            if name not in taken:
                return name

    def _churn(
        self, start: datetime, end: datetime, new_per_hour: float, removed_per_hour: float
    ) -> list[tuple[datetime, Callable[[], object]]]:
        """(when, action) of the flow churn of `advance` in `(start, end]`, in time order."""
        if not (new_per_hour or removed_per_hour):
            return []
        rng = self._churn_rng
        events = []
        for rank, org_id in enumerate(self._orgs):
            for when in _arrivals(rng, new_per_hour, start, end):
                events.append((when, rank, 0, org_id))
            for when in _arrivals(rng, removed_per_hour, start, end):
                events.append((when, rank, 1, org_id))
        events.sort()

        def add(org_id: str) -> Callable[[], object]:
            return lambda: self.add_flow(org_id)

        def remove(org_id: str) -> Callable[[], object]:
            def action() -> None:
                flows = self._org_flows(org_id)
                if len(flows) > 1:
                    self.remove_flow(rng.choice(flows).info.flow_id)

            return action

        return [(when, (remove if kind else add)(org_id)) for when, _, kind, org_id in events]

    def _sorted(self, selected: list[_Run]) -> list[_Run]:
        if self._sort_order == "newest_first":
            return sorted(selected, key=_chronological, reverse=True)
        if self._sort_order == "oldest_first":
            return sorted(selected, key=_chronological)
        return sorted(selected, key=lambda run: run.shuffle_key)

    def _served(self, run: _Run) -> dict:
        served = copy.deepcopy(run.data) | copy.deepcopy(run.extra)
        if self._parent_style == "nested" and any(key in served for key in PARENT_KEYS):
            parent_id = served.pop("parent_run_id", None)
            project_id = served.pop("parent_project_id", None)
            project_name = served.pop("parent_project_name", None)
            served["parent"] = (
                None
                if parent_id is None
                else {"run_id": parent_id, "project_id": project_id, "project_name": project_name}
            )
        return served

    def _draw_run_type(self, rng: random.Random | None = None) -> str:
        return runs.weighted(rng or self._rng, runs.RUN_TYPE_WEIGHTS)

    def _draft(
        self,
        rng: random.Random,
        flow: FlowProfile,
        instant: datetime,
        state: str,
        *,
        legacy: bool = False,
        not_before: datetime | None = None,
    ) -> _Draft:
        instant, style = dates.place(instant, dates.pick_style(rng), not_before)
        return _Draft(
            flow=flow,
            run_id=runs.new_uuid(rng),
            instant=instant,
            style=style,
            state=state,
            run_type=self._draw_run_type(rng),
            legacy=legacy,
        )

    def _generate_history(self, runs_per_flow: int) -> None:
        rng = self._rng_for("history")
        for org_id in self._orgs:
            drafts: dict[str, list[_Draft]] = {}
            for flow in self._org_flows(org_id):
                count = round(runs_per_flow * rng.uniform(0.7, 1.3))
                recent = min(count, rng.randint(1, 3))
                flow_drafts = []
                for _ in range(count - recent):
                    instant = _history_instant(rng, self.anchor)
                    stuck_open = rng.random() < 0.005
                    weights = runs.OPEN_STATE_WEIGHTS if stuck_open else runs.FINAL_STATE_WEIGHTS
                    legacy = instant < self.anchor - LEGACY_BEFORE and rng.random() < 0.25
                    state = runs.weighted(rng, weights)
                    flow_drafts.append(self._draft(rng, flow, instant, state, legacy=legacy))
                for _ in range(recent):
                    instant = self.anchor - RECENT * rng.random()
                    open_now = rng.random() < 0.6
                    weights = runs.OPEN_STATE_WEIGHTS if open_now else runs.FINAL_STATE_WEIGHTS
                    state = runs.weighted(rng, weights)
                    flow_drafts.append(self._draft(rng, flow, instant, state))
                drafts[flow.info.flow_id] = flow_drafts
            self._link_sub_workflows(rng, drafts, share=0.08, latest=self.anchor)
            self._materialise(rng, drafts)

    def _spawn(self, start: datetime, end: datetime) -> None:
        """New runs dated in `(start, end]` for every flow (see `advance`)."""
        rng = self._rng
        for org_id in self._orgs:
            drafts = {
                flow.info.flow_id: [
                    self._draft(
                        rng,
                        flow,
                        instant,
                        runs.weighted(rng, runs.OPEN_STATE_WEIGHTS)
                        if rng.random() < 0.3
                        else runs.weighted(rng, runs.FINAL_STATE_WEIGHTS),
                        not_before=start,
                    )
                    for instant in _arrivals(rng, flow.runs_per_hour, start, end)
                ]
                for flow in self._org_flows(org_id)
            }
            self._link_sub_workflows(rng, drafts, share=0.1, latest=end)
            self._materialise(rng, drafts)

    def _link_sub_workflows(
        self,
        rng: random.Random,
        drafts: dict[str, list[_Draft]],
        *,
        share: float,
        latest: datetime,
    ) -> None:
        """Turn about `share` of the drafts into sub-workflow runs of a draft in another flow of
        the same org, starting up to `SUB_WORKFLOW_MAX_DELAY` s after it and before `latest`.

        A parent is never itself a sub-workflow run (so parents can be built first).
        """
        limit = latest - timedelta(seconds=SUB_WORKFLOW_MAX_DELAY)
        candidates = {
            flow_id: [d for d in flow_drafts if not d.legacy and d.instant < limit]
            for flow_id, flow_drafts in drafts.items()
        }
        for flow_id, flow_drafts in drafts.items():
            others = [other for other in drafts if other != flow_id and candidates[other]]
            if not others:
                continue
            for draft in flow_drafts:
                if draft.legacy or draft.is_parent or rng.random() >= share:
                    continue
                parent = rng.choice(candidates[rng.choice(others)])
                if parent.parent is not None:
                    continue
                parent.is_parent = True
                draft.parent = parent
                draft.run_type = RunType.SUB_WORKFLOW.value
                delay = timedelta(seconds=rng.uniform(0.2, SUB_WORKFLOW_MAX_DELAY))
                draft.instant, draft.style = dates.place(
                    parent.instant + delay, draft.style, not_before=parent.instant
                )

    def _materialise(self, rng: random.Random, drafts: dict[str, list[_Draft]]) -> None:
        """Build and register drafts, parents before their sub-workflow children."""
        everything = [draft for flow_drafts in drafts.values() for draft in flow_drafts]
        for draft in sorted(everything, key=lambda d: d.parent is not None):
            parent = self._runs[draft.parent.run_id] if draft.parent else None
            self._build(draft, parent, rng)

    def _build(self, draft: _Draft, parent: _Run | None, rng: random.Random | None = None) -> _Run:
        rng = rng or self._rng
        org = self._orgs[draft.flow.info.org_id]
        data = runs.build_run(
            rng,
            org,
            draft.flow,
            run_id=draft.run_id,
            date=dates.format_date(draft.instant, draft.style),
            state=draft.state,
            run_type=draft.run_type,
            legacy=draft.legacy,
            parent=(self._flows[parent.flow_id].info, parent.data) if parent else None,
        )
        run = _Run(
            org_id=org.org_id,
            flow_id=draft.flow.info.flow_id,
            instant=draft.instant,
            data=data,
            shuffle_key=hashlib.sha256(f"{self.seed}:{draft.run_id}".encode()).digest(),
        )
        self._runs[run.run_id] = run
        self._flow_runs[run.flow_id].append(run)
        if data["state"] in OPEN_STATES:
            self._open[run.run_id] = run
        return run

    def _finish(self, run: _Run, state: str) -> None:
        runs.settle(self._rng, run.data, self._flows[run.flow_id], state)
        self._open.pop(run.run_id, None)

    def _apply(self, run: _Run, fields: dict) -> None:
        unknown = set(fields) - set(RUN_KEYS)
        if unknown:
            raise ValueError(f"not ProjectRunSummary fields: {sorted(unknown)}")
        if {"run_id", "date"} & set(fields):
            raise ValueError("run_id and date never change")
        if not fields:
            return
        parent = self._runs.get(fields.get("parent_run_id") or "")
        if parent is not None:
            info = self._flows[parent.flow_id].info
            fields = {"parent_project_id": info.flow_id, "parent_project_name": info.name} | fields
        merged = run.data | copy.deepcopy(fields)
        run.data = {key: merged[key] for key in RUN_KEYS if key in merged}
        if run.data["state"] in OPEN_STATES:
            self._open[run.run_id] = run
        else:
            self._open.pop(run.run_id, None)

    def _org_flows(self, org_id: str) -> list[FlowProfile]:
        """The org's existing (not removed) flows, in creation order."""
        return [
            flow
            for flow in self._flows.values()
            if flow.info.org_id == org_id and flow.info.flow_id not in self._removed
        ]

    def _late_feedback(self, start: datetime, end: datetime) -> None:
        for org_id in self._orgs:
            for _ in _arrivals(self._rng, 1.0, start, end):
                eligible = [
                    run
                    for flow in self._org_flows(org_id)
                    for run in self._flow_runs[flow.info.flow_id]
                    if run.instant >= end - timedelta(days=7)
                    and run.data["state"] in FINAL_STATES
                    and run.data["feedback"] is None
                ]
                if eligible:
                    self._rng.choice(eligible).data["feedback"] = runs.late_feedback(self._rng)


def _flow_name(first: int, n: int) -> str:
    """The `n`-th (0-based) flow name of an org whose names start at `catalog.FLOW_NAMES[first]`:
    the catalog in a cycle, numbered from the second round on ("Support triage 2")."""
    name = catalog.FLOW_NAMES[(first + n) % len(catalog.FLOW_NAMES)]
    if n >= len(catalog.FLOW_NAMES):
        name = f"{name} {n // len(catalog.FLOW_NAMES) + 1}"
    return name


def _chronological(run: _Run) -> tuple[datetime, str]:
    # run_id breaks ties so runs with the same date still have one order across pages.
    return run.instant, run.run_id


def _history_instant(rng: random.Random, anchor: datetime) -> datetime:
    """A start time in the 30 days before `anchor`, three times denser in UTC working hours."""
    while True:
        instant = anchor - HISTORY * rng.random()
        if 8 <= instant.hour < 18 or rng.random() < 1 / 3:
            return instant


def _arrivals(
    rng: random.Random, per_hour: float, start: datetime, end: datetime
) -> list[datetime]:
    """Poisson arrival times in `(start, end]` at `per_hour` on average (none at 0)."""
    if per_hour <= 0:
        return []
    times, t = [], start
    while True:
        t += timedelta(seconds=rng.expovariate(per_hour / 3600.0))
        if t > end:
            return times
        times.append(t)


def _summary_row(flow: FlowProfile, window: list[dict]) -> dict:
    """An `OrgProjectRunSummary` dict (contract: `components.schemas.OrgProjectRunSummary`)."""
    info, owner = flow.info, flow.owner
    avatar = hashlib.sha256(owner.email.strip().lower().encode()).hexdigest()
    published = flow.public_ui_type is not None
    return {
        "project_id": info.flow_id,
        "project_owner": {
            "user_id": owner.user_id,
            "email": owner.email,
            "avatar_url": f"https://www.gravatar.com/avatar/{avatar}?d=identicon",
        },
        "project_type": flow.project_type,
        "project_name": info.name,
        "total_runs": len(window),
        "total_errors": sum(run["state"] == "FAILED" for run in window),
        # a test may have set a run's tokens to a bad value: the summary counts numbers only
        "total_tokens": sum(
            run["total_tokens"] for run in window if isinstance(run["total_tokens"], int)
        ),
        "total_users": len({run["user_id"] for run in window} - {None}),
        "is_published": published,
        "public_ui_url": (
            f"https://www.stack-ai.com/{flow.public_ui_type}/{info.org_id}/{info.flow_id}"
            if published
            else None
        ),
        "public_ui_type": flow.public_ui_type,
    }
