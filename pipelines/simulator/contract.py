"""The vendor contract, as Python types: enums and response models of StackAI's analytics API.

Mirrors `components.schemas` of the vendored contract (`tests/contract/analytics-openapi.yml`,
a copy of the vendor's per-endpoint OpenAPI 3.1 documents). The world draws its enum values
from here, and the app declares these models as response models so that the simulator's own
`/openapi.json` and `/docs` describe the same shapes as the vendor's.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field

FLOWS_PATH = "/analytics/org/{org_id}/flows/{flow_id}"
"""`paths` key of "List Flow Runs" (operationId `getAnalyticsDataApi`)."""

ORG_SUMMARY_PATH = "/organizations/analytics/projects-run-summary"
"""`paths` key of "List Project Run Summary"."""

FLOWS_OPERATION_ID = "getAnalyticsDataApi"
ORG_SUMMARY_OPERATION_ID = (
    "get_org_analytics_data_api_organizations_analytics_projects_run_summary_get"
)

STATE_DESCRIPTION = (
    "Comma-separated list of statuses to filter by. "
    "Accepted values: PENDING, PAUSED, RESUMED, COMPLETED, FAILED, CANCELLED"
)
"""Verbatim from the contract's `state` query parameter."""


class WorkflowState(StrEnum):
    """Enum representing the possible states of a workflow."""

    PENDING = "PENDING"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


OPEN_STATES = frozenset({WorkflowState.PENDING, WorkflowState.PAUSED, WorkflowState.RESUMED})
"""States of a run that is still going: its outcome (tokens, latency, outputs) is not known yet."""

FINAL_STATES = frozenset({WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED})


class RunType(StrEnum):
    """How a workflow run was initiated."""

    WORKFLOW_BUILDER = "workflow_builder"
    FORM = "form"
    BATCH = "batch"
    CHAT_ASSISTANT = "chat_assistant"
    AGENT_ASSISTANT = "agent_assistant"
    TRIGGER = "trigger"
    SCHEDULED = "scheduled"
    SUB_WORKFLOW = "sub_workflow"
    API = "api"


class RanByType(StrEnum):
    """Who or what authenticated the run."""

    USER = "user"
    PERSONAL_API_KEY = "personal_api_key"
    ORG_API_KEY = "org_api_key"
    SYSTEM = "system"


class LLMProviderEnum(StrEnum):
    """LLM provider identifiers."""

    ANTHROPIC = "Anthropic"
    AZURE = "Azure"
    BEDROCK = "Bedrock"
    CEREBRAS = "Cerebras"
    GOOGLE = "Google"
    GOOGLE_SERVICE_ACCOUNT = "Google_service_account"
    GROQ = "Groq"
    LOCAL = "Local"
    META = "Meta"
    MISTRAL = "Mistral"
    OPENAI = "OpenAI"
    PERPLEXITY = "Perplexity"
    REPLICATE = "Replicate"
    TOGETHERAI = "TogetherAI"
    XAI = "XAI"


class LLMConnectionOrigin(StrEnum):
    STACK_AI = "stack_ai"
    EXTERNAL_DB = "external_db"
    EXTERNAL_EPHEMERAL = "external_ephemeral"


class LLMUsageData(BaseModel):
    """Token usage for a single LLM call within a run."""

    provider: LLMProviderEnum
    model_id: str
    tokens: int | None = Field(None, ge=0)
    input_tokens: int | None = Field(None, ge=0)
    output_tokens: int | None = Field(None, ge=0)
    connection_id: UUID | None = None
    connection_origin: LLMConnectionOrigin | None = None
    is_local_model: bool = Field(
        description="Whether this usage record is from a local model.",
        json_schema_extra={"readOnly": True},
    )
    should_charge: bool = Field(
        description="Whether this usage record should be charged.",
        json_schema_extra={"readOnly": True},
    )


class ProjectRunSummary(BaseModel):
    """Summary of a single workflow run."""

    run_id: UUID
    conversation_id: str | None = None
    date: datetime
    is_flow_successful: bool | None
    state: WorkflowState | None
    error: str | None
    latency: float | None
    total_tokens: int
    user_id: str | None
    inputs: str | None
    outputs: str | None
    llms: str | None
    feedback: str | None
    llm_usage: list[LLMUsageData] = Field(default_factory=list)
    run_type: RunType | None = Field(None, description="How the run was initiated.")
    ran_by_type: RanByType | None = Field(None, description="Who authenticated the run.")
    ran_by_id: UUID | None = Field(
        None, description="ID of the user or API key that triggered the run."
    )
    ran_by_display_name: str | None = Field(
        None,
        description="Display name of the user (email) or API key (name) that triggered the run.",
    )
    parent_run_id: UUID | None = Field(
        None, description="Run ID of the parent workflow for sub-workflow runs."
    )
    parent_project_id: str | None = Field(
        None, description="Project ID of the parent workflow for sub-workflow runs."
    )
    parent_project_name: str | None = Field(
        None, description="Name of the parent project for sub-workflow runs."
    )


RUN_KEYS: tuple[str, ...] = tuple(ProjectRunSummary.model_fields)
"""`ProjectRunSummary` keys in the contract's order; the world emits run dicts in this order."""

PARENT_KEYS = ("parent_run_id", "parent_project_id", "parent_project_name")


class ProjectOwner(BaseModel):
    user_id: str
    email: str
    avatar_url: str = Field(json_schema_extra={"format": "uri"})


class OrgProjectRunSummary(BaseModel):
    """A row with information about project run summary at the organization level."""

    project_id: str
    project_owner: ProjectOwner
    project_type: str
    project_name: str
    total_runs: int
    total_errors: int
    total_tokens: int
    total_users: int
    is_published: bool
    public_ui_url: str | None
    public_ui_type: str | None
