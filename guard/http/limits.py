"""Bad requests to the admin API: a body size limit, and an audit record for every request refused as malformed.

The admin API takes no request bodies of any size (a delete's reason is a query parameter),
so a body over ``MAX_BODY`` bytes is answered 413 before the application sees it, whether it
announces its length or streams it chunked: the body is read (at most ``MAX_BODY`` bytes of it)
before any handler runs, because a handler that never reads its body (every handler here)
would otherwise be served, and a delete carried out, whatever streamed after the headers. A
body that does not arrive within ``BODY_TIMEOUT`` seconds is answered 408 (the connection is
not held for a client that announced a body and never sends it). Requests answered 400, 404, 413, 414, 422 or 431
(a hostile UID, a probed path, an oversized body, a malformed parameter) are audited as
``security.alert`` with ``reason`` ``invalid-request``, ``unknown-path`` or
``request-too-large`` (and 408 as ``request-timeout``), at most once per 10 seconds per client address and reason
(``guard.domain.throttle``), so a scan cannot flood the ledger. Refused tokens (401) are audited by
the token check itself.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guard.domain.states import AuditEvent, Outcome
from guard.domain.throttle import RefusalThrottle
from guard.http.problems import PROBLEM_MEDIA_TYPE, PROBLEM_PREFIX
from guard.ledger.ledger import Ledger

log = structlog.get_logger("guard.http")

#: Largest request body accepted, in bytes.
MAX_BODY = 64 * 1024
#: Longest wait for the whole request body, in seconds.
BODY_TIMEOUT = 10.0
_AUDITED = {
    400: "invalid-request",
    404: "unknown-path",
    413: "request-too-large",
    414: "request-too-large",
    422: "invalid-request",
    431: "request-too-large",
}


class RequestLimits:
    """ASGI middleware: refuse oversized bodies with 413; report refused requests."""

    def __init__(self, app: ASGIApp, *, max_body: int, report: RefusalThrottle) -> None:
        """Wrap ``app``."""
        self.app = app
        self.max_body = max_body
        self.report = report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request within the limits."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = str((scope.get("client") or ("unknown", 0))[0])
        path = str(scope.get("path", ""))[:200]
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body:
            await self._too_large(send, client, path)
            return
        first: Message | None = {"type": "http.disconnect"}
        with anyio.move_on_after(BODY_TIMEOUT) as waited:
            first = await self._read_body(receive)
        if waited.cancelled_caught:
            await self._refuse(send, client, path, 408, "request-timeout", f"the request body did not arrive within {BODY_TIMEOUT:.0f} s")
            return
        if first is None:
            await self._too_large(send, client, path)
            return
        state = {"started": False}
        await self.app(scope, self._replaying(first, receive), self._watching(send, state, client, path))

    async def _read_body(self, receive: Receive) -> Message | None:
        """The whole body as one message (or the disconnect that cut it short); None once it passes the limit."""
        parts: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            body = bytes(message.get("body", b""))
            received += len(body)
            if received > self.max_body:
                return None
            parts.append(body)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}

    @staticmethod
    def _replaying(first: Message, receive: Receive) -> Receive:
        """``receive`` that hands out the body already read, then waits on the connection (for its disconnect)."""
        pending = [first]

        async def replaying_receive() -> Message:
            if pending:
                return pending.pop()
            return await receive()

        return replaying_receive

    def _watching(self, send: Send, state: dict[str, Any], client: str, path: str) -> Send:
        """``send`` that reports a refused request when its status goes out."""

        async def watching_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                reason = _AUDITED.get(int(message["status"]))
                if reason is not None:
                    await self._report(client, reason, {"status": int(message["status"]), "path": path})
            await send(message)

        return watching_send

    async def _too_large(self, send: Send, client: str, path: str) -> None:
        await self._refuse(send, client, path, 413, "request-too-large", f"request bodies are limited to {self.max_body} bytes")

    async def _refuse(self, send: Send, client: str, path: str, status: int, reason: str, detail: str) -> None:
        """Answer ``status`` with a problem document, close the connection, and report ``reason``."""
        title = reason.replace("-", " ").capitalize()
        body = json.dumps({"type": f"{PROBLEM_PREFIX}{reason}", "title": title, "status": status, "detail": detail}).encode()
        headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        await self._report(client, reason, {"status": status, "path": path})

    async def _report(self, client: str, reason: str, detail: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self.report, client, reason, detail)


def install_request_limits(app: FastAPI, ledger: Ledger, max_body: int = MAX_BODY) -> None:
    """Add the body limit and the audit of refused requests to ``app``."""

    def audit(client: str, reason: str, detail: dict[str, Any]) -> None:
        ledger.audit_or_log(
            AuditEvent.SECURITY_ALERT, Outcome.REFUSED, peer_address=client, detail={"alert": reason, "reason": reason, **detail}
        )

    app.add_middleware(RequestLimits, max_body=max_body, report=RefusalThrottle(audit))
