"""The SQL layer (`sql/*.sql`, `pipelines.views`): every view's figures equal the same figures
computed here, in plain Python, from the simulator's ground truth (`World.all_runs()`), never from
the DuckDB tables; and creating the views is atomic, idempotent and names a broken file."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.analysis.views import SQL_DIR, SourceTablesMissing, ViewError, create_views
from pipelines.load import open_pipeline, run_sync
from pipelines.load.destination import choose
from pipelines.settings import SyncSettings
from pipelines.simulator import SimulatorServer, World
from pipelines.stackai.flows import FlowRef
from tests.conftest import (
    DESTINATIONS,
    FAST_HTTP,
    FAST_RETRY_ENV,
    new_database_name,
    standard_world,
)
from tests.support import store
from tests.support.cli import ROOT, stackai_runs
from tests.support.truth import assert_matches, expected_runs, loaded_runs

VIEWS = [
    "stackai.runs",
    "stackai.llm_usage_costs",
    "stackai.run_costs",
    "stackai.daily_flow_runs",
    "stackai.daily_llm_usage",
    "stackai.user_usage",
    "stackai.ran_by_usage",
    "stackai.top_errors",
    "stackai.run_feedback",
    "stackai.run_trees",
    "stackai.stale_open_runs",
    "stackai.flow_completeness",
    "stackai.unpriced_models",
]
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
OPEN = {"PENDING", "PAUSED", "RESUMED"}
SESSION_TZ = "Asia/Tokyo"
"""Queries run in a UTC+9 session: a run's UTC day must not depend on the reader's zone."""
CREDENTIALS = "DESTINATION__POSTGRES__CREDENTIALS"


# ------------------------------------------------------------------ helpers


def sync_with_views(settings: SyncSettings, world: World) -> Path | SyncSettings:
    """Sync (which creates the views) and create them again; returns what `query` reads: the
    DuckDB file, or the settings of a PostgreSQL destination."""
    report = run_sync(settings, now=world.now)
    assert report.ok, report.error
    if settings.target().name == "postgres":
        assert create_views(open_pipeline(settings.target())) == VIEWS
        return settings
    assert create_views(settings.duckdb_path) == VIEWS
    return settings.duckdb_path


@dataclass(frozen=True)
class Synced:
    """conftest's `world` (`standard_world()`), synced once with the views created."""

    world: World
    settings: SyncSettings
    url: str | None
    """PostgreSQL: the database's URL (None for a DuckDB file)."""

    @property
    def path(self) -> Path | SyncSettings:
        """What `query` reads (as `sync_with_views` returns it)."""
        return self.settings if self.url else self.settings.duckdb_path


@pytest.fixture(scope="module")
def sync_once(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Synced]]:
    """`Synced` for a destination, made the first time a test of this module asks for it and
    shared by the tests that only read it: a sync of the same world per test would give the
    same tables (the figures are computed from the world either way), a few seconds each."""
    made: dict[str, Synced] = {}

    def get(destination: str) -> Synced:
        if destination not in made:
            made[destination] = _sync_standard_world(destination, request, tmp_path_factory)
        return made[destination]

    yield get


def _sync_standard_world(
    destination: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Synced:
    """As conftest's `settings` and `postgres_url` fixtures do for a test, for the module."""
    world = standard_world()
    url = None
    with pytest.MonkeyPatch.context() as env, SimulatorServer(world) as server:
        for name, value in FAST_RETRY_ENV.items():
            env.setenv(name, value)
        target = None
        if destination != "duckdb":
            url = request.getfixturevalue("postgres_server").create_database(new_database_name())
            env.setenv(CREDENTIALS, url)
            target = choose(destination)
        settings = SyncSettings(
            base_url=server.url,
            api_key=world.api_key,
            flows=tuple(FlowRef(f.org_id, f.flow_id) for f in world.flows()),
            duckdb_path=tmp_path_factory.mktemp("views-synced") / "runs.duckdb",
            page_size=25,
            http=FAST_HTTP,
            destination=target,
        )
        sync_with_views(settings, world)
    return Synced(world, settings, url)


@pytest.fixture
def synced(
    sync_once: Callable[[str], Synced], destination: str, monkeypatch: pytest.MonkeyPatch
) -> Synced:
    """The shared `Synced` of the test's destination (read it, never change it: see
    `private_copy`), its PostgreSQL database set as dlt's credentials for the test."""
    shared = sync_once(destination)
    if shared.url:
        monkeypatch.setenv(CREDENTIALS, shared.url)
    return shared


def private_copy(
    synced: Synced, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path | SyncSettings:
    """A copy of the shared destination for a test that changes its tables or views, as
    `Synced.path`: the DuckDB file copied (views and tables; not the working folder, which no
    view reads), or a PostgreSQL database made from the shared one (set as dlt's credentials
    for the test)."""
    if synced.url:
        monkeypatch.setenv(CREDENTIALS, store.clone_database(synced.url, new_database_name()))
        return replace(synced.settings, destination=choose(synced.settings.target().name))
    copy = tmp_path / synced.settings.duckdb_path.name
    shutil.copyfile(synced.settings.duckdb_path, copy)
    return copy


def query(path: Path | SyncSettings, sql: str) -> list[dict[str, Any]]:
    """Rows of `sql` in a UTC+9 session, from the DuckDB file or the PostgreSQL destination."""
    if isinstance(path, SyncSettings):
        import psycopg2
        import psycopg2.extras

        con = psycopg2.connect(os.environ["DESTINATION__POSTGRES__CREDENTIALS"])
        # JSON as text, as DuckDB returns it
        psycopg2.extras.register_default_json(con, loads=lambda text: text)
        psycopg2.extras.register_default_jsonb(con, loads=lambda text: text)
        try:
            with con.cursor() as cursor:
                cursor.execute(f"set time zone '{SESSION_TZ}'")
                cursor.execute(sql)
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            con.close()
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute(f"set timezone = '{SESSION_TZ}'")
        result = con.execute(sql)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def truth(world: World) -> list[dict[str, Any]]:
    """Every served run as a row with the fields the views read (see `tests.support.truth`:
    dates parsed with `datetime.fromisoformat`, naive = UTC), plus its UTC day."""
    runs = list(expected_runs(world).values())
    for run in runs:
        run["day"] = run["date"].astimezone(UTC).date()
    return runs


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default, DuckDB's quantile_cont)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rate(failed: int, final: int) -> float | None:
    return failed / final if final else None


def group(rows: Iterable[dict], key: Callable[[dict], tuple]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def outcome(runs: list[dict]) -> dict[str, Any]:
    """The counts, failure rate and tokens every per-group view reports."""
    states = [r["state"] for r in runs]
    final = sum(s in FINAL for s in states)
    return {
        "runs": len(runs),
        "final_runs": final,
        "failed": states.count("FAILED"),
        "failure_rate": rate(states.count("FAILED"), final),
        "tokens": sum(r["total_tokens"] or 0 for r in runs),
    }


def assert_rows_equal(got: dict[tuple, dict], want: dict[tuple, dict]) -> None:
    """Same keys, and every expected field equal (floats within 1e-9 relative)."""
    assert set(got) == set(want), (
        f"missing {sorted(set(want) - set(got), key=str)[:3]},"
        f" extra {sorted(set(got) - set(want), key=str)[:3]}"
    )
    for key, fields in want.items():
        for name, value in fields.items():
            actual = got[key][name]
            if isinstance(value, float):
                assert actual == pytest.approx(value, rel=1e-9), f"{key} {name}"
            else:
                assert actual == value, f"{key} {name}: {actual!r} != {value!r}"


def parse_json(text: str | None) -> tuple[bool, Any]:
    """(valid, value) by strict JSON (no NaN/Infinity, which DuckDB rejects too)."""
    if text is None:
        return False, None

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        return True, json.loads(text, parse_constant=no_constants)
    except ValueError:
        return False, None


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
HEX_ID = re.compile(r"\b(?=[0-9a-f]*[0-9])[0-9a-f]{6,}\b", re.I | re.A)
NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def error_pattern(error: str | None) -> str | None:
    """The masking the views document, written with Python's regex (lookahead, unlike RE2)."""
    if error is None or not error.strip():
        return None
    masked = HEX_ID.sub("<hex>", UUID.sub("<uuid>", error.strip()))
    return NUMBER.sub("<n>", masked)


# -------------------------------------------------------------- create_views


def view_names(path: Path | SyncSettings) -> set[str]:
    """The views in schema stackai, qualified (information_schema: DuckDB and PostgreSQL)."""
    rows = query(
        path,
        "select table_name from information_schema.tables"
        " where table_schema = 'stackai' and table_type = 'VIEW'",
    )
    return {f"stackai.{r['table_name']}" for r in rows}


DAILY_FLOW_RUNS = "select * from stackai.daily_flow_runs order by org_id, flow_id, run_date"


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_create_views_in_file_order_idempotent(synced, tmp_path, monkeypatch):
    path = private_copy(synced, tmp_path, monkeypatch)  # the views are created again
    before = query(path, DAILY_FLOW_RUNS)
    if isinstance(path, SyncSettings):
        assert create_views(open_pipeline(path.target())) == VIEWS
    else:
        assert create_views(path) == VIEWS
        with duckdb.connect(str(path)) as con:
            assert create_views(con) == VIEWS
    assert query(path, DAILY_FLOW_RUNS) == before
    assert view_names(path) == set(VIEWS)


def test_sql_files_are_found_beside_the_package_and_documented():
    assert SQL_DIR == ROOT / "sql"
    files = sorted(SQL_DIR.glob("*.sql"))
    assert [f"stackai.{f.stem.split('_', 1)[1]}" for f in files] == VIEWS
    for file in files:
        text = file.read_text(encoding="utf-8")
        view = f"stackai.{file.stem.split('_', 1)[1]}"
        assert text.startswith(f"-- {view}:"), file.name
        assert "Grain:" in text and "Columns:" in text, file.name
        assert f"create or replace view {view} as" in text, file.name


def test_broken_view_file_names_the_file_and_changes_nothing(synced, tmp_path, monkeypatch):
    path = private_copy(synced, tmp_path, monkeypatch)
    views_before = query(path, "select view_name, sql from duckdb_views() order by view_name")
    daily_before = query(path, "select * from stackai.daily_flow_runs order by all")
    runs_before = query(path, "select * from stackai.flow_runs order by run_id")

    broken_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, broken_dir)
    runs_file = broken_dir / "010_runs.sql"
    runs_file.write_text(
        runs_file.read_text(encoding="utf-8").replace(
            "from runs_with_error_patterns as runs",
            "from (select * from runs_with_error_patterns where true) as runs",
        ),
        encoding="utf-8",
    )
    (broken_dir / "015_rollback_probe.sql").write_text(
        "create or replace view stackai.rollback_probe as select 1 as x\n", encoding="utf-8"
    )
    (broken_dir / "055_broken.sql").write_text(
        "create or replace view stackai.broken as select no_such_column from stackai.runs\n",
        encoding="utf-8",
    )
    with pytest.raises(ViewError, match=r"055_broken\.sql") as caught:
        create_views(path, sql_dir=broken_dir)
    assert caught.value.path == broken_dir / "055_broken.sql"
    assert "no_such_column" in str(caught.value)

    assert query(path, "select view_name, sql from duckdb_views() order by view_name") == (
        views_before
    )
    assert query(path, "select * from stackai.daily_flow_runs order by all") == daily_before
    assert query(path, "select * from stackai.flow_runs order by run_id") == runs_before

    result = stackai_runs("views", "--duckdb", str(path), "--sql-dir", str(broken_dir))
    assert result.returncode == 1
    assert "055_broken.sql" in result.stderr
    assert "Traceback" not in result.stderr
    result = stackai_runs("views", "--duckdb", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{len(VIEWS)} views" in result.stdout


@pytest.fixture
def stub_db() -> duckdb.DuckDBPyConnection:
    """An in-memory file with empty source tables: enough to bind simple view files."""
    con = duckdb.connect()
    con.execute("create schema stackai")
    con.execute("create table stackai.flow_runs (run_id varchar)")
    con.execute("create table stackai.flow_runs__llm_usage (run_id varchar)")
    con.execute("create table stackai.flows (org_id varchar, flow_id varchar)")
    con.execute("create table stackai.llm_call_costs (call_id varchar)")
    yield con
    con.close()


@pytest.mark.parametrize(
    ("name", "sql", "message"),
    [
        ("10-runs.sql", "select 1", "NNN_<view>.sql"),
        ("010_two.sql", "create view stackai.two as select 1; select 2", "exactly one statement"),
        ("010_select.sql", "select 1", "exactly one statement"),
        ("010_named.sql", "create view stackai.other as select 1", "stackai.named"),
        ("010_syntax.sql", "create view stackai.syntax as selec 1", "syntax"),
    ],
)
def test_bad_view_file_raises_view_error(stub_db, tmp_path, name, sql, message):
    (tmp_path / name).write_text(sql, encoding="utf-8")
    with pytest.raises(ViewError, match=re.escape(message)) as caught:
        create_views(stub_db, sql_dir=tmp_path, shipped=False)
    assert name in str(caught.value)
    views = stub_db.execute("select count(*) from duckdb_views() where not internal").fetchall()
    assert views == [(0,)]


def test_views_before_any_sync_say_so(tmp_path):
    with duckdb.connect() as con, pytest.raises(SourceTablesMissing, match="sync first"):
        create_views(con)
    with duckdb.connect() as con, pytest.raises(ViewError, match="no SQL folder"):
        create_views(con, sql_dir=tmp_path / "missing")
    result = stackai_runs("views", "--duckdb", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2
    assert not (tmp_path / "none.duckdb").exists()


# ------------------------------------------------------------ view headers

VIEW_FILES = sorted(SQL_DIR.glob("*.sql"))
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
GRAIN_LINE = re.compile(r"^-- Grain: one row per \(([^)]*)\)")
COLUMN_ENTRY = re.compile(r"^--   (\S.*?)(?:\s{2,}|$)")


def header_grain_and_columns(path: Path) -> tuple[list[str], list[str]]:
    """(grain, columns) as the file's header declares them.

    The header is the file's opening `--` lines. Its grain is the parenthesised list of the one
    line `-- Grain: one row per (<column>, ...)...` (a view of runs: `one row per (run_id)`).
    Its columns are the entries of the `-- Columns:` part, up to the next bare `--` line or the
    header's end: an entry line is `--` and three spaces, then comma-separated column names, then
    two or more spaces before the type and description (lines indented deeper continue a
    description; a names list ending in a comma continues on the next entry line).
    Anything that is not a lowercase column name fails, so a header the parser misreads fails
    here rather than passing by accident.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("--"))]

    grain_lines = [line for line in header if line.startswith("-- Grain:")]
    assert len(grain_lines) == 1, f"{path.name}: want one '-- Grain:' line, got {grain_lines}"
    declared = GRAIN_LINE.match(grain_lines[0])
    assert declared, f"{path.name}: the Grain line does not start 'one row per (<columns>)'"
    grain = [name.strip() for name in declared.group(1).split(",")]

    starts = [i for i, line in enumerate(header) if line == "-- Columns:"]
    assert len(starts) == 1, f"{path.name}: want one '-- Columns:' line"
    columns: list[str] = []
    for line in header[starts[0] + 1 :]:
        if line == "--":
            break
        entry = COLUMN_ENTRY.match(line)
        if entry:
            columns += [name.strip() for name in entry.group(1).split(",") if name.strip()]
        else:
            assert line.startswith("--    "), f"{path.name}: not an entry or continuation: {line}"

    for name in grain + columns:
        assert IDENTIFIER.fullmatch(name), f"{path.name}: {name!r} is not a column name"
    assert len(set(columns)) == len(columns), f"{path.name}: a column is listed twice"
    return grain, columns


@pytest.fixture(scope="module")
def header_check_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synced file shared by the header checks: conftest's `world` (same seed and sizes),
    plus the cases where a view could repeat a key or stay empty: an orphan sub-workflow run and
    its child, two runs that name each other as parent, structured and plain feedback, an open
    run long past the stale threshold. Built here because conftest's fixtures are per test."""
    world = standard_world()
    add_header_cases(world)
    with SimulatorServer(world) as server:
        settings = SyncSettings(
            base_url=server.url,
            api_key=world.api_key,
            flows=tuple(FlowRef(f.org_id, f.flow_id) for f in world.flows()),
            duckdb_path=tmp_path_factory.mktemp("view-headers") / "runs.duckdb",
            page_size=25,
        )
        return sync_with_views(settings, world)


def add_header_cases(world: World) -> None:
    """The runs that could make a view repeat a key or stay empty (see `header_check_file`)."""
    first, second = world.flows()[0], world.flows()[1]
    orphan = world.add_run(
        first.org_id,
        first.flow_id,
        date=world.now - timedelta(hours=1),
        parent_run_id="00000000-0000-4000-8000-00000000dead",
    )
    world.add_run(second.org_id, second.flow_id, parent_run_id=orphan["run_id"])
    loners = [r for r in world.runs(first.org_id, first.flow_id) if r.get("parent_run_id") is None]
    world.update_run(loners[-1]["run_id"], parent_run_id=loners[-2]["run_id"])
    world.update_run(loners[-2]["run_id"], parent_run_id=loners[-1]["run_id"])
    finished = [r for _, _, r in world.all_runs() if r["state"] in FINAL]
    world.set_feedback(finished[0]["run_id"], '{"rating": 4, "comment": "ok"}')
    world.set_feedback(finished[1]["run_id"], "plain words")
    world.add_run(second.org_id, second.flow_id, state="PENDING")


def test_every_view_file_declares_a_grain_within_its_columns():
    assert [f"stackai.{f.stem.split('_', 1)[1]}" for f in VIEW_FILES] == VIEWS
    for path in VIEW_FILES:
        grain, columns = header_grain_and_columns(path)
        assert grain, path.name
        assert columns, path.name
        assert set(grain) <= set(columns), f"{path.name}: grain {grain} not among its columns"


@pytest.mark.parametrize("path", VIEW_FILES, ids=lambda path: path.name)
def test_view_has_its_header_columns_and_is_unique_on_its_grain(header_check_file, path):
    view = f"stackai.{path.stem.split('_', 1)[1]}"
    grain, columns = header_grain_and_columns(path)
    described = {row["column_name"] for row in query(header_check_file, f"describe {view}")}
    assert described == set(columns), (
        f"{view}: not in the header {sorted(described - set(columns))},"
        f" in the header but not the view {sorted(set(columns) - described)}"
    )
    (count,) = query(header_check_file, f"select count(*) as n from {view}")
    assert count["n"] > 0, f"{view} is empty: its grain check would prove nothing"
    keys = ", ".join(grain)
    repeated = query(
        header_check_file,
        f"select {keys}, count(*) as n from {view} group by all having count(*) > 1 limit 5",
    )
    assert not repeated, f"{view} is not unique on ({keys}): {repeated}"


@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_postgres_views_have_their_header_columns_and_are_unique_on_their_grain(settings, world):
    """The header checks above, on PostgreSQL's views (transpiled, or `sql/postgres/`'s own
    file): same columns, same grain. One test: conftest's fixtures are per test."""
    add_header_cases(world)
    path = sync_with_views(settings, world)
    for file in VIEW_FILES:
        view = file.stem.split("_", 1)[1]
        grain, columns = header_grain_and_columns(file)
        described = query(
            path,
            "select column_name from information_schema.columns"
            f" where table_schema = 'stackai' and table_name = '{view}'",
        )
        assert {r["column_name"] for r in described} == set(columns), view
        (count,) = query(path, f"select count(*) as n from stackai.{view}")
        assert count["n"] > 0, f"{view} is empty: its grain check would prove nothing"
        keys = ", ".join(grain)
        repeated = query(
            path,
            f"select {keys}, count(*) as n from stackai.{view}"
            f" group by {keys} having count(*) > 1 limit 5",
        )
        assert not repeated, f"{view} is not unique on ({keys}): {repeated}"


# --------------------------------------------------------------------- views


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_runs(synced):
    world, path = synced.world, synced.path
    got = {r["run_id"]: r for r in query(path, "select * from stackai.runs")}
    want = {}
    for run in truth(world):
        fields = {
            "org_id": run["org_id"],
            "flow_id": run["flow_id"],
            "date": run["date"],
            "run_date": run["day"],
            "state": run["state"],
            "is_final": run["state"] in FINAL,
            "is_open": run["state"] in OPEN,
            "is_sub_workflow": run["parent_run_id"] is not None
            or run["run_type"] == "sub_workflow",
            "latency_seconds": run["latency"],
            "total_tokens": run["total_tokens"],
            "error": run["error"],
            "error_pattern": error_pattern(run["error"]),
            "user_id": run["user_id"],
            "ran_by_id": run["ran_by_id"],
            "parent_run_id": run["parent_run_id"],
        }
        for column in ("inputs", "outputs", "llms", "feedback"):
            fields[column] = run[column]
            valid, value = parse_json(run[column])
            fields[f"{column}_json"] = value if valid else None
        want[run["run_id"]] = fields
    for row in got.values():
        for column in ("inputs", "outputs", "llms", "feedback"):
            text = row[f"{column}_json"]
            row[f"{column}_json"] = None if text is None else json.loads(text)
    assert_rows_equal(got, want)
    # The data has both kinds, or the comparison above proves little.
    assert any(r["inputs_json"] is not None for r in want.values())
    assert any(r["inputs"] is not None and r["inputs_json"] is None for r in want.values())
    assert any(r["date"].hour >= 15 for r in want.values()), "no run on a different Tokyo day"


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_error_patterns_mask_ids_and_numbers(settings, world):
    failed = [r for _, _, r in world.all_runs() if r["state"] == "FAILED"]
    messages = {
        failed[0]["run_id"]: "Upstream OpenAI returned 503 for request 3fa9c1d2e4b5"
        " (run 1B4E28BA-2FA1-11D2-883F-0016D3CCA427) after 1.5s",
        failed[1]["run_id"]: "Upstream OpenAI returned 529 for request 123456"
        " (run 0f8fad5b-d9cb-469f-a165-70867728950e) after 12s",
        failed[2]["run_id"]: "Upstream OpenAI returned 529 for request abcdef1",
    }
    for run_id, message in messages.items():
        world.update_run(run_id, error=message)
    path = sync_with_views(settings, world)
    patterns = {
        r["run_id"]: r["error_pattern"]
        for r in query(path, "select run_id, error_pattern from stackai.runs")
    }
    assert patterns[failed[0]["run_id"]] == (
        "Upstream OpenAI returned <n> for request <hex> (run <uuid>) after <n>s"
    )
    assert patterns[failed[1]["run_id"]] == patterns[failed[0]["run_id"]]
    assert patterns[failed[2]["run_id"]] == "Upstream OpenAI returned <n> for request <hex>"
    # A word made of hex letters only is a word, not an id.
    assert error_pattern("decade facade 1") == "decade facade <n>"


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_daily_flow_runs(synced):
    world, path = synced.world, synced.path
    got = {
        (r["org_id"], r["flow_id"], r["run_date"]): r
        for r in query(path, "select * from stackai.daily_flow_runs")
    }
    want = {}
    for key, runs in group(truth(world), lambda r: (r["org_id"], r["flow_id"], r["day"])).items():
        latencies = [r["latency"] for r in runs if r["latency"] is not None]
        states = [r["state"] for r in runs]
        want[key] = {
            **outcome(runs),
            "completed": states.count("COMPLETED"),
            "cancelled": states.count("CANCELLED"),
            "open": sum(s in OPEN for s in states),
            "users": len({r["user_id"] for r in runs} - {None}),
            "p50_latency_seconds": quantile(latencies, 0.50),
            "p95_latency_seconds": quantile(latencies, 0.95),
            "p99_latency_seconds": quantile(latencies, 0.99),
        }
    assert_rows_equal(got, want)
    assert any(w["failure_rate"] for w in want.values())
    assert any(w["open"] for w in want.values())


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_daily_llm_usage(synced):
    world, path = synced.world, synced.path
    key_columns = ("org_id", "flow_id", "run_date", "provider", "model_id")
    got = {
        tuple(r[c] for c in key_columns): r
        for r in query(path, "select * from stackai.daily_llm_usage")
    }
    calls = [
        {
            **call,
            "run_id": run["run_id"],
            "org_id": run["org_id"],
            "flow_id": run["flow_id"],
            "day": run["day"],
        }
        for run in truth(world)
        for call in run["llm_usage"]
    ]
    want = {}
    for key, group_calls in group(
        calls, lambda c: (c["org_id"], c["flow_id"], c["day"], c["provider"], c["model_id"])
    ).items():
        want[key] = {
            "calls": len(group_calls),
            "runs": len({c["run_id"] for c in group_calls}),
            "tokens": sum(c["tokens"] or 0 for c in group_calls),
            "input_tokens": sum(c["input_tokens"] or 0 for c in group_calls),
            "output_tokens": sum(c["output_tokens"] or 0 for c in group_calls),
            "calls_without_usage": sum(c["tokens"] is None for c in group_calls),
        }
    assert_rows_equal(got, want)
    assert any(w["calls_without_usage"] for w in want.values())


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_user_usage(synced):
    world, path = synced.world, synced.path
    got = {(r["org_id"], r["user_id"]): r for r in query(path, "select * from stackai.user_usage")}
    want = {
        key: {
            **outcome(runs),
            "flows": len({r["flow_id"] for r in runs}),
            "first_seen": min(r["date"] for r in runs),
            "last_seen": max(r["date"] for r in runs),
        }
        for key, runs in group(truth(world), lambda r: (r["org_id"], r["user_id"])).items()
    }
    assert_rows_equal(got, want)
    assert any(user_id is None for _, user_id in want)


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_ran_by_usage(synced):
    world, path = synced.world, synced.path
    got = {
        (r["org_id"], r["ran_by_type"], r["ran_by_id"]): r
        for r in query(path, "select * from stackai.ran_by_usage")
    }
    want = {}
    for key, runs in group(
        truth(world), lambda r: (r["org_id"], r["ran_by_type"], r["ran_by_id"])
    ).items():
        latest = max(runs, key=lambda r: r["date"])
        want[key] = {
            **outcome(runs),
            "ran_by_display_name": latest["ran_by_display_name"],
            "flows": len({r["flow_id"] for r in runs}),
            "first_seen": min(r["date"] for r in runs),
            "last_seen": latest["date"],
        }
    assert_rows_equal(got, want)
    assert {kind for _, kind, _ in want} >= {"user", "system", "org_api_key", None}


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_top_errors(synced):
    world, path = synced.world, synced.path
    got = {
        (r["org_id"], r["flow_id"], r["error_pattern"]): r
        for r in query(path, "select * from stackai.top_errors")
    }
    failed = [r for r in truth(world) if r["state"] == "FAILED"]
    per_flow = group(failed, lambda r: (r["org_id"], r["flow_id"]))
    want = {}
    for key, runs in group(
        failed,
        lambda r: (r["org_id"], r["flow_id"], error_pattern(r["error"]) or "(no error message)"),
    ).items():
        latest = max(runs, key=lambda r: r["date"])
        want[key] = {
            "runs": len(runs),
            "share_of_failures": len(runs) / len(per_flow[key[:2]]),
            "first_seen": min(r["date"] for r in runs),
            "last_seen": latest["date"],
            "example_run_id": latest["run_id"],
            "example_error": latest["error"],
        }
    assert_rows_equal(got, want)
    assert max(w["runs"] for w in want.values()) > 1, "no two errors share a pattern"


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_run_feedback(settings, world):
    finished = [r for _, _, r in world.all_runs() if r["state"] in FINAL]
    crafted = [
        '{"rating": 4.5, "comment": "ok"}',
        '{"rating": "5", "comment": "a string is not a number"}',
        '{"rating": true}',
        '{"comment": "no rating"}',
        "[1, 2]",
        "42",
        "   ",
        "plain words",
    ]
    for run, feedback in zip(finished, crafted, strict=False):
        world.set_feedback(run["run_id"], feedback)
    path = sync_with_views(settings, world)
    got = {r["run_id"]: r for r in query(path, "select * from stackai.run_feedback")}
    want = {}
    for run in truth(world):
        if run["feedback"] is None or not run["feedback"].strip():
            continue
        valid, value = parse_json(run["feedback"])
        is_object = valid and isinstance(value, dict)
        rating = value.get("rating") if is_object else None
        numeric = isinstance(rating, int | float) and not isinstance(rating, bool)
        want[run["run_id"]] = {
            "org_id": run["org_id"],
            "flow_id": run["flow_id"],
            "run_date": run["day"],
            "feedback": run["feedback"],
            "is_structured": valid,
            "rating": float(rating) if numeric else None,
            "comment": value.get("comment") if is_object else None,
        }
    assert_rows_equal(got, want)
    assert got[finished[0]["run_id"]]["rating"] == 4.5
    assert finished[6]["run_id"] not in got, "blank feedback counted"
    ratings = [w["rating"] for w in want.values() if w["rating"] is not None]
    assert len(ratings) > 3


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_run_trees_flag_orphans_and_loops(settings, world):
    first, second = world.flows()[0], world.flows()[1]
    ghost = "00000000-0000-4000-8000-00000000dead"
    orphan = world.add_run(
        first.org_id, first.flow_id, date=world.now - timedelta(hours=1), parent_run_id=ghost
    )
    child = world.add_run(
        second.org_id,
        second.flow_id,
        date=world.now - timedelta(minutes=59),
        parent_run_id=orphan["run_id"],
    )
    loners = [r for r in world.runs(first.org_id, first.flow_id) if r.get("parent_run_id") is None][
        -2:
    ]
    world.update_run(loners[0]["run_id"], parent_run_id=loners[1]["run_id"])
    world.update_run(loners[1]["run_id"], parent_run_id=loners[0]["run_id"])
    path = sync_with_views(settings, world)

    runs = {r["run_id"]: r for r in truth(world)}
    chains: dict[str, list[str]] = {}
    looped = set()
    for run_id in runs:
        chain = [run_id]
        while (parent := runs[chain[-1]]["parent_run_id"]) in runs:
            if parent in chain:
                looped.add(run_id)
                break
            chain.append(parent)
        chains[run_id] = chain
    roots = {run_id: chain[-1] for run_id, chain in chains.items() if run_id not in looped}
    members = group(roots, lambda run_id: (roots[run_id],))
    want = {}
    for run_id, run in runs.items():
        is_orphan = run["parent_run_id"] is not None and run["parent_run_id"] not in runs
        if run_id in looped:
            want[run_id] = {"is_orphan": is_orphan, "in_cycle": True, "root_run_id": None}
            continue
        root = roots[run_id]
        tree = [runs[m] for m in members[(root,)]]
        want[run_id] = {
            "is_orphan": is_orphan,
            "in_cycle": False,
            "root_run_id": root,
            "root_flow_id": runs[root]["flow_id"],
            "depth": len(chains[run_id]) - 1,
            "tree_is_incomplete": runs[root]["parent_run_id"] is not None,
            "tree_runs": len(tree),
            "tree_depth": max(len(chains[m["run_id"]]) - 1 for m in tree),
            "tree_tokens": sum(m["total_tokens"] or 0 for m in tree),
            "tree_latency_seconds": float(sum(m["latency"] or 0 for m in tree)),
        }
    got = {r["run_id"]: r for r in query(path, "select * from stackai.run_trees")}
    assert_rows_equal(got, want)
    assert got[orphan["run_id"]]["is_orphan"] and got[orphan["run_id"]]["depth"] == 0
    assert got[child["run_id"]]["root_run_id"] == orphan["run_id"]
    assert got[child["run_id"]]["depth"] == 1 and got[child["run_id"]]["tree_is_incomplete"]
    assert got[loners[0]["run_id"]]["in_cycle"]
    assert sum(w.get("depth") == 1 for w in want.values()) > 5, "few sub-workflow runs"


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_stale_open_runs(settings, world):
    now = datetime.now(UTC)
    # Move the clock to the present: every open run of the history finishes.
    world.advance((now - world.now).total_seconds() - 60, new_runs=False)
    flow = world.flows()[0]
    added = {
        state: world.add_run(flow.org_id, flow.flow_id, date=world.now - age, state=state)
        for state, age in (
            ("PENDING", timedelta(hours=2)),
            ("PAUSED", timedelta(minutes=30)),
            ("RESUMED", timedelta(days=3)),
        )
    }
    path = sync_with_views(settings, world)
    got = {r["run_id"]: r for r in query(path, "select * from stackai.stale_open_runs")}
    now = datetime.now(UTC)
    want = {
        run["run_id"]: {
            "state": run["state"],
            "run_date": run["day"],
            "age_hours": (now - run["date"]).total_seconds() / 3600,
        }
        for run in truth(world)
        if run["state"] in OPEN and run["date"] < now - timedelta(hours=1)
    }
    assert set(got) == set(want) == {added["PENDING"]["run_id"], added["RESUMED"]["run_id"]}
    for run_id, fields in want.items():
        assert got[run_id]["state"] == fields["state"]
        assert got[run_id]["run_date"] == fields["run_date"]
        assert got[run_id]["age_hours"] == pytest.approx(fields["age_hours"], abs=0.05)


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_every_sync_refreshes_the_views_and_a_broken_view_does_not_undo_the_load(
    settings, world, tmp_path, monkeypatch
):
    assert run_sync(settings, now=world.now).ok
    target = settings if settings.target().name == "postgres" else settings.duckdb_path
    assert view_names(target) == set(VIEWS)

    broken = tmp_path / "sql"
    broken.mkdir()
    (broken / "010_runs.sql").write_text("create or replace view stackai.runs as selec 1")
    monkeypatch.setattr(
        "pipelines.load.sync.create_views",
        lambda path, sql_dir=None: create_views(path, sql_dir=broken),
    )
    world.advance(1800)
    report = run_sync(settings, now=world.now)
    assert all(f.ok for f in report.flows.values())
    assert "010_runs.sql" in report.error and not report.ok
    horizon = world.now - settings.rules.max_open_run_age
    assert_matches(loaded_runs(settings), expected_runs(world), horizon)


# --------------------------------------------------------------- flow names, completeness

NAMED_VIEWS = (
    "runs",
    "daily_flow_runs",
    "daily_llm_usage",
    "top_errors",
    "run_feedback",
    "run_trees",
    "stale_open_runs",
    "flow_completeness",
)


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_every_per_flow_view_names_its_flows_as_the_api_does(synced):
    world, path = synced.world, synced.path
    names = {(f.org_id, f.flow_id): f.name for f in world.flows()}
    for view in NAMED_VIEWS:
        rows = query(path, f"select org_id, flow_id, flow_name from stackai.{view}")
        assert rows, view
        for row in rows:
            assert row["flow_name"] == names[(row["org_id"], row["flow_id"])], view
    for row in query(path, "select org_id, root_flow_id, root_flow_name from stackai.run_trees"):
        if row["root_flow_id"] is not None:
            assert row["root_flow_name"] == names[(row["org_id"], row["root_flow_id"])]


def completeness(path: Path | SyncSettings) -> dict[str, dict[str, Any]]:
    return {r["flow_id"]: r for r in query(path, "select * from stackai.flow_completeness")}


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_flow_completeness_compares_stored_runs_with_the_apis_count(synced, tmp_path, monkeypatch):
    world, settings = synced.world, synced.settings
    path = private_copy(synced, tmp_path, monkeypatch)  # runs are deleted below
    counts: dict[str, int] = defaultdict(int)
    for _, flow_id, _ in world.all_runs():
        counts[flow_id] += 1
    rows = completeness(path)
    assert set(rows) == {f.flow_id for f in settings.flows}
    for flow_id, row in rows.items():
        assert (row["total_runs"], row["stored_runs"], row["missing_runs"]) == (
            counts[flow_id],
            counts[flow_id],
            0,
        )
        assert row["explanation"] == "complete" and row["is_short"] is False

    # runs lost from the copy: counted against the API's total, flagged
    short = settings.flows[0].flow_id
    store.execute(
        path,
        "delete from stackai.flow_runs where run_id in"
        " (select run_id from stackai.flow_runs where flow_id = %s limit 3)",
        short,
    )
    row = completeness(path)[short]
    assert (row["stored_runs"], row["missing_runs"]) == (counts[short] - 3, 3)
    assert row["explanation"] == "runs missing" and row["is_short"] is True


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_flow_completeness_explains_runs_before_initial_start_date(settings, world):
    from pipelines.stackai.window import WindowRules
    from tests.support.truth import utc

    dates = sorted(utc(run["date"]) for _, _, run in world.all_runs())
    start = dates[len(dates) // 2]  # half the history is older
    path = sync_with_views(replace(settings, rules=WindowRules(initial_start=start)), world)
    explained = 0
    for flow_id, row in completeness(path).items():
        ours = [utc(run["date"]) for _, f, run in world.all_runs() if f == flow_id]
        assert row["total_runs"] == len(ours)
        assert row["stored_runs"] == sum(d >= start for d in ours)
        if row["stored_runs"] < len(ours):
            assert row["explanation"] == "before initial_start_date"
            assert row["is_short"] is False
            explained += 1
    assert explained
