"""Switchable faults of the flows endpoint: what a flaky API or a broken proxy does to a client.

A `Fault` says what goes wrong with one response; `World.inject` queues them and the world's
seeded chaos draws them (`World.fault_rate`). The app asks `World.take_fault` once per
authorised request of `GET /analytics/org/{org_id}/flows/{flow_id}` for an existing flow, and
answers with `respond`. Faults that live below HTTP (a delay, a cut body, a reset connection)
are carried out by `FaultLayer`, the app's outermost ASGI wrapper, which also reports every
response (status and fault) for `World.requests`.

What a client sees, kind by kind:

- `status`: the HTTP `status` (default 503) with `{"detail": "<reason phrase>"}` and, if
  `retry_after` is set, that `Retry-After` header verbatim.
- `slow`: the correct response, `seconds` late (the event loop keeps serving other requests).
- `truncated`: `200`, `Content-Type: application/json`, the `Content-Length` of the whole page,
  then half of the body and a clean close (FIN): `requests` raises `ChunkedEncodingError`
  (urllib3 `ProtocolError` wrapping `IncompleteRead`).
- `reset`: no response byte at all; the server closes the connection with a TCP RST
  (`SO_LINGER` 0): `requests` raises `ConnectionError` (`ConnectionResetError`, "Connection
  reset by peer"). Logged in `World.requests` with status None.
- `html`: `200`, `text/html`, a maintenance page.
- `object`: `200`, JSON `{"detail": "maintenance"}` instead of an array.
- `bad_json`: `200`, `application/json`, the page with a trailing comma (`[...,]`): complete
  (right `Content-Length`) but not JSON.
- `wrong_content_type`: the correct page with `Content-Type: text/plain`.
- `records`: the correct page with the raw JSON values `records` appended (default
  `DEFAULT_RECORDS`: each is a run with one defect, or no run at all). They are never stored in
  the world.

A rate-limited API is not a `Fault` but a setting, `World.concurrency_limit`: a request to the
flows endpoint arriving while that many are in flight gets `429` with `{"detail": "Too Many
Requests"}` at once (before auth and faults) and, if `World.rate_limit_retry_after` is set,
that `Retry-After` header; it is logged with the fault label `RATE_LIMITED`. The app admits
requests before `FaultLayer`, which reports each response complete (`on_complete`) just
before its last bytes go out: a request is in flight for the whole of its response, a `slow`
delay included.

`truncated` and `reset` need the connection's transport, which the layer finds on uvicorn's
`send` (its request-response cycle). Under a server where it cannot (e.g. Starlette's
`TestClient`), both fall back to raising `FaultAbort` after the status line, which makes a
server close the connection mid-response (and log the exception).
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response

KINDS = (
    "status",
    "slow",
    "truncated",
    "reset",
    "html",
    "object",
    "bad_json",
    "wrong_content_type",
    "records",
)
PAGE_KINDS = frozenset({"slow", "truncated", "bad_json", "wrong_content_type", "records"})
"""Kinds whose response carries (part of) the real page, so the page is computed for them."""
_PARAMS = {"status": ("status", "retry_after"), "slow": ("seconds",), "records": ("records",)}
"""The parameters each kind takes; the others must keep their defaults."""
_SPEC_PARAM = {"status": ("status", int), "slow": ("seconds", float)}
"""The one parameter a `"kind:param"` string may carry, and its type."""

KEY_EXPIRED = "key_expired"
"""The `fault` logged in `World.requests` for a 401 caused by `World.expire_key_after`."""
RATE_LIMITED = "rate_limit"
"""The `fault` logged in `World.requests` for a 429 caused by `World.concurrency_limit`."""


def _run(**overrides: Any) -> dict:
    run = {
        "run_id": None,
        "conversation_id": None,
        "date": "2026-01-01T00:00:00",
        "is_flow_successful": True,
        "state": "COMPLETED",
        "error": None,
        "latency": 1.5,
        "total_tokens": 120,
        "user_id": None,
        "inputs": "hello",
        "outputs": "hi",
        "llms": '["gpt-4o"]',
        "feedback": None,
    }
    return run | overrides


DEFAULT_RECORDS: tuple[Any, ...] = (
    "not an object",
    _run(run_id=None),
    _run(run_id="00000000-0000-4000-8000-00000000bad1", date="yesterday"),
    _run(run_id="00000000-0000-4000-8000-00000000bad2", total_tokens="12x"),
)
"""What a `records` fault appends unless told otherwise: a string, a run without `run_id`, a
run with `date` "yesterday", a run with `total_tokens` "12x" (otherwise well-formed runs)."""

_DEFAULTS: dict[str, Any] = {
    "status": 503,
    "retry_after": None,
    "seconds": 1.0,
    "records": DEFAULT_RECORDS,
}
"""`Fault`'s parameter defaults."""

HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Service temporarily unavailable</title></head>\n"
    "<body><h1>We'll be right back</h1><p>StackAI is undergoing scheduled maintenance.</p>"
    "</body></html>\n"
)


@dataclass(frozen=True)
class Fault:
    """One faulty response of the flows endpoint (see the module docstring for each kind).

    Args:
        kind: one of `KINDS`.
        flow_id: only a request for this flow takes the fault; None: any flow.
        status: `status` kind: the HTTP status, 400-599.
        retry_after: `status` kind: the `Retry-After` header, sent verbatim (e.g. "1", "0",
            "-5", an HTTP date); a number is written with `:g`; None: no header.
        seconds: `slow` kind: the delay (>= 0).
        records: `records` kind: the JSON values appended to the page.

    Raises:
        ValueError: unknown kind, a bad value, or a parameter the kind does not take.
    """

    kind: str
    flow_id: str | None = None
    status: int = _DEFAULTS["status"]
    retry_after: str | None = _DEFAULTS["retry_after"]
    seconds: float = _DEFAULTS["seconds"]
    records: tuple[Any, ...] = field(default=_DEFAULTS["records"], repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        taken = _PARAMS.get(self.kind, ())
        for name in ("status", "retry_after", "seconds", "records"):
            if name not in taken and getattr(self, name) != _DEFAULTS[name]:
                raise ValueError(f"fault kind {self.kind!r} takes no {name!r}")
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise ValueError(f"status must be an int, not {self.status!r}")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be 400-599, not {self.status}")
        retry_after = self.retry_after
        if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
            retry_after = f"{retry_after:g}"
        if retry_after is not None and (
            not isinstance(retry_after, str)
            or any(char in retry_after for char in "\r\n\0")
            or not retry_after.isascii()
        ):
            raise ValueError(f"retry_after must be None or a one-line ASCII str: {retry_after!r}")
        object.__setattr__(self, "retry_after", retry_after)
        seconds = float(self.seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be finite and >= 0, not {self.seconds!r}")
        object.__setattr__(self, "seconds", seconds)
        if isinstance(self.records, str | bytes | dict):
            raise ValueError("records must be a list of JSON values")
        records = tuple(copy.deepcopy(list(self.records)))
        json.dumps(records)  # TypeError/ValueError now rather than at serving time
        object.__setattr__(self, "records", records)

    @classmethod
    def parse(cls, spec: str, *, flow_id: str | None = None) -> Fault:
        """A fault from `"kind"` or `"kind:param"`: `status:429`, `slow:0.2`, `truncated`...

        Only `status` (the status code) and `slow` (seconds) take a param.
        """
        kind, colon, raw = spec.strip().partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r} in {spec!r}; kinds: {', '.join(KINDS)}")
        if not colon:
            return cls(kind, flow_id=flow_id)
        if kind not in _SPEC_PARAM:
            raise ValueError(f"fault kind {kind!r} takes no parameter: {spec!r}")
        name, convert = _SPEC_PARAM[kind]
        try:
            value = convert(raw)
        except ValueError:
            raise ValueError(f"bad {name} in fault {spec!r}") from None
        return cls(kind, flow_id=flow_id, **{name: value})

    @property
    def serves_page(self) -> bool:
        """Whether the response carries the real page (so it must be computed)."""
        return self.kind in PAGE_KINDS

    def matches(self, flow_id: str) -> bool:
        return self.flow_id is None or self.flow_id == flow_id


def json_body(values: Any) -> bytes:
    """JSON with the separators and raw UTF-8 of FastAPI's own JSONResponse."""
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def respond(fault: Fault, rows: list | None = None) -> Response:
    """The HTTP response of `fault` (`rows`: the real page, needed when `fault.serves_page`).

    For `slow`, `truncated` and `reset` this is the correct response: `FaultLayer` delays, cuts
    or drops it once the fault is `mark`ed on the request.
    """
    if fault.serves_page and rows is None:
        raise ValueError(f"a {fault.kind!r} fault needs the page")
    kind = fault.kind
    if kind == "status":
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        return JSONResponse({"detail": _phrase(fault.status)}, fault.status, headers=headers)
    if kind == "html":
        return Response(HTML_PAGE, media_type="text/html")
    if kind == "object":
        return JSONResponse({"detail": "maintenance"})
    if kind == "bad_json":
        return Response(json_body(rows)[:-1] + b",]", media_type="application/json")
    if kind == "reset":
        return Response(b"", media_type="application/json")
    if kind == "records":
        return Response(json_body([*rows, *fault.records]), media_type="application/json")
    media_type = "text/plain" if kind == "wrong_content_type" else "application/json"
    return Response(json_body(rows), media_type=media_type)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# ---------------------------------------------------------------------------- ASGI mechanics

SCOPE_KEY = "stackai.simulator.fault"
"""Where `FaultLayer` puts the request's `FaultSlot` in the ASGI scope."""


class FaultSlot:
    """Per request: the fault the app chose (`fault`) and what the request log says (`label`)."""

    def __init__(self) -> None:
        self.fault: Fault | None = None
        self.label: str | None = None


def slot(scope: MutableMapping[str, Any]) -> FaultSlot:
    """The request's slot (a detached one if the app runs without `FaultLayer`)."""
    found = scope.get(SCOPE_KEY)
    return found if isinstance(found, FaultSlot) else FaultSlot()


def mark(scope: MutableMapping[str, Any], fault: Fault) -> None:
    """Attach `fault` to the request, for `FaultLayer` to carry out and log."""
    holder = slot(scope)
    holder.fault, holder.label = fault, fault.kind


class FaultAbort(ConnectionAbortedError):
    """Raised by `FaultLayer` to make the server drop a connection it cannot reach itself."""


ASGIApp = Callable[[MutableMapping[str, Any], Callable, Callable], Awaitable[None]]
OnResponse = Callable[[MutableMapping[str, Any], int | None, str | None], None]
OnComplete = Callable[[MutableMapping[str, Any]], None]


class FaultLayer:
    """The outermost ASGI wrapper: carries out the marked fault and reports every response.

    Args:
        app: the wrapped ASGI app.
        on_response: called as `(scope, status, fault label)` when a response starts (status
            None for `reset`: no response is sent), before any delay.
        on_complete: called once per HTTP request as `(scope)` when its response is done: just
            before its last body message goes to the server (so before a client can have read
            the whole response), when the connection is dropped (`reset`, `truncated`), or
            when the app returns or raises without finishing the response.

    It must receive the server's own `send` (nothing between it and the server may wrap
    `send`) to reach the connection's transport for `truncated` and `reset`.
    """

    def __init__(
        self, app: ASGIApp, on_response: OnResponse, on_complete: OnComplete | None = None
    ) -> None:
        self.app = app
        self.on_response = on_response
        self.on_complete = on_complete

    async def __call__(self, scope: MutableMapping[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        holder = FaultSlot()
        scope[SCOPE_KEY] = holder
        dropped = completed = False

        def complete() -> None:
            nonlocal completed
            if not completed:
                completed = True
                if self.on_complete is not None:
                    self.on_complete(scope)

        async def faulty_send(message: MutableMapping[str, Any]) -> None:
            nonlocal dropped
            if dropped:
                return
            fault = holder.fault
            kind = fault.kind if fault is not None else None
            if message["type"] == "http.response.start":
                status = None if kind == "reset" else message["status"]
                self.on_response(scope, status, holder.label)
                if kind == "slow":
                    await asyncio.sleep(fault.seconds)
                elif kind == "reset":
                    dropped = True
                    complete()
                    await _drop(send, message, reset=True)
                    return
            elif message["type"] == "http.response.body":
                if kind == "truncated":
                    dropped = True
                    complete()
                    body = message.get("body", b"")
                    cut = {"type": "http.response.body", "body": body[: len(body) // 2]}
                    await send(cut | {"more_body": True})
                    await _drop(send, None, reset=False)
                    return
                if not message.get("more_body", False):
                    complete()
            await send(message)

        try:
            await self.app(scope, receive, faulty_send)
        finally:
            complete()


async def _drop(send, start: MutableMapping[str, Any] | None, *, reset: bool) -> None:
    """Close the connection under the response: RST if `reset`, else FIN after what was sent.

    `start` is the unsent `http.response.start`, if any: the fallback sends it before raising.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if not isinstance(transport, asyncio.BaseTransport):
        if start is not None:
            await send(start)
        raise FaultAbort("simulated fault: connection dropped")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    # Let the server see the connection go (uvicorn then stays quiet about the unfinished
    # response); bounded, as `close` first flushes what is buffered.
    for _ in range(1000):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.001)
