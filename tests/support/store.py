"""Read what a sync stored, from whichever destination its settings name (DuckDB or PostgreSQL),
as plain Python values: timestamps aware in UTC, one dict per row."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import duckdb

from pipelines.settings import SyncSettings


def query(target: SyncSettings | Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of `sql` (DuckDB's `?` placeholders or PostgreSQL's `%s`: write `%s`)."""
    if isinstance(target, SyncSettings) and target.target().name == "postgres":
        return _postgres(sql, params)
    path = target.target().duckdb_path if isinstance(target, SyncSettings) else target
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("set timezone = 'UTC'")
        cursor = con.execute(sql.replace("%s", "?"), list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def execute(target: SyncSettings | Path, sql: str, *params: Any) -> None:
    """Run a statement that returns nothing (`%s` placeholders), committed."""
    if isinstance(target, SyncSettings) and target.target().name == "postgres":
        _postgres(sql, params, fetch=False)
        return
    path = target.target().duckdb_path if isinstance(target, SyncSettings) else target
    with duckdb.connect(str(path)) as con:
        con.execute(sql.replace("%s", "?"), list(params))


def scalar(target: SyncSettings | Path, sql: str, *params: Any) -> Any:
    (row,) = query(target, sql, *params)
    (value,) = row.values()
    return value


def _postgres(sql: str, params: tuple[Any, ...], fetch: bool = True) -> list[dict[str, Any]]:
    import psycopg2

    con = psycopg2.connect(os.environ["DESTINATION__POSTGRES__CREDENTIALS"])
    try:
        with con.cursor() as cursor:
            cursor.execute("set time zone 'UTC'")
            cursor.execute(sql, params or None)
            if not fetch:
                con.commit()
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def snapshot(target: SyncSettings, folder: Path) -> str:
    """A copy of the destination as it is now (a backup): the DuckDB file copied into `folder`,
    or a PostgreSQL database made from the current one as its template. Returns its name."""
    if target.target().name == "postgres":
        url = os.environ["DESTINATION__POSTGRES__CREDENTIALS"]
        name = url.rsplit("/", 1)[1]
        clone_database(url, f"{name}_copy")
        return f"{name}_copy"
    path = target.target().duckdb_path
    copy = folder / f"{path.name}.copy"
    shutil.copyfile(path, copy)
    return str(copy)


def clone_database(url: str, name: str) -> str:
    """A new PostgreSQL database `name` made from the one at `url` as its template (nobody may
    be connected to it meanwhile); returns the new one's URL."""
    _admin(url, f'create database "{name}" template "{url.rsplit("/", 1)[1]}"')
    return f"{url.rsplit('/', 1)[0]}/{name}"


def restore(target: SyncSettings, copy: str) -> None:
    """Put a `snapshot` back in place of the destination (its working folder is left alone)."""
    if target.target().name == "postgres":
        url = os.environ["DESTINATION__POSTGRES__CREDENTIALS"]
        name = url.rsplit("/", 1)[1]
        _admin(url, f'drop database "{name}" with (force)')
        _admin(url, f'create database "{name}" template "{copy}"')
        return
    shutil.copyfile(copy, target.target().duckdb_path)


def _admin(url: str, sql: str) -> None:
    import psycopg2

    con = psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres")
    try:
        con.autocommit = True
        with con.cursor() as cursor:
            cursor.execute(sql)
    finally:
        con.close()
