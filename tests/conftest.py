"""Shared fixtures: a seeded simulator over real loopback HTTP, and settings for a real DuckDB
file in a temporary folder. Ground truth comes from the simulator's `World`, never from DuckDB."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import tomlkit

ROOT = Path(__file__).resolve().parents[1]

# Hermetic configuration: dlt reads `.dlt/` from DLT_PROJECT_DIR, here a copy of config.toml
# (its documented defaults) without the settings that point at a user's own API, so a
# developer's secrets.toml, flows or base_url never change what tests see.
_PROJECT = Path(tempfile.mkdtemp(prefix="stackai-runs-tests-"))
(_PROJECT / ".dlt").mkdir()
_CONFIG = tomlkit.parse((ROOT / ".dlt" / "config.toml").read_text(encoding="utf-8"))
for _key in ("flows", "orgs", "base_url", "api_key"):
    _CONFIG.get("sources", {}).get("stackai", {}).pop(_key, None)
(_PROJECT / ".dlt" / "config.toml").write_text(tomlkit.dumps(_CONFIG), encoding="utf-8")
os.environ["DLT_PROJECT_DIR"] = str(_PROJECT)
# A server destination's working folder lives in dlt's data folder (~/.dlt, /var/dlt as root):
# the tests' go to a temporary one.
os.environ["DLT_DATA_DIR"] = str(_PROJECT / "dlt-data")

from pipelines.load.destination import choose  # noqa: E402
from pipelines.settings import SyncSettings  # noqa: E402
from pipelines.simulator import SimulatorServer, World  # noqa: E402
from pipelines.stackai.flows import FlowRef  # noqa: E402
from pipelines.stackai.http import HttpSettings  # noqa: E402
from tests.support import postgres  # noqa: E402
from tests.support.first_sync import FirstSyncs  # noqa: E402

DESTINATIONS = ["duckdb", "postgres"]
"""The destinations the load's guarantees are tested on, for real."""

FAST_HTTP = HttpSettings(
    connect_timeout=5, read_timeout=10, max_attempts=3, backoff_factor=0, jitter=0.05
)
"""Retries that keep a test of a failing server fast (the defaults back off for minutes)."""


FAST_RETRY_ENV = {
    "RUNTIME__REQUEST_MAX_ATTEMPTS": "2",
    "RUNTIME__REQUEST_BACKOFF_FACTOR": "0",
    "RUNTIME__REQUEST_TIMEOUT": "10",
}
"""dlt's retrying session reads these; the defaults (5 attempts, backoff up to minutes) would
make a test of a failing server take minutes."""


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_RETRY_ENV.items():
        monkeypatch.setenv(name, value)


def standard_world() -> World:
    """Two orgs of three flows, about 60 runs each, anchored two days ago so tests can move the
    clock by hours and stay in the past: the `world` fixture's, for a fixture of wider scope."""
    anchor = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    return World(seed=7, anchor=anchor, orgs=2, flows_per_org=3, runs_per_flow=60)


@pytest.fixture
def world() -> World:
    """A new `standard_world()` for each test."""
    return standard_world()


@pytest.fixture
def simulator(world: World) -> Iterator[SimulatorServer]:
    with SimulatorServer(world) as server:
        yield server


@pytest.fixture
def flows(world: World) -> tuple[FlowRef, ...]:
    return tuple(FlowRef(f.org_id, f.flow_id) for f in world.flows())


@pytest.fixture
def duckdb_path(tmp_path: Path) -> Path:
    return tmp_path / "runs.duckdb"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """One throwaway PostgreSQL server for the session (tests/support/postgres.py)."""
    try:
        server = postgres.start()
    except postgres.PostgresUnavailable as exc:
        if os.environ.get(postgres.REQUIRE_ENV):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield server
    server.stop()


_databases = itertools.count()


def new_database_name() -> str:
    """A database name no other test of this session uses (this process's id: an xdist worker
    has a server of its own, but the name says whose a database is all the same)."""
    return f"t{os.getpid()}_{next(_databases)}"


@pytest.fixture
def postgres_url(postgres_server: postgres.PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty database, set as dlt's `destination.postgres.credentials` (environment)."""
    url = postgres_server.create_database(new_database_name())
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    return url


@pytest.fixture(scope="session")
def _first_syncs(tmp_path_factory: pytest.TempPathFactory) -> FirstSyncs:
    return FirstSyncs(tmp_path_factory.mktemp("first-syncs"))


@pytest.fixture
def first_sync(_first_syncs: FirstSyncs) -> Callable[[SyncSettings, World], None]:
    """`first_sync(settings, world)`: `run_sync(settings, now=world.now)`, which must succeed,
    into the test's new destination; made once for the same world and settings and copied into
    the tests after (tests/support/first_sync.py)."""
    return _first_syncs.sync


@pytest.fixture
def destination(request: pytest.FixtureRequest) -> str:
    """The destination `settings` load into: duckdb unless a test parametrizes it
    (`@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)`)."""
    return getattr(request, "param", "duckdb")


@pytest.fixture
def settings(
    simulator: SimulatorServer,
    flows: tuple[FlowRef, ...],
    duckdb_path: Path,
    destination: str,
    request: pytest.FixtureRequest,
) -> SyncSettings:
    target = None
    if destination != "duckdb":
        request.getfixturevalue("postgres_url")
        target = choose(destination)
    return SyncSettings(
        base_url=simulator.url,
        api_key=simulator.world.api_key,
        flows=flows,
        duckdb_path=duckdb_path,
        page_size=25,
        http=FAST_HTTP,
        destination=target,
    )
