"""Who exists in the simulated world (orgs, flows) and how one run's served dict is built.

A run dict is exactly one element of the 200 body of `GET /analytics/org/{org_id}/flows/
{flow_id}`, i.e. a `ProjectRunSummary` (contract: `components.schemas.ProjectRunSummary`) with
keys in the contract's order. Functions here take a seeded `random.Random` and never touch the
global one, so a world is reproducible from its seed.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass

from . import catalog
from .contract import (
    OPEN_STATES,
    PARENT_KEYS,
    RUN_KEYS,
    LLMConnectionOrigin,
    LLMProviderEnum,
    RanByType,
    RunType,
    WorkflowState,
)

LEGACY_MISSING_KEYS = (
    "conversation_id",
    "llm_usage",
    "run_type",
    "ran_by_type",
    "ran_by_id",
    "ran_by_display_name",
    *PARENT_KEYS,
)
"""Optional keys (not in the contract's `required`) that old runs lack: the API added them later,
so a client must not assume any optional key is present."""

RUN_TYPE_WEIGHTS: dict[RunType, int] = {
    RunType.API: 30,
    RunType.CHAT_ASSISTANT: 14,
    RunType.WORKFLOW_BUILDER: 12,
    RunType.FORM: 10,
    RunType.AGENT_ASSISTANT: 8,
    RunType.SCHEDULED: 7,
    RunType.TRIGGER: 6,
    RunType.BATCH: 5,
}
"""Run types drawn for a new run; `sub_workflow` is not drawn but assigned by linking a run
to a parent in another flow (see `World`)."""

FINAL_STATE_WEIGHTS = {
    WorkflowState.COMPLETED: 86,
    WorkflowState.FAILED: 10,
    WorkflowState.CANCELLED: 4,
}
OPEN_STATE_WEIGHTS = {WorkflowState.PENDING: 3, WorkflowState.RESUMED: 2, WorkflowState.PAUSED: 2}


@dataclass(frozen=True)
class FlowInfo:
    """A flow (StackAI calls it a project) as the tests see it."""

    org_id: str
    flow_id: str
    name: str


@dataclass(frozen=True)
class Member:
    """A StackAI user of an org: `user_id` is a uuid, `email` is their display name."""

    user_id: str
    email: str


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as runs report it (`ran_by_id`, `ran_by_display_name`), not a secret."""

    key_id: str
    name: str


@dataclass(frozen=True)
class OrgProfile:
    org_id: str
    members: tuple[Member, ...]
    api_keys: tuple[ApiKeyInfo, ...]
    end_users: tuple[str, ...]
    """`user_id`s API callers pass for their own customers."""


@dataclass(frozen=True)
class FlowProfile:
    info: FlowInfo
    models: tuple[tuple[LLMProviderEnum, str], ...]
    """(provider, model_id) of the flow's LLM nodes; `llms` lists the model ids."""
    runs_per_hour: float
    """Mean arrival rate of new runs while the clock advances."""
    owner: Member
    project_type: str
    public_ui_type: str | None
    """None when the flow is not published."""


def new_uuid(rng: random.Random) -> str:
    """A lowercase uuid4-format string drawn from `rng`."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def weighted(rng: random.Random, weights: dict) -> str:
    """Draw a key of `weights` as a plain `str` (a StrEnum member becomes its value)."""
    return str(rng.choices(tuple(weights), tuple(weights.values()))[0])


def make_org(rng: random.Random, index: int) -> OrgProfile:
    """An org with 3-5 members, 2-3 API keys and a few end-user ids."""
    domain = catalog.ORG_DOMAINS[index % len(catalog.ORG_DOMAINS)]
    org_id = new_uuid(rng)
    members = tuple(
        Member(new_uuid(rng), f"{name}@{domain}")
        for name in rng.sample(catalog.MEMBER_NAMES, rng.randint(3, 5))
    )
    api_keys = tuple(
        ApiKeyInfo(new_uuid(rng), name)
        for name in rng.sample(catalog.API_KEY_NAMES, rng.randint(2, 3))
    )
    return OrgProfile(org_id, members, api_keys, tuple(rng.sample(catalog.END_USER_IDS, 3)))


def make_flow(rng: random.Random, org: OrgProfile, name: str) -> FlowProfile:
    """A flow of `org` with 1-3 LLM nodes and a published UI more often than not."""
    providers = rng.choices(
        tuple(catalog.PROVIDER_WEIGHTS), tuple(catalog.PROVIDER_WEIGHTS.values()), k=3
    )
    models = tuple(
        dict.fromkeys((p, rng.choice(catalog.MODELS[p])) for p in providers[: rng.randint(1, 3)])
    )
    return FlowProfile(
        info=FlowInfo(org.org_id, new_uuid(rng), name),
        models=models,
        runs_per_hour=rng.uniform(2.0, 6.0),
        owner=rng.choice(org.members),
        project_type=rng.choice(catalog.PROJECT_TYPES),
        public_ui_type=None if rng.random() < 0.4 else rng.choice(catalog.PUBLIC_UI_TYPES),
    )


def build_run(
    rng: random.Random,
    org: OrgProfile,
    flow: FlowProfile,
    *,
    run_id: str,
    date: str,
    state: str,
    run_type: str,
    legacy: bool = False,
    parent: tuple[FlowInfo, dict] | None = None,
) -> dict:
    """Build the served dict of one run.

    Args:
        rng: the world's seeded RNG for this phase.
        org, flow: where the run belongs.
        run_id: uuid4 string.
        date: the `date` string, already formatted (see `dates.format_date`).
        state: a WorkflowState value; open states get no outcome yet (see `settle`).
        run_type: a RunType value; `sub_workflow` requires `parent`.
        legacy: omit the optional keys the API added later (`LEGACY_MISSING_KEYS`).
        parent: (parent's flow, parent's run dict) for a sub-workflow run; the run inherits who
            ran it from the parent.

    Returns:
        A `ProjectRunSummary` dict, keys in contract order.
    """
    if parent is not None:
        parent_flow, parent_run = parent
        ran_by = (
            parent_run.get("ran_by_type"),
            parent_run.get("ran_by_id"),
            parent_run.get("ran_by_display_name"),
            parent_run["user_id"],
        )
    else:
        ran_by = _ran_by(rng, org, run_type)
    chatty = run_type in (RunType.CHAT_ASSISTANT, RunType.AGENT_ASSISTANT)
    run = dict.fromkeys(RUN_KEYS)
    run.update(
        run_id=run_id,
        conversation_id=new_uuid(rng) if chatty else None,
        date=date,
        user_id=ran_by[3],
        inputs=_maybe_json(rng, "in-0", rng.choice(catalog.PROMPTS)),
        llms=json.dumps([model for _, model in flow.models]),
        llm_usage=[],
        run_type=run_type,
        ran_by_type=ran_by[0],
        ran_by_id=ran_by[1],
        ran_by_display_name=ran_by[2],
    )
    if parent is not None:
        run.update(
            parent_run_id=parent_run["run_id"],
            parent_project_id=parent_flow.flow_id,
            parent_project_name=parent_flow.name,
        )
    if legacy:
        omitted = LEGACY_MISSING_KEYS
    elif parent is None and rng.random() < 0.5:
        # Runs without a parent either omit the parent keys or send them as null; both occur.
        omitted = PARENT_KEYS
    else:
        omitted = ()
    for key in omitted:
        del run[key]
    settle(rng, run, flow, state)
    if state not in OPEN_STATES:
        run["feedback"] = _feedback(rng)
    return run


def settle(rng: random.Random, run: dict, flow: FlowProfile, state: str) -> None:
    """Set `state` and the outcome fields that follow from it, in place.

    Open states (PENDING/PAUSED/RESUMED) have no outcome: `is_flow_successful`, `latency`,
    `error`, `outputs` are null, `total_tokens` is 0 and `llm_usage` is empty. Final states get
    a latency in seconds, LLM usage and, for COMPLETED, outputs; FAILED gets an error message.
    `total_tokens` is the sum of the usage records' known `tokens`.
    """
    state = str(WorkflowState(state).value)
    run["state"] = state
    if state in OPEN_STATES:
        usage: list[dict] = []
        run.update(is_flow_successful=None, error=None, latency=None, outputs=None)
    else:
        calls = {"COMPLETED": (0, 4), "FAILED": (0, 2), "CANCELLED": (0, 1)}[state]
        usage = [_usage(rng, flow) for _ in range(rng.randint(*calls))]
        run.update(
            is_flow_successful=state == WorkflowState.COMPLETED,
            error=_error(rng, flow) if state == WorkflowState.FAILED else None,
            latency=_latency(rng),
            outputs=_maybe_json(rng, "out-0", rng.choice(catalog.ANSWERS))
            if state == WorkflowState.COMPLETED
            else None,
        )
        if state == WorkflowState.CANCELLED and rng.random() < 0.6:
            run["error"] = rng.choice(catalog.CANCEL_MESSAGES)
    run["total_tokens"] = sum(u["tokens"] for u in usage if u["tokens"] is not None)
    if "llm_usage" in run:
        run["llm_usage"] = usage


def _ran_by(rng: random.Random, org: OrgProfile, run_type: str) -> tuple:
    """(ran_by_type, ran_by_id, ran_by_display_name, user_id) for a run started as `run_type`."""
    if run_type == RunType.API:
        key = rng.choice(org.api_keys)
        kind = RanByType.PERSONAL_API_KEY if rng.random() < 0.4 else RanByType.ORG_API_KEY
        end_user = rng.choice(org.end_users) if rng.random() < 0.6 else None
        return kind.value, key.key_id, key.name, end_user
    if run_type in (RunType.SCHEDULED, RunType.TRIGGER):
        return RanByType.SYSTEM.value, None, None, None
    if run_type == RunType.FORM and rng.random() < 0.4:
        # A public form: nobody signs in, so the run has no author and maybe an end-user id.
        return None, None, None, rng.choice((None, *org.end_users))
    member = rng.choice(org.members)
    user_id = None if rng.random() < 0.05 else member.user_id
    return RanByType.USER.value, member.user_id, member.email, user_id


def _maybe_json(rng: random.Random, node: str, text: str) -> str:
    """`text` as-is, or JSON-encoded keyed by node id (escaped or raw non-ASCII, as both occur)."""
    if rng.random() < 0.4:
        return text
    return json.dumps({node: text}, ensure_ascii=rng.random() < 0.5)


def _latency(rng: random.Random) -> float | int:
    """Seconds, log-normal around 3 s; sometimes integral, and then an int half of the time
    (JSON `2`, not `2.0`): a page of such values must not make a client infer an integer column."""
    seconds = min(max(rng.lognormvariate(math.log(3.0), 0.8), 0.2), 300.0)
    if rng.random() < 0.04:
        whole = float(max(1, round(seconds)))
        return int(whole) if rng.random() < 0.5 else whole
    return round(seconds, 3)


def _usage(rng: random.Random, flow: FlowProfile) -> dict:
    """One `LLMUsageData` dict (contract: `components.schemas.LLMUsageData`)."""
    provider, model_id = rng.choice(flow.models)
    if rng.random() < 0.06:
        # The provider did not report usage.
        input_tokens = output_tokens = tokens = None
    else:
        input_tokens, output_tokens = rng.randint(40, 4000), rng.randint(5, 1500)
        tokens = input_tokens + output_tokens
    local = provider == LLMProviderEnum.LOCAL
    if local:
        origin, connection_id = None, None
    else:
        origin = weighted(rng, {"stack_ai": 70, "external_db": 25, "external_ephemeral": 5})
        connection_id = new_uuid(rng) if origin == LLMConnectionOrigin.EXTERNAL_DB else None
    return {
        "provider": str(provider.value),
        "model_id": model_id,
        "tokens": tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "connection_id": connection_id,
        "connection_origin": origin,
        "is_local_model": local,
        # Only calls on StackAI's own provider accounts are billed to the org.
        "should_charge": origin == LLMConnectionOrigin.STACK_AI,
    }


def _error(rng: random.Random, flow: FlowProfile) -> str:
    provider, model = rng.choice(flow.models)
    return rng.choice(catalog.ERROR_TEMPLATES).format(
        seconds=rng.choice((30, 60, 120)),
        node=rng.randint(0, 6),
        model=model,
        provider=provider.value,
        status=rng.choice((500, 502, 503, 529)),
        hex12=f"{rng.getrandbits(48):012x}",
        hex6=f"{rng.getrandbits(24):06x}",
    )


def _feedback(rng: random.Random) -> str | None:
    """Mostly none; sometimes a JSON rating, sometimes free text."""
    roll = rng.random()
    if roll < 0.88:
        return None
    if roll < 0.96:
        rating, comment = rng.choice(catalog.FEEDBACK_RATINGS)
        return json.dumps({"rating": rating, "comment": comment}, ensure_ascii=False)
    return rng.choice(catalog.FEEDBACK_TEXTS)


def late_feedback(rng: random.Random) -> str:
    """Feedback that arrives after the run ended (never None)."""
    return _feedback(rng) or rng.choice(catalog.FEEDBACK_TEXTS)
