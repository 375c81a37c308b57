"""The SQL layer: create or replace the analysis views of `sql/` in a DuckDB file.

Each `sql/NNN_<view>.sql` file holds one `create or replace view stackai.<view> as ...`
statement; files run in the order of their numeric prefix (later views read earlier ones), then
the files of a user's own folder (`sql_dir`) in theirs, all in one transaction, so a broken file
leaves every view as it was and the loaded data untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import dlt
import duckdb
import sqlglot

from pipelines.analysis import dialects
from pipelines.stackai import endpoint
from pipelines.stackai.endpoint import DATASET_NAME

SQL_DIR = Path(str(files("pipelines.sql")))
"""The shipped views: the repository's `sql/` folder, installed as the package `pipelines.sql`
(pyproject.toml maps it), so an editable install reads the clone's files and a wheel its own."""

VIEW_FILE = re.compile(r"^(?P<order>[0-9]+)_(?P<view>[a-z][a-z0-9_]*)\.sql$")

SOURCE_TABLES = (
    endpoint.RUNS_TABLE,
    endpoint.LLM_USAGE_TABLE,
    endpoint.FLOWS_TABLE,
    endpoint.COSTS_TABLE,
)
"""The dlt tables the views read. dlt creates a table only when its first row loads, so a file
synced from flows with no run yet (or no LLM call yet), or by a version before the flows table,
lacks them."""


class ViewError(RuntimeError):
    """A view could not be created; no view was changed.

    Attributes:
        path: the view file at fault, or None when the cause is not one file (no `sql/`
            folder, a source table missing).
    """

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class SourceTablesMissing(ViewError):
    """The dlt tables the views read do not exist yet: nothing was synced (or no run had an
    LLM call). Sync first; the views can be created after any sync that loads them."""


@dataclass(frozen=True)
class ViewFile:
    path: Path
    order: int
    view: str
    """The view the file must create, `stackai.<view>`, from the file name."""


def view_files(sql_dir: Path | str | None = None, shipped: bool = True) -> list[ViewFile]:
    """The shipped view files, then those of the user's folder `sql_dir`, in execution order.

    Args:
        sql_dir: A folder of the user's own `NNN_<view>.sql` files, applied after the shipped
            ones (a file may replace a shipped view); None = the shipped views only.
        shipped: False leaves the shipped views out (a folder that stands alone).

    Raises:
        ViewError: `sql_dir` does not exist or holds no `.sql` file, or a `.sql` file is not
            named `NNN_<view>.sql` (lowercase view name).
    """
    ours = _folder_files(SQL_DIR) if shipped else []
    if sql_dir is None:
        return ours
    folder = Path(sql_dir).expanduser()
    if not folder.is_dir():
        raise ViewError(f"no SQL folder at {folder} (sql_dir / --sql-dir)")
    own = _folder_files(folder)
    if not own:
        raise ViewError(f"no view files (*.sql) in {folder} (sql_dir / --sql-dir)")
    return ours + own


def _folder_files(folder: Path) -> list[ViewFile]:
    files = []
    for path in folder.glob("*.sql"):
        match = VIEW_FILE.match(path.name)
        if match is None:
            raise ViewError(
                f"{path}: a view file is named NNN_<view>.sql (lowercase view name)", path
            )
        files.append(ViewFile(path, int(match["order"]), match["view"]))
    return sorted(files, key=lambda f: (f.order, f.path.name))


def create_views(
    con_or_path: duckdb.DuckDBPyConnection | Path | str | dlt.Pipeline,
    sql_dir: Path | str | None = None,
    shipped: bool = True,
) -> list[str]:
    """Create or replace every view of `sql_dir` in one transaction, in file order.

    Idempotent: running it again replaces each view with the same definition. On a destination
    other than DuckDB each file is transpiled from DuckDB's dialect by sqlglot (`dialects.py`).

    Args:
        con_or_path: an open read-write DuckDB connection (not inside a transaction), the
            path of an existing DuckDB file (opened and closed here), or a dlt pipeline whose
            destination holds the tables (any destination).
        sql_dir: a folder of the user's own view files, applied after the shipped ones.
        shipped: False applies `sql_dir` alone.

    Returns:
        The qualified names of the views created, in file order (`["stackai.runs", ...]`).

    Raises:
        SourceTablesMissing: `stackai.flow_runs` or `stackai.flow_runs__llm_usage` does not
            exist yet (nothing was changed).
        ViewError: a file is not exactly one statement creating `stackai.<view>` (its name), or
            its SQL fails; the message names the file. No view was changed.
        FileNotFoundError: `con_or_path` is a path and no file exists there.
    """
    files = view_files(sql_dir, shipped)
    if isinstance(con_or_path, dlt.Pipeline):
        with con_or_path.sql_client() as client:
            if client.capabilities.sqlglot_dialect == "duckdb":
                return _create_all(client.native_connection, files)
            return _create_all_with_client(client, files)
    if isinstance(con_or_path, duckdb.DuckDBPyConnection):
        return _create_all(con_or_path, files)
    path = Path(con_or_path).expanduser()
    if not path.is_file():
        # duckdb.connect would create an empty database there.
        raise FileNotFoundError(f"no DuckDB file at {path}")
    with duckdb.connect(str(path)) as con:
        return _create_all(con, files)


def _create_all(con: duckdb.DuckDBPyConnection, files: list[ViewFile]) -> list[str]:
    existing = {
        name
        for (name,) in con.execute(
            "select table_name from information_schema.tables"
            " where table_schema = ? and table_type = 'BASE TABLE'",
            [DATASET_NAME],
        ).fetchall()
    }
    missing = [f"{DATASET_NAME}.{t}" for t in SOURCE_TABLES if t not in existing]
    if missing:
        raise SourceTablesMissing(
            f"{' and '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist yet:"
            " the views read them, and dlt creates each with the first run (or LLM call) it"
            " loads; sync first"
        )
    created = []
    con.execute("begin transaction")
    try:
        for file in files:
            created.append(_create_one(con, file))
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")
    return created


def _create_one(con: duckdb.DuckDBPyConnection, file: ViewFile) -> str:
    name = f"{DATASET_NAME}.{file.view}"
    try:
        sql = file.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ViewError(f"{file.path}: cannot read: {exc}", file.path) from exc
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.CREATE:
            raise ViewError(
                f"{file.path}: must hold exactly one statement, create or replace view {name}",
                file.path,
            )
        con.execute(sql)
        found = con.execute(
            "select count(*) from duckdb_views() where schema_name = ? and view_name = ?",
            [DATASET_NAME, file.view],
        ).fetchall()[0][0]
    except duckdb.Error as exc:
        # DuckDB's message ends with the offending line and a caret: keep it whole.
        message = str(exc).strip() or type(exc).__name__
        raise ViewError(f"{file.path}: {message}", file.path) from exc
    if not found:
        raise ViewError(f"{file.path}: does not create the view {name} its name says", file.path)
    return name


def _create_all_with_client(client: Any, files: list[ViewFile]) -> list[str]:
    """`_create_all` through dlt's SQL client, for a destination other than DuckDB: each file
    transpiled (`dialects.transpile`), or its `sql/<dialect>/` replacement where one exists."""
    dialect = client.capabilities.sqlglot_dialect
    existing = {
        name
        for (name,) in client.execute_sql(
            "select table_name from information_schema.tables where table_schema = %s",
            client.dataset_name,
        )
    }
    missing = [f"{DATASET_NAME}.{t}" for t in SOURCE_TABLES if t not in existing]
    if missing:
        raise SourceTablesMissing(
            f"{' and '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist yet:"
            " the views read them, and dlt creates each with the first run (or LLM call) it"
            " loads; sync first"
        )
    statements: list[tuple[ViewFile, str]] = []
    for file in files:
        statements.append((file, _transpiled(file, dialect)))
    created = []
    with client.begin_transaction():
        for sql in dialects.SUPPORT_SQL.get(dialect, []):
            client.execute_sql(sql)
        # Replaced in reverse order, then created in order: PostgreSQL's `create or replace
        # view` refuses a changed column list, and a view cannot be dropped before the views
        # that read it. A view of the user's own that reads ours stops the drop, with its name.
        for file, _ in reversed(statements):
            _execute(client, file, f"drop view if exists {DATASET_NAME}.{file.view}")
        for file, sql in statements:
            _execute(client, file, sql)
            created.append(f"{DATASET_NAME}.{file.view}")
    return created


def _transpiled(file: ViewFile, dialect: str) -> str:
    own = file.path.parent / dialect / file.path.name
    path = own if own.is_file() else file.path
    try:
        sql = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ViewError(f"{path}: cannot read: {exc}", path) from exc
    if path == own:
        return sql
    try:
        statements = dialects.transpile(sql, dialect)
    except sqlglot.errors.SqlglotError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ViewError(f"{path}: cannot be written in {dialect}'s SQL: {first}", path) from exc
    name = f"{DATASET_NAME}.{file.view}"
    if len(statements) != 1:
        raise ViewError(
            f"{path}: must hold exactly one statement, create or replace view {name}", path
        )
    return statements[0]


def _execute(client: Any, file: ViewFile, sql: str) -> None:
    try:
        client.execute_sql(sql)
    except Exception as exc:
        message = str(exc).strip() or type(exc).__name__
        raise ViewError(f"{file.path}: {message}", file.path) from exc
