"""A flow as configured: the `ORG_ID/FLOW_ID` pair of the runs endpoint's path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pipelines.stackai import endpoint


@dataclass(frozen=True, order=True)
class FlowRef:
    """One configured flow: the (org_id, flow_id) pair of the endpoint's path."""

    org_id: str
    flow_id: str

    def __post_init__(self) -> None:
        for name in ("org_id", "flow_id"):
            value = getattr(self, name)
            if (
                not value
                or value in (".", "..")
                or any(c.isspace() or not c.isprintable() for c in value)
            ):
                raise ValueError(
                    f"{name} must be a non-empty id without spaces or control characters"
                    f" and not '.' or '..', got {value!r}"
                )

    def __str__(self) -> str:
        return f"{self.org_id}/{self.flow_id}"

    @classmethod
    def parse(cls, text: str) -> FlowRef:
        """Parse `ORG_ID/FLOW_ID`.

        Raises:
            ValueError: not exactly two ids separated by one `/`, or an invalid id.
        """
        parts = text.strip().split("/")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise ValueError(f"a flow is written ORG_ID/FLOW_ID, got {text!r}")
        return cls(parts[0].strip(), parts[1].strip())

    @property
    def path(self) -> str:
        """The endpoint path for this flow, each id percent-encoded as one path segment."""
        return endpoint.RUNS_PATH.format(
            org_id=quote(self.org_id, safe=""), flow_id=quote(self.flow_id, safe="")
        )


def parse_flows(values: Any, what: str) -> tuple[FlowRef, ...]:
    """Parse flows given as `"ORG_ID/FLOW_ID"` strings or `{org_id, flow_id}` tables.

    Returns:
        Distinct flows, first occurrence order.

    Raises:
        ValueError: naming `what` and the bad entry.
    """
    if values is None:
        return ()
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    flows: list[FlowRef] = []
    for value in values:
        try:
            if isinstance(value, dict):
                flow = FlowRef(str(value["org_id"]).strip(), str(value["flow_id"]).strip())
                if not flow.org_id or not flow.flow_id:
                    raise ValueError("empty org_id or flow_id")
            else:
                flow = FlowRef.parse(str(value))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{what}: bad flow {value!r}: {exc}") from None
        if flow not in flows:
            flows.append(flow)
    return tuple(flows)
