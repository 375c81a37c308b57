"""The tool as a user installs it: a wheel in a fresh virtual environment, run from an empty
folder with no clone in sight. Slow (it installs the dependencies), and the only test that
proves `sql/` ships inside the package and the extras are declared right."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_VIEWS = sorted(
    path.relative_to(ROOT / "sql").as_posix() for path in (ROOT / "sql").rglob("*.sql")
)
"""The views and their per-dialect replacements (`sql/postgres/...`)."""
PIP = ["-m", "pip", "--disable-pip-version-check", "-q"]


def pip_install_into(python: str) -> list[str]:
    """`pip install` into the environment of `python`, run by this environment's pip
    (`--python`): the environment needs no pip of its own (`venv --without-pip`, seconds
    saved), and nothing is byte-compiled ahead (`--no-compile`: most of an install's time;
    the modules the commands import are compiled as they run, as in any install)."""
    return [sys.executable, *PIP, "--python", python, "install", "--no-compile"]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, *PIP, "wheel", "--no-deps", "-w", str(out), str(ROOT), cwd=out)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("stackai_runs-*.whl")
    return path


def test_the_wheel_ships_the_views_and_nothing_of_the_repository_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [n.removeprefix("pipelines/sql/") for n in names if n.startswith("pipelines/sql/")]
    assert sorted(shipped) == sorted([*SHIPPED_VIEWS, "__init__.py"])
    assert any("/" in view for view in SHIPPED_VIEWS), "precondition: a per-dialect file"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "sql/", ".dlt/"))]
    assert "pipelines/cli/__main__.py" in names


def test_installed_from_the_wheel_the_demo_runs_from_an_empty_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    base = sys._base_executable  # type: ignore[attr-defined]
    made = run(base, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    tool = str(venv / "bin" / "stackai-runs")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DLT_", "STACKAI", "SOURCES__", "PYTHON", "VIRTUAL_ENV"))
    }

    # a production install: no simulator, no chart library; the demo says which extra it needs
    installed = run(*pip_install_into(python), str(wheel), cwd=empty, env=env)
    assert installed.returncode == 0, installed.stderr
    assert run(python, "-c", "import fastapi", cwd=empty, env=env).returncode != 0
    assert run(python, "-c", "import matplotlib", cwd=empty, env=env).returncode != 0
    assert run(tool, "--help", cwd=empty, env=env).returncode == 0
    for command in ("demo", "simulate"):
        bare = run(tool, command, cwd=empty, env=env)
        assert bare.returncode == 2, bare.stderr
        assert bare.stderr.strip().count("\n") == 0, bare.stderr
        assert "[simulator]" in bare.stderr and "Traceback" not in bare.stderr
        assert "pip install 'stackai-runs[simulator]'" in bare.stderr
    assert not list(empty.iterdir())

    installed = run(*pip_install_into(python), f"{wheel}[simulator]", cwd=empty, env=env)
    assert installed.returncode == 0, installed.stderr
    demo = run(tool, "demo", cwd=empty, env=env)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert f"{python} -c" in demo.stdout  # the query hint names the interpreter that has duckdb
    path = empty / "stackai_demo.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        views = {
            name
            for (name,) in con.execute(
                "select view_name from duckdb_views() where schema_name = 'stackai'"
            ).fetchall()
        }
        (runs,) = con.execute("select count(*) from stackai.runs").fetchone()
    assert views == {name.split("_", 1)[1].removesuffix(".sql") for name in SHIPPED_VIEWS}
    assert runs > 0

    again = run(tool, "views", "--duckdb", str(path), cwd=empty, env=env)
    assert again.returncode == 0, again.stderr
    # the text report needs no chart library; --chart without it stops before any work
    text = run(tool, "report", "--duckdb", str(path), cwd=empty, env=env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip()
    chart = run(tool, "report", "--duckdb", str(path), "--chart", "c.png", cwd=empty, env=env)
    assert chart.returncode == 2, chart.stderr
    assert chart.stderr.strip().count("\n") == 0, chart.stderr
    assert "pip install 'stackai-runs[chart]'" in chart.stderr
    assert "Traceback" not in chart.stderr and not chart.stdout
    assert not (empty / "c.png").exists()
