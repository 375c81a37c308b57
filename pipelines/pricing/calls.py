"""LLM calls as rows of `stackai.llm_call_costs`: what the source yields for each batch it
types (`price_batch`) and what the sync's upkeep prices again (`pipelines.load.costs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines.pricing.prices import PriceBook
from pipelines.stackai import endpoint

COST_COLUMNS: dict[str, dict[str, Any]] = {
    "call_id": {"data_type": "text", "nullable": False, "primary_key": True},
    "run_id": {"data_type": "text", "nullable": False},
    "provider": {"data_type": "text", "nullable": True},
    "model_id": {"data_type": "text", "nullable": True},
    "date": {"data_type": "timestamp", "nullable": False, "timezone": True},
    "input_tokens": {"data_type": "bigint", "nullable": True},
    "output_tokens": {"data_type": "bigint", "nullable": True},
    "input_cost_usd": {"data_type": "double", "nullable": True},
    "output_cost_usd": {"data_type": "double", "nullable": True},
    "cost_usd": {"data_type": "double", "nullable": True},
    "price_source": {"data_type": "text", "nullable": True},
    "priced_model": {"data_type": "text", "nullable": True},
    "price_version": {"data_type": "text", "nullable": False},
}
_SCHEMA = pa.schema(
    [
        pa.field(name, type_, nullable=COST_COLUMNS[name]["nullable"])
        for name, type_ in [
            ("call_id", pa.string()),
            ("run_id", pa.string()),
            ("provider", pa.string()),
            ("model_id", pa.string()),
            ("date", pa.timestamp("us", tz="UTC")),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("input_cost_usd", pa.float64()),
            ("output_cost_usd", pa.float64()),
            ("cost_usd", pa.float64()),
            ("price_source", pa.string()),
            ("priced_model", pa.string()),
            ("price_version", pa.string()),
        ]
    ]
)


@dataclass
class PricingReport:
    """What one pricing pass did: calls priced, of which unpriced (no price known)."""

    priced: int = 0
    unpriced: int = 0
    unpriced_models: dict[str, int] | None = None


def _priced(rows: list[tuple], book: PriceBook, report: PricingReport) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in _SCHEMA.names}
    assert report.unpriced_models is not None
    for call_id, run_id, provider, model_id, date, tokens_in, tokens_out in rows:
        price = book.price(provider, model_id, date, tokens_in, tokens_out)
        columns["call_id"].append(call_id)
        columns["run_id"].append(run_id)
        columns["provider"].append(provider)
        columns["model_id"].append(model_id)
        columns["date"].append(date)
        columns["input_tokens"].append(tokens_in)
        columns["output_tokens"].append(tokens_out)
        columns["price_version"].append(book.version)
        if price is None:
            report.unpriced += 1
            key = f"{provider}/{model_id}"
            report.unpriced_models[key] = report.unpriced_models.get(key, 0) + 1
            for name in (
                "input_cost_usd",
                "output_cost_usd",
                "cost_usd",
                "price_source",
                "priced_model",
            ):
                columns[name].append(None)
        else:
            columns["input_cost_usd"].append(float(price.input_cost_usd))
            columns["output_cost_usd"].append(float(price.output_cost_usd))
            columns["cost_usd"].append(float(price.cost_usd))
            columns["price_source"].append(price.source)
            columns["priced_model"].append(price.model)
        report.priced += 1
    return pa.Table.from_pydict(columns, schema=_SCHEMA)


def price_batch(
    runs: list[pa.Table], usage: list[pa.Table], book: PriceBook
) -> tuple[pa.Table | None, PricingReport]:
    """The costs of a batch's LLM calls, priced as the source types them (no second load).

    Args:
        runs: the batch's `flow_runs` Arrow tables (`run_id`, `date`).
        usage: its `flow_runs__llm_usage` tables; marker rows (a run with no call) are skipped.
        book: the prices.

    Returns:
        (an Arrow table for `llm_call_costs`, or None when the batch has no call; what was
        priced).
    """
    report = PricingReport(unpriced_models={})
    dates: dict[str, Any] = {}
    for table in runs:
        ids, starts = table.column("run_id").to_pylist(), table.column("date").to_pylist()
        dates.update(zip(ids, starts, strict=True))
    rows = []
    for table in usage:
        absent = [None] * table.num_rows

        def column(name: str, table: pa.Table = table, absent: list[None] = absent) -> list[Any]:
            # a column the batch never saw a value for may be missing from its table
            return table.column(name).to_pylist() if name in table.column_names else absent

        for call_id, run_id, index, deleted, provider, model_id, tokens_in, tokens_out in zip(
            column("_dlt_id"),
            column("run_id"),
            column("_dlt_list_idx"),
            column(endpoint.DELETED_COLUMN),
            column("provider"),
            column("model_id"),
            column("input_tokens"),
            column("output_tokens"),
            strict=True,
        ):
            if deleted or index < 0 or run_id not in dates:
                continue  # a marker row, or a run priced after the load (`price_calls`)
            rows.append((call_id, run_id, provider, model_id, dates[run_id], tokens_in, tokens_out))
    if not rows:
        return None, report
    return _priced(rows, book, report), report
