"""`kill -9` at every step of a sync, then a rerun: the table equals the ground truth, with no
lost run, no duplicate, and no half-applied usage rows (issue: state only moves with data)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from pipelines.load import run_sync
from tests.conftest import DESTINATIONS
from tests.support.interrupted import crashing_sync, real_horizon, sync_stopped_at_page
from tests.support.state import stored_cursors
from tests.support.truth import assert_matches, expected_runs, loaded_runs

__all__ = ["real_horizon", "run_and_get_killed"]  # tests/test_first_load.py imports them


def run_and_get_killed(settings, point: str, *extra: str) -> subprocess.CompletedProcess:
    return crashing_sync(settings, point, *extra)


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
def test_killed_at_a_pipeline_step_then_rerun_equals_ground_truth(
    settings, world, first_sync, point
):
    first_sync(settings, world)  # an earlier, healthy sync
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
def test_killed_inside_a_merge_leaves_the_stored_runs_in_place(settings, world, first_sync, point):
    """A full refresh re-reads every run, so its merges delete and re-insert all of them: a kill
    between the two statements must leave the table as it was (one transaction), not empty
    until the package is loaded again (or for good, if the working folder is lost); and usage
    rows stay linked to their runs whichever of the two tables' merges dlt ran first."""
    first_sync(settings, world)
    stored = loaded_runs(settings)
    killed = run_and_get_killed(settings, point, "--full-refresh")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert loaded_runs(settings) == stored

    report = run_sync(settings, now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world), real_horizon(settings))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_killed_while_paging_moves_no_cursor_and_rerun_equals_ground_truth(
    settings, world, first_sync
):
    first_sync(settings, world)
    before = stored_cursors(settings)
    world.advance(2 * 3600)

    def kill(process: subprocess.Popen) -> None:
        os.kill(process.pid, signal.SIGKILL)

    returncode, stderr = sync_stopped_at_page(settings, world, 3, kill)
    assert returncode == -signal.SIGKILL, stderr
    assert stored_cursors(settings) == before

    report = run_sync(settings, now=world.now)
    assert report.ok, report
    horizon = real_horizon(settings)
    assert_matches(loaded_runs(settings), expected_runs(world), horizon)
