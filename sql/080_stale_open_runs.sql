-- stackai.stale_open_runs: runs still PENDING, PAUSED or RESUMED more than 1 hour after they
-- started: stuck runs, or runs that finished but whose end the sync has not seen. The sync
-- re-checks open runs up to `max_open_run_age` old (default 7 days); older ones stay as last
-- seen, so a row here older than that will not change by itself.
--
-- Threshold: 1 hour before now() (the time of the query, not of the last sync).
--
-- Grain: one row per (run_id), over such runs.
--
-- Columns:
--   run_id, org_id, flow_id  varchar
--   flow_name                varchar      the flow's name (stackai.flows), null when unnamed
--   date                     timestamptz  run start
--   run_date                 date         its UTC day
--   state                    varchar      PENDING, PAUSED or RESUMED
--   run_type                 varchar
--   user_id                  varchar
--   ran_by_type              varchar
--   ran_by_display_name      varchar      who started it (email or key name)
--   age_hours                double       hours from `date` to now()

create or replace view stackai.stale_open_runs as

with open_runs as (
    select
        run_id,
        org_id,
        flow_id,
        flow_name,
        date,
        run_date,
        state,
        run_type,
        user_id,
        ran_by_type,
        ran_by_display_name
    from stackai.runs
    where is_open
)

select
    *,
    (epoch(now()) - epoch(date)) / 3600.0 as age_hours
from open_runs
where date < now() - interval 1 hour
