"""The `stackai-runs` command as cron runs it, for tests: a real process, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stackai_runs(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    project_config: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run `python -m pipelines.cli ARGS` and capture its output (text).

    Args:
        env: Variables added to this process's environment, from which every STACKAI variable
            is removed first (a developer's key never leaks into a test).
        cwd: The folder it runs in.
        project_config: Keep `DLT_PROJECT_DIR` (the tests' hermetic `.dlt/`); False lets it
            read `cwd/.dlt/` as a user's run would.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if "STACKAI" not in k and (project_config or k != "DLT_PROJECT_DIR")
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sync_args(base_url: str, duckdb_path: Path, flows: Iterable[object]) -> list[str]:
    """`sync --base-url URL --duckdb PATH --flow ORG/FLOW ...`."""
    args = ["sync", "--base-url", base_url, "--duckdb", str(duckdb_path)]
    for flow in flows:
        args += ["--flow", str(flow)]
    return args
