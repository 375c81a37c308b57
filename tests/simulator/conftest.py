"""Fixtures for the simulator tests: seeded worlds served over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from pipelines.simulator import SimulatorServer, World

ANCHOR = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
"""Fixed simulator anchor, so that every test run sees the same data."""


class Api:
    """A thin `requests` client for one simulator, authenticated with a given key."""

    def __init__(self, server: SimulatorServer, api_key: str | None = None) -> None:
        self.server = server
        self.session = requests.Session()
        self.api_key = server.world.api_key if api_key is None else api_key

    def get(self, path: str, *, api_key: str | None = None, **params) -> requests.Response:
        key = self.api_key if api_key is None else api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.session.get(self.server.url + path, params=params, headers=headers, timeout=10)

    def runs_page(self, org_id: str, flow_id: str, **params) -> requests.Response:
        return self.get(f"/analytics/org/{org_id}/flows/{flow_id}", **params)

    def pages(self, org_id: str, flow_id: str, page_size: int, **params) -> list[list[dict]]:
        """Every page up to and including the first empty one."""
        pages, page = [], 0
        while True:
            response = self.runs_page(org_id, flow_id, page=page, page_size=page_size, **params)
            response.raise_for_status()
            pages.append(response.json())
            if not pages[-1]:
                return pages
            page += 1


@pytest.fixture(scope="session")
def big_world() -> World:
    """A default-sized world shared by read-only tests: never mutate it."""
    return World(seed=7, anchor=ANCHOR)


@pytest.fixture(scope="session")
def big_api(big_world: World) -> Iterator[Api]:
    with SimulatorServer(big_world) as server:
        client = Api(server)
        yield client
        client.session.close()


@pytest.fixture
def world() -> World:
    """A small fresh world a test may mutate."""
    return World(seed=3, anchor=ANCHOR, runs_per_flow=60)


@pytest.fixture
def api(world: World) -> Iterator[Api]:
    with SimulatorServer(world) as server:
        client = Api(server)
        yield client
        # Closed before the server stops, which otherwise waits a tick for the idle connection.
        client.session.close()
