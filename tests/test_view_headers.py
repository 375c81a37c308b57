"""Each view's header declares its grain and its columns: the view is unique on the grain and
has exactly those columns (checked on a file synced from the simulator)."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from pipelines.analysis.views import SQL_DIR
from pipelines.load import run_sync


def declared(path: Path) -> tuple[list[str], list[str]]:
    """(grain columns, columns) as the file's header comment lists them.

    The grain is the parenthesised tuple of the `Grain:` line, or `run_id` for "one row per
    run"; columns are the names at the start of each `Columns:` entry (3-space indent), before
    the gap that opens the type and description.
    """
    header = [
        line[2:] for line in path.read_text(encoding="utf-8").splitlines() if line[:2] == "--"
    ]
    grain_line = next(line for line in header if line.strip().startswith("Grain:"))
    tuple_ = re.search(r"per \(([^)]*)\)", grain_line)
    grain = [c.strip() for c in tuple_.group(1).split(",")] if tuple_ else ["run_id"]
    columns: list[str] = []
    start = next(i for i, line in enumerate(header) if line.strip().startswith("Columns:"))
    for line in header[start + 1 :]:
        if not line.strip():
            if columns:
                break
            continue
        entry = re.match(r"^   (\S.*?)(?:\s{2,}|$)", line)
        if entry:
            columns += [c.strip() for c in entry.group(1).split(",") if c.strip()]
    return grain, columns


def test_every_view_has_its_declared_columns_and_is_unique_on_its_grain(settings, world):
    assert run_sync(settings, now=world.now).ok
    files = sorted(SQL_DIR.glob("*.sql"))
    assert files
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        for path in files:
            view = "stackai." + path.stem.split("_", 1)[1]
            grain, columns = declared(path)
            assert grain and columns, path.name
            actual = [row[0] for row in con.execute(f"describe {view}").fetchall()]
            assert sorted(actual) == sorted(columns), path.name
            assert set(grain) <= set(actual), path.name
            (rows,) = con.execute(f"select count(*) from {view}").fetchone()
            assert rows > 0, f"{view} is empty: its grain check would prove nothing"
            keys = ", ".join(grain)
            repeated = con.execute(
                f"select {keys}, count(*) from {view} group by all having count(*) > 1 limit 3"
            ).fetchall()
            assert not repeated, f"{view} is not unique on ({keys}): {repeated}"
