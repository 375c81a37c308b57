"""A `.dlt/config.toml` that does not parse is one line naming the file and where, exit 2, for
every command that reads configuration (no traceback)."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.cli import stackai_runs


def run_in(folder, *args: str) -> subprocess.CompletedProcess:
    """The command in `folder`, reading its `.dlt/` as a user's run would."""
    return stackai_runs(
        *args, cwd=folder, project_config=False, env={"STACKAI_API_KEY": "sk-test"}, timeout=120
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


def test_an_unknown_key_is_warned_about_with_the_closest_known_one(tmp_path):
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(
        '[sources.stackai]\npagesize = 5\nflows = ["o/f"]\n', encoding="utf-8"
    )
    result = run_in(tmp_path, "sync", "--base-url", "http://127.0.0.1:9", "--json")
    assert (
        "unknown key 'pagesize' in [sources.stackai] of config.toml is ignored"
        " (did you mean page_size?)" in result.stderr
    )
    assert "flows" not in result.stderr.split("unknown key", 1)[1].split("\n", 1)[0]


def test_an_unknown_environment_key_is_warned_about(monkeypatch):
    from pipelines.settings import unknown_keys

    monkeypatch.setenv("SOURCES__STACKAI__LOOKBAK", "PT2H")
    monkeypatch.setenv("SOURCES__STACKAI__PAGE_SIZE", "10")
    notes = unknown_keys()
    assert notes == [
        "unknown key 'lookbak' in the environment (SOURCES__STACKAI__LOOKBAK) is ignored"
        " (did you mean lookback?)"
    ]


def test_an_empty_since_is_refused_not_ignored(tmp_path):
    result = run_in(tmp_path, "sync", "--flow", "o/f", "--since", "")
    assert result.returncode == 2
    assert "--since is empty" in result.stderr


def test_a_missing_sql_dir_is_refused_before_anything_runs(tmp_path):
    result = run_in(tmp_path, "sync", "--flow", "o/f", "--sql-dir", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "no folder at" in result.stderr and "nope" in result.stderr
    assert not list(tmp_path.glob("*.duckdb"))


def test_the_demo_names_a_broken_config_file(tmp_path):
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text("[sources.stackai]\nx = = 1\n", "utf-8")
    result = run_in(tmp_path, "demo")
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot read ./.dlt/config.toml: ")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('time_slices = "maybe"', "sources.stackai.time_slices: 'maybe' is not true or false"),
        ('page_size = "lots"', "sources.stackai.page_size: 'lots' is not a whole number"),
        ('connect_timeout = "soon"', "sources.stackai.connect_timeout: 'soon' is not a number"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_key_and_what_it_takes(tmp_path, line, expected):
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(f"[sources.stackai]\n{line}\n", encoding="utf-8")
    result = run_in(tmp_path, "sync", "--flow", "o/f")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {expected} (set in [sources.stackai]"), result.stderr
    assert "SOURCES__STACKAI__" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.duckdb"))
