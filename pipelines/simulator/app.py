"""The simulator's HTTP surface: the two operations of the vendor contract, served from a `World`.

Parameter names, defaults and constraints copy `analytics-openapi.yml` so that FastAPI itself
produces the 422 bodies for bad `page`, `page_size` and date-times, exactly as the real
(FastAPI-built) service does. Auth is `Authorization: Bearer <key>` (the contract's `HTTPBearer`
scheme); the bodies of 401/403/404 are FastAPI's default `{"detail": "..."}` (API-NOTES.md: not
documented, so a client should only rely on the status code).

Faults (`faults.py`) hit only the flows endpoint, after auth and the 403/404 checks. The
rate limit (`World.concurrency_limit`) also hits only the flows endpoint, but before anything
else: a request over it is answered 429 whatever its key, flow or parameters.

The flows endpoint answers 403 for any org the key is not for (an org of the world the key does
not cover, or an org unknown to the world: a real key belongs to one org and cannot tell the
others apart), then 404 for a flow that is not one of that org's, or that was removed
(`World.remove_flow`; also when it is removed while the request is under way).
"""

import re
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from . import faults
from .contract import (
    FLOWS_OPERATION_ID,
    FLOWS_PATH,
    ORG_SUMMARY_OPERATION_ID,
    ORG_SUMMARY_PATH,
    STATE_DESCRIPTION,
    OrgProjectRunSummary,
    ProjectRunSummary,
    WorkflowState,
)
from .world import KeyExpiredError, World

_BEARER = HTTPBearer(auto_error=False)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_FLOW_NOT_FOUND = "Flow not found"

Page = Annotated[int, Query(ge=0)]
PageSize = Annotated[int, Query(ge=1)]


_FLOWS_ROUTE = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", FLOWS_PATH) + "$")
"""The paths of the flows endpoint (what `World.concurrency_limit` limits)."""
_ADMITTED = "stackai.simulator.admitted"
"""Set in the ASGI scope of a flows-endpoint request `World.begin_flows_request` admitted,
until its `World.end_flows_request`."""


class _SimulatorApp(FastAPI):
    """FastAPI with `faults.FaultLayer` outside everything else, so that the layer gets the
    server's own `send` (and through it the connection), whatever middleware FastAPI adds.

    Before the layer, each request to the flows endpoint is admitted by
    `World.begin_flows_request` (or answered its 429); it is in flight until the layer reports
    its response complete (`World.end_flows_request`): just before the response's last bytes
    go out, so after a `slow` fault's delay, and before a client can have read the response."""

    def __init__(self, world: World, **kwargs) -> None:
        super().__init__(**kwargs)
        self._world = world

        def record(scope, status: int | None, fault: str | None) -> None:
            request = Request(scope)
            world.record_request(
                request.method, request.url.path, dict(request.query_params), status, fault
            )

        def complete(scope) -> None:
            if scope.pop(_ADMITTED, False):
                world.end_flows_request()

        self._record = record
        self._fault_layer = faults.FaultLayer(super().__call__, record, complete)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and _FLOWS_ROUTE.match(scope["path"]):
            refusal = self._world.begin_flows_request()
            if refusal is not None:
                self._record(scope, refusal.status, faults.RATE_LIMITED)
                await faults.respond(refusal)(scope, receive, send)
                return
            scope[_ADMITTED] = True
        await self._fault_layer(scope, receive, send)


def create_app(world: World) -> FastAPI:
    """Build the FastAPI app serving `world`.

    Routes: `GET /analytics/org/{org_id}/flows/{flow_id}` (operationId `getAnalyticsDataApi`)
    and `GET /organizations/analytics/projects-run-summary`. Every response is appended to
    `world.requests`; faults from `world.take_fault` hit the first one.
    """
    app = _SimulatorApp(
        world,
        title="StackAI analytics API (simulator)",
        version="0.1.0",
        description="A seeded simulation of StackAI's analytics API, for demos and tests.",
    )

    def authorised_orgs(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> frozenset[str]:
        if credentials is None:
            raise HTTPException(401, "Not authenticated", headers=_CHALLENGE)
        try:
            orgs = world.authorize(credentials.credentials)
        except KeyExpiredError:
            faults.slot(request.scope).label = faults.KEY_EXPIRED
            raise HTTPException(401, "API key expired", headers=_CHALLENGE) from None
        if orgs is None:
            raise HTTPException(401, "Invalid API key", headers=_CHALLENGE)
        return orgs

    Orgs = Annotated[frozenset[str], Depends(authorised_orgs)]

    @app.get(
        FLOWS_PATH,
        tags=["analytics"],
        summary="List Flow Runs",
        description="List flow run logs matching the given filters.",
        operation_id=FLOWS_OPERATION_ID,
        response_model=list[ProjectRunSummary],
    )
    def list_flow_runs(
        flow_id: str,
        org_id: str,
        request: Request,
        orgs: Orgs,
        page: Page = 0,
        page_size: PageSize = 25,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        user_id: str | None = None,
        state: Annotated[str | None, Query(description=STATE_DESCRIPTION)] = None,
    ) -> Response:
        states = _parse_states(state)
        limit = world.page_size_limit
        if limit is not None and page_size > limit:
            # FastAPI's own body for `Query(le=limit)`
            detail = [
                {
                    "type": "less_than_equal",
                    "loc": ["query", "page_size"],
                    "msg": f"Input should be less than or equal to {limit}",
                    "input": str(page_size),
                    "ctx": {"le": limit},
                }
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        if org_id not in orgs:
            raise HTTPException(403, "Not authorized for this organization")
        if not world.has_flow(org_id, flow_id):
            raise HTTPException(404, _FLOW_NOT_FOUND)
        fault = world.take_fault(flow_id)
        if fault is not None:
            faults.mark(request.scope, fault)
            if not fault.serves_page:
                return faults.respond(fault)
        if world.before_page is not None:
            world.before_page(org_id, flow_id, dict(request.query_params))
        try:
            rows = world.query_runs(
                org_id,
                flow_id,
                start=start_date,
                end=end_date,
                user_id=user_id,
                states=states,
                page=page,
                page_size=page_size,
            )
        except KeyError:  # removed since the check above (e.g. by `before_page`)
            raise HTTPException(404, _FLOW_NOT_FOUND) from None
        return _json(rows) if fault is None else faults.respond(fault, rows)

    @app.get(
        ORG_SUMMARY_PATH,
        tags=["analytics"],
        summary="List Project Run Summary",
        description=(
            "Org-level analytics for all projects. "
            "List with the project run logs matching the given filters."
        ),
        operation_id=ORG_SUMMARY_OPERATION_ID,
        response_model=list[OrgProjectRunSummary],
    )
    def list_project_run_summary(
        orgs: Orgs,
        page: Page = 0,
        page_size: PageSize = 25,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> Response:
        rows = world.project_summaries(
            orgs, start=start_date, end=end_date, page=page, page_size=page_size
        )
        return _json(rows)

    return app


def _parse_states(raw: str | None) -> list[str] | None:
    """Split the comma-separated `state` filter; an unknown value is a FastAPI-shaped 422.

    Empty items are ignored, so `state=` filters nothing. Values are case-sensitive, as the
    contract lists them in upper case.
    """
    if raw is None:
        return None
    values = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [value for value in values if value not in WorkflowState._value2member_map_]
    if unknown:
        accepted = ", ".join(WorkflowState)
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "state"),
                    "msg": f"Value error, Invalid state {', '.join(unknown)}. "
                    f"Accepted values: {accepted}",
                    "input": raw,
                }
            ]
        )
    return values or None


def _json(rows: list[dict]) -> Response:
    # Serialise the world's values untouched (a response_model would re-format `date`), with
    # the separators and raw UTF-8 of FastAPI's own JSONResponse.
    return Response(content=faults.json_body(rows), media_type="application/json")
