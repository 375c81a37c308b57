"""The DuckDB file a sync writes: checked before any work, so a bad path is one line."""

from __future__ import annotations

from pathlib import Path

from pipelines.load.lock import lock_path_for


class DuckDBPathError(ValueError):
    """The DuckDB file cannot be used: an unwritable place, a folder, or not a DuckDB file."""


DUCKDB_MAGIC = b"DUCK"
"""Bytes 8-11 of every DuckDB database file."""


def check_duckdb_path(duckdb_path: Path) -> Path:
    """Make sure the DuckDB file and its lock and working folder can live at `duckdb_path`.

    Returns:
        The absolute path (its folder created if missing).

    Raises:
        DuckDBPathError: naming the path and the reason (no permission, read-only file system,
            a folder, not a DuckDB database).
    """
    path = duckdb_path.expanduser().resolve()
    if path.is_dir():
        raise DuckDBPathError(f"{path} is a folder; --duckdb wants a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Creating the lock file proves the folder is writable before any work is done (and
        # gives the real reason, which a lock library would only report as "busy").
        lock_path_for(path).touch(exist_ok=True)
    except OSError as exc:
        raise DuckDBPathError(
            f"cannot create {path} or the files beside it: {exc.strerror or exc}"
        ) from None
    if path.is_file():
        with path.open("rb") as file:
            header = file.read(12)
        if header[8:12] != DUCKDB_MAGIC:
            raise DuckDBPathError(f"{path} exists and is not a DuckDB database")
    return path
