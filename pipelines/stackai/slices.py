"""One flow's big window read as time slices, concurrently.

A flow's pages can only be read one after another (page n+1 is asked once page n came back
short or full), so a window of many pages takes the API's round trip times the page count. The
`start_date`/`end_date` filters cut a window into slices whose pages can be read at the same
time. What the API does not say (API-NOTES: sort order, whether bounds are inclusive, where a
flow's history starts) is not relied on:

- consecutive slices overlap by `SLICE_OVERLAP`, so a run on a boundary is read whatever the
  bounds' inclusivity (the sync loads each run once: `batch.FlowBatcher` drops the second copy,
  and the merge on run_id would absorb it anyway);
- the oldest slice keeps the window's own start, open-ended (None) for a first sync, so every
  run of the window is in some slice whatever the probes below found;
- where the history starts is found with one or more rounds of probes, one-run requests
  `end_date=X` without `start_date`: an empty answer means no run is older than X;
- how many runs the window holds is estimated from the first page's dates only when that page
  is sorted by date (either way): otherwise the most slices are used.

The plan (pure functions here) and the reader (`read_sliced`) are separate so the plan can be
tested on its own.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

from pipelines.stackai.dates import parse_api_datetime

SLICE_OVERLAP = timedelta(seconds=1)
"""How far each slice reaches below the next one's upper bound (and a probe's bound below the
oldest run seen): bound inclusivity is undocumented, and run dates may be whole seconds."""
MIN_SLICE = timedelta(seconds=10)
"""No slice is narrower than this: below it, the overlap costs more than the slice saves."""
PAGES_PER_SLICE = 3
"""Estimated pages a slice should hold: fewer slices mean fewer short last pages (each slice
ends with one), more mean better balance when the runs are not spread evenly in time."""
SLICES_PER_REQUEST_SLOT = 1
"""At most this many slices per allowed concurrent request (`max_concurrent_requests`)."""
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
"""Probes never ask before this; older runs are still read, by the open-ended oldest slice."""
MIN_PROBE_SPAN = timedelta(minutes=1)


class SliceClient(Protocol):
    def iter_pages(
        self, flow: Any, start: datetime | None, end: datetime | None
    ) -> Iterator[list[Any]]: ...

    def probe(self, flow: Any, end: datetime) -> bool: ...


def plain(instant: datetime) -> datetime:
    """`instant` as a standard-library aware UTC datetime (pendulum's subclass does arithmetic
    with `timedelta` in its own types, which do not compare with the standard ones)."""
    utc = instant.astimezone(UTC)
    return datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=UTC)


def page_dates(records: Iterable[Any]) -> list[datetime]:
    """The `date` of each record that has a parseable one, in page order (others skipped: they
    are rejected later, with a reason, by the normaliser)."""
    dates = []
    for record in records:
        value = record.get("date") if isinstance(record, dict) else None
        try:
            dates.append(plain(parse_api_datetime(value)))
        except (ValueError, TypeError):
            continue
    return dates


def sorted_by_date(dates: Sequence[datetime]) -> bool:
    """The page is in date order, newest or oldest first (ties allowed)."""
    pairs = list(pairwise(dates))
    return all(a >= b for a, b in pairs) or all(a <= b for a, b in pairs)


def probe_points(oldest_seen: datetime, end: datetime, first: int, count: int) -> list[datetime]:
    """`end_date`s of the probes `first` .. `first + count - 1` for the start of history.

    Probe i asks for runs up to `oldest_seen - SLICE_OVERLAP - span * (2**i - 1)`, span being
    the first page's reach (`end - oldest_seen`, at least `MIN_PROBE_SPAN`): 0, 1, 3, 7 ...
    spans further back, so a history n pages long is bracketed after about log2(n) probes,
    `count` of them at a time. Points before `EARLIEST` are left out (the list may be short or
    empty).
    """
    span = max(end - oldest_seen, MIN_PROBE_SPAN)
    points = []
    for i in range(first, first + count):
        reach = (2**i - 1) * span.total_seconds()
        if reach > (oldest_seen - EARLIEST).total_seconds():
            break
        points.append(oldest_seen - SLICE_OVERLAP - timedelta(seconds=reach))
    return points


def plan_slices(
    start: datetime | None,
    end: datetime,
    floor: datetime,
    first_dates: Sequence[datetime],
    page_size: int,
    concurrency: int,
) -> list[tuple[datetime | None, datetime]]:
    """The slices `(start_date, end_date)` of the window [start, end], newest first.

    Args:
        start: The window's start (None: the beginning of history).
        end: The window's pinned end.
        floor: Where the runs start, as far as known (`start` when given; else what the probes
            found): slices are spread evenly over [floor, end].
        first_dates: The dates of the window's first page (a full page).
        page_size: Runs a page.
        concurrency: Requests allowed at once (`max_concurrent_requests`).

    Returns:
        At least 2 slices (1 when [floor, end] is narrower than two `MIN_SLICE`s), at most
        `SLICES_PER_REQUEST_SLOT * concurrency`; each slice but the oldest reaches
        `SLICE_OVERLAP` below the next one's end; the oldest starts at `start`.
    """
    extent = end - floor
    most = max(2, SLICES_PER_REQUEST_SLOT * concurrency)
    count = most
    reach = max(first_dates) - min(first_dates) if first_dates else timedelta(0)
    if first_dates and sorted_by_date(first_dates) and reach > timedelta(0):
        pages = extent / reach  # the first page holds page_size runs over `reach`
        count = math.ceil(pages / PAGES_PER_SLICE)
    count = min(max(2, min(count, most)), max(1, int(extent / MIN_SLICE)))
    width = extent / count
    slices: list[tuple[datetime | None, datetime]] = []
    for j in range(1, count + 1):
        hi = end if j == 1 else end - width * (j - 1)
        lo: datetime | None = start if j == count else end - width * j - SLICE_OVERLAP
        slices.append((lo, hi))
    return slices


def find_floor(
    probe: Callable[[datetime], bool],
    run: Callable[[Callable[[datetime], bool], list[datetime]], list[bool]],
    oldest_seen: datetime,
    end: datetime,
    per_round: int,
    first_round: int | None = None,
) -> tuple[datetime | None, int]:
    """Where a flow's history starts, by rounds of `per_round` concurrent probes.

    Args:
        probe: Whether any run is dated up to the given instant (one request).
        run: Maps `probe` over a list of instants (concurrently), answers in order.
        oldest_seen: The oldest run date of the window's first page.
        end: The window's end.
        per_round: Probes a round.
        first_round: Probes in the first round (default `per_round`): fewer when the first
            page suggests its oldest run is the history's (`first_round_size`).

    Returns:
        (a date no run is older than, or None when every probe back to `EARLIEST` found
        runs; probes made).
    """
    made = 0
    first = 0
    while True:
        count = first_round if first == 0 and first_round else per_round
        points = probe_points(oldest_seen, end, first, count)
        if not points:
            return None, made
        answers = run(probe, points)
        made += len(points)
        for point, found in zip(points, answers, strict=True):
            if not found:
                return point - SLICE_OVERLAP, made
        first += len(points)


def first_round_size(first_dates: Sequence[datetime], per_round: int) -> int:
    """How many probes to send first. A first page sorted oldest first (or in no order) likely
    holds the history's oldest run, or runs close to it: one probe just before it (or two)
    probably ends the search. A page sorted newest first says nothing of where the history
    starts, so a whole round goes out at once."""
    newest_first = all(a >= b for a, b in pairwise(first_dates))
    if newest_first:
        return per_round
    oldest_first = all(a <= b for a, b in pairwise(first_dates))
    return min(per_round, 1 if oldest_first else 2)


class SlicesStopped(Exception):
    """A slice stopped before its end because the sync was asked to stop."""


def read_sliced(
    client: SliceClient,
    flow: Any,
    slices: list[tuple[datetime | None, datetime]],
    pool: ThreadPoolExecutor,
    workers: int | Callable[[], int],
    stop: threading.Event | None = None,
    buffer: int | None = None,
) -> Iterator[Any]:
    """Yield the pages of every slice as they arrive, reading up to `workers` slices at once.

    `workers` may be a callable, asked again whenever a slice ends and whenever a page is
    taken: a share of the request slots that narrows and widens while the window is read. A
    worker over the share stops after its slice (one always goes on while slices are left);
    under it, workers are added (`pool` should have room for the widest share).

    Pages of one slice come in page order; slices interleave. A slice's error is raised here
    once the pages before it were yielded, and the other slices stop before their next
    request; so does every slice when `stop` is set (then `SlicesStopped` is raised, so a
    stopped read never looks complete). At most `buffer` pages (default: the first share) wait
    to be taken: decoded pages are the sync's largest objects, so a reader slower than the
    network holds back the slices instead of holding their pages.
    """
    share = workers if callable(workers) else (lambda: workers)
    pages: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=buffer or max(1, share()))
    cancel = threading.Event()
    todo: queue.SimpleQueue[tuple[datetime | None, datetime]] = queue.SimpleQueue()
    for piece in slices:
        todo.put(piece)
    lock = threading.Lock()
    reading = 0  # workers started and not stopped

    def put(item: tuple[str, Any]) -> bool:
        while not cancel.is_set():
            try:
                pages.put(item, timeout=0.2)  # wakes to see `cancel` when nobody takes pages
                return True
            except queue.Full:
                continue
        return False

    def over_share() -> bool:
        nonlocal reading
        with lock:
            if reading > max(1, share()):
                reading -= 1
                return True
            return False

    def worker() -> None:
        nonlocal reading
        try:
            while not cancel.is_set():
                if over_share():
                    return
                try:
                    lo, hi = todo.get_nowait()
                except queue.Empty:
                    with lock:
                        reading -= 1
                    return
                pages = client.iter_pages(flow, lo, hi)
                while True:
                    if stop is not None and stop.is_set():  # before the next request
                        put(("stopped", None))
                        return
                    page = next(pages, None)
                    if page is None:
                        break
                    if not put(("page", page)):
                        return
        except BaseException as exc:  # handed to the reader, raised there
            put(("error", exc))
        finally:
            put(("done", None))

    started = 0

    def top_up() -> None:
        nonlocal reading, started
        with lock:
            wanted = min(max(1, share()), len(slices))
            while reading < wanted and not todo.empty():
                reading += 1
                started += 1
                pool.submit(worker)

    top_up()
    finished = 0
    try:
        while finished < started:
            kind, value = pages.get()
            if kind == "page":
                yield value
            elif kind == "done":
                finished += 1
            elif kind == "error":
                raise value
            elif kind == "stopped":
                raise SlicesStopped("stopped before every time slice was read")
            top_up()
    finally:
        cancel.set()
