"""Fault injection, seen from a raw HTTP client: `World.inject`, `expire_key_after`, seeded chaos.

Every test talks real HTTP to a `SimulatorServer` with `requests`, the library the sync uses.
Faults never change the data, so most tests share one server and only reset the fault state.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import pytest
import requests

from pipelines.simulator import SimulatorServer, World
from pipelines.simulator.faults import DEFAULT_RECORDS, KINDS, Fault, json_body
from pipelines.simulator.world import DEFAULT_FAULT_KINDS

from .conftest import ANCHOR, Api

SUMMARY_PATH = "/organizations/analytics/projects-run-summary"


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(World(seed=3, anchor=ANCHOR, runs_per_flow=60)) as server:
        yield server


@pytest.fixture
def world(server: SimulatorServer) -> World:
    """The shared world with no fault queued, no chaos, no key expiry and an empty log."""
    world = server.world
    world.clear_faults()
    world.expire_key_after(None)
    world.fault_rate, world.fault_kinds = 0.0, DEFAULT_FAULT_KINDS
    world.requests.clear()
    return world


@pytest.fixture
def api(server: SimulatorServer, world: World) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.session.close()


def flows_path(world: World, index: int = 0) -> str:
    flow = world.flows()[index]
    return f"/analytics/org/{flow.org_id}/flows/{flow.flow_id}"


def first_page(world: World, index: int = 0, page_size: int = 25) -> list[dict]:
    """What the flows endpoint serves for `page=0` without a fault."""
    flow = world.flows()[index]
    return world.query_runs(flow.org_id, flow.flow_id, page_size=page_size)


def logged_faults(world: World) -> list[str | None]:
    return [r["fault"] for r in world.requests]


class TestStatus:
    @pytest.mark.parametrize("status", [429, 500, 502, 503])
    def test_status_and_detail(self, api: Api, world: World, status: int):
        world.inject("status", status=status)
        response = api.get(flows_path(world))
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert "retry-after" not in response.headers
        assert response.json() == {"detail": HTTPStatus(status).phrase}
        assert api.get(flows_path(world)).json() == first_page(world)

    @pytest.mark.parametrize("retry_after", ["1", "0", "-5", "Wed, 21 Oct 2026 07:28:00 GMT"])
    def test_retry_after_is_sent_verbatim(self, api: Api, world: World, retry_after: str):
        world.inject("status", status=429, retry_after=retry_after)
        response = api.get(flows_path(world))
        assert response.status_code == 429
        assert response.headers["retry-after"] == retry_after
        assert response.json() == {"detail": "Too Many Requests"}

    def test_default_is_503(self, api: Api, world: World):
        world.inject("status")
        response = api.get(flows_path(world))
        assert response.status_code == 503
        assert response.json() == {"detail": "Service Unavailable"}


class TestTransportFaults:
    def test_slow_delays_only_its_own_request(self, api: Api, world: World):
        world.inject("slow", seconds=0.3, flow_id=world.flows()[0].flow_id)
        with ThreadPoolExecutor(2) as pool:
            slow_api, fast_api = api, Api(api.server)

            def timed(client: Api, index: int) -> tuple[float, requests.Response]:
                started = time.perf_counter()
                response = client.get(flows_path(world, index))
                return time.perf_counter() - started, response

            slow = pool.submit(timed, slow_api, 0)
            time.sleep(0.05)  # let the slow request reach the server first
            fast_time, fast = timed(fast_api, 1)
            slow_time, slow_response = slow.result()
            fast_api.session.close()
        assert slow_time >= 0.3 and fast_time < 0.2
        assert slow_response.status_code == 200 and fast.status_code == 200
        assert slow_response.json() == first_page(world, 0)
        assert fast.json() == first_page(world, 1)
        slow_logged = [r for r in world.requests if r["path"] == flows_path(world, 0)]
        assert [(r["status"], r["fault"]) for r in slow_logged] == [(200, "slow")]

    def test_truncated_declares_the_full_length_then_cuts_the_body(self, api: Api, world: World):
        full = json_body(first_page(world))
        world.inject("truncated")
        url = api.server.url + flows_path(world)
        headers = {"Authorization": f"Bearer {world.api_key}"}
        with requests.get(url, headers=headers, stream=True, timeout=5) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert int(response.headers["content-length"]) == len(full)
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                _ = response.content
        world.inject("truncated")
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            api.get(flows_path(world))
        assert api.get(flows_path(world)).json() == first_page(world)  # same session recovers
        assert logged_faults(world) == ["truncated", "truncated", None]
        assert [r["status"] for r in world.requests] == [200, 200, 200]

    def test_truncated_empty_page_still_sends_less_than_declared(self, api: Api, world: World):
        world.inject("truncated")
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            api.get(flows_path(world), page=99)

    def test_reset_is_a_connection_error(self, api: Api, world: World):
        world.inject("reset")
        with pytest.raises(requests.exceptions.ConnectionError) as raised:
            api.get(flows_path(world))
        assert "reset" in str(raised.value).lower()
        assert api.get(flows_path(world)).status_code == 200  # same session recovers
        assert [(r["status"], r["fault"]) for r in world.requests] == [(None, "reset"), (200, None)]

    def test_reset_sends_no_byte_but_a_tcp_rst(self, api: Api, world: World):
        world.inject("reset")
        request = (
            f"GET {flows_path(world)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {world.api_key}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", api.server.port), timeout=5) as sock:
            sock.sendall(request)
            with pytest.raises(ConnectionResetError):
                sock.recv(65536)  # a FIN would return b"" instead


class TestBodyFaults:
    def test_html_page(self, api: Api, world: World):
        world.inject("html")
        response = api.get(flows_path(world))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.lstrip().lower().startswith("<!doctype html>")
        with pytest.raises(requests.exceptions.JSONDecodeError):
            response.json()

    def test_object_instead_of_array(self, api: Api, world: World):
        world.inject("object")
        response = api.get(flows_path(world))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"detail": "maintenance"}

    @pytest.mark.parametrize("page", [0, 99])
    def test_bad_json_is_complete_but_invalid(self, api: Api, world: World, page: int):
        world.inject("bad_json")
        response = api.get(flows_path(world), page=page)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.content.endswith(b",]")
        with pytest.raises(requests.exceptions.JSONDecodeError):
            response.json()

    def test_wrong_content_type(self, api: Api, world: World):
        world.inject("wrong_content_type")
        response = api.get(flows_path(world))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert json.loads(response.content) == first_page(world)

    def test_records_are_appended_and_not_ground_truth(self, api: Api, world: World):
        truth = world.all_runs()
        page = first_page(world, page_size=5)
        bad = [
            "not an object",
            {**page[0], "run_id": None},
            {**page[1], "run_id": "00000000-0000-4000-8000-000000000001", "date": "yesterday"},
            {**page[2], "run_id": "00000000-0000-4000-8000-000000000002", "total_tokens": "12x"},
            [1, 2],
            None,
        ]
        world.inject("records", records=bad)
        bad[0] = "mutated after inject"  # the fault keeps its own copy
        served = api.get(flows_path(world), page_size=5).json()
        assert served[:5] == page
        assert served[5:] == ["not an object", *bad[1:]]
        assert world.all_runs() == truth
        with pytest.raises(KeyError):
            world.get_run("00000000-0000-4000-8000-000000000001")
        assert api.get(flows_path(world), page_size=5).json() == page

    def test_default_records(self, api: Api, world: World):
        world.inject("records")
        served = api.get(flows_path(world)).json()
        assert served[:-4] == first_page(world) and served[-4:] == list(DEFAULT_RECORDS)
        assert isinstance(served[-4], str) and served[-3]["run_id"] is None
        assert served[-2]["date"] == "yesterday" and served[-1]["total_tokens"] == "12x"


class TestQueue:
    def test_count_and_order(self, api: Api, world: World):
        world.inject("status", status=429, count=2)
        world.inject("object")
        world.inject("status", status=502)
        statuses = [api.get(flows_path(world)).status_code for _ in range(5)]
        assert statuses == [429, 429, 200, 502, 200]
        assert logged_faults(world) == ["status", "status", "object", "status", None]
        assert world.pending_faults() == []

    def test_flow_id_targets_one_flow_and_others_wait_in_order(self, api: Api, world: World):
        target = world.flows()[1].flow_id
        world.inject("status", status=500, flow_id=target)
        world.inject("object")
        world.inject("html", flow_id=target)
        assert api.get(flows_path(world, 0)).json() == {"detail": "maintenance"}
        assert api.get(flows_path(world, 0)).json() == first_page(world, 0)
        assert api.get(flows_path(world, 1)).status_code == 500
        assert api.get(flows_path(world, 1)).headers["content-type"].startswith("text/html")
        assert api.get(flows_path(world, 1)).json() == first_page(world, 1)

    def test_only_authorised_requests_of_existing_flows_take_faults(self, api: Api, world: World):
        world.inject("status", status=503)
        flow, other_org_flow = world.flows()[0], world.flows()[-1]
        org_key = world.org_api_keys[flow.org_id]
        assert api.get(flows_path(world), api_key="sk-wrong").status_code == 401
        assert api.get(flows_path(world), api_key="").status_code == 401
        missing = f"/analytics/org/{flow.org_id}/flows/no-such-flow"
        assert api.get(missing).status_code == 404
        assert api.get(flows_path(world, -1), api_key=org_key).status_code == 403
        assert other_org_flow.org_id != flow.org_id
        assert api.get(flows_path(world), page=-1).status_code == 422
        assert api.get(SUMMARY_PATH).status_code == 200  # the summary endpoint has no faults
        assert len(world.pending_faults()) == 1
        assert api.get(flows_path(world)).status_code == 503
        assert logged_faults(world) == [None] * 6 + ["status"]

    def test_fail_next_is_a_status_fault(self, api: Api, world: World):
        world.fail_next(2, status=429, retry_after=0.5)
        assert world.pending_faults() == [Fault("status", status=429, retry_after="0.5")] * 2
        world.clear_faults()
        assert api.get(flows_path(world)).status_code == 200

    def test_bad_injections_are_refused(self, world: World):
        with pytest.raises(ValueError, match="unknown fault kind"):
            world.inject("teapot")
        with pytest.raises(ValueError, match="takes no 'status'"):
            world.inject("html", status=500)
        with pytest.raises(ValueError, match="400-599"):
            world.inject("status", status=200)
        with pytest.raises(ValueError, match="retry_after"):
            world.inject("status", retry_after="1\r\nX-Evil: 1")
        with pytest.raises(ValueError, match="seconds"):
            world.inject("slow", seconds=-1)
        with pytest.raises(TypeError):
            world.inject("status", code=500)
        with pytest.raises(TypeError):
            world.inject("records", records=[object()])
        with pytest.raises(ValueError, match="count"):
            world.inject("reset", count=-1)
        assert world.pending_faults() == []
        assert set(KINDS) == {
            "status",
            "slow",
            "truncated",
            "reset",
            "html",
            "object",
            "bad_json",
            "wrong_content_type",
            "records",
        }


class TestExpiredKey:
    def test_key_expires_after_n_authorised_requests(self, api: Api, world: World):
        world.expire_key_after(2)
        assert api.get(flows_path(world)).status_code == 200
        assert api.get(SUMMARY_PATH).status_code == 200
        for path in (flows_path(world, 0), flows_path(world, -1), SUMMARY_PATH):
            response = api.get(path)
            assert response.status_code == 401
            assert response.json() == {"detail": "API key expired"}
            assert response.headers["www-authenticate"] == "Bearer"
        assert logged_faults(world) == [None, None] + ["key_expired"] * 3
        org_id = world.flows()[0].org_id
        assert api.get(flows_path(world), api_key=world.org_api_keys[org_id]).status_code == 200
        assert api.get(flows_path(world), api_key="sk-wrong").json() == {
            "detail": "Invalid API key"
        }
        world.expire_key_after(None)
        assert api.get(flows_path(world)).status_code == 200

    def test_zero_expires_at_once_and_every_key_counts(self, api: Api, world: World):
        world.expire_key_after(0)
        assert api.get(flows_path(world)).status_code == 401
        world.expire_key_after(1)
        org_id = world.flows()[0].org_id
        assert api.get(flows_path(world), api_key=world.org_api_keys[org_id]).status_code == 200
        assert api.get(flows_path(world)).status_code == 401

    def test_expired_key_does_not_consume_faults(self, api: Api, world: World):
        world.inject("object")
        world.expire_key_after(0)
        assert api.get(flows_path(world)).status_code == 401
        assert len(world.pending_faults()) == 1


class TestChaos:
    KINDS = ("status:429", "status:503", "html", "object")

    def run_chaos(self, seed: int, requests_count: int = 40) -> list[tuple[int, str | None]]:
        world = World(seed=seed, anchor=ANCHOR, runs_per_flow=5, fault_rate=0.4)
        world.fault_kinds = self.KINDS
        with SimulatorServer(world) as server:
            client = Api(server)
            for n in range(requests_count):
                client.get(flows_path(world, n % 3))
            client.session.close()
        return [(r["status"], r["fault"]) for r in world.requests]

    def test_same_seed_same_faults(self):
        first, again = self.run_chaos(5), self.run_chaos(5)
        assert first == again
        faults = [fault for _, fault in first]
        assert 5 < sum(f is not None for f in faults) < 30
        assert {f for f in faults if f} == {"status", "html", "object"}
        assert {status for status, fault in first if fault == "status"} == {429, 503}
        assert first != self.run_chaos(6)

    def test_fault_stream_does_not_change_the_data(self):
        calm = World(seed=5, anchor=ANCHOR, runs_per_flow=20)
        chaotic = World(seed=5, anchor=ANCHOR, runs_per_flow=20, fault_rate=1.0)
        assert chaotic.all_runs() == calm.all_runs() and chaotic.api_key == calm.api_key

    def test_queued_faults_take_precedence(self):
        world = World(seed=1, anchor=ANCHOR, runs_per_flow=5, fault_rate=1.0)
        world.fault_kinds = ("object",)
        world.inject("status", status=502)
        with SimulatorServer(world) as server:
            client = Api(server)
            assert client.get(flows_path(world)).status_code == 502
            assert client.get(flows_path(world)).json() == {"detail": "maintenance"}
            world.fault_rate = 0.0
            assert client.get(flows_path(world)).json() == first_page(world)
            client.session.close()

    def test_defaults_and_validation(self):
        world = World(seed=1, runs_per_flow=1)
        assert world.fault_rate == 0.0
        assert world.fault_kinds == ("status:429", "status:503", "slow:0.2")
        flow = world.flows()[0]
        assert all(world.take_fault(flow.flow_id) is None for _ in range(50))
        with pytest.raises(ValueError, match="fault_rate"):
            World(runs_per_flow=1, fault_rate=1.5)
        for bad in (("status:abc",), ("html:1",), ("nope",), ()):
            with pytest.raises(ValueError):
                World(runs_per_flow=1, fault_kinds=bad)
        assert Fault.parse("slow:0.25") == Fault("slow", seconds=0.25)
        assert Fault.parse(" status:429 ") == Fault("status", status=429)
        assert Fault.parse("reset") == Fault("reset")


def test_simulate_command_serves_the_configured_faults():
    options = ["--port", "0", "--seed", "2", "--fault-rate", "1", "--fault", "object"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "simulate", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("Faults: 100% of flow-run requests get one of object")
        url = lines[1].split(" on ")[1].strip()
        api_key = lines[2].split(": ")[1].strip()
        world = World(seed=2, runs_per_flow=1)
        response = requests.get(
            url + flows_path(world), headers={"Authorization": f"Bearer {api_key}"}, timeout=5
        )
        assert response.status_code == 200 and response.json() == {"detail": "maintenance"}
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_simulate_command_serves_a_rate_limited_api():
    """`--concurrency-limit 1 --retry-after 2`: of two requests in flight at once (each held
    3 s by the slow fault), one is served and the other answered 429 with that Retry-After."""
    options = ["--port", "0", "--seed", "2", "--fault", "slow:3", "--concurrency-limit", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "simulate", *options, "--retry-after", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        assert lines[1] == "Rate limit: 1 flow-run requests at once, 429 above, Retry-After: 2 s\n"
        url = lines[2].split(" on ")[1].strip()
        api_key = lines[3].split(": ")[1].strip()
        path = url + flows_path(World(seed=2, runs_per_flow=1))
        headers = {"Authorization": f"Bearer {api_key}"}
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda _: requests.get(path, headers=headers, timeout=10), range(2))
            )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200, 429], statuses
        refused = next(answer for answer in answers if answer.status_code == 429)
        assert refused.headers["Retry-After"] == "2"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_simulate_command_refuses_retry_after_without_a_limit():
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "simulate", "--retry-after", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--retry-after needs --concurrency-limit" in result.stderr
