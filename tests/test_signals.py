"""SIGINT (Ctrl-C) and SIGTERM (cron's `timeout`, a container stop) at several moments of a real
sync: exit 130 / 143, one line saying what was and was not committed, no traceback, no hang; the
next sync finishes what was pending and the table equals the ground truth."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipelines.load import run_sync
from tests.support.cli import ROOT, cli_command, environment, sync_args_for
from tests.support.interrupted import crashing_sync, real_horizon, sync_stopped_at_page
from tests.support.state import stored_cursors
from tests.support.truth import assert_matches, expected_runs, loaded_runs

SIGNALS = [signal.SIGINT, signal.SIGTERM]
BAD_SIGNS = ("Traceback", "generator already executing", "lock indefinitely", "Aborted")


def assert_one_clean_line(stderr: str, signum: int) -> str:
    for sign in BAD_SIGNS:
        assert sign not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, stderr
    assert signal.Signals(signum).name in lines[0]
    return lines[0]


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_flows_page_stops_them_commits_what_finished_and_the_rerun_catches_up(
    settings, world, first_sync, signum
):
    first_sync(settings, world)
    before = stored_cursors(settings)
    world.advance(6 * 3600)

    def send(process: subprocess.Popen) -> None:
        process.send_signal(signum)

    returncode, stderr = sync_stopped_at_page(settings, world, 4, send, "--page-size", "5")
    assert returncode == 128 + signum, stderr
    line = assert_one_clean_line(stderr, signum)
    assert "stopped before finishing" in line and "cursors did not move" in line
    after = stored_cursors(settings)
    assert any(after[name] == before[name] for name in before), "no flow was stopped"

    report = run_sync(settings, now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world), real_horizon(settings))


@pytest.mark.parametrize(
    ("step", "signum"),
    # each step once, each signal at least once: a subprocess sync apiece
    [
        ("before_normalize", signal.SIGTERM),
        ("mid_load", signal.SIGINT),
        ("mid_load", signal.SIGTERM),
        ("before_commit", signal.SIGINT),
    ],
    ids=lambda v: v if isinstance(v, str) else signal.Signals(v).name,
)
def test_a_signal_while_loading_leaves_the_package_for_the_next_sync(
    settings, world, first_sync, signum, step
):
    first_sync(settings, world)
    world.advance(2 * 3600)
    result = crashing_sync(settings, f"signal:{signal.Signals(signum).name}:{step}")
    assert result.returncode == 128 + signum, result.stderr
    line = assert_one_clean_line(result.stderr, signum)
    # stopped inside the load: what is pending is finished next time; at the very end dlt
    # finishes its last step and the sync says everything was committed
    assert "the next sync finishes what was pending" in line or (
        step == "before_commit" and "all 6 flows finished and were committed" in line
    ), line

    world.advance(600)
    report = run_sync(settings, now=world.now)
    assert report.ok, report
    assert_matches(loaded_runs(settings), expected_runs(world), real_horizon(settings))


def handlers_installed(pid: int) -> bool:
    """The process catches SIGINT and SIGTERM (its `SigCgt` mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return all(caught & (1 << (s - 1)) for s in SIGNALS)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_start_up_is_one_line_and_changes_nothing(settings, signum):
    process = subprocess.Popen(
        cli_command(*sync_args_for(settings), "--quiet"),
        env=environment({"STACKAI_API_KEY": settings.api_key}),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not handlers_installed(process.pid):  # polling /proc, not sleeping for a race
        assert time.monotonic() < deadline and process.poll() is None
    process.send_signal(signum)  # now importing the command's modules (dlt: about a second)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert_one_clean_line(stderr, signum)
    assert not settings.duckdb_path.exists()
