"""One SQL source per view, written in DuckDB's dialect: each shipped view transpiles (sqlglot,
`pipelines.analysis.dialects`) to every supported destination's dialect and parses back as the
view it names. PostgreSQL's views also run for real (tests/test_views.py); these check the
configured-only destinations (BigQuery, Snowflake; MotherDuck is DuckDB) and the rewrites."""

from __future__ import annotations

import duckdb
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
    assert "REGEXP_REPLACE(x, '(?i)ab', 'c')" in bigquery and "'gi'" not in bigquery
    (snowflake,) = transpile(source, "snowflake")
    assert "REGEXP_REPLACE(x, 'ab', 'c', 1, 0, 'i')" in snowflake


def test_bigquery_puts_case_insensitivity_before_a_pattern_built_from_parts():
    (bigquery,) = transpile("select regexp_replace(x, 'a' || y, 'c', 'gi') from t", "bigquery")
    assert "REGEXP_REPLACE(x, '(?i)' || 'a' || y, 'c')" in bigquery


def test_bigquerys_patterns_mean_duckdbs_with_their_flags_in_re2():
    # DuckDB's regexp engine is RE2, as BigQuery's: each of the runs view's patterns as written
    # for BigQuery, replacing every match (BigQuery's only way), must give on DuckDB's RE2 what
    # the original gives with its own flags.
    (file,) = [f for f in VIEW_FILES if f.view == "runs"]
    source = file.path.read_text(encoding="utf-8")
    (bigquery,) = transpile(source, "bigquery")
    originals = list(sqlglot.parse_one(source, read="duckdb").find_all(exp.RegexpReplace))
    rewritten = list(sqlglot.parse_one(bigquery, read="bigquery").find_all(exp.RegexpReplace))
    assert len(originals) == len(rewritten) == 3
    sample = (
        "Upstream returned 503 for request 3FA9C1D2E4B5 (run 1B4E28BA-2FA1-11D2-883F-"
        "0016D3CCA427) after 1.5s: DECADE facade ab12cd 99"
    )
    with duckdb.connect() as con:
        for original, written in zip(originals, rewritten, strict=True):
            flags = original.args["modifiers"].name
            assert "g" in flags
            got, want = con.execute(
                f"select regexp_replace($1, {written.expression.sql('duckdb')}, '<x>', 'g'),"
                f" regexp_replace($1, {original.expression.sql('duckdb')}, '<x>', '{flags}')",
                [sample],
            ).fetchone()
            assert got == want != sample, written.sql("bigquery")


def test_without_g_only_the_first_match_is_replaced_or_the_view_is_refused():
    source = "select regexp_replace(x, 'ab', 'c', 'i') from t"
    # Snowflake's occurrence 1 is DuckDB's default (the first match)
    (snowflake,) = transpile(source, "snowflake")
    assert "REGEXP_REPLACE(x, 'ab', 'c', 1, 1, 'i')" in snowflake
    (snowflake,) = transpile("select regexp_replace(x, 'ab', 'c') from t", "snowflake")
    assert "REGEXP_REPLACE(x, 'ab', 'c', 1, 1, 'c')" in snowflake
    # BigQuery always replaces every match: no faithful rewrite, so none
    with pytest.raises(sqlglot.errors.UnsupportedError, match="first match"):
        transpile(source, "bigquery")
    # PostgreSQL's regexp_replace, like DuckDB's, replaces the first match unless 'g'
    (postgres,) = transpile(source, "postgres")
    assert "REGEXP_REPLACE(x, 'ab', 'c', 'i')" in postgres


def test_without_g_postgres_replaces_the_first_match_as_duckdb_does(postgres_url):
    source = "select regexp_replace('ab AB ab', 'ab', 'c', 'i'), regexp_replace('ab ab', 'ab', 'c')"
    want = duckdb.sql(source).fetchall()
    assert want == [("c AB ab", "c ab")]
    (sql,) = transpile(source, "postgres")
    assert run_on_postgres(postgres_url, sql) == want


@pytest.mark.parametrize("dialect", ["bigquery", "snowflake"])
@pytest.mark.parametrize("flags", ["gs", "gm", "gl"])
def test_regexp_options_without_an_equivalent_are_refused(dialect, flags):
    with pytest.raises(sqlglot.errors.UnsupportedError, match=r"no \w+ equivalent"):
        transpile(f"select regexp_replace(x, 'ab', 'c', '{flags}') from t", dialect)


def test_a_view_that_cannot_be_written_names_its_file(tmp_path):
    from pipelines.analysis.views import ViewError, _transpiled, view_files

    (tmp_path / "010_first_only.sql").write_text(
        "create or replace view stackai.first_only as select regexp_replace('aa', 'a', 'b')",
        encoding="utf-8",
    )
    (file,) = view_files(tmp_path, shipped=False)
    with pytest.raises(ViewError, match=r"010_first_only\.sql: cannot be written in bigquery"):
        _transpiled(file, "bigquery")
