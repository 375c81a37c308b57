"""After each load: price the LLM calls that have no price yet, or whose price is out of date,
into `stackai.llm_call_costs` (merge on `call_id`, the call's `_dlt_id` in
`flow_runs__llm_usage`).

Costs live in a table of their own, computed in Python (`pipelines.pricing`), so every
destination holds the same figures. A call is priced again when its row changed (a run re-read
with other tokens or another model) or when the prices did (`PriceBook.version`: genai-prices
upgraded, an override added or edited): the next sync re-prices the whole history then, even a
sync with nothing new, without a full refresh. A crash between the load and the pricing only
leaves calls for the next sync to price.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import dlt
import pyarrow as pa

from pipelines.pricing import PriceBook
from pipelines.pricing.calls import COST_COLUMNS, PricingReport, _priced
from pipelines.stackai import endpoint

log = logging.getLogger(__name__)

COSTS_TABLE = endpoint.COSTS_TABLE
BATCH = 50_000
"""Calls read and priced at a time: bounds memory whatever the history's size."""


def _existing(client: Any, dataset: str) -> set[str]:
    return {
        name
        for (name,) in client.execute_sql(
            "select table_name from information_schema.tables where table_schema = %s", dataset
        )
    }


def _stale_calls_sql(client: Any, with_costs: bool) -> str:
    usage = client.make_qualified_table_name(endpoint.LLM_USAGE_TABLE)
    runs = client.make_qualified_table_name(endpoint.RUNS_TABLE)
    select = (
        f"select u._dlt_id, u.run_id, u.provider, u.model_id, r.date, u.input_tokens,"
        f" u.output_tokens from {usage} u join {runs} r on r._dlt_id = u._dlt_root_id"
    )
    if not with_costs:
        return select
    costs = client.make_qualified_table_name(COSTS_TABLE)
    return (
        f"{select} left join {costs} c on c.call_id = u._dlt_id where c.call_id is null"
        " or c.price_version <> %s or c.date <> r.date"
        " or c.provider is distinct from u.provider or c.model_id is distinct from u.model_id"
        " or c.input_tokens is distinct from u.input_tokens"
        " or c.output_tokens is distinct from u.output_tokens"
    )


def price_calls(pipeline: dlt.Pipeline, book: PriceBook) -> PricingReport:
    """Price every call of the destination that needs it, and drop costs of calls gone.

    Args:
        pipeline: the sync's pipeline, after its load (the destination holds the calls).
        book: the prices (library and overrides).

    Returns:
        How many calls were priced now, and how many of those have no known price (NULL cost),
        by `PROVIDER/MODEL_ID`.

    Raises:
        What dlt raises when the destination fails (the caller reports it).
    """
    report = PricingReport(unpriced_models={})
    with pipeline.sql_client() as client:
        existing = _existing(client, pipeline.dataset_name)
    if not {endpoint.LLM_USAGE_TABLE, endpoint.RUNS_TABLE} <= existing:
        return report
    with_costs = COSTS_TABLE in existing

    def priced_batches() -> Iterator[pa.Table]:
        # A generator, so dlt writes each batch to its file as it comes: memory stays one
        # batch whatever the history's size (a re-pricing reads all of it).
        with pipeline.sql_client() as client:
            sql = _stale_calls_sql(client, with_costs)
            params = (book.version,) if with_costs else ()
            with client.execute_query(sql, *params) as cursor:
                while rows := cursor.fetchmany(BATCH):
                    yield _priced(rows, book, report)

    batches = priced_batches()
    try:
        first = next(batches, None)
        if first is not None:  # a sync with nothing to price runs no second load
            resource = dlt.resource(
                itertools.chain([first], batches),
                name=COSTS_TABLE,
                table_name=COSTS_TABLE,
                write_disposition={"disposition": "merge", "strategy": "delete-insert"},
                primary_key="call_id",
                columns=COST_COLUMNS,
            )
            pipeline.run(resource, schema=pipeline.default_schema)
    finally:
        batches.close()
    if with_costs or report.priced:
        with pipeline.sql_client() as client:
            usage = client.make_qualified_table_name(endpoint.LLM_USAGE_TABLE)
            costs = client.make_qualified_table_name(COSTS_TABLE)
            client.execute_sql(
                f"delete from {costs} where not exists"
                f" (select 1 from {usage} u where u._dlt_id = {costs}.call_id)"
            )
    if report.priced:
        log.info("%d LLM calls priced (%d with no known price)", report.priced, report.unpriced)
    return report
