"""What the StackAI "List Flow Runs" endpoint is and how it behaves: the one place that says so.

Every fact here comes from the vendor contract, vendored as `tests/contract/analytics-openapi.yml`
(path `/analytics/org/{org_id}/flows/{flow_id}`, operationId `getAnalyticsDataApi`, schema
`components.schemas.ProjectRunSummary`), or from the project's API notes ("API-NOTES") where the
contract is silent. The rest of the package reads its behaviour from these values.
"""

from __future__ import annotations

from typing import Final

from dlt.common.schema.typing import TTableSchemaColumns

DEFAULT_BASE_URL: Final = "https://api.stack-ai.com"
"""The contract's `servers[0]` (analytics lives on the primary host, not the inference host)."""

RUNS_PATH: Final = "analytics/org/{org_id}/flows/{flow_id}"
"""`paths./analytics/org/{org_id}/flows/{flow_id}.get`; both ids are path parameters."""

ORG_SUMMARY_PATH: Final = "organizations/analytics/projects-run-summary"
"""`paths./organizations/analytics/projects-run-summary.get`: one `OrgProjectRunSummary` per
project (flow) of the API key's org; the org is not a parameter (API-NOTES: "the org comes from
the API key"), and the rows do not name it. Paged like the runs (`page_size` default 25)."""

PAGE_PARAM: Final = "page"
FIRST_PAGE: Final = 0
"""`page` is 0-based (`minimum: 0, default: 0`)."""

PAGE_SIZE_PARAM: Final = "page_size"
DEFAULT_PAGE_SIZE: Final = 100
"""`page_size` has `minimum: 1`, `default: 25` and no documented maximum; 100 keeps round trips
few without betting on an undocumented server limit. A page shorter than this ends a flow: the
body is a bare array with no total and no next link, so length is the only end-of-data signal
(API-NOTES)."""

START_DATE_PARAM: Final = "start_date"
END_DATE_PARAM: Final = "end_date"
"""Both `date-time` or null. Whether the bounds are inclusive is undocumented, so the sync never
depends on it: windows overlap and the merge on `run_id` absorbs the re-read runs."""

WORKFLOW_STATES: Final = ("PENDING", "PAUSED", "RESUMED", "COMPLETED", "FAILED", "CANCELLED")
"""`components.schemas.WorkflowState`."""

OPEN_STATES: Final = frozenset({"PENDING", "PAUSED", "RESUMED"})
"""States a run can still leave: its tokens, outputs and feedback may change later."""

RUN_TYPES: Final = (
    "workflow_builder",
    "form",
    "batch",
    "chat_assistant",
    "agent_assistant",
    "trigger",
    "scheduled",
    "sub_workflow",
    "api",
)
"""`components.schemas.RunType`."""

RAN_BY_TYPES: Final = ("user", "personal_api_key", "org_api_key", "system")
"""`components.schemas.RanByType`."""

LLM_PROVIDERS: Final = (
    "Anthropic",
    "Azure",
    "Bedrock",
    "Cerebras",
    "Google",
    "Google_service_account",
    "Groq",
    "Local",
    "Meta",
    "Mistral",
    "OpenAI",
    "Perplexity",
    "Replicate",
    "TogetherAI",
    "XAI",
)
"""`components.schemas.LLMProviderEnum`."""

CONNECTION_ORIGINS: Final = ("stack_ai", "external_db", "external_ephemeral")
"""`components.schemas.LLMConnectionOrigin`."""

DATASET_NAME: Final = "stackai"
"""The dataset (DuckDB schema) every table and view lives in."""

RUNS_TABLE: Final = "flow_runs"
LLM_USAGE_TABLE: Final = "flow_runs__llm_usage"
COSTS_TABLE: Final = "llm_call_costs"
"""What each LLM call cost (`pipelines.load.costs`): written by the sync, not by the source."""
"""Named as dlt names a nested list's table (`<parent>__<field>`), which it was until the batch
path; stated here because users' SQL uses it."""

PRIMARY_KEY: Final = "run_id"


ID_FIELDS: Final = ("run_id", "ran_by_id", "parent_run_id")
"""uuid fields (`format: uuid` in the contract), stored lowercase so joins never miss on case."""

BIGINT_MAX: Final = 2**63 - 1
"""The largest value of a `bigint` column (int64); larger integers are not stored as numbers."""


def _text(description: str, nullable: bool = True) -> dict:
    return {"data_type": "text", "nullable": nullable, "description": description}


def named_columns(columns: dict[str, dict]) -> TTableSchemaColumns:
    # dlt fills in `name` for a resource's own columns but not for nested or per-item hints.
    return {name: {"name": name, **column} for name, column in columns.items()}


# Every contract field gets an explicit type so that a column that is null (or whole-valued) on
# the first page is still created with the right type: dlt otherwise infers from the first value
# and later adds variant columns such as `latency__v_double`.
RUN_COLUMNS: Final[TTableSchemaColumns] = named_columns(
    {
        "run_id": _text("ProjectRunSummary.run_id (uuid), lowercase", nullable=False),
        "org_id": _text("The org the run was read from (path parameter)", nullable=False),
        "flow_id": _text("The flow the run was read from (path parameter)", nullable=False),
        "date": {
            "data_type": "timestamp",
            "timezone": True,
            "precision": 6,
            "nullable": False,
            "description": "Run start, UTC. Never changes for a run; the incremental cursor.",
        },
        "conversation_id": _text("ProjectRunSummary.conversation_id"),
        "is_flow_successful": {"data_type": "bool", "nullable": True},
        "state": _text("WorkflowState; unknown values kept as text"),
        "error": _text("Error message, as received"),
        "latency": {
            "data_type": "double",
            "nullable": True,
            "description": "Run latency as sent by the API; seconds (API-NOTES: unit undocumented)",
        },
        "total_tokens": {"data_type": "bigint", "nullable": True},
        "user_id": _text("ProjectRunSummary.user_id"),
        "inputs": _text("As received: JSON-encoded or plain text"),
        "outputs": _text("As received: JSON-encoded or plain text"),
        "llms": _text("As received: JSON-encoded or plain text"),
        "feedback": _text("As received: JSON-encoded or plain text"),
        "run_type": _text("RunType; unknown values kept as text"),
        "ran_by_type": _text("RanByType; unknown values kept as text"),
        "ran_by_id": _text("uuid of the user or API key that started the run, lowercase"),
        "ran_by_display_name": _text("Email of the user or name of the API key"),
        "parent_run_id": _text("Sub-workflow runs: run_id of the parent run, lowercase"),
        "parent_project_id": _text("Sub-workflow runs: flow (project) id of the parent run"),
        "parent_project_name": _text("Sub-workflow runs: name of the parent flow (project)"),
    }
)

LLM_USAGE_COLUMNS: Final[TTableSchemaColumns] = named_columns(
    {
        "run_id": _text("The run this LLM call belongs to", nullable=False),
        "provider": _text("LLMProviderEnum; unknown values kept as text"),
        "model_id": _text("LLMUsageData.model_id"),
        "tokens": {"data_type": "bigint", "nullable": True},
        "input_tokens": {"data_type": "bigint", "nullable": True},
        "output_tokens": {"data_type": "bigint", "nullable": True},
        "connection_id": _text("uuid or null"),
        "connection_origin": _text("LLMConnectionOrigin; unknown values kept as text"),
        "is_local_model": {"data_type": "bool", "nullable": True},
        "should_charge": {"data_type": "bool", "nullable": True},
    }
)


ROW_KEY_COLUMN: Final[TTableSchemaColumns] = named_columns(
    {
        "_dlt_id": {
            "data_type": "text",
            "nullable": False,
            "unique": True,
            "row_key": True,
            "description": "dlt's row key: md5 of run_id, the same for every version of a run",
        }
    }
)

USAGE_LINK_COLUMNS: Final[TTableSchemaColumns] = named_columns(
    {
        "_dlt_root_id": _text("The run's `_dlt_id` in flow_runs", nullable=False),
        "_dlt_parent_id": _text("The run's `_dlt_id` in flow_runs", nullable=False),
        "_dlt_list_idx": {
            "data_type": "bigint",
            "nullable": False,
            "description": "Position in the run's llm_usage list, from 0",
        },
        **ROW_KEY_COLUMN,
    }
)
"""The columns dlt's nested tables carry, kept with the same meaning so that joins on
`_dlt_root_id = flow_runs._dlt_id` work whichever path loaded the rows."""

DELETED_COLUMN: Final = "_deleted"
USAGE_MARKER_COLUMNS: Final[TTableSchemaColumns] = named_columns(
    {
        DELETED_COLUMN: {
            "data_type": "bool",
            "nullable": True,
            "hard_delete": True,
            "description": "dlt's hard_delete column: true only on the marker row a run re-read"
            " with no LLM calls sends, which deletes its earlier rows and is never stored",
        }
    }
)
"""A run re-read with an empty `llm_usage` sends one marker row: the merge on `run_id` deletes
the run's earlier calls, and dlt's `hard_delete` keeps the marker out of the table. So a run's
LLM calls are replaced in the same load as the run, on every destination, with no SQL after
the load."""

USAGE_PRIMARY_KEY: Final = "_dlt_id"
"""A usage row's `_dlt_id` (`<run's _dlt_id>_<index>`) is the same for every copy of a call, so
dlt's merge drops the copies a resumed load can stage twice (dlt-hub/dlt#3023)."""

REJECTED_TABLE: Final = "flow_runs_rejected"
"""Records that could not become a row, kept with the reason (append-only)."""

REJECTED_COLUMNS: Final[TTableSchemaColumns] = named_columns(
    {
        "org_id": {"data_type": "text", "nullable": False},
        "flow_id": {"data_type": "text", "nullable": False},
        "raw": {"data_type": "text", "nullable": True, "description": "The record as JSON text"},
        "reason": {"data_type": "text", "nullable": False},
        "seen_at": {
            "data_type": "timestamp",
            "timezone": True,
            "nullable": False,
            "description": "When the sync last read the record (the same as last_seen_at)",
        },
        # Nullable only because dlt adds them to tables written before they existed; the sync
        # fills them in for such rows (`upkeep.keep_each_rejected_record_once`).
        "record_hash": {
            "data_type": "text",
            "nullable": True,
            "description": "md5 of ORG_ID/FLOW_ID/raw: one row per flow and content",
        },
        "first_seen_at": {"data_type": "timestamp", "timezone": True, "nullable": True},
        "last_seen_at": {"data_type": "timestamp", "timezone": True, "nullable": True},
        "times_seen": {
            "data_type": "bigint",
            "nullable": True,
            "description": "How many syncs read the record",
        },
    }
)


FLOWS_TABLE: Final = "flows"
"""One row per (org_id, flow_id) ever synced or listed, merged every sync."""

FLOWS_PRIMARY_KEY: Final = ("org_id", "flow_id")

_WHEN = {"data_type": "timestamp", "timezone": True, "nullable": True}

FLOW_COLUMNS: Final[TTableSchemaColumns] = named_columns(
    {
        "org_id": {"data_type": "text", "nullable": False},
        "flow_id": {"data_type": "text", "nullable": False},
        "flow_name": _text("OrgProjectRunSummary.project_name"),
        "project_type": _text("OrgProjectRunSummary.project_type"),
        "owner_email": _text("OrgProjectRunSummary.project_owner.email"),
        "is_published": {"data_type": "bool", "nullable": True},
        "public_ui_url": _text("OrgProjectRunSummary.public_ui_url"),
        "total_runs": {"data_type": "bigint", "nullable": True},
        "total_errors": {"data_type": "bigint", "nullable": True},
        "total_tokens": {"data_type": "bigint", "nullable": True},
        "total_users": {"data_type": "bigint", "nullable": True},
        "totals_at": {**_WHEN, "description": "When the summary's totals were read (UTC)"},
        "first_seen_at": {**_WHEN, "description": "The first sync that knew the flow (UTC)"},
        "last_seen_at": {**_WHEN, "description": "The last sync the summary listed it (UTC)"},
        "is_listed": {
            "data_type": "bool",
            "nullable": False,
            "description": "The org summary listed the flow at the last sync",
        },
        "initial_start_date": {
            **_WHEN,
            "description": "initial_start_date when the flow was last synced: older runs are"
            " not read",
        },
    }
)
"""`components.schemas.OrgProjectRunSummary` (totals over all time, no date filter) and what
the sync knows of each flow."""
