"""A `stackai-runs sync` process stopped on purpose, for the crash and signal tests: killed or
signalled at a step of dlt's pipeline (`crashing_sync.py`), or when the simulator is about to
serve its N-th page."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from pipelines.settings import SyncSettings
from pipelines.simulator import World
from tests.support.cli import ROOT, cli_command, environment, run_python, sync_args_for

CRASHING_SYNC = ROOT / "tests" / "support" / "crashing_sync.py"


def crashing_sync(
    settings: SyncSettings, point: str, *extra: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`crashing_sync.py POINT` (a kill or `signal:NAME:STEP`) with the sync arguments of
    `settings`, `--quiet` and `extra`, run to its end."""
    return run_python(
        str(CRASHING_SYNC),
        point,
        *sync_args_for(settings),
        "--quiet",
        *extra,
        env={"STACKAI_API_KEY": settings.api_key},
        timeout=timeout,
    )


def sync_stopped_at_page(
    settings: SyncSettings,
    world: World,
    page: int,
    stop: Callable[[subprocess.Popen], None],
    *extra: str,
    timeout: float = 120,
) -> tuple[int, str]:
    """Run `stackai-runs sync` of `settings` (`--quiet`, then `extra`) in a process and call
    `stop(process)` (a kill, a signal) once, when the simulator is about to serve the `page`-th
    page asked for (counted over every flow). Returns its exit code and standard error."""
    process = subprocess.Popen(
        cli_command(*sync_args_for(settings), "--quiet", *extra),
        env=environment({"STACKAI_API_KEY": settings.api_key}),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = 0
    lock = threading.Lock()  # pages are served by several threads at once

    def on_page(org_id: str, flow_id: str, params: dict) -> None:
        nonlocal served
        with lock:
            served += 1
            if served == page:
                stop(process)

    world.before_page = on_page
    try:
        _, stderr = process.communicate(timeout=timeout)
    finally:
        world.before_page = None
    return process.returncode, stderr


def real_horizon(settings: SyncSettings) -> datetime:
    """Open runs older than this may be left as last seen: the stopped sync ran the CLI, whose
    clock is the real one (the simulator's is days behind), and dropped them as too old."""
    return datetime.now(UTC) - settings.rules.max_open_run_age
