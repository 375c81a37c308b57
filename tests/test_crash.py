"""`kill -9` at every step of a sync, then a rerun: the table equals the ground truth, with no
lost run, no duplicate, and no half-applied usage rows (issue: state only moves with data)."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime

import pytest

from pipelines.load import run_sync
from tests.conftest import DESTINATIONS
from tests.support.cli import ROOT, cli_command, environment, run_python, sync_args_for
from tests.support.state import stored_cursors
from tests.support.truth import assert_matches, expected_runs, loaded_runs

CRASHING_SYNC = ROOT / "tests" / "support" / "crashing_sync.py"


def run_and_get_killed(settings, point: str, *extra: str) -> subprocess.CompletedProcess:
    return run_python(
        str(CRASHING_SYNC),
        point,
        *sync_args_for(settings),
        "--quiet",
        *extra,
        env={"STACKAI_API_KEY": settings.api_key},
        timeout=120,
    )


def real_horizon(settings) -> datetime:
    """Open runs older than this may be left as last seen: the killed sync ran the CLI, whose
    clock is the real one (the simulator's is days behind), and dropped them as too old."""
    return datetime.now(UTC) - settings.rules.max_open_run_age


@pytest.mark.parametrize(
    "point",
    [
        "before_normalize",
        "before_load",
        "after_staging_commit",
        "mid_load",
        "mid_merge",
        "before_commit",
    ],
)
@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_killed_at_a_pipeline_step_then_rerun_equals_ground_truth(settings, world, point):
    assert run_sync(settings, now=world.now).ok  # an earlier, healthy sync
    world.advance(2 * 3600)  # new runs, and open runs that complete
    killed = run_and_get_killed(settings, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    world.advance(600)
    report = run_sync(settings, now=world.now)
    assert report.ok, report
    horizon = real_horizon(settings)
    assert_matches(loaded_runs(settings), expected_runs(world), horizon)


@pytest.mark.parametrize("point", ["mid_merge", "mid_usage_merge"])
@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_killed_inside_a_merge_leaves_the_stored_runs_in_place(settings, world, point):
    """A full refresh re-reads every run, so its merges delete and re-insert all of them: a kill
    between the two statements must leave the table as it was (one transaction), not empty
    until the package is loaded again (or for good, if the working folder is lost); and usage
    rows stay linked to their runs whichever of the two tables' merges dlt ran first."""
    assert run_sync(settings, now=world.now).ok
    stored = loaded_runs(settings)
    killed = run_and_get_killed(settings, point, "--full-refresh")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert loaded_runs(settings) == stored

    report = run_sync(settings, now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world), real_horizon(settings))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_killed_while_paging_moves_no_cursor_and_rerun_equals_ground_truth(settings, world):
    assert run_sync(settings, now=world.now).ok
    before = stored_cursors(settings)
    world.advance(2 * 3600)
    process = subprocess.Popen(
        cli_command(*sync_args_for(settings), "--quiet"),
        env=environment({"STACKAI_API_KEY": settings.api_key}),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = []

    def kill_on_third_page(org_id: str, flow_id: str, params: dict) -> None:
        served.append(params)
        if len(served) == 3:
            os.kill(process.pid, signal.SIGKILL)

    world.before_page = kill_on_third_page
    try:
        assert process.wait(timeout=120) == -signal.SIGKILL
    finally:
        world.before_page = None
    assert stored_cursors(settings) == before

    report = run_sync(settings, now=world.now)
    assert report.ok, report
    horizon = real_horizon(settings)
    assert_matches(loaded_runs(settings), expected_runs(world), horizon)
