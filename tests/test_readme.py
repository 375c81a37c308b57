"""README's promises: its Quick start commands are the ones CI runs, and every SQL example in it
runs against a synced file."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from pipelines.load import run_sync

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def sql_examples() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", README, flags=re.S)
    statements = [s.strip() for block in blocks for s in block.split(";") if s.strip()]
    table_cells = re.findall(r"\| `(select [^`]+)` \|", README)
    return statements + table_cells


def test_quick_start_test_command_is_what_ci_runs():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick_start, flags=re.S)
    assert len(commands) == 2
    assert commands[0].endswith("stackai-runs demo")
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_every_sql_example_runs(settings, world):
    assert run_sync(settings, now=world.now).ok
    examples = sql_examples()
    assert len(examples) >= 10
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        for sql in examples:
            con.execute(sql).fetchall()
