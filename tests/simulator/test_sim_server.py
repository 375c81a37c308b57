"""SimulatorServer and the foreground server: real sockets, bounded start-up, clean stop."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time

import pytest
import requests
import uvicorn

from pipelines.simulator import SimulatorServer, World, connection_info

from .conftest import ANCHOR


def tiny_world(seed: int = 0) -> World:
    return World(seed=seed, anchor=ANCHOR, runs_per_flow=5)


def test_port_zero_gives_distinct_free_ports():
    with SimulatorServer(tiny_world()) as first, SimulatorServer(tiny_world()) as second:
        assert first.port != second.port and 0 not in (first.port, second.port)
        assert first.url == f"http://127.0.0.1:{first.port}"
        for server in (first, second):
            assert requests.get(f"{server.url}/openapi.json", timeout=5).status_code == 200


def test_stop_releases_the_port_and_is_idempotent():
    server = SimulatorServer(tiny_world()).start()
    url = server.url
    server.stop()
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/openapi.json", timeout=2)


def test_start_twice_is_an_error():
    with SimulatorServer(tiny_world()) as server, pytest.raises(RuntimeError):
        server.start()


def test_start_raises_when_uvicorn_dies(monkeypatch: pytest.MonkeyPatch):
    def broken_run(self, sockets=None):
        raise OSError("cannot serve")

    monkeypatch.setattr(uvicorn.Server, "run", broken_run)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start") as raised:
        SimulatorServer(tiny_world()).start(timeout=5)
    assert isinstance(raised.value.__cause__, OSError)
    assert time.monotonic() - started < 2, "a dead thread must fail fast, not at the timeout"


def test_default_world():
    server = SimulatorServer()
    assert len(server.world.flows()) == 6


def test_responses_are_not_delayed_by_nagle(big_api):
    """~40 ms per response means TCP_NODELAY is off (see `server._bind`)."""
    flow = big_api.server.world.flows()[0]
    timings = []
    for _ in range(15):
        started = time.perf_counter()
        big_api.runs_page(flow.org_id, flow.flow_id, page_size=5).raise_for_status()
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.02


def test_connection_info_lists_everything_a_client_needs():
    world = tiny_world()
    info = connection_info(world, "http://127.0.0.1:1")
    assert info["url"] == "http://127.0.0.1:1" and info["api_key"] == world.api_key
    assert [org["org_id"] for org in info["orgs"]] == world.org_ids()
    for org in info["orgs"]:
        assert org["api_key"] == world.org_api_keys[org["org_id"]]
        for flow in org["flows"]:
            assert flow["runs"] == len(world.runs(org["org_id"], flow["flow_id"]))
    listed = [(o["org_id"], f["flow_id"], f["name"]) for o in info["orgs"] for f in o["flows"]]
    assert listed == [(f.org_id, f.flow_id, f.name) for f in world.flows()]
    json.dumps(info)  # printable as JSON


def test_serve_forever_announces_serves_and_stops_on_sigint():
    script = (
        "import json, sys;"
        "from pipelines.simulator import World, serve_forever;"
        "serve_forever(World(seed=1, runs_per_flow=5), port=0,"
        " announce=lambda url, world: print(json.dumps([url, world.api_key]), flush=True))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url, api_key = json.loads(process.stdout.readline())
        flow = World(seed=1, runs_per_flow=5).flows()[0]
        response = requests.get(
            f"{url}/analytics/org/{flow.org_id}/flows/{flow.flow_id}",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=5,
        )
        assert response.status_code == 200 and len(response.json()) > 0
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
