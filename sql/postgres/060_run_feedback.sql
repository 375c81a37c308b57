-- stackai.run_feedback: the runs that received feedback, with the rating when there is one.
-- Feedback is a free-form string: structured JSON such as {"rating": 5, "comment": "..."} or
-- plain text such as "great answer"; both are kept.
--
-- Grain: one row per (run_id), over the runs whose feedback is not null or blank. Average
-- `rating` per flow_id for a score; count rows per flow_id for how often users react.
--
-- Columns:
--   org_id, flow_id, run_id  varchar
--   flow_name                varchar      the flow's name (stackai.flows), null when unnamed
--   date                     timestamptz  run start
--   run_date                 date         its UTC day
--   state                    varchar      the run's state
--   feedback                 varchar      as received
--   feedback_json            json         the same, parsed, when it is valid JSON; else null
--   is_structured            boolean      feedback is valid JSON
--   rating                   double       feedback_json's top-level `rating` when it is a JSON
--                                         number; else null (plain text, no rating, a string)
--   comment                  varchar      feedback_json's top-level `comment` (as text) when the
--                                         feedback is a JSON object that has one; else null
--
-- PostgreSQL's version of sql/060_run_feedback.sql (the columns and rules above are the same):
-- DuckDB's json_type names DuckDB's types, which no transpiler maps to PostgreSQL's
-- jsonb_typeof. Keep the two files in step.

create view stackai.run_feedback as

with runs_with_feedback as (
    select
        org_id,
        flow_id,
        flow_name,
        run_id,
        date,
        run_date,
        state,
        feedback,
        feedback_json
    from stackai.runs
    where nullif(trim(feedback), '') is not null
)

select
    org_id,
    flow_id,
    flow_name,
    run_id,
    date,
    run_date,
    state,
    feedback,
    feedback_json,
    feedback_json is not null as is_structured,
    case
        when jsonb_typeof(cast(feedback_json as jsonb) -> 'rating') = 'number'
            then cast(cast(feedback_json as jsonb) ->> 'rating' as double precision)
    end as rating,
    case
        when jsonb_typeof(cast(feedback_json as jsonb)) = 'object'
            then cast(feedback_json as jsonb) ->> 'comment'
    end as comment
from runs_with_feedback
