"""A `.dlt/config.toml` that does not parse is one line naming the file and where, exit 2, for
every command that reads configuration (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_in(folder, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "STACKAI" not in k and k != "DLT_PROJECT_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=folder,
        env={**env, "STACKAI_API_KEY": "sk-test"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ("[sources.stackai]\npage_size = = 5\n", "at line 2 col 12"),
        (
            "[sources.stackai]\npage_size = 5\n\npage_size = 6\n",
            "line 2, ./.dlt/config.toml line 4",
        ),
    ],
)
@pytest.mark.parametrize("command", [["sync", "--flow", "o/f"], ["views"], ["report"]])
def test_a_broken_config_file_is_named_with_its_line(tmp_path, toml, where, command):
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(toml, encoding="utf-8")
    result = run_in(tmp_path, *command)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: cannot read ./.dlt/config.toml: "), result.stderr
    assert where in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
