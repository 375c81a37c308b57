-- stackai.daily_llm_usage: LLM calls and tokens by provider and model, per flow and day.
--
-- Grain: one row per (org_id, flow_id, run_date, provider, model_id) with at least one call;
-- run_date is the UTC day the calling run started (from stackai.runs). Sum over org_id and
-- flow_id for the whole org or everything.
--
-- Columns:
--   org_id, flow_id, run_date  the flow and the UTC day of the runs
--   flow_name                  varchar  the flow's name (stackai.flows), null when unnamed
--   provider, model_id         varchar  as received (LLMProviderEnum, model id); may be null
--   calls                      bigint   LLM calls (rows of stackai.flow_runs__llm_usage)
--   runs                       bigint   distinct runs that made at least one such call
--   tokens, input_tokens,      bigint   sums over the calls that reported usage (0 when none)
--   output_tokens
--   calls_without_usage        bigint   calls whose provider reported no token count
--   input_cost_usd,            double   USD over the priced calls (stackai.llm_usage_costs);
--   output_cost_usd, cost_usd           null when no call of the row has a price
--   unpriced_calls             bigint   calls with no known price (not in the costs)

create or replace view stackai.daily_llm_usage as

with llm_calls_by_day as (
    select
        org_id,
        flow_id,
        flow_name,
        run_date,
        run_id,
        provider,
        model_id,
        tokens,
        input_tokens,
        output_tokens,
        input_cost_usd,
        output_cost_usd,
        cost_usd
    from stackai.llm_usage_costs
)

select
    org_id,
    flow_id,
    any_value(flow_name) as flow_name,
    run_date,
    provider,
    model_id,
    count(*) as calls,
    count(distinct run_id) as runs,
    cast(coalesce(sum(tokens), 0) as bigint) as tokens,
    cast(coalesce(sum(input_tokens), 0) as bigint) as input_tokens,
    cast(coalesce(sum(output_tokens), 0) as bigint) as output_tokens,
    count(*) filter (where tokens is null) as calls_without_usage,
    cast(sum(input_cost_usd) as double) as input_cost_usd,
    cast(sum(output_cost_usd) as double) as output_cost_usd,
    cast(sum(cost_usd) as double) as cost_usd,
    count(*) filter (where cost_usd is null) as unpriced_calls
from llm_calls_by_day
group by org_id, flow_id, run_date, provider, model_id
