"""Hostile requests to the admin API: each is answered 4xx and audited; the API and the DICOM side keep serving."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.conftest import audits_since
from tests.support.guard import GuardProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

HOSTILE_UIDS = [
    "..%2F..%2Fetc%2Fpasswd",
    "1." + "2" * 64,
    "1.2.3;DROP TABLE instances",
    "1.2.%00.3",
    "%F0%9F%92%A3",
    "9" * 5000,
]


@pytest.fixture
def api(hostile_guard: GuardProcess) -> Iterator[httpx.Client]:
    """An HTTP client for the hostile guard's admin API."""
    with httpx.Client(base_url=f"http://127.0.0.1:{hostile_guard.config['http']['port']}", timeout=10) as client:
        yield client


def _audited(guard: GuardProcess, seq: int) -> bool:
    return bool(audits_since(guard, seq))


@pytest.mark.parametrize("uid", HOSTILE_UIDS, ids=["traversal", "too-long", "injection", "nul", "emoji", "huge"])
def test_hostile_uid_in_the_path(hostile_guard: GuardProcess, contained: int, api: httpx.Client, uid: str) -> None:
    """GET and DELETE of a study whose UID is not a UID: 4xx, never 5xx, audited."""
    for method in ("GET", "DELETE"):
        answer = api.request(method, f"/studies/{uid}")
        assert 400 <= answer.status_code < 500, (method, uid, answer.status_code, answer.text[:200])
    wait_until(lambda: _audited(hostile_guard, contained), 10, message="not audited")


def test_oversized_body_is_refused(hostile_guard: GuardProcess, contained: int, api: httpx.Client) -> None:
    """A 5 MB body (declared length) is answered 413 and audited as request-too-large."""
    answer = api.request("DELETE", "/studies/1.2.3", content=b"x" * 5_000_000)
    assert answer.status_code == 413
    wait_until(
        lambda: any(r["detail"].get("reason") == "request-too-large" for r in audits_since(hostile_guard, contained)),
        10,
        message="not audited",
    )


def test_oversized_chunked_body_is_refused(hostile_guard: GuardProcess, contained: int, api: httpx.Client) -> None:
    """A body streamed without a length is refused at the limit (413) before the token is even looked at; audited."""

    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"y" * 10_000

    # From an address of its own: the previous case's request-too-large from 127.0.0.1 would fold this one's audit (10 s window).
    transport = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(base_url=str(api.base_url), timeout=10, transport=transport) as other:
        answer = other.request("DELETE", "/studies/1.2.3", content=chunks())
    assert answer.status_code == 413
    assert api.get("/healthz").status_code == 200
    wait_until(lambda: _too_large_from(hostile_guard, contained, "127.0.0.3"), 10, message="not audited")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_oversized_chunked_body_is_refused_before_the_handler(
    hostile_guard: GuardProcess, contained: int, api: httpx.Client, method: str
) -> None:
    """GET and DELETE of a study with a 1 MB chunked body are 413 whatever the handler would do (it reads no body); audited."""
    address = {"GET": "127.0.0.4", "DELETE": "127.0.0.6"}[method]

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"z" * 10_000

    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=str(api.base_url), timeout=10, transport=transport) as other:
        answer = other.request(method, "/studies/1.2.826.0.1.3680043.10.1077.5", content=chunks())
    assert answer.status_code == 413
    wait_until(lambda: _too_large_from(hostile_guard, contained, address), 10, message="not audited")


def _too_large_from(guard: GuardProcess, seq: int, address: str) -> bool:
    return any(r["detail"].get("reason") == "request-too-large" and r["peer_address"] == address for r in audits_since(guard, seq))
