"""What a sync committed as each flow's state, read back from the dlt working folder of its
DuckDB file (the same place the next sync reads it from)."""

from __future__ import annotations

from typing import Any

from pipelines.load import open_pipeline
from pipelines.settings import SyncSettings
from pipelines.stackai.window import FlowState


def stored_states(settings: SyncSettings) -> dict[str, dict[str, Any]]:
    """Each flow's stored state as dlt keeps it (`sources.stackai.resources`), by resource name
    (`ORG_ID/FLOW_ID`); empty before a first sync."""
    sources = open_pipeline(settings.target()).state.get("sources", {})
    return dict(sources.get("stackai", {}).get("resources", {}))


def stored_state(settings: SyncSettings, flow: object) -> FlowState | None:
    """A flow's stored state, parsed; None if no sync committed any for it."""
    states = stored_states(settings)
    return FlowState.from_dict(states[str(flow)]) if str(flow) in states else None


def stored_cursors(settings: SyncSettings) -> dict[str, str | None]:
    """Each flow's stored cursor as stored (ISO-8601 UTC string, or None)."""
    return {name: state.get("cursor") for name, state in stored_states(settings).items()}


def stored_cursor(settings: SyncSettings, flow: object) -> str | None:
    """A flow's stored cursor as stored; None if it has none (or no state)."""
    return stored_cursors(settings).get(str(flow))
