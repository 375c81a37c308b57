-- stackai.user_usage: what each end user (the runs' user_id) ran, over the whole history.
-- Who *started* runs (a member or an API key) is stackai.ran_by_usage.
--
-- Grain: one row per (org_id, user_id). user_id is any string the caller passed (StackAI
-- members' uuids, or API callers' own customer ids), so it is scoped by org. Runs without a
-- user_id form one row with user_id null.
--
-- Columns:
--   org_id, user_id          varchar
--   runs                     bigint       runs with this user_id (every state)
--   final_runs               bigint       COMPLETED, FAILED or CANCELLED runs
--   failed                   bigint       FAILED runs
--   failure_rate             double       failed / final_runs; null when none finished
--   tokens                   bigint       sum of total_tokens (0 when none reported)
--   flows                    bigint       distinct flows used
--   cost_usd                 double       USD of the runs' priced LLM calls (0 when none)
--   unpriced_calls           bigint       the runs' LLM calls with no known price
--   first_seen, last_seen    timestamptz  start of the user's first and latest run

create or replace view stackai.user_usage as

with runs_by_user as (
    select
        runs.org_id,
        runs.user_id,
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
    user_id,
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
from runs_by_user
group by org_id, user_id
