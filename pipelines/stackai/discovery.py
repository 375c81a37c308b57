"""Which flows an org has, by name: the org summary read once per sync, and the `flows` table.

The summary (`GET /organizations/analytics/projects-run-summary`, one `OrgProjectRunSummary` per
project) lists the projects of the API key's org and does not name the org (API-NOTES: "the org
comes from the API key"). So its projects are attributed to each org asked for with `orgs`, and
a flow configured by hand takes its name from the row with its flow id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipelines.stackai.client import ApiKeyRejected, FlowNotFound, RunsClient, StackAIError
from pipelines.stackai.dates import iso, parse_api_datetime
from pipelines.stackai.flows import FlowRef

log = logging.getLogger(__name__)


class WrongOrg(StackAIError):
    """An org asked for with `orgs`/`--org` is not the API key's org."""


@dataclass
class Discovery:
    """What the org summary said this sync.

    Attributes:
        projects: Summary rows by project (flow) id; empty when the summary was not read.
        read_at: When the summary was read (aware UTC), None when it was not.
        listed: Flows of the orgs asked for, as the summary lists them, in its order.
        error: Why the summary could not be read for names only (no org asked for).
    """

    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    read_at: datetime | None = None
    listed: list[FlowRef] = field(default_factory=list)
    error: str | None = None


def read_projects(client: RunsClient) -> dict[str, dict[str, Any]]:
    """Every project row of the org summary, by `project_id`, first occurrence kept.

    A row without a usable `project_id` (not a string, empty, spaces, control characters) is
    skipped with a warning.

    Raises:
        What `RunsClient.iter_projects` raises.
    """
    projects: dict[str, dict[str, Any]] = {}
    for page in client.iter_projects():
        for row in page:
            project_id = row.get("project_id") if isinstance(row, dict) else None
            try:
                # validated as a configured flow id is (FlowRef), so it is safe in a path
                FlowRef("org", project_id if isinstance(project_id, str) else "")
            except ValueError as exc:
                log.warning("the org summary lists a project without a usable id, skipped: %s", exc)
                continue
            projects.setdefault(project_id, row)
    return projects


def discover(client: RunsClient, orgs: Iterable[str], now: datetime) -> Discovery:
    """Read the org summary once: the flows of `orgs`, and names for every flow.

    Args:
        client: The API client.
        orgs: Org ids whose every flow is to be synced (`orgs`, `--org`). Without any, the
            summary only names flows configured by hand: one that cannot be read is logged and
            the sync goes on without names.
        now: When the summary is read (aware UTC).

    Raises:
        WrongOrg: an org of `orgs` is not the key's: reading its first listed flow is refused.
        StackAIError, requests.RequestException: the summary cannot be read and `orgs` asks
            for discovery.
    """
    orgs = list(dict.fromkeys(orgs))
    discovery = Discovery()
    try:
        discovery.projects = read_projects(client)
    except Exception as exc:
        if orgs:
            raise
        discovery.error = str(exc) if isinstance(exc, StackAIError) else type(exc).__name__
        log.warning("flow names not read: %s", discovery.error)
        return discovery
    discovery.read_at = now
    for org in orgs:
        flows = [FlowRef(org, project_id) for project_id in discovery.projects]
        if flows:
            _check_org(client, org, flows[0], len(flows))
        discovery.listed.extend(flows)
        log.info("org %s: the summary lists %d flows", org, len(flows))
    return discovery


def _check_org(client: RunsClient, org: str, flow: FlowRef, count: int) -> None:
    # The summary lists the key's org whatever org was asked for: one request shows whether
    # this org is the key's, before every flow fails the same way.
    try:
        next(client.iter_pages(flow, None, None, page_size=1), None)
    except ApiKeyRejected as exc:
        raise WrongOrg(
            f"org {org}: the API key is not for this org (the summary of the key's org lists"
            f" {count} flows, and reading one of them in org {org} was refused: {exc})"
        ) from None
    except FlowNotFound:
        pass  # deleted since the summary: that flow is skipped, the org is fine


def flow_rows(
    flows: Iterable[FlowRef],
    discovery: Discovery,
    known: Mapping[str, Any],
    now: datetime,
    initial_start: datetime | None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str], list[str]]:
    """Rows for the `flows` table, and the state that remembers them.

    Args:
        flows: The flows this sync reads (configured and discovered).
        discovery: This sync's summary.
        known: The previous state: `{"ORG/FLOW": {"first_seen_at", "last_seen_at", "row"}}`.
        now: This sync's time (aware UTC).
        initial_start: `initial_start_date`, or None.

    Returns:
        `(rows, state, new, unlisted)`: one row per flow read or known before; the new state;
        flows listed for the first time; flows listed before and not now (only when the
        summary was read).
    """
    state: dict[str, Any] = {key: dict(value) for key, value in known.items()}
    rows: dict[str, dict[str, Any]] = {}
    new: list[str] = []
    stamp = iso(now)
    for flow in flows:
        key = str(flow)
        entry = state.setdefault(key, {"first_seen_at": stamp, "last_seen_at": None, "row": {}})
        project = discovery.projects.get(flow.flow_id)
        if project is not None:
            if entry.get("last_seen_at") is None:
                new.append(key)
            entry["last_seen_at"] = iso(discovery.read_at)
            entry["row"] = _summary_fields(project, discovery.read_at)
        # a summary that could not be read says nothing: the flow keeps its last known status
        listed = project is not None if discovery.read_at else bool(entry.get("listed"))
        rows[key] = _row(flow, entry, listed=listed, initial_start=initial_start)
    unlisted: list[str] = []
    if discovery.read_at is not None:
        for key, entry in state.items():
            if key in rows:
                continue
            flow = FlowRef.parse(key)
            listed = flow.flow_id in discovery.projects
            if not listed and entry.get("listed", False):
                unlisted.append(key)
            rows[key] = _row(flow, entry, listed=listed, initial_start=initial_start)
    for key, row in rows.items():
        state[key]["listed"] = row["is_listed"]
    return list(rows.values()), state, new, unlisted


def _summary_fields(project: Mapping[str, Any], read_at: datetime | None) -> dict[str, Any]:
    owner = project.get("project_owner")
    return {
        "flow_name": project.get("project_name"),
        "project_type": project.get("project_type"),
        "owner_email": owner.get("email") if isinstance(owner, dict) else None,
        "is_published": project.get("is_published"),
        "public_ui_url": project.get("public_ui_url"),
        "total_runs": project.get("total_runs"),
        "total_errors": project.get("total_errors"),
        "total_tokens": project.get("total_tokens"),
        "total_users": project.get("total_users"),
        "totals_at": iso(read_at),
    }


def _row(
    flow: FlowRef, entry: Mapping[str, Any], listed: bool, initial_start: datetime | None
) -> dict[str, Any]:
    fields = dict(entry.get("row") or {})
    row = {
        "org_id": flow.org_id,
        "flow_id": flow.flow_id,
        **fields,
        "first_seen_at": entry.get("first_seen_at"),
        "last_seen_at": entry.get("last_seen_at"),
        "is_listed": listed,
        "initial_start_date": initial_start,
    }
    for name in ("first_seen_at", "last_seen_at", "totals_at"):
        if row.get(name):
            row[name] = parse_api_datetime(row[name])
    return row
