-- stackai.unpriced_models: the models whose calls have no price, so their cost is null: a local
-- or self-hosted model, a model id genai-prices does not know, a provider it does not price
-- (pipelines/pricing/providers.py). Set [sources.stackai.model_prices] for them.
--
-- Grain: one row per (provider, model_id) with at least one unpriced call.
--
-- Columns:
--   provider, model_id          varchar      as StackAI sends them
--   calls                       bigint       unpriced calls
--   runs                        bigint       distinct runs with such a call
--   flows                       bigint       distinct flows (org_id, flow_id) with such a call
--   tokens, input_tokens,       bigint       sums (0 when none reported)
--   output_tokens
--   first_seen, last_seen       timestamptz  the first and latest run with such a call

create or replace view stackai.unpriced_models as

with unpriced_calls as (
    select
        provider,
        model_id,
        run_id,
        org_id,
        flow_id,
        date,
        tokens,
        input_tokens,
        output_tokens
    from stackai.llm_usage_costs
    where cost_usd is null
)

select
    provider,
    model_id,
    count(*) as calls,
    count(distinct run_id) as runs,
    count(distinct org_id || '/' || flow_id) as flows,
    cast(coalesce(sum(tokens), 0) as bigint) as tokens,
    cast(coalesce(sum(input_tokens), 0) as bigint) as input_tokens,
    cast(coalesce(sum(output_tokens), 0) as bigint) as output_tokens,
    min(date) as first_seen,
    max(date) as last_seen
from unpriced_calls
group by provider, model_id
