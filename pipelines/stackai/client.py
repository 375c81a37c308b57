"""Pages of runs from the "List Flow Runs" endpoint, over the shared session of `http.py`.

Built from dlt's `RESTClient.paginate` and `PageNumberPaginator`. What is ours: the end-of-data
rule (a short page), a strict check that a page is a JSON array, guards against a server that
ignores `page`, and errors that name the flow.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from dlt.sources.helpers.rest_client import RESTClient
from dlt.sources.helpers.rest_client.auth import BearerTokenAuth
from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator
from dlt.sources.helpers.rest_client.redaction import sanitize_url

from pipelines.stackai import endpoint, slices
from pipelines.stackai.dates import format_api_datetime
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.http import RetryableError

log = logging.getLogger(__name__)


class StackAIError(Exception):
    """A flow could not be read. The message names the flow and never holds the API key."""


class ApiKeyRejected(StackAIError):
    """HTTP 401/403: the key is missing, wrong, expired, or not allowed for this org."""


class FlowNotFound(StackAIError):
    """HTTP 404: the org or flow does not exist (or the key cannot see it)."""


class BadPage(StackAIError, RetryableError):
    """A 2xx response whose body is not the JSON array the contract promises (an HTML error
    page from a proxy, an object, cut or invalid JSON): retried like a 5xx, then fatal."""


class ApiResponseError(StackAIError):
    """Any other HTTP error status, after retries (422 carries the server's `detail`)."""


class FlowInterrupted(StackAIError):
    """The sync was asked to stop (a signal) while this flow was reading: it stopped before its
    next request, and its state did not move."""


class PageSizeRefused(StackAIError):
    """A 422 that names the largest `page_size` the server takes (`limit`)."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


_LE = re.compile(r"less than or equal to (\d+)")


def _page_size_limit(response: requests.Response) -> int | None:
    """The maximum a 422 names for `page_size` (FastAPI: `"loc": ["query", "page_size"]`,
    "Input should be less than or equal to 50", `"ctx": {"le": 50}`), or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    items = body.get("detail") if isinstance(body, dict) else None
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict) or endpoint.PAGE_SIZE_PARAM not in item.get("loc", []):
            continue
        limit = (item.get("ctx") or {}).get("le") if isinstance(item.get("ctx"), dict) else None
        found = _LE.search(str(item.get("msg", "")))
        value = limit if isinstance(limit, int) else int(found.group(1)) if found else None
        if value is not None and value >= 1:
            return value
    return None


@dataclass
class SliceTally:
    """Time slices and probe requests a window's read made (`RunsClient.iter_window`)."""

    slices: int = 0
    probes: int = 0


class PagingError(StackAIError):
    """The server answered `page` requests in a way that would page forever (not retried)."""


MAX_PAGES = 100_000
"""Pages read in one window (one `iter_pages` call) before the flow fails with `PagingError`.

The API has no total, so no bound follows from the data: this one only has to be far above any
real window and still finite. At the default `page_size` (100) it is 10 million runs, more than a
flow's whole history, which a first sync reads as one window. A server that ignores `page` and
answers the same page every time is caught at the second request (`ShortPagePaginator`); one
that changes its answer every time is caught by this bound: after hours of requests, not never.
"""


class ShortPagePaginator(PageNumberPaginator):
    """0-based `page` numbers; stops after an empty page or one shorter than `page_size`.

    The endpoint returns a bare array with no total (`responses.200` of the contract), so a short
    page is the only sign of the end that costs no extra request: dlt's `_stop_after_this_page`
    hook says so, and dlt's `update_state` does the rest.

    A server that ignores `page` would answer every request with a full page and never end. Two
    guards, each for what the other cannot see, and both fail (`PagingError`, naming `subject`)
    rather than stop: a silent stop would look like a complete read and move the cursor past
    runs never read.

    - A full page whose body is the one before it, byte for byte: the common case (the first
      page, again and again), caught at the second request instead of after a bound's worth of
      duplicate rows sent to the destination. A real server cannot produce it: run ids are
      unique, and the window's `end_date` is pinned, so new runs cannot shift one page onto the
      next.
    - `max_pages` full pages (dlt's `maximum_page`, which on its own would stop quietly): for a
      server that ignores `page` but whose answer changes between requests (a run still
      running, live totals in the org summary, a page that cycles), which no comparison of
      bodies can tell from real data. `MAX_PAGES` says why its default is what it is.
    """

    def __init__(
        self,
        page_size: int,
        subject: str = "the runs",
        max_pages: int = MAX_PAGES,
        first: int = endpoint.FIRST_PAGE,
    ):
        if max_pages < 1:
            raise ValueError(f"max_pages must be >= 1, got {max_pages}")
        super().__init__(
            base_page=endpoint.FIRST_PAGE,
            page=first,
            page_param=endpoint.PAGE_PARAM,
            total_path=None,
            maximum_page=first + max_pages,
            stop_after_empty_page=True,
        )
        self.page_size = page_size
        self.subject = subject
        self.max_pages = max_pages
        self._previous: bytes | None = None

    def _stop_after_this_page(self, data: list[Any] | None = None) -> bool:
        return not data or len(data) < self.page_size

    def update_state(self, response: requests.Response, data: list[Any] | None = None) -> None:
        full = not self._stop_after_this_page(data)
        if full:
            if response.content == self._previous:
                raise PagingError(
                    f"{self.subject}: page {self.current_value} of {sanitize_url(response.url)}"
                    " repeats the page before it: the server seems to ignore the `page`"
                    " parameter; stopped"
                )
            self._previous = response.content
        super().update_state(response, data)
        if full and not self.has_next_page:  # dlt stopped at `maximum_page`, not at the end
            raise PagingError(
                f"{self.subject}: {self.max_pages} full pages of {self.page_size} in one window"
                f" and still no short page at {sanitize_url(response.url)}: the server seems to"
                " ignore the `page` parameter (or the window holds more runs than max_pages"
                " allows); stopped"
            )


def _detail(response: requests.Response) -> str:
    """The server's explanation, short: FastAPI's `detail` (string or 422 list) or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts) or str(detail)[:200]
    if detail is not None:
        return str(detail)[:200]
    return str(body)[:200]


class Page(list):  # type: ignore[type-arg]
    """One page of runs: the decoded JSON array (this list) and the bytes it was decoded from.

    `body` lets the batch path (`batch.py`) hand plain pages to DuckDB as they were received
    instead of re-encoding them; None when the page was not read from a response.
    """

    def __init__(self, records: list[Any], body: bytes | None = None) -> None:
        super().__init__(records)
        self.body = body


def _page_of(response: requests.Response) -> Page:
    """The JSON array of a 2xx response, or BadPage naming the URL, status and content type."""
    content_type = response.headers.get("Content-Type", "")
    where = f"{sanitize_url(response.url)} (HTTP {response.status_code}, {content_type!r})"
    if "json" not in content_type.lower():
        raise BadPage(f"response is not JSON (content type): {where}")
    try:
        # orjson (a dlt dependency) decodes a page about 4x faster than requests' json.
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise BadPage(f"response is not valid JSON: {where}") from None
    if not isinstance(body, list):
        raise BadPage(f"response is a JSON {type(body).__name__}, not an array: {where}")
    return Page(body, response.content)


def _refused_for(flow: FlowRef) -> Callable[[int, str, str], StackAIError]:
    """The error for a 401/403/404 answer to a request for `flow`'s runs."""

    def refused(status: int, where: str, detail: str) -> StackAIError:
        if status == 404:
            return FlowNotFound(f"flow not found: {flow} (HTTP 404 from {where}): {detail}")
        return ApiKeyRejected(
            f"API key rejected (HTTP {status}) for org {flow.org_id} flow {flow.flow_id}: {detail}"
        )

    return refused


class _RunsRESTClient(RESTClient):
    def extract_response(self, response: requests.Response, data_selector: Any) -> list[Any]:
        # Checked and decoded once, by the response hook inside the retried send.
        return response.page  # type: ignore[attr-defined,no-any-return]


class RunsClient:
    """Reads the runs of flows, page by page, over one shared session.

    Args:
        base_url: API root, e.g. `https://api.stack-ai.com` (no trailing path).
        api_key: Bearer token; sent only in the `Authorization` header, never logged.
        session: From `make_session`; shared so connections are kept alive across flows.
        page_size: `page_size` query parameter (>= 1, contract `minimum: 1`).
        max_pages: Full pages read in one window before `PagingError` (see `MAX_PAGES`).
        concurrency: Requests a flow's window may have in flight at once when it is read as
            time slices (`iter_window`); the session's limit still caps all flows together.
        time_slices: Read a window of more than a page as concurrent time slices
            (`[sources.stackai] time_slices`); False reads every window page after page.
        current_limit: The session's request limit now (`limit.AdaptiveLimit.limit`), when it
            adapts: a throttled API gets fewer slices, not only fewer requests at once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        session: requests.Session,
        page_size: int,
        max_pages: int = MAX_PAGES,
        concurrency: int = 8,
        time_slices: bool = True,
        current_limit: Callable[[], int] | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.page_size = page_size
        self.max_pages = max_pages
        self.concurrency = max(1, concurrency)
        self.time_slices = time_slices
        self.current_limit = current_limit
        self._wide = 0  # windows of more than a page being read now, over all flows
        self._wide_lock = threading.Lock()
        self.page_size_cap: int | None = None
        """The most runs the server serves a page, once learned (it served fewer than asked and
        there was more, or a 422 named it); every page is asked at most this size then."""
        self.verified_page_size = 0
        """What the server is known to serve a page at least (a full page of this size, or a
        short page confirmed as the end): a page shorter than this is the end of the data, with
        no confirming request."""
        self._rest = _RunsRESTClient(
            base_url=base_url.rstrip("/"),
            auth=BearerTokenAuth(token=api_key),
            session=session,
            data_selector="$",
        )

    def iter_pages(
        self,
        flow: FlowRef,
        start: datetime | None,
        end: datetime | None,
        page_size: int | None = None,
    ) -> Iterator[Page]:
        """Yield each page (the decoded JSON array) of a flow's runs dated in [start, end].

        Args:
            flow: The org/flow to read.
            start: `start_date` (aware; sent as UTC with offset), or None for the whole history.
            end: `end_date`, the pinned end of the window, or None for open-ended.
            page_size: Runs per page; default the client's.

        Yields:
            `Page`s: lists of raw run objects, as received, with the response body; possibly
            empty (the last page).

        Raises:
            ApiKeyRejected: 401/403. FlowNotFound: 404. ApiResponseError: other 4xx/5xx after
            dlt's retries. BadPage: a 2xx body that is not a JSON array. PagingError: the
            server seems to ignore `page` (see `ShortPagePaginator`).
            requests.RequestException: connection errors and timeouts after retries.

        A server may serve fewer runs a page than asked (the contract gives `page_size` no
        maximum), and a short page is the only sign of the end. So while the server's page size
        is not known (`verified_page_size`, `page_size_cap`), a window whose first page is short
        but not empty is confirmed with one more request: if that page has runs too, the server
        caps its pages; the cap is learned (`page_size_cap`) and the window is read on with it.
        A 422 naming a maximum `page_size` is learned the same way.
        """
        page_size = page_size or self.page_size
        params: dict[str, Any] = {endpoint.PAGE_SIZE_PARAM: page_size}
        if start is not None:
            params[endpoint.START_DATE_PARAM] = format_api_datetime(start)
        if end is not None:
            params[endpoint.END_DATE_PARAM] = format_api_datetime(end)
        refused = _refused_for(flow)

        subject = f"flow {flow}"
        size = min(page_size, self.page_size_cap or page_size)
        try:
            pages, short_first = yield from self._read(flow.path, params, size, subject, refused)
        except PageSizeRefused as exc:
            if exc.limit >= size:
                raise
            self.learn_cap(exc.limit, page_size)
            size = exc.limit
            pages, short_first = yield from self._read(flow.path, params, size, subject, refused)
        if pages != 1 or short_first is None:
            return
        cap = self.page_size_cap
        if cap is not None and cap < size and short_first >= cap:
            # another flow learned the cap while this one read its first page: that page was
            # full at the cap, so read on with it
            yield from self._read(flow.path, params, cap, subject, refused, first=1)
            return
        if cap is not None or short_first < self.verified_page_size:
            return
        # One short page and the server not known to serve that many: the end of the data, or
        # a server that serves fewer runs than asked? One more request tells.
        more = yield from self._read(flow.path, params, size, subject, refused, first=1, one=True)
        if more[0] and more[1] != 0:
            self.learn_cap(short_first, page_size)
            yield from self._read(flow.path, params, short_first, subject, refused, first=1)
        else:  # the end: the server serves at least that many a page
            self.verified_page_size = max(self.verified_page_size, short_first)

    def iter_window(
        self,
        flow: FlowRef,
        start: datetime | None,
        end: datetime,
        stop: threading.Event | None = None,
        tally: SliceTally | None = None,
    ) -> Iterator[Page]:
        """Yield the pages of a flow's runs dated in [start, end], as time slices when many.

        The window's first page is read as `iter_pages` reads it. When it comes back full (more
        runs than a page) and `time_slices` is on, the rest is read as concurrent time slices
        (`slices.py`): probes find where the history starts (only when `start` is None), the
        window is cut into slices, and up to its share of `concurrency` slices are paged at
        once (with n wide windows being read, concurrency / n, asked again as slices end: it
        widens as the other windows finish; a share below 2 when the first page came back
        means the window is read page after page, as the others keep the slots busy). Pages of
        different slices interleave, and runs on a slice boundary (and those of the first page)
        come twice: the reader must take each run once.

        Args:
            flow, start, end: As `iter_pages`; `end` is the window's pinned end.
            stop: Set to stop before the next request (the read then raises `FlowInterrupted`).
            tally: Receives the slices and probes made.

        Raises:
            What `iter_pages` raises, from whichever slice failed first; FlowInterrupted.
        """
        pages = self.iter_pages(flow, start, end)
        first = next(pages, None)
        if first is None:
            return
        yield first
        size = min(self.page_size, self.page_size_cap or self.page_size)
        dates = slices.page_dates(first) if len(first) >= size else []
        if not self.time_slices or len(dates) < 2:
            yield from pages
            return
        with self._wide_window() as share:
            width = share()
            if width < 2:  # other wide windows already use the request slots
                yield from pages
                return
            pages.close()
            yield from self._read_slices(flow, start, end, dates, size, share, stop, tally)

    @contextmanager
    def _wide_window(self) -> Iterator[Callable[[], int]]:
        """Count a window of more than a page while it is read; give it its share of the
        request slots: `concurrency` (or fewer while the API throttles) over the wide windows
        being read now, each share rounded up. The share is asked again while the window is
        read, so it narrows when other wide windows start or the API throttles, and widens when
        they finish."""

        def share() -> int:
            with self._wide_lock:
                return -(-self._slots() // max(1, self._wide))

        with self._wide_lock:
            self._wide += 1
        try:
            yield share
        finally:
            with self._wide_lock:
                self._wide -= 1

    def _slots(self) -> int:
        """Requests allowed at once now: `concurrency`, or the adaptive limit when lower."""
        if self.current_limit is None:
            return self.concurrency
        return min(self.concurrency, self.current_limit())

    def _read_slices(
        self,
        flow: FlowRef,
        start: datetime | None,
        end: datetime,
        dates: list[datetime],
        size: int,
        share: Callable[[], int],
        stop: threading.Event | None,
        tally: SliceTally | None,
    ) -> Iterator[Page]:
        start = slices.plain(start) if start is not None else None
        end = slices.plain(end)
        width = share()
        # The pool and the plan are sized for all the slots, not today's share: the share
        # widens when other wide windows finish, and then needs slices left to read.
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="stackai-slice") as pool:

            def run(probe: Callable[[datetime], bool], points: list[datetime]) -> list[bool]:
                return list(pool.map(probe, points))

            floor = start
            if start is None:
                found, probes = slices.find_floor(
                    lambda at: self.probe(flow, at),
                    run,
                    min(dates),
                    end,
                    width,
                    slices.first_round_size(dates, width),
                )
                floor = found or slices.EARLIEST
                if tally is not None:
                    tally.probes += probes
            assert floor is not None
            plan = slices.plan_slices(start, end, floor, dates, size, self.concurrency)
            if tally is not None:
                tally.slices += len(plan)
            log.info(
                "flow %s: more than a page of runs: reading %d time slices from %s, %d at once",
                flow,
                len(plan),
                format_api_datetime(floor),
                min(width, len(plan)),
            )
            try:
                yield from slices.read_sliced(self, flow, plan, pool, share, stop)
            except slices.SlicesStopped:
                raise FlowInterrupted(
                    f"flow {flow}: interrupted before it finished; its cursor did not move"
                    " (the next sync reads it again)"
                ) from None

    def probe(self, flow: FlowRef, end: datetime) -> bool:
        """Whether any run of `flow` is dated up to `end` (one request for one run, no
        `start_date`). Raises what `iter_pages` raises."""
        params = {endpoint.PAGE_SIZE_PARAM: 1, endpoint.END_DATE_PARAM: format_api_datetime(end)}
        refused = _refused_for(flow)

        for page in self._paginate(flow.path, params, 1, f"flow {flow}", refused):
            return bool(page)
        return False

    def remember(self, known: dict[str, Any]) -> None:
        """Merge what earlier syncs learned (`known`, a state dict) with what this client knows,
        both ways: the dict ends up holding the tightest cap and the largest verified size."""
        cap = known.get("page_size_cap")
        if isinstance(cap, int) and (self.page_size_cap is None or cap < self.page_size_cap):
            self.page_size_cap = cap
        verified = known.get("verified_page_size")
        if isinstance(verified, int) and verified > self.verified_page_size:
            self.verified_page_size = verified
        known["verified_page_size"] = self.verified_page_size
        if self.page_size_cap is not None:
            known["page_size_cap"] = self.page_size_cap

    def learn_cap(self, cap: int, asked: int) -> None:
        """Page with at most `cap` runs from now on (the server served or allowed no more)."""
        if self.page_size_cap is None or cap < self.page_size_cap:
            self.page_size_cap = cap
            log.warning(
                "the API serves at most %d runs a page (%d asked): paging with %d", cap, asked, cap
            )

    def _read(
        self,
        path: str,
        params: dict[str, Any],
        size: int,
        subject: str,
        refused: Callable[[int, str, str], StackAIError],
        first: int = endpoint.FIRST_PAGE,
        one: bool = False,
    ) -> Iterator[Page]:
        """Yield `path`'s pages of `size` from page `first` (just that one with `one`); return
        (pages read, length of the first page when it was short but not empty, else None)."""
        pages, short_first = 0, None
        for page in self._paginate(
            path, {**params, endpoint.PAGE_SIZE_PARAM: size}, size, subject, refused, first
        ):
            pages += 1
            if len(page) >= size:
                self.verified_page_size = max(self.verified_page_size, size)
            elif pages == 1 and page:
                short_first = len(page)
            yield page
            if one:
                return pages, (len(page) if page else 0)
        return pages, short_first

    def iter_projects(self) -> Iterator[Page]:
        """Yield each page (`page_size` rows) of the org summary: one `OrgProjectRunSummary` per
        project (flow) of the API key's org, with all-time totals (no date filter).

        Contract: `paths./organizations/analytics/projects-run-summary.get` (the org comes from
        the key; paged like the runs, default page size 25; a short page ends it).

        Raises:
            ApiKeyRejected: 401/403 (and 404). ApiResponseError, BadPage,
            requests.RequestException: as `iter_pages`.
        """

        def refused(status: int, where: str, detail: str) -> StackAIError:
            return ApiKeyRejected(
                f"API key rejected (HTTP {status}) reading the org summary {where}: {detail}"
            )

        yield from self._paginate(
            endpoint.ORG_SUMMARY_PATH,
            {endpoint.PAGE_SIZE_PARAM: self.page_size},
            self.page_size,
            "the org summary",
            refused,
        )

    def _paginate(
        self,
        path: str,
        params: dict[str, Any],
        page_size: int,
        subject: str,
        refused: Callable[[int, str, str], StackAIError],
        first: int = endpoint.FIRST_PAGE,
    ) -> Iterator[Page]:
        """Pages of `path` until a short or empty one; 401/403/404 raise `refused(status,
        url, detail)`, other errors name `subject`."""

        def raise_for_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            status = response.status_code
            if response.is_redirect:
                return  # requests follows it (without the key when the host changes)
            if status < 400:
                # Inside the retried send: a bad page is tried again like a 5xx.
                response.page = _page_of(response)  # type: ignore[attr-defined]
                return
            where = sanitize_url(response.url)
            detail = _detail(response)
            if status in (401, 403, 404):
                raise refused(status, where, detail)
            limit = _page_size_limit(response) if status == 422 else None
            if limit is not None:
                raise PageSizeRefused(f"HTTP 422 from {where} for {subject}: {detail}", limit)
            error = ApiResponseError(f"HTTP {status} from {where} for {subject}: {detail}")
            # dlt's retry reads the status from an HTTPError's response: keep that link so 429
            # and 5xx are retried, then re-raised as this error when attempts run out.
            raise _RetryableHTTPError(error, response=response)

        pages = self._rest.paginate(
            path,
            params=params,
            paginator=ShortPagePaginator(page_size, subject, self.max_pages, first),
            hooks={"response": [raise_for_status]},
        )
        try:
            for page in pages:
                yield page.response.page
        except _RetryableHTTPError as exc:
            raise exc.error from None
        except requests.exceptions.ChunkedEncodingError as exc:
            # raised while reading the body, with no request attached: say where it came from
            if exc.request is None:
                exc.request = requests.Request("GET", f"{self._rest.base_url}/{path}").prepare()
            raise


def describe_transport_error(exc: BaseException) -> str | None:
    """One line for a connection-level failure, or None if `exc` is not one.

    requests' own messages run to hundreds of characters (urllib3's pool, the full URL, "Max
    retries exceeded", which are urllib3's and not ours); this keeps the host and the cause.
    """
    if not isinstance(exc, requests.RequestException):
        return None
    url = exc.request.url if exc.request is not None and exc.request.url else ""
    host = urlsplit(url).netloc or "the API"
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    cause = type(reason).__name__
    errno = re.search(r"\[Errno -?\d+\] [^)'\"]+", str(reason))
    detail = errno.group(0).strip() if errno else str(reason)[:120]
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS with {host} failed ({cause}): is it an https server? {detail}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connecting to {host} timed out (ConnectTimeout)"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"{host} did not answer in time (ReadTimeout)"
    if isinstance(exc, requests.ConnectionError):
        return f"cannot reach {host} ({cause}): {detail}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        # urllib3's "Connection broken: IncompleteRead(120 bytes read, 880 more expected)"
        got = re.search(r"IncompleteRead\([^)]*\)", str(exc))
        return f"{host} cut a response short ({got.group(0) if got else cause})"
    return None


class _RetryableHTTPError(requests.HTTPError):
    def __init__(self, error: ApiResponseError, response: requests.Response) -> None:
        super().__init__(str(error), response=response)
        self.error = error
