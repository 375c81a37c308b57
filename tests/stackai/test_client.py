"""Paging: where it stops, and a server that ignores `page` ends in a clear error, not a hang."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from pipelines.load import run_sync
from pipelines.stackai.client import MAX_PAGES, PagingError, RunsClient, ShortPagePaginator
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.http import HttpSettings, RequestStats, make_session

PAGE_SIZE = 3


@pytest.mark.parametrize(
    ("data", "stops"),
    [([], True), ([{}], True), ([{}, {}], True), ([{}, {}, {}], False), (None, True)],
)
def test_a_page_shorter_than_page_size_or_empty_is_the_last(data, stops):
    assert ShortPagePaginator(PAGE_SIZE)._stop_after_this_page(data) is stops


def response(page: int, records: list[dict]) -> requests.Response:
    """What `requests` hands dlt for `?page=PAGE`: a 200 with `records` as its JSON body."""
    made = requests.Response()
    made.status_code = 200
    made.url = f"https://api.example/analytics/org/o/flows/f?page={page}&page_size={PAGE_SIZE}"
    made.headers["Content-Type"] = "application/json"
    made._content = json.dumps(records).encode()
    return made


def runs(start: int, count: int) -> list[dict]:
    return [{"run_id": f"r{i}"} for i in range(start, start + count)]


def page_numbers(paginator: ShortPagePaginator, pages: list[list[dict]]) -> list[int]:
    """Drive `paginator` as dlt's `RESTClient.paginate` does, one page per request, until it
    has no next page: the `page` parameter of each request made."""
    request = requests.Request("GET", "https://api.example/analytics/org/o/flows/f")
    paginator.init_request(request)
    asked = []
    for records in pages:
        asked.append(request.params["page"])
        paginator.update_state(response(asked[-1], records), records)
        if not paginator.has_next_page:
            return asked
        paginator.update_request(request)
    raise AssertionError(f"still paging after {asked}")


def test_pages_are_0_based_and_end_at_a_short_page():
    pages = [runs(0, 3), runs(3, 3), runs(6, 2)]
    assert page_numbers(ShortPagePaginator(PAGE_SIZE), pages) == [0, 1, 2]


def test_an_empty_page_after_full_ones_is_the_last():
    pages = [runs(0, 3), runs(3, 3), []]
    assert page_numbers(ShortPagePaginator(PAGE_SIZE), pages) == [0, 1, 2]


def test_a_full_page_equal_to_the_one_before_fails_naming_the_subject():
    paginator = ShortPagePaginator(PAGE_SIZE, "flow o/f")
    with pytest.raises(PagingError, match=r"^flow o/f: page 1 of .* repeats the page before it"):
        page_numbers(paginator, [runs(0, 3)] * 5)


def test_the_same_short_page_twice_is_not_a_repeat_but_the_end():
    pages = [runs(0, 3), runs(3, 2), runs(3, 2)]
    assert page_numbers(ShortPagePaginator(PAGE_SIZE), pages) == [0, 1]


def test_max_pages_full_pages_fail_instead_of_stopping_quietly():
    """A server that ignores `page` but answers differently each time (here: a page that
    cycles) passes the repeat check; dlt's `maximum_page` ends it, as an error."""
    paginator = ShortPagePaginator(PAGE_SIZE, "flow o/f", max_pages=4)
    cycling = [runs(0, 3), runs(3, 3)] * 10
    with pytest.raises(PagingError, match=r"^flow o/f: 4 full pages of 3 in one window") as error:
        page_numbers(paginator, cycling)
    assert "ignore the `page` parameter" in str(error.value)
    assert paginator.current_value == 4  # pages 0 to 3 were asked for, no more


def test_a_window_that_ends_on_the_last_allowed_page_is_complete():
    paginator = ShortPagePaginator(PAGE_SIZE, max_pages=3)
    assert page_numbers(paginator, [runs(0, 3), runs(3, 3), runs(6, 1)]) == [0, 1, 2]


def test_the_default_bound_is_large_and_the_clients_own():
    assert ShortPagePaginator(PAGE_SIZE).maximum_value == MAX_PAGES >= 100_000
    with pytest.raises(ValueError, match="max_pages"):
        ShortPagePaginator(PAGE_SIZE, max_pages=0)


def serve(pages_seen: list[int], mode: str, runs: int) -> ThreadingHTTPServer:
    """A stand-in API with `runs` runs: paged (`mode` "pages"), or whatever `page` says the first
    page ("first"), or the first page with a field that changes on every request ("changing")."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            page = int(query["page"][0])
            pages_seen.append(page)
            start = page * PAGE_SIZE if mode == "pages" else 0
            body = json.dumps(
                [
                    {"run_id": f"r{i}", "date": "2026-11-30T10:00:00Z", "n": len(pages_seen)}
                    if mode == "changing"
                    else {"run_id": f"r{i}", "date": "2026-11-30T10:00:00Z"}
                    for i in range(start, min(start + PAGE_SIZE, runs))
                ]
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("mode", ["pages", "first", "changing"])
def test_paging_ends_at_the_short_page_or_fails_when_page_is_ignored(mode):
    seen: list[int] = []
    server = serve(seen, mode, runs=8)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        session = make_session(HttpSettings(max_attempts=1), RequestStats())
        client = RunsClient(url, "sk-test", session, PAGE_SIZE, max_pages=5)
        pages = client.iter_pages(FlowRef("org", "flow"), None, None)
        if mode == "pages":
            assert [len(page) for page in pages] == [3, 3, 2]
            assert seen == [0, 1, 2]
        elif mode == "first":
            with pytest.raises(PagingError, match=r"^flow org/flow: .*repeats the page before it"):
                list(pages)
            assert seen == [0, 1]
        else:
            with pytest.raises(PagingError, match=r"^flow org/flow: 5 full pages of 3 in one"):
                list(pages)
            assert seen == [0, 1, 2, 3, 4]
    finally:
        server.shutdown()


@pytest.mark.parametrize("time_slices", [False, True])
def test_a_simulator_that_ignores_page_fails_that_flow_clearly_and_the_others_load(
    settings, world, monkeypatch, time_slices
):
    """Through the whole sync over real HTTP: the flow whose server always answers its first
    page fails in one line naming it (it did not hang), keeps no cursor, and the others load.
    Read page after page, the second request shows it; read as time slices, each slice stops
    at its second page."""
    settings = replace(settings, time_slices=time_slices)
    broken = settings.flows[0]
    query_runs = world.query_runs

    def first_page_only(org_id: str, flow_id: str, **kwargs: object) -> list[dict]:
        if (org_id, flow_id) == (broken.org_id, broken.flow_id):
            kwargs["page"] = 0
        return query_runs(org_id, flow_id, **kwargs)

    monkeypatch.setattr(world, "query_runs", first_page_only)
    report = run_sync(replace(settings, flows=settings.flows[:2]), now=world.now)
    failed, ok = (report.flow(str(flow)) for flow in settings.flows[:2])
    assert failed.error.startswith(f"flow {broken}: page 1 of ")
    assert "the server seems to ignore the `page` parameter" in failed.error
    assert failed.cursor_after is None
    assert ok.error is None and ok.runs > 0
    asked = [r for r in world.requests if f"/flows/{broken.flow_id}" in r["path"]]
    pages = [r["params"]["page"] for r in asked]
    if time_slices:
        assert set(pages) == {"0", "1"}, pages
    else:
        assert pages == ["0", "1"]
