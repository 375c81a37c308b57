-- stackai.runs: every synced run with clean derived fields; the base of every other view.
--
-- Grain: one row per (run_id): every synced run, from stackai.flow_runs (which dlt merges on
-- run_id).
--
-- Columns:
--   run_id, org_id, flow_id   varchar      the run, and the flow it was read from
--   flow_name                 varchar      the flow's name in the org summary (stackai.flows); null
--                                          when the summary does not name it
--   date                      timestamptz  run start (an instant; never changes)
--   run_date                  date         UTC calendar day of `date`, whatever the session time zone
--   state                     varchar      as received; values the contract does not list are kept
--   is_final                  boolean      state is COMPLETED, FAILED or CANCELLED
--   is_open                   boolean      state is PENDING, PAUSED or RESUMED (the run may still change)
--                                          (an unknown state is neither final nor open)
--   is_flow_successful        boolean      as received
--   is_sub_workflow           boolean      started by another run: parent_run_id set, or run_type
--                                          'sub_workflow'
--   error                     varchar      as received
--   error_pattern             varchar      `error` trimmed, with uuids -> <uuid>, hex ids (6+ hex digits
--                                          holding at least one digit 0-9) -> <hex>, then numbers -> <n>
--                                          (case-insensitive); null when there is no error text
--   latency_seconds           double       the API's `latency` (seconds); null while the run is open
--   total_tokens              bigint       as received (0 while open)
--   user_id, conversation_id  varchar      as received
--   inputs, outputs, llms,    varchar      exactly as received: JSON text or plain text
--   feedback
--   inputs_json,              json         the same value parsed, where it is valid JSON; else null
--   outputs_json, llms_json,
--   feedback_json
--   run_type, ran_by_type     varchar      as received
--   ran_by_id                 varchar      user or API key that started the run (lowercase uuid)
--   ran_by_display_name       varchar      its email or key name
--   parent_run_id             varchar      sub-workflow runs: the parent run (lowercase uuid)
--   parent_project_id         varchar      sub-workflow runs: the parent's flow id
--   parent_project_name       varchar      sub-workflow runs: the parent's flow name

create or replace view stackai.runs as

with synced_runs as (
    select *
    from stackai.flow_runs
),

flow_names as (
    select
        org_id,
        flow_id,
        flow_name
    from stackai.flows
),

runs_with_error_patterns as (
    select
        *,
        regexp_replace(
            regexp_replace(
                regexp_replace(
                    nullif(trim(error), ''),
                    '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}',
                    '<uuid>',
                    'gi'
                ),
                -- A whole word of 6+ hex digits with a digit 0-9 at position 1, 2, 3, 4, 5 or
                -- later (RE2 has no lookahead): ids like 3fa9c1 or 0123456789ab, not words like
                -- "decade".
                '\b(?:[0-9][0-9a-f]{5,}|[0-9a-f][0-9][0-9a-f]{4,}|[0-9a-f]{2}[0-9][0-9a-f]{3,}'
                || '|[0-9a-f]{3}[0-9][0-9a-f]{2,}|[0-9a-f]{4}[0-9][0-9a-f]+'
                || '|[0-9a-f]{5,}[0-9][0-9a-f]*)\b',
                '<hex>',
                'gi'
            ),
            '[0-9]+(?:\.[0-9]+)?',
            '<n>',
            'g'
        ) as error_pattern
    from synced_runs
)

select
    runs.run_id,
    runs.org_id,
    runs.flow_id,
    flow_names.flow_name,
    runs.date,
    cast(timezone('UTC', date) as date) as run_date,
    state,
    coalesce(state in ('COMPLETED', 'FAILED', 'CANCELLED'), false) as is_final,
    coalesce(state in ('PENDING', 'PAUSED', 'RESUMED'), false) as is_open,
    is_flow_successful,
    parent_run_id is not null or coalesce(run_type = 'sub_workflow', false) as is_sub_workflow,
    error,
    error_pattern,
    cast(latency as double) as latency_seconds,
    total_tokens,
    user_id,
    conversation_id,
    inputs,
    outputs,
    llms,
    feedback,
    case when json_valid(inputs) then cast(inputs as json) end as inputs_json,
    case when json_valid(outputs) then cast(outputs as json) end as outputs_json,
    case when json_valid(llms) then cast(llms as json) end as llms_json,
    case when json_valid(feedback) then cast(feedback as json) end as feedback_json,
    run_type,
    ran_by_type,
    ran_by_id,
    ran_by_display_name,
    parent_run_id,
    parent_project_id,
    parent_project_name
from runs_with_error_patterns as runs
left join flow_names on runs.org_id = flow_names.org_id and runs.flow_id = flow_names.flow_id
