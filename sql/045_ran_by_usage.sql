-- stackai.ran_by_usage: what each principal started: a member, a personal or org API key, or
-- the system (schedules, triggers). Sub-workflow runs carry their parent's principal. The end
-- users the runs were for are stackai.user_usage.
--
-- Grain: one row per (org_id, ran_by_type, ran_by_id). System runs have no ran_by_id; runs from
-- before the API sent these fields (and anonymous public-form runs) have all three null, and
-- each such combination is one row.
--
-- Columns:
--   org_id, ran_by_type, ran_by_id  varchar
--   ran_by_display_name      varchar      email or key name, as on the principal's latest run
--   runs                     bigint       runs started (every state)
--   final_runs               bigint       COMPLETED, FAILED or CANCELLED runs
--   failed                   bigint       FAILED runs
--   failure_rate             double       failed / final_runs; null when none finished
--   tokens                   bigint       sum of total_tokens (0 when none reported)
--   flows                    bigint       distinct flows run
--   cost_usd                 double       USD of the runs' priced LLM calls (0 when none)
--   unpriced_calls           bigint       the runs' LLM calls with no known price
--   first_seen, last_seen    timestamptz  start of the first and latest run

create or replace view stackai.ran_by_usage as

with runs_by_principal as (
    select
        runs.org_id,
        runs.ran_by_type,
        runs.ran_by_id,
        runs.ran_by_display_name,
        runs.flow_id,
        runs.date,
        runs.state,
        runs.is_final,
        runs.total_tokens,
        run_costs.cost_usd,
        run_costs.unpriced_calls
    from stackai.runs as runs
    inner join stackai.run_costs as run_costs on runs.run_id = run_costs.run_id
)

select
    org_id,
    ran_by_type,
    ran_by_id,
    arg_max(ran_by_display_name, date) as ran_by_display_name,
    count(*) as runs,
    count(*) filter (where is_final) as final_runs,
    count(*) filter (where state = 'FAILED') as failed,
    cast(count(*) filter (where state = 'FAILED') as double)
    / nullif(count(*) filter (where is_final), 0) as failure_rate,
    cast(coalesce(sum(total_tokens), 0) as bigint) as tokens,
    count(distinct flow_id) as flows,
    cast(sum(cost_usd) as double) as cost_usd,
    cast(sum(unpriced_calls) as bigint) as unpriced_calls,
    min(date) as first_seen,
    max(date) as last_seen
from runs_by_principal
group by org_id, ran_by_type, ran_by_id
