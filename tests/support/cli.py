"""The `stackai-runs` command as cron runs it, for tests: a real process, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def environment(env: dict[str, str] | None = None, project_config: bool = True) -> dict[str, str]:
    """This process's environment without any STACKAI variable (a developer's key or
    `SOURCES__STACKAI__*` settings never leak into a test), then `env` added.

    Args:
        project_config: Keep `DLT_PROJECT_DIR` (the tests' hermetic `.dlt/`); False lets the
            process read `.dlt/` in its own folder as a user's run would.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if "STACKAI" not in k and (project_config or k != "DLT_PROJECT_DIR")
    }
    return {**base, **(env or {})}


def cli_command(*args: str) -> list[str]:
    """`python -m pipelines.cli ARGS`, with this interpreter (for `subprocess.Popen`)."""
    return [sys.executable, "-m", "pipelines.cli", *args]


def run_python(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    project_config: bool = True,
    timeout: float = 300,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """Run `python ARGS` (this interpreter) to the end and capture its output.

    Args:
        env: Variables added to the cleaned environment (see `environment`).
        cwd: The folder it runs in.
        project_config: See `environment`.
        timeout: Seconds before `subprocess.TimeoutExpired`.
        text: Output as `str` (True) or `bytes`.
    """
    return subprocess.run(
        [sys.executable, *args],
        env=environment(env, project_config),
        cwd=cwd,
        capture_output=True,
        text=text,
        timeout=timeout,
    )


def stackai_runs(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    project_config: bool = True,
    timeout: float = 300,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """Run `python -m pipelines.cli ARGS` and capture its output; arguments as `run_python`."""
    return run_python(
        "-m",
        "pipelines.cli",
        *args,
        env=env,
        cwd=cwd,
        project_config=project_config,
        timeout=timeout,
        text=text,
    )


def sync_args(
    base_url: str, duckdb_path: Path, flows: Iterable[object], page_size: int | None = None
) -> list[str]:
    """`sync --base-url URL --duckdb PATH --flow ORG/FLOW ... [--page-size N]`."""
    args = ["sync", "--base-url", base_url, "--duckdb", str(duckdb_path)]
    for flow in flows:
        args += ["--flow", str(flow)]
    if page_size is not None:
        args += ["--page-size", str(page_size)]
    return args


def sync_args_for(settings: Any) -> list[str]:
    """`sync_args` of a `SyncSettings` (its URL, file, flows and page size; the key is not an
    argument: pass it as `STACKAI_API_KEY` in `env`)."""
    args = sync_args(
        settings.base_url, settings.duckdb_path, settings.flows, page_size=settings.page_size
    )
    if settings.target().name != "duckdb":
        at = args.index("--duckdb")
        del args[at : at + 2]  # refused with another destination
        args += ["--destination", settings.target().name]
    return args
