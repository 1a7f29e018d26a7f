"""Errors of the admin API as RFC 7807 problem documents (``application/problem+json``).

Every error the API answers, including those FastAPI and Starlette raise themselves (unknown
path, wrong method, invalid query parameter), is turned into a problem document with
``type``, ``title``, ``status`` and ``detail``; some carry extension members (a refused delete
carries its ``decision``, ``reasons``, ``sentence`` and ``evidence``). Problem types are URNs
``urn:guard:problem:<name>``, stable and documented in the OpenAPI description.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from guard.domain.errors import LedgerError

log = structlog.get_logger("guard.http")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_PREFIX = "urn:guard:problem:"


class Problem(BaseModel):
    """An RFC 7807 problem document; extension members are allowed."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="URI naming the kind of problem (``urn:guard:problem:<name>`` or ``about:blank``).")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field("", description="What went wrong with this request.")


class ProblemResponse(JSONResponse):
    """A JSON response with the problem media type."""

    media_type = PROBLEM_MEDIA_TYPE


class ProblemError(Exception):
    """Raised by handlers to answer with a problem document."""

    def __init__(
        self,
        status: int,
        name: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        """A problem of kind ``urn:guard:problem:<name>`` with HTTP ``status``."""
        super().__init__(detail)
        self.status = status
        self.name = name
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    def response(self) -> ProblemResponse:
        """The problem document."""
        return problem_response(self.status, self.title, self.detail, name=self.name, headers=self.headers, **self.extensions)


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    name: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """Build a problem response; without ``name`` the type is ``about:blank`` (the title is the status phrase)."""
    body: dict[str, Any] = {
        "type": f"{PROBLEM_PREFIX}{name}" if name else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        **extensions,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_openapi(description: str, model: type[BaseModel] = Problem) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for a problem document described by ``model``."""
    schema = model.model_json_schema()
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}


async def _on_problem(_request: Request, exc: Exception) -> ProblemResponse:
    if not isinstance(exc, ProblemError):  # pragma: no cover - registered for ProblemError only
        raise exc
    return exc.response()


async def _on_http_error(_request: Request, exc: Exception) -> ProblemResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return problem_response(exc.status_code, _phrase(exc.status_code), detail, headers=dict(exc.headers or {}))


async def _on_validation_error(_request: Request, exc: Exception) -> ProblemResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover - registered for RequestValidationError only
        raise exc
    errors = [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
    return problem_response(422, "Invalid request", where or "the request is not valid", name="invalid-request", errors=errors)


async def _on_ledger_error(_request: Request, exc: Exception) -> ProblemResponse:
    log.error("http.ledger_unavailable", action="http.ledger_unavailable", error=str(exc))
    return problem_response(
        503, "Ledger unavailable", "the ledger cannot be read or written now; try again later", name="ledger-unavailable"
    )


async def _on_unexpected(_request: Request, exc: Exception) -> ProblemResponse:
    log.error("http.internal_error", action="http.internal_error", error=f"{exc.__class__.__name__}: {exc}", exc_info=exc)
    return problem_response(500, "Internal error", "an unexpected error occurred; see the guard's log", name="internal-error")


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem document."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(LedgerError, _on_ledger_error)
    app.add_exception_handler(Exception, _on_unexpected)
