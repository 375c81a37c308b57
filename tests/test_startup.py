"""`--help` and usage errors answer without importing dlt and its stack (over a second of
start-up); each command imports what it uses. How long they take is a benchmark figure
(`benchmarks/startup.py`), never a timed test: here, which modules a fresh process imported."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tests.support.cli import run_python

HEAVY = (
    "dlt",
    "duckdb",
    "pyarrow",
    "pendulum",
    "sqlglot",
    "numpy",
    "requests",
    "genai_prices",
    "matplotlib",
    "fastapi",
    "uvicorn",
)

PROBE = f"""
import sys

sys.argv = ["stackai-runs", *sys.argv[1:]]
try:
    from pipelines.cli import main

    main()
finally:
    heavy = sorted(name for name in {HEAVY!r} if name in sys.modules)
    print("imported:" + ",".join(heavy), file=sys.stderr)
"""
"""The console script's `main` with these arguments; its last line on stderr lists the heavy
modules that were imported."""


def run_cli(*args: str) -> tuple[int, str, str, list[str]]:
    """Exit code, stdout, stderr without the probe's line, and the heavy modules imported."""
    result = run_python("-c", PROBE, *args, env={"COLUMNS": "100"})
    *rest, last = result.stderr.splitlines()
    assert last.startswith("imported:"), result.stderr
    imported = [name for name in last.removeprefix("imported:").split(",") if name]
    return result.returncode, result.stdout, "\n".join(rest), imported


HELP = [
    (("--help",), ["Usage: stackai-runs", "sync", "simulate", "demo", "views", "report"]),
    (("sync", "--help"), ["--flow", "--full-refresh", "--json", "merge on run_id"]),
    (("simulate", "--help"), ["--fault-rate", "--tick"]),
    (("demo", "--help"), ["--duckdb", "--seed"]),
    (("views", "--help"), ["--sql-dir", "--destination"]),
    (("report", "--help"), ["--since", "--chart"]),
    (("--version",), ["stackai-runs "]),
]
"""Arguments, and what the output shows."""

USAGE_ERRORS = [
    ((), "Usage: stackai-runs"),  # no command: the help, as a usage error
    (("--bogus",), "No such option: --bogus"),
    (("nosuch",), "No such command 'nosuch'"),
    (("sync", "--bogus"), "No such option: --bogus"),
    (("sync", "--page-size", "0"), "--page-size"),
    (("report", "--flow"), "requires an argument"),
]
"""Arguments, and what the error says."""


def _ids(cases: Iterable[tuple[tuple[str, ...], object]]) -> list[str]:
    return [" ".join(args) or "no arguments" for args, _ in cases]


@pytest.mark.parametrize(("args", "shown"), HELP, ids=_ids(HELP))
def test_help_exits_0_without_importing_dlt(args, shown):
    code, stdout, stderr, imported = run_cli(*args)
    assert code == 0, stderr
    for text in shown:
        assert text in stdout
    assert imported == []


@pytest.mark.parametrize(("args", "said"), USAGE_ERRORS, ids=_ids(USAGE_ERRORS))
def test_usage_errors_exit_2_without_importing_dlt(args, said):
    code, stdout, stderr, imported = run_cli(*args)
    assert code == 2
    assert said in stdout + stderr
    assert "Traceback" not in stderr
    assert imported == []


def test_the_source_package_imports_its_public_names_on_first_use():
    # `pipelines.stackai` is also the parent of the light modules the CLI loads at start-up
    # (`progress`), so importing it must not import the source; its names still work for users.
    result = run_python(
        "-c",
        "import sys\n"
        "import pipelines.stackai as package\n"
        "assert 'dlt' not in sys.modules\n"
        "from pipelines.stackai import ConfigError, FlowRef, StackAIConfiguration, stackai\n"
        "from pipelines.stackai.source import stackai as source_function\n"
        "assert stackai is source_function and 'dlt' in sys.modules\n"
        "assert {'stackai', 'ConfigError'} <= set(dir(package))\n"
        "try:\n"
        "    package.no_such_name\n"
        "except AttributeError:\n"
        "    print('ok')\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
