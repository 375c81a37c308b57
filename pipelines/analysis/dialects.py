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


def _regexp_flags(node: exp.RegexpReplace, dialect: str) -> tuple[bool, bool]:
    """(every match, case-insensitive) of DuckDB's regexp_replace `node` ('g', 'i', 'c' only).

    DuckDB replaces the first match unless 'g' is given; 'i' and 'c' switch case-insensitivity
    on and off (the last one given wins). Other options (newline, literal) have no equivalent
    here, and flags that are not a literal cannot be read.
    """
    modifiers = node.args.get("modifiers")
    if modifiers is None:
        flags = ""
    elif isinstance(modifiers, exp.Literal) and modifiers.is_string:
        flags = modifiers.name
    else:
        raise sqlglot.errors.UnsupportedError(
            f"regexp_replace's options must be a string literal to be written for {dialect}"
        )
    unknown = set(flags) - set("gic")
    if unknown:
        raise sqlglot.errors.UnsupportedError(
            f"regexp_replace option(s) {''.join(sorted(unknown))!r} have no {dialect} equivalent"
        )
    case = [flag for flag in flags if flag in "ic"]
    return "g" in flags, bool(case) and case[-1] == "i"


def _bigquery(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.RegexpReplace):
        # BigQuery's REGEXP_REPLACE (RE2, like DuckDB's) replaces every match and takes no
        # flags: 'g' is its only behaviour, 'i' becomes RE2's inline (?i)
        every, insensitive = _regexp_flags(node, "bigquery")
        if not every:
            raise sqlglot.errors.UnsupportedError(
                "regexp_replace without 'g' replaces the first match only; BigQuery's"
                " REGEXP_REPLACE replaces every match"
            )
        node.set("modifiers", None)
        node.set("single_replace", None)
        if insensitive:
            pattern = node.expression
            if isinstance(pattern, exp.Literal) and pattern.is_string:
                pattern = exp.Literal.string("(?i)" + pattern.this)
            else:
                pattern = exp.DPipe(this=exp.Literal.string("(?i)"), expression=pattern)
            node.set("expression", pattern)
    return node


def _snowflake(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.RegexpReplace):
        # Snowflake: REGEXP_REPLACE(subject, pattern, replacement, position, occurrence,
        # parameters); occurrence 0 replaces every match (its default), 1 the first as DuckDB
        # does without 'g'; 'i' and 'c' are parameters
        every, insensitive = _regexp_flags(node, "snowflake")
        node.set("position", exp.Literal.number(1))
        node.set("occurrence", exp.Literal.number(0 if every else 1))
        node.set("modifiers", exp.Literal.string("i" if insensitive else "c"))
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
