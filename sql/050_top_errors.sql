-- stackai.top_errors: why runs fail, per flow: FAILED runs' errors grouped by their pattern
-- (stackai.runs.error_pattern: the message with uuids, hex ids and numbers masked), so the same
-- failure with a different request id or status code counts once. Cancellation messages of
-- CANCELLED runs are not failures and are left out.
--
-- Grain: one row per (org_id, flow_id, error_pattern) over FAILED runs. A FAILED run without an
-- error message counts under the pattern '(no error message)'.
--
-- Columns:
--   org_id, flow_id          varchar
--   flow_name                varchar      the flow's name (stackai.flows), null when unnamed
--   error_pattern            varchar      the normalised message
--   runs                     bigint       FAILED runs with this pattern
--   share_of_failures        double       runs / all FAILED runs of the flow
--   first_seen, last_seen    timestamptz  start of the first and latest such run
--   example_run_id           varchar      the latest such run
--   example_error            varchar      that run's error, as received

create or replace view stackai.top_errors as

with failed_runs as (
    select
        org_id,
        flow_id,
        flow_name,
        run_id,
        date,
        error,
        coalesce(error_pattern, '(no error message)') as error_pattern
    from stackai.runs
    where state = 'FAILED'
),

failures_by_pattern as (
    select
        org_id,
        flow_id,
        any_value(flow_name) as flow_name,
        error_pattern,
        count(*) as runs,
        min(date) as first_seen,
        max(date) as last_seen,
        arg_max(run_id, date) as example_run_id,
        arg_max(error, date) as example_error
    from failed_runs
    group by org_id, flow_id, error_pattern
)

select
    org_id,
    flow_id,
    flow_name,
    error_pattern,
    runs,
    cast(runs as double) / sum(runs) over (partition by org_id, flow_id) as share_of_failures,
    first_seen,
    last_seen,
    example_run_id,
    example_error
from failures_by_pattern
