"""The API key never leaks, requests cannot be redirected or re-targeted, http is refused."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from pipelines.load import run_sync
from pipelines.stackai.flows import FlowRef
from tests.support.cli import stackai_runs, sync_args

KEY = "sk-sim-SECRET-canary-7f3a9c"


class _Recorder(BaseHTTPRequestHandler):
    """Answers every GET with `[]` (or a redirect) and records what it received."""

    seen: ClassVar[list[dict]] = []
    redirect_to: ClassVar[str | None] = None

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        if self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to + self.path)
            self.end_headers()
            return
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler], host: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def recorder_pair():
    """A server on `localhost` that redirects to another on `127.0.0.1` (another host)."""
    target_handler = type("Target", (_Recorder,), {"seen": [], "redirect_to": None})
    target = _serve(target_handler, "127.0.0.1")
    origin_handler = type(
        "Origin",
        (_Recorder,),
        {"seen": [], "redirect_to": f"http://127.0.0.1:{target.server_address[1]}"},
    )
    origin = _serve(origin_handler, "127.0.0.1")
    yield f"http://localhost:{origin.server_address[1]}", origin_handler, target_handler
    origin.shutdown()
    target.shutdown()


def test_a_redirect_to_another_host_does_not_carry_the_key(settings, recorder_pair):
    origin_url, origin, target = recorder_pair
    report = run_sync(replace(settings, base_url=origin_url, api_key=KEY))
    assert origin.seen and origin.seen[0]["authorization"] == f"Bearer {KEY}"
    assert target.seen, "the redirect should have been followed"
    assert all(r["authorization"] is None for r in target.seen)
    assert report.ok  # the target served empty pages


@pytest.mark.parametrize(
    ("org_id", "flow_id"),
    [("org?x=1", "flow"), ("org", "flow#frag"), ("org", "a%2Fb"), ("o&page=9", "f;p")],
)
def test_ids_cannot_change_the_request_target(settings, recorder_pair, org_id, flow_id):
    origin_url, origin, _ = recorder_pair
    origin.redirect_to = None
    flow = FlowRef(org_id, flow_id)
    run_sync(replace(settings, base_url=origin_url, flows=(flow,)))
    # the other request is the org summary, read for the flow's name
    (request,) = [r for r in origin.seen if r["path"].startswith("/analytics/")]
    path, _, query = request["path"].partition("?")
    segments = path.split("/")
    assert segments[:3] == ["", "analytics", "org"] and segments[4] == "flows"
    assert len(segments) == 6, path  # each id stayed one path segment
    params = dict(p.split("=", 1) for p in query.split("&"))
    assert set(params) == {"page", "page_size", "end_date"}


def _grep_files(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_the_key_never_appears_in_output_or_any_file_written(simulator, world, flows, tmp_path):
    """Syncs that succeed and fail (401, 404, server errors, bad JSON) with a recognisable key;
    then every byte printed and every file the runs wrote is searched for it."""
    world.api_key = KEY  # the simulator accepts the canary for every org
    env = {
        "STACKAI_API_KEY": KEY,
        "RUNTIME__REQUEST_MAX_ATTEMPTS": "2",
        "RUNTIME__REQUEST_BACKOFF_FACTOR": "0",
        "RUNTIME__REQUEST_TIMEOUT": "1",
    }
    duckdb_path = tmp_path / "data" / "runs.duckdb"
    base = [*sync_args(simulator.url, duckdb_path, []), "--verbose"]
    flags = [a for f in flows[:2] for a in ("--flow", str(f))]
    runs = [
        (base + flags, None),
        (base + flags + ["--json"], None),
        ([*base, "--flow", f"{flows[0].org_id}/missing"], None),
        (base + flags, ("status", {"status": 500, "count": 4})),
        (base + flags, ("bad_json", {"count": 1})),
        (base + flags, ("slow", {"seconds": 3, "count": 2})),  # read timeouts (1 s)
        (base + flags, ("html", {"count": 1})),
    ]
    output = b""
    for command, fault in runs:
        if fault is not None:
            kind, params = fault
            world.inject(kind, **params)
        result = stackai_runs(*command, env=env, timeout=120, text=False)
        output += result.stdout + result.stderr
    wrong = stackai_runs(
        *base, *flags, env={**env, "STACKAI_API_KEY": KEY + "-revoked"}, timeout=120, text=False
    )
    output += wrong.stdout + wrong.stderr
    assert b"API key rejected" in output and b"flow not found" in output
    assert b"ReadTimeout" in output
    assert KEY.encode() not in output
    assert _grep_files(tmp_path, KEY.encode()) == []
    assert any(tmp_path.rglob("*.duckdb"))  # the files searched exist
    assert json.loads(
        stackai_runs(*base, *flags, "--json", "--quiet", env=env, timeout=120, text=False).stdout
    )["ok"]
