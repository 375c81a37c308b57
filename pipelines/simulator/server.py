"""Serve the simulator over real HTTP: in a background thread (tests, demo) or in the foreground.

The background server binds its loopback socket itself before uvicorn starts, so port 0 (any
free port) works and the port is known before the first request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import uvicorn

from .app import create_app
from .world import World

START_TIMEOUT = 10.0
"""Seconds `SimulatorServer.start` waits for uvicorn to accept connections."""


class SimulatorServer:
    """The simulator app served by uvicorn in a daemon thread, on `127.0.0.1`.

    Usage::

        with SimulatorServer(World(seed=1)) as sim:
            requests.get(f"{sim.url}/analytics/org/{org}/flows/{flow}",
                         headers={"Authorization": f"Bearer {sim.world.api_key}"})

    Args:
        world: the state to serve; default `World()`.
        host: IPv4 address to bind (loopback by default: the simulator has no real auth).
        port: TCP port; 0 picks a free one.

    Attributes:
        world: the served `World` (tests mutate it while the server runs).
        port: the bound port (known after `start`).
        url: base URL without a trailing slash, e.g. `http://127.0.0.1:54321`.
    """

    def __init__(self, world: World | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.world = world if world is not None else World()
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> SimulatorServer:
        """Bind, start uvicorn in a thread and wait until it accepts connections.

        Raises:
            RuntimeError: already started, or uvicorn did not start within `timeout` seconds
                (or its thread died while starting).
        """
        if self._thread is not None:
            raise RuntimeError("simulator server already started")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(_config(self.world))
        failure: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # handed to start(), which raises it in the caller
                failure.append(exc)

        thread = threading.Thread(target=run, name=f"stackai-simulator-{self.port}", daemon=True)
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                cause = failure[0] if failure else None
                raise RuntimeError(f"simulator server did not start on {self.url}") from cause
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit, wait for its thread, close the socket. Idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def connection_info(world: World, url: str) -> dict:
    """What a user needs to point a client at the simulator (the CLI prints it).

    Returns:
        `{"url": str, "api_key": str (accepted for every org),
        "orgs": [{"org_id": str, "api_key": str (this org only),
                  "flows": [{"flow_id": str, "name": str, "runs": int}]}]}`
    """
    return {
        "url": url,
        "api_key": world.api_key,
        "orgs": [
            {
                "org_id": org_id,
                "api_key": world.org_api_keys[org_id],
                "flows": [
                    {
                        "flow_id": flow.flow_id,
                        "name": flow.name,
                        "runs": world.run_count(org_id, flow.flow_id),
                    }
                    for flow in world.flows()
                    if flow.org_id == org_id
                ],
            }
            for org_id in world.org_ids()
        ],
    }


def serve_forever(
    world: World,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    announce: Callable[[str, World], None] | None = None,
) -> None:
    """Serve `world` in the foreground until interrupted (uvicorn handles SIGINT/SIGTERM).

    Args:
        world: the state to serve.
        host, port: where to listen; port 0 picks a free port.
        announce: called as `(url, world)` once the server accepts connections, e.g. to print
            `connection_info(world, url)`.
    """
    sock = _bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"

    def started() -> None:
        if announce is not None:
            announce(url, world)

    server = _Server(_config(world), on_started=started)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on Ctrl-C, then re-raises it; stopping is the intent.
        pass
    finally:
        sock.close()


class _Server(uvicorn.Server):
    """uvicorn's server with a callback once it has started listening."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], object]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP (not 0) makes asyncio set TCP_NODELAY on accepted connections; without
    # it uvicorn's separate header and body writes meet Nagle's algorithm and the client's
    # delayed ACK, and every response takes ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _config(world: World) -> uvicorn.Config:
    return uvicorn.Config(create_app(world), log_level="warning", access_log=False, lifespan="off")
