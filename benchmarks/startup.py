"""Section 9 of `run.py` (`--only startup`): how long `stackai-runs --help` and a usage error
take in a fresh process, which is what a person waits for at the prompt (issue 16).

The command imports dlt, duckdb, pyarrow and the rest only inside the commands that use them
(`pipelines/cli/app.py`), so help and usage errors pay for Python, typer and rich alone. Beside
them, for scale: the bare interpreter, and a process that imports the sync's own modules
(`pipelines.settings`, `pipelines.load`), which is what every invocation paid before.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.run import Row, Sizes

REPEATS = 5
"""Fresh processes per figure; the row gives their median (the first run also warms the OS's
file cache, the median is the warm figure)."""
TARGET_SECONDS = 0.5
"""The issue's bound for help and usage errors."""


def _command() -> list[str]:
    """The installed console script when there is one (what a user types), else
    `python -m pipelines.cli` (the same `main`)."""
    script = Path(sysconfig.get_path("scripts")) / "stackai-runs"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipelines.cli"]


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[list[float], int, str]:
    """Wall seconds of each of `REPEATS` runs, and the last run's exit code and output."""
    seconds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False
        )
        seconds.append(time.perf_counter() - started)
    return seconds, proc.returncode, proc.stdout + proc.stderr


def bench_startup(sizes: Sizes, workdir: Path, seed: int) -> list[Row]:
    """9. Help and a usage error in a fresh process, vs the interpreter alone and the sync's
    imports. `sizes`, `workdir` and `seed` are unused: nothing is loaded."""
    from benchmarks.run import ROOT, Row, met, progress, ratio

    section = f"9 start-up (fresh process, median of {REPEATS})"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    cli = _command()
    cases = (
        ("floor", "python -c pass (the interpreter alone)", [sys.executable, "-c", "pass"], 0, ""),
        (
            "imports",
            "python -c 'import pipelines.settings, pipelines.load' (the sync's imports)",
            [sys.executable, "-c", "import pipelines.settings, pipelines.load"],
            0,
            "",
        ),
        ("help", "stackai-runs --help", [*cli, "--help"], 0, "Usage: stackai-runs"),
        (
            "usage",
            "stackai-runs sync --no-such-option (usage error)",
            [*cli, "sync", "--no-such-option"],
            2,
            "No such option: --no-such-option",
        ),
    )
    rows: dict[str, Row] = {}
    for key, label, argv, code, said in cases:
        progress(f"{section}: {label}")
        seconds, returncode, output = _timed(argv, env, ROOT)
        check = "ok"
        if returncode != code or said not in output:
            tail = " | ".join(output.strip().splitlines()[-2:])
            check = f"FAILED: exit {returncode} (expected {code}): {tail}"
        rows[key] = Row(
            section,
            label,
            seconds=statistics.median(seconds),
            check=check,
            details={"seconds": [round(s, 3) for s in seconds], "argv": argv[1:]},
        )
    imports = rows["imports"].seconds
    for key in ("help", "usage"):
        row = rows[key]
        row.compared = f"{ratio(row.seconds, imports):.2f}x the sync's imports"
        row.target = f"< {TARGET_SECONDS:g} s {met(row.seconds, lambda s: s < TARGET_SECONDS)}"
    return list(rows.values())


__all__ = ["bench_startup"]
