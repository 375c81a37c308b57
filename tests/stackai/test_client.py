"""Paging: where it stops, and a server that ignores `page` ends in a clear error, not a hang."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from pipelines.stackai.client import PagingError, RunsClient, ShortPagePaginator
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.http import HttpSettings, RequestStats, make_session

PAGE_SIZE = 3


@pytest.mark.parametrize(
    ("data", "stops"),
    [([], True), ([{}], True), ([{}, {}], True), ([{}, {}, {}], False), (None, True)],
)
def test_a_page_shorter_than_page_size_or_empty_is_the_last(data, stops):
    assert ShortPagePaginator(PAGE_SIZE)._stop_after_this_page(data) is stops


def serve(pages_seen: list[int], ignore_page: bool, runs: int) -> ThreadingHTTPServer:
    """A stand-in API: `runs` runs, paged, or the first page whatever `page` says."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            page = int(query["page"][0])
            pages_seen.append(page)
            start = 0 if ignore_page else page * PAGE_SIZE
            body = json.dumps(
                [
                    {"run_id": f"r{i}", "date": "2026-11-30T10:00:00Z"}
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


@pytest.mark.parametrize("ignore_page", [False, True])
def test_paging_ends_at_the_short_page_or_fails_on_a_repeated_one(ignore_page):
    seen: list[int] = []
    server = serve(seen, ignore_page, runs=8)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        session = make_session(HttpSettings(max_attempts=1), RequestStats())
        client = RunsClient(url, "sk-test", session, PAGE_SIZE)
        pages = client.iter_pages(FlowRef("org", "flow"), None, None)
        if ignore_page:
            with pytest.raises(PagingError, match="repeats the page before it"):
                list(pages)
            assert seen == [0, 1]
        else:
            assert [len(page) for page in pages] == [3, 3, 2]
            assert seen == [0, 1, 2]
    finally:
        server.shutdown()
