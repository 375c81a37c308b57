-- stackai.daily_flow_runs: how each flow did each day: volume, outcome, tokens, users, latency.
--
-- Grain: one row per (org_id, flow_id, run_date) with at least one run; run_date is the UTC day
-- the run started. A run still open is counted on the day it started and moves to completed,
-- failed or cancelled there once a later sync sees it finish.
--
-- Columns:
--   org_id, flow_id, run_date  the flow and the UTC day
--   flow_name                  varchar the flow's name (stackai.flows), null when unnamed
--   runs                       bigint  runs started that day (every state)
--   completed, failed,         bigint  runs in each final state
--   cancelled
--   open                       bigint  runs still PENDING, PAUSED or RESUMED
--                                      (runs = completed + failed + cancelled + open + runs in a
--                                      state the contract does not list)
--   final_runs                 bigint  completed + failed + cancelled
--   failure_rate               double  failed / final_runs: the share of finished runs that
--                                      failed (open runs are not counted yet); null when none
--                                      finished
--   tokens                     bigint  sum of total_tokens (0 when none reported)
--   users                      bigint  distinct non-null user_id
--   p50_latency_seconds,       double  latency percentiles over the runs with a latency (final
--   p95_latency_seconds,               runs), quantile_cont: linear interpolation between the
--   p99_latency_seconds                closest ranks (numpy's default); null when none
--   cost_usd                   double  USD of the runs' priced LLM calls (stackai.run_costs; 0
--                                      when none)
--   unpriced_calls             bigint  the runs' LLM calls with no known price (not in cost_usd)

create or replace view stackai.daily_flow_runs as

with runs_by_day as (
    select
        runs.org_id,
        runs.flow_id,
        runs.flow_name,
        runs.run_date,
        runs.state,
        runs.is_final,
        runs.is_open,
        runs.total_tokens,
        runs.user_id,
        runs.latency_seconds,
        run_costs.cost_usd,
        run_costs.unpriced_calls
    from stackai.runs as runs
    inner join stackai.run_costs as run_costs on runs.run_id = run_costs.run_id
)

select
    org_id,
    flow_id,
    any_value(flow_name) as flow_name,
    run_date,
    count(*) as runs,
    count(*) filter (where state = 'COMPLETED') as completed,
    count(*) filter (where state = 'FAILED') as failed,
    count(*) filter (where state = 'CANCELLED') as cancelled,
    count(*) filter (where is_open) as open,
    count(*) filter (where is_final) as final_runs,
    cast(count(*) filter (where state = 'FAILED') as double)
    / nullif(count(*) filter (where is_final), 0) as failure_rate,
    cast(coalesce(sum(total_tokens), 0) as bigint) as tokens,
    count(distinct user_id) as users,
    quantile_cont(latency_seconds, 0.50) as p50_latency_seconds,
    quantile_cont(latency_seconds, 0.95) as p95_latency_seconds,
    quantile_cont(latency_seconds, 0.99) as p99_latency_seconds,
    cast(sum(cost_usd) as double) as cost_usd,
    cast(sum(unpriced_calls) as bigint) as unpriced_calls
from runs_by_day
group by org_id, flow_id, run_date
