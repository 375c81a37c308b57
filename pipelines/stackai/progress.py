"""What a sync did, flow by flow: filled in by the source while it pages, read by the CLI."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.stackai.limit import LimitFigures


@dataclass
class FlowReport:
    """One flow's sync.

    `cursor_before`/`cursor_after` are ISO-8601 UTC strings (or None): the newest run `date`
    committed before this sync, and the one this sync commits when its data loads.
    """

    flow: str
    name: str | None = None  # the flow's name in the org summary
    status: str = "pending"  # pending -> running -> ok | skipped | failed
    pages: int = 0
    runs: int = 0
    new_runs: int = 0  # runs dated after the cursor: started since the previous sync
    rejected: int = 0
    window_start: str | None = None
    window_end: str | None = None
    cursor_before: str | None = None
    cursor_after: str | None = None
    rechecks: int = 0
    open_runs: int = 0
    slices: int = 0  # time slices the window was read as (0: page after page)
    probes: int = 0  # one-run requests that looked for the start of the history
    requests: int = 0
    retries: int = 0
    notes: list[str] = field(default_factory=list)
    unknown_values: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    started: float | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Synced, or skipped on purpose (a discovered flow deleted since it was listed)."""
        return self.status in ("ok", "skipped")

    def count_unknown(self, field: str, value: str, count: int = 1) -> None:
        """Count a value of an enum field that the contract does not list (`field=value`)."""
        key = f"{field}={value}"
        self.unknown_values[key] = self.unknown_values.get(key, 0) + count


ProgressCallback = Callable[[FlowReport], None]


@dataclass
class SyncReport:
    """All flows of one sync, plus what went wrong outside any one flow (e.g. the load)."""

    flows: dict[str, FlowReport] = field(default_factory=dict)
    error: str | None = None
    flows_discovered: int | None = None
    """Flows the org summary listed for `orgs` (None: no org asked for)."""
    flows_new: list[str] = field(default_factory=list)
    """Flows listed by the summary for the first time."""
    flows_unlisted: list[str] = field(default_factory=list)
    """Flows the summary listed before and no longer lists (not read; their runs are kept)."""
    seconds: float = 0.0
    destination: str | None = None
    """Where the sync loaded: the DuckDB file, or `postgres at host:port/database`."""
    calls_priced: int = 0
    """LLM calls priced (or priced again) by this sync (`pipelines.load.costs`)."""
    calls_unpriced: int = 0
    """Of those, calls with no known price (NULL cost), by `PROVIDER/MODEL_ID` below."""
    unpriced_models: dict[str, int] = field(default_factory=dict)
    nul_replaced_runs: set[str] = field(default_factory=set)
    """run_ids where a NUL was replaced by U+FFFD for the destination (PostgreSQL)."""
    concurrency: LimitFigures | None = None
    """What the request limit did (adaptive concurrency), once the sync is over."""
    on_progress: ProgressCallback | None = None
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set to stop every flow before its next request (an interrupt): a stopped flow fails,
    its cursor unmoved; what was read still loads."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def flow(self, name: str) -> FlowReport:
        with self._lock:
            return self.flows.setdefault(name, FlowReport(flow=name))

    def count_priced(self, priced: int, unpriced: int, models: dict[str, int]) -> None:
        """LLM calls priced (`unpriced` of them with no known price, by PROVIDER/MODEL_ID)."""
        with self._lock:
            self.calls_priced += priced
            self.calls_unpriced += unpriced
            for model, count in models.items():
                self.unpriced_models[model] = self.unpriced_models.get(model, 0) + count

    def count_nul(self, run_ids: list[str]) -> None:
        """Runs (by run_id) whose text had NUL replaced for the destination."""
        with self._lock:
            self.nul_replaced_runs.update(run_ids)

    @property
    def nul_replaced(self) -> int:
        """Runs whose text had NUL replaced by U+FFFD (PostgreSQL only)."""
        return len(self.nul_replaced_runs)

    def start(self, report: FlowReport) -> None:
        report.status = "running"
        report.started = time.monotonic()
        self.progress(report)

    def page(self, report: FlowReport) -> None:
        """A page was received (its runs count once their batch is typed, `loaded`)."""
        report.pages += 1
        self.progress(report)

    def loaded(self, report: FlowReport, runs: int, rejected: int) -> None:
        """A batch became `runs` rows (each run once a sync) and `rejected` rejects."""
        report.runs += runs
        report.rejected += rejected
        self.progress(report)

    def finish(self, report: FlowReport, error: str | None = None, skipped: bool = False) -> None:
        report.status = "failed" if error else "skipped" if skipped else "ok"
        report.error = error
        if report.started is not None:
            report.seconds = time.monotonic() - report.started
        self.progress(report)

    def progress(self, report: FlowReport) -> None:
        if self.on_progress is not None:
            self.on_progress(report)

    def fail_all(self, error: str) -> None:
        """The sync failed as a whole (load, destination): no flow's state was committed."""
        self.error = error
        for report in self.flows.values():
            if report.status != "failed":
                report.status = "failed"
                report.error = "not committed (see the sync's error)"
                report.cursor_after = report.cursor_before

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.flows.values())

    @property
    def reading(self) -> bool:
        """Some flow has not finished reading yet (the extract is still under way)."""
        return any(r.status in ("pending", "running") for r in self.flows.values())

    @property
    def failed(self) -> list[FlowReport]:
        return [r for r in self.flows.values() if not r.ok]

    @property
    def rejected(self) -> int:
        return sum(r.rejected for r in self.flows.values())

    @property
    def unknown_values(self) -> dict[str, int]:
        """Unknown enum values over all flows, `field=value` -> count."""
        total: dict[str, int] = {}
        for report in self.flows.values():
            for key, count in report.unknown_values.items():
                total[key] = total.get(key, 0) + count
        return total
