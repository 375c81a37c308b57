-- stackai.run_costs: what each run's LLM calls cost together.
--
-- Grain: one row per (run_id): every run of stackai.runs (a run with no LLM call costs 0).
--
-- cost_usd sums the calls that have a price; unpriced_calls says how many calls had none, so a
-- run with unpriced_calls > 0 cost at least cost_usd.
--
-- Columns:
--   run_id, org_id, flow_id   varchar
--   calls                     bigint       LLM calls of the run
--   input_cost_usd,           double       USD over the priced calls (0 when none)
--   output_cost_usd,
--   cost_usd
--   unpriced_calls            bigint       calls with no known price (not in cost_usd)

create or replace view stackai.run_costs as

with costs_by_run as (
    select
        run_id,
        count(*) as calls,
        coalesce(sum(input_cost_usd), 0) as input_cost_usd,
        coalesce(sum(output_cost_usd), 0) as output_cost_usd,
        coalesce(sum(cost_usd), 0) as cost_usd,
        count(*) filter (where cost_usd is null) as unpriced_calls
    from stackai.llm_usage_costs
    group by run_id
)

select
    runs.run_id,
    runs.org_id,
    runs.flow_id,
    coalesce(costs_by_run.calls, 0) as calls,
    cast(coalesce(costs_by_run.input_cost_usd, 0) as double) as input_cost_usd,
    cast(coalesce(costs_by_run.output_cost_usd, 0) as double) as output_cost_usd,
    cast(coalesce(costs_by_run.cost_usd, 0) as double) as cost_usd,
    coalesce(costs_by_run.unpriced_calls, 0) as unpriced_calls
from stackai.runs as runs
left join costs_by_run on runs.run_id = costs_by_run.run_id
