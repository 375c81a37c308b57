"""One SQL source per view, written in DuckDB's dialect: each shipped view transpiles (sqlglot,
`pipelines.analysis.dialects`) to every supported destination's dialect and parses back as the
view it names. PostgreSQL's views also run for real (tests/test_views.py); these check the
configured-only destinations (BigQuery, Snowflake; MotherDuck is DuckDB) and the rewrites."""

from __future__ import annotations

import psycopg2
import pytest
import sqlglot
from sqlglot import exp

from pipelines.analysis.dialects import SUPPORT_SQL, transpile
from pipelines.analysis.views import view_files

DIALECTS = ["duckdb", "postgres", "bigquery", "snowflake"]
VIEW_FILES = view_files()


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("file", VIEW_FILES, ids=lambda f: f.path.name)
def test_every_view_transpiles_and_parses_as_itself(file, dialect):
    own = file.path.parent / dialect / file.path.name
    sql = own.read_text(encoding="utf-8") if own.is_file() else file.path.read_text("utf-8")
    statements = [sql] if own.is_file() else transpile(sql, dialect)
    assert len(statements) == 1
    tree = sqlglot.parse_one(statements[0], read=dialect)
    assert isinstance(tree, exp.Create) and tree.kind == "VIEW", statements[0][:200]
    table = tree.this if isinstance(tree.this, exp.Table) else tree.this.this
    assert (table.db, table.name) == ("stackai", file.view)


def run_on_postgres(url: str, sql: str) -> list[tuple]:
    con = psycopg2.connect(url)
    try:
        with con.cursor() as cursor:
            cursor.execute("create schema if not exists stackai")
            for statement in SUPPORT_SQL["postgres"]:
                cursor.execute(statement)
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        con.rollback()
        con.close()


VALUES = "(values ('a', 1), ('b', 3), ('c', 2), ('d', null)) as t(x, d)"


def test_arg_max_on_postgres_takes_the_value_of_the_greatest_key_ignoring_null_keys(
    postgres_url,
):
    (sql,) = transpile(f"select arg_max(x, d) from {VALUES}", "postgres")
    assert run_on_postgres(postgres_url, sql) == [("b",)]


def test_any_value_on_postgres_skips_nulls(postgres_url):
    (sql,) = transpile("select any_value(x) from (values (null), ('a')) as t(x)", "postgres")
    assert run_on_postgres(postgres_url, sql) == [("a",)]


@pytest.mark.parametrize(
    ("text", "valid"), [('{"a": 1}', True), ("[1, 2]", True), ("plain words", False), ("", False)]
)
def test_json_valid_on_postgres(postgres_url, text, valid):
    (sql,) = transpile(f"select json_valid('{text}')", "postgres")
    assert "stackai.json_valid" in sql.lower()
    assert run_on_postgres(postgres_url, sql) == [(valid,)]


def test_a_word_boundary_means_the_same_on_postgres(postgres_url):
    source = r"select regexp_replace('id 3fa9c1 and decade', '\b[0-9a-f]{6}\b', '<hex>', 'gi')"
    (sql,) = transpile(source, "postgres")
    assert r"\y" in sql and r"\b" not in sql
    assert run_on_postgres(postgres_url, sql) == [("id <hex> and <hex>",)]


def test_bigquery_and_snowflake_keep_every_match_and_case_insensitivity():
    source = "select regexp_replace(x, 'ab', 'c', 'gi') from t"
    (bigquery,) = transpile(source, "bigquery")
    assert "'(?i)' || 'ab'" in bigquery and "'gi'" not in bigquery
    (snowflake,) = transpile(source, "snowflake")
    assert "REGEXP_REPLACE(x, 'ab', 'c', 1, 0, 'i')" in snowflake
