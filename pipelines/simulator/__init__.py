"""A faithful, seeded simulator of StackAI's analytics API, served over real HTTP.

`World` holds the state (orgs, flows, runs, a movable clock), `create_app` serves it with the
contract's two operations, `SimulatorServer` runs that app on a loopback port in a thread.
`Fault` (see `faults.py`) describes a fault `World.inject` can make the flows endpoint serve.
"""

from .app import create_app
from .faults import Fault
from .runs import FlowInfo
from .server import SimulatorServer, connection_info, serve_forever
from .world import World

__all__ = [
    "Fault",
    "FlowInfo",
    "SimulatorServer",
    "World",
    "connection_info",
    "create_app",
    "serve_forever",
]
