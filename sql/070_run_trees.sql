-- stackai.run_trees: sub-workflow trees. A run started by another run (parent_run_id) belongs
-- to its parent's tree; each run gets its tree's root, its depth, and the tree's totals.
--
-- Grain: one row per (run_id): every run of stackai.runs (a run with no parent and no children
-- is a tree of one).
--
-- An orphan is a run whose parent_run_id names a run that is not synced (a flow not in the
-- configuration, or not synced yet). It is kept and flagged: it is the root of its own tree
-- (depth 0), and its tree is flagged incomplete. A run whose parent chain loops (never seen
-- from the API, but not impossible in data) is kept with in_cycle true and null tree columns.
--
-- Columns:
--   run_id, org_id, flow_id  varchar
--   flow_name                varchar      the run's flow's name (stackai.flows), null when unnamed
--   date                     timestamptz  run start
--   parent_run_id            varchar      as received
--   root_run_id              varchar      the earliest synced ancestor (the run itself for a root)
--   root_flow_id             varchar      the root's flow
--   root_flow_name           varchar      its name, null when unnamed
--   depth                    integer      0 for a root, 1 for its children, ...
--   is_orphan                boolean      parent_run_id set, but that run is not synced
--   tree_is_incomplete       boolean      the tree's root is an orphan (ancestors are missing)
--   in_cycle                 boolean      the run's parent chain loops; no root
--   tree_runs                bigint       runs in the tree
--   tree_depth               integer      depth of the deepest run of the tree
--   tree_tokens              bigint       sum of total_tokens over the tree's runs
--   tree_latency_seconds     double       sum of latency_seconds over the tree's runs: compute
--                                         time spent, not wall time (children run inside their
--                                         parent's latency)
--   tree_cost_usd            double       USD of the priced LLM calls of the tree's runs: what a
--                                         parent run and all its sub-workflows cost together
--   tree_unpriced_calls      bigint       the tree's LLM calls with no known price

create or replace view stackai.run_trees as

with recursive synced_runs as (
    select
        runs.run_id,
        runs.org_id,
        runs.flow_id,
        runs.flow_name,
        runs.date,
        runs.parent_run_id,
        runs.total_tokens,
        runs.latency_seconds,
        run_costs.cost_usd,
        run_costs.unpriced_calls
    from stackai.runs as runs
    inner join stackai.run_costs as run_costs on runs.run_id = run_costs.run_id
),

runs_with_parent_status as (
    select
        child.*,
        child.parent_run_id is not null and parent.run_id is null as is_orphan
    from synced_runs as child
    left join synced_runs as parent on child.parent_run_id = parent.run_id
),

-- Walks down from the roots only, and each run has at most one parent, so every run is reached
-- at most once and the recursion ends; runs in a parent loop are never reached.
tree_members as (
    select
        run_id,
        run_id as root_run_id,
        0 as depth
    from runs_with_parent_status
    where parent_run_id is null or is_orphan

    union all

    select
        child.run_id,
        tree_members.root_run_id,
        tree_members.depth + 1 as depth
    from tree_members
    inner join synced_runs as child on tree_members.run_id = child.parent_run_id
),

tree_totals as (
    select
        tree_members.root_run_id,
        count(*) as tree_runs,
        max(tree_members.depth) as tree_depth,
        cast(coalesce(sum(synced_runs.total_tokens), 0) as bigint) as tree_tokens,
        cast(coalesce(sum(synced_runs.latency_seconds), 0) as double) as tree_latency_seconds,
        cast(coalesce(sum(synced_runs.cost_usd), 0) as double) as tree_cost_usd,
        cast(coalesce(sum(synced_runs.unpriced_calls), 0) as bigint) as tree_unpriced_calls
    from tree_members
    inner join synced_runs on tree_members.run_id = synced_runs.run_id
    group by tree_members.root_run_id
)

select
    runs.run_id,
    runs.org_id,
    runs.flow_id,
    runs.flow_name,
    runs.date,
    runs.parent_run_id,
    tree_members.root_run_id,
    roots.flow_id as root_flow_id,
    roots.flow_name as root_flow_name,
    tree_members.depth,
    runs.is_orphan,
    roots.is_orphan as tree_is_incomplete,
    tree_members.run_id is null as in_cycle,
    tree_totals.tree_runs,
    tree_totals.tree_depth,
    tree_totals.tree_tokens,
    tree_totals.tree_latency_seconds,
    tree_totals.tree_cost_usd,
    tree_totals.tree_unpriced_calls
from runs_with_parent_status as runs
left join tree_members on runs.run_id = tree_members.run_id
left join runs_with_parent_status as roots on tree_members.root_run_id = roots.run_id
left join tree_totals on tree_members.root_run_id = tree_totals.root_run_id
