"""Who may use the admin API: bearer tokens with identities and scopes, and a brake on guessing.

- **Tokens.** ``[[http.tokens]]`` entries name an ``identity``, its ``scopes`` (``read``,
  ``delete``) and the ``sha256`` of the token; the token itself is never stored in the
  configuration. The single ``http.token`` / ``http.token_file`` of earlier versions still
  works: it is the identity ``admin`` with both scopes (the file is read at each request, so a
  rotated file takes effect at once). A presented token is hashed and compared with every
  configured hash using ``hmac.compare_digest`` (constant time, no early exit on a match).
- **Identity.** The identity of an accepted token is the ``actor`` of the audit records the
  request writes (a delete's ``delete.requested`` and decision).
- **Scopes.** ``DELETE /studies/{uid}`` needs ``delete``. Read endpoints (``/studies``,
  ``/audit``, the status data) need ``read`` only when ``http.read_requires_token`` is on;
  health, readiness and metrics never do (probes and scrapers hold no token).
- **Refusals.** 401 for a missing or wrong token, 403 for a token without the scope, each
  audited as ``security.alert`` (``alert: bad-token``, with ``problem``). A client address
  with ``http.auth_failures_max`` failures within ``http.auth_failures_window`` seconds gets
  429 with ``Retry-After`` until the oldest of them ages out, audited once per lockout as
  ``security.alert`` (``alert: rate-limited``). The presented token is never recorded.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's annotations.

import hmac
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from guard.config.settings import Settings, TokenScope
from guard.domain.states import AuditEvent, Outcome
from guard.domain.tokens import token_hash
from guard.domain.uids import is_valid_uid
from guard.http.problems import ProblemError
from guard.ledger.ledger import Ledger

#: The identity of the single ``http.token`` / ``http.token_file``.
LEGACY_IDENTITY = "admin"
#: Client addresses whose failures are remembered at once; the oldest is forgotten beyond.
MAX_TRACKED_ADDRESSES = 10_000

Clock = Callable[[], float]


@dataclass(frozen=True)
class Principal:
    """The holder of an accepted token."""

    identity: str
    scopes: frozenset[TokenScope]


class FailureLimiter:
    """Failed authentications per client address over a sliding window (thread-safe, bounded memory)."""

    def __init__(self, max_failures: int, window: float, clock: Clock = time.monotonic) -> None:
        """Lock an address out after ``max_failures`` failures within ``window`` seconds."""
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._announced: dict[str, float] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        with self._lock:
            now = self.clock()
            times = self._recent(address, now)
            if len(times) < self.max_failures:
                return None
            return max(times[0] + self.window - now, 0.0)

    def first_refusal(self, address: str) -> bool:
        """Whether this is the first refusal of the current lockout of ``address`` (audit once per lockout)."""
        with self._lock:
            times = self._failures.get(address)
            started = times[-1] if times else 0.0
            if self._announced.get(address) == started:
                return False
            self._announced[address] = started
            return True

    def record_failure(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        with self._lock:
            now = self.clock()
            times = self._recent(address, now)
            times.append(now)
            self._failures[address] = times
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_TRACKED_ADDRESSES:
                forgotten, _ = self._failures.popitem(last=False)
                self._announced.pop(forgotten, None)


def _peer(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class Authenticator:
    """Turns a request's bearer token into a ``Principal``, or refuses it (audited)."""

    def __init__(self, settings: Settings, ledger: Ledger, clock: Clock = time.monotonic) -> None:
        """Check tokens from ``settings.http``; audit refusals in ``ledger``."""
        self.settings = settings
        self.ledger = ledger
        self.limiter = FailureLimiter(settings.http.auth_failures_max, settings.http.auth_failures_window, clock)

    def _known(self) -> tuple[list[tuple[str, Principal]], str | None]:
        """(hash, principal) of every configured token, and why none can be used when that is so."""
        known = [(t.sha256, Principal(t.identity, frozenset(t.scopes))) for t in self.settings.http.tokens]
        try:
            legacy = self.settings.http_token()
        except OSError:
            return known, None if known else "token-unreadable"
        if legacy:
            known.append((token_hash(legacy), Principal(LEGACY_IDENTITY, frozenset(TokenScope))))
        return known, None if known else "not-configured"

    def identify(self, presented: str) -> Principal | None:
        """The principal whose token hash matches ``presented``; every hash is compared, in constant time."""
        digest = token_hash(presented).encode()
        found: Principal | None = None
        for expected, principal in self._known()[0]:
            if hmac.compare_digest(digest, expected.encode()) and found is None:
                found = principal
        return found

    def require(self, scope: TokenScope) -> Callable[..., Principal]:
        """A FastAPI dependency: the principal of a valid token holding ``scope``, or a refusal."""

        def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
        ) -> Principal:
            return self.authenticate(request, credentials, scope)

        return dependency

    def reader(self) -> Callable[..., Principal | None]:
        """A FastAPI dependency for read endpoints: ``read`` scope with ``http.read_requires_token``, else open.

        Open reads declare no security scheme, so the OpenAPI document says what the API does.
        """
        if self.settings.http.read_requires_token:
            return self.require(TokenScope.READ)

        def open_read() -> Principal | None:
            return None

        return open_read

    def authenticate(self, request: Request, credentials: HTTPAuthorizationCredentials | None, scope: TokenScope) -> Principal:
        """The principal of the request's token if it holds ``scope``; raise the problem (401, 403, 429) otherwise."""
        address = _peer(request)
        wait = self.limiter.retry_after(address)
        if wait is not None:
            if self.limiter.first_refusal(address):
                self._alert(request, "rate-limited", {"retry_after": math.ceil(wait)})
            retry = str(max(1, math.ceil(wait)))
            detail = f"too many failed authentications from {address}; try again in {retry} s"
            raise ProblemError(429, "rate-limited", "Too many failed authentications", detail, headers={"Retry-After": retry})
        _, unavailable = self._known()
        if unavailable is not None:
            self._alert(request, "bad-token", {"problem": unavailable})
            detail = (
                "no admin token is configured (http.token, http.token_file or http.tokens): the request is refused"
                if unavailable == "not-configured"
                else "the admin token file cannot be read: the request is refused"
            )
            raise ProblemError(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
        principal = self.identify(credentials.credentials) if credentials is not None and credentials.credentials else None
        if principal is None:
            problem = "missing" if credentials is None or not credentials.credentials else "wrong"
            self.limiter.record_failure(address)
            self._alert(request, "bad-token", {"problem": problem})
            detail = "an Authorization: Bearer <token> header is required" if problem == "missing" else "the bearer token is not valid"
            raise ProblemError(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
        if scope not in principal.scopes:
            self._alert(request, "bad-token", {"problem": "insufficient-scope", "identity": principal.identity, "scope": scope.value})
            detail = f"the token of {principal.identity!r} does not hold the scope {scope.value!r}"
            raise ProblemError(403, "forbidden", "Forbidden", detail, headers={"WWW-Authenticate": f'Bearer scope="{scope.value}"'})
        return principal

    def _alert(self, request: Request, alert: str, extra: dict[str, Any]) -> None:
        uid = str(request.path_params.get("uid", ""))
        # The refusal stands whether or not the ledger can record it (then it is logged instead).
        self.ledger.audit_or_log(
            AuditEvent.SECURITY_ALERT,
            Outcome.REFUSED,
            actor=extra.get("identity"),
            peer_address=_peer(request),
            study_uid=uid if is_valid_uid(uid) else None,
            detail={"alert": alert, **extra, "method": request.method, "path": request.url.path[:200]},
        )
