-- stackai.llm_usage_costs: every LLM call with what it cost, priced at its run's date.
--
-- Grain: one row per (call_id): every row of stackai.flow_runs__llm_usage whose run is synced.
--
-- Prices come from genai-prices (pydantic's price data, with its history and tiers) or from
-- [sources.stackai.model_prices] overrides, which win; a call neither knows has null costs and
-- is listed in stackai.unpriced_models. Each sync prices new calls, and every call again when
-- genai-prices is upgraded or an override changes (stackai.llm_call_costs holds the figures).
--
-- Columns:
--   call_id                   varchar      the call's _dlt_id in flow_runs__llm_usage
--   run_id, org_id, flow_id   varchar      the run, and its flow
--   flow_name                 varchar      the flow's name (stackai.flows), null when unnamed
--   date                      timestamptz  the run's start: the day whose price applies
--   run_date                  date         UTC calendar day of `date`
--   user_id                   varchar      the run's end user
--   ran_by_type, ran_by_id    varchar      who started the run (a member or an API key)
--   parent_run_id             varchar      sub-workflow runs: the parent run
--   provider, model_id        varchar      as StackAI sends them
--   tokens, input_tokens,     bigint       as received (null when not reported)
--   output_tokens
--   is_local_model,           boolean      as received
--   should_charge
--   input_cost_usd,           double       USD for the input and output tokens; null when no
--   output_cost_usd                        price is known for the model
--   cost_usd                  double       input_cost_usd + output_cost_usd; null when unpriced
--   price_source              varchar      'genai-prices <version>' or 'override'; null when
--                                          unpriced
--   priced_model              varchar      the model the price is for (genai-prices' id, or the
--                                          override's); null when unpriced

create or replace view stackai.llm_usage_costs as

with llm_calls as (
    select
        _dlt_id as call_id,
        run_id,
        provider,
        model_id,
        tokens,
        input_tokens,
        output_tokens,
        is_local_model,
        should_charge
    from stackai.flow_runs__llm_usage
),

call_costs as (
    select
        call_id,
        input_cost_usd,
        output_cost_usd,
        cost_usd,
        price_source,
        priced_model
    from stackai.llm_call_costs
)

select
    llm_calls.call_id,
    llm_calls.run_id,
    runs.org_id,
    runs.flow_id,
    runs.flow_name,
    runs.date,
    runs.run_date,
    runs.user_id,
    runs.ran_by_type,
    runs.ran_by_id,
    runs.parent_run_id,
    llm_calls.provider,
    llm_calls.model_id,
    llm_calls.tokens,
    llm_calls.input_tokens,
    llm_calls.output_tokens,
    llm_calls.is_local_model,
    llm_calls.should_charge,
    call_costs.input_cost_usd,
    call_costs.output_cost_usd,
    call_costs.cost_usd,
    call_costs.price_source,
    call_costs.priced_model
from llm_calls
inner join stackai.runs as runs on llm_calls.run_id = runs.run_id
left join call_costs on llm_calls.call_id = call_costs.call_id
