-- stackai.flow_completeness: the runs stored per flow beside the API's own count of them, so a
-- copy that falls short is seen (the org summary's all-time `total_runs`, read every sync).
--
-- Grain: one row per (org_id, flow_id) of stackai.flows: every flow synced or listed.
--
-- Columns:
--   org_id, flow_id     varchar      the flow
--   flow_name           varchar      its name in the org summary, null when unnamed
--   is_listed           boolean      the org summary listed it at the last sync
--   total_runs          bigint       the API's count of the flow's runs (all time), as of totals_at;
--                                    null when the summary did not list the flow
--   totals_at           timestamptz  when the sync read that count
--   stored_runs         bigint       runs of the flow in stackai.flow_runs
--   missing_runs        bigint       total_runs - stored_runs (negative: more stored than counted)
--   explanation         varchar      what the difference means:
--                                    'complete': the counts agree;
--                                    'before initial_start_date': runs older than it are not
--                                    read, so fewer are stored by design;
--                                    'newer than the count': runs stored that started after the
--                                    summary was read;
--                                    'no count': the summary gives none (not listed);
--                                    'runs missing': fewer stored and nothing explains it: sync
--                                    with --full-refresh --flow ORG_ID/FLOW_ID;
--                                    'more stored than counted': runs the API no longer counts
--   is_short            boolean      explanation is 'runs missing'

create or replace view stackai.flow_completeness as

with stored as (
    select
        org_id,
        flow_id,
        count(*) as stored_runs,
        count(*) filter (where date > totals_at) as runs_after_count
    from stackai.flow_runs
    inner join (select org_id, flow_id, totals_at from stackai.flows) as counted
        using (org_id, flow_id)
    group by org_id, flow_id
),

compared as (
    select
        flows.org_id,
        flows.flow_id,
        flows.flow_name,
        flows.is_listed,
        flows.total_runs,
        flows.totals_at,
        flows.initial_start_date,
        coalesce(stored.stored_runs, 0) as stored_runs,
        coalesce(stored.runs_after_count, 0) as runs_after_count
    from stackai.flows as flows
    left join stored on flows.org_id = stored.org_id and flows.flow_id = stored.flow_id
)

select
    org_id,
    flow_id,
    flow_name,
    is_listed,
    total_runs,
    totals_at,
    stored_runs,
    total_runs - stored_runs as missing_runs,
    case
        when total_runs is null then 'no count'
        when total_runs = stored_runs then 'complete'
        when total_runs < stored_runs and stored_runs - runs_after_count <= total_runs
            then 'newer than the count'
        when total_runs < stored_runs then 'more stored than counted'
        when initial_start_date is not null then 'before initial_start_date'
        else 'runs missing'
    end as explanation,
    coalesce(
        total_runs > stored_runs and initial_start_date is null, false
    ) as is_short
from compared
