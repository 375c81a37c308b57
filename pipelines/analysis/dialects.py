"""Views written once, in DuckDB's SQL, made to run on every destination with sqlglot.

sqlglot transpiles DuckDB's SQL to each destination's dialect. Where its output is valid but
means something else, or names a function the destination lacks, a transform below rewrites
the tree first; where no rewrite can be right, a file `sql/<dialect>/NNN_<view>.sql` replaces
the shipped one for that dialect only. `SUPPORT_SQL` holds the few functions a dialect needs
created (in the dataset's schema) before the views.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

SUPPORT_SQL: dict[str, list[str]] = {
    # PostgreSQL 15 has no json validity test (`IS JSON` and pg_input_is_valid came in 16).
    "postgres": [
        "create or replace function stackai.json_valid(value text) returns boolean"
        " language plpgsql immutable as $$ begin perform value::json; return true;"
        " exception when others then return false; end $$",
    ],
}
"""Statements run (in the views' transaction) before the views, per sqlglot dialect."""


def _postgres(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.ArgMax):
        # DuckDB's arg_max(x, by): x of the row with the greatest `by`, rows with null `by` left out
        ordered = exp.Order(
            this=node.this.copy(),
            expressions=[exp.Ordered(this=node.expression.copy(), desc=True, nulls_first=False)],
        )
        aggregate = exp.ArrayAgg(this=ordered)
        filtered = exp.Filter(
            this=aggregate,
            expression=exp.Where(
                this=exp.Not(this=exp.Is(this=node.expression.copy(), expression=exp.Null()))
            ),
        )
        # sqlglot writes a Bracket built here in its own 0-based convention: 0 is PostgreSQL's [1]
        return exp.Bracket(this=exp.Paren(this=filtered), expressions=[exp.Literal.number(0)])
    if isinstance(node, exp.IgnoreNulls) and isinstance(node.this, exp.AnyValue):
        # DuckDB's any_value skips nulls, as max does; the views use it on one value per group
        return exp.Max(this=node.this.this.copy())
    if isinstance(node, exp.Anonymous) and node.name.lower() == "json_valid":
        return exp.func("stackai.json_valid", *[a.copy() for a in node.expressions])
    if isinstance(node, exp.RegexpReplace):
        pattern = node.expression
        for literal in pattern.find_all(exp.Literal) if pattern else ():
            if literal.is_string and r"\b" in literal.this:
                # RE2's word boundary `\b` is `\y` in PostgreSQL (where `\b` is a backspace)
                literal.set("this", literal.this.replace(r"\b", r"\y"))
    return node


def _bigquery(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.RegexpReplace) and node.args.get("modifiers") is not None:
        # BigQuery's REGEXP_REPLACE (RE2, like DuckDB's) replaces every match and takes no
        # flags: 'g' is its default, 'i' becomes RE2's inline (?i)
        flags = node.args["modifiers"].name
        node.set("modifiers", None)
        node.set("single_replace", None)
        if "i" in flags:
            node.set(
                "expression", exp.DPipe(this=exp.Literal.string("(?i)"), expression=node.expression)
            )
    return node


def _snowflake(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.RegexpReplace) and node.args.get("modifiers") is not None:
        # Snowflake: REGEXP_REPLACE(subject, pattern, replacement, position, occurrence,
        # parameters); occurrence 0 replaces every match, 'i' is a parameter
        flags = node.args["modifiers"].name.replace("g", "")
        node.set("position", exp.Literal.number(1))
        node.set("occurrence", exp.Literal.number(0))
        node.set("modifiers", exp.Literal.string(flags or "c"))
        node.set("single_replace", None)
    return node


TRANSFORMS = {"postgres": _postgres, "bigquery": _bigquery, "snowflake": _snowflake}


def transpile(sql: str, dialect: str) -> list[str]:
    """DuckDB SQL as `dialect`'s statements.

    Args:
        sql: statements in DuckDB's dialect (one view file, or a query).
        dialect: a sqlglot dialect name (dlt's `capabilities.sqlglot_dialect`).

    Returns:
        The statements, each as one string, comments dropped.

    Raises:
        sqlglot.errors.ParseError: `sql` is not valid DuckDB SQL.
        sqlglot.errors.UnsupportedError: a construct `dialect` cannot express.
    """
    if dialect == "duckdb":
        return [sql]
    transform = TRANSFORMS.get(dialect)
    out = []
    for tree in sqlglot.parse(sql, read="duckdb"):
        if tree is None:
            continue
        if transform is not None:
            tree = tree.transform(transform)
        out.append(
            tree.sql(dialect=dialect, comments=False, unsupported_level=sqlglot.ErrorLevel.RAISE)
        )
    return out
