"""The admin API's token check and failure limiter as pure logic (HTTP behaviour: tests/acceptance/test_api_security.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.config.settings import Settings, TokenScope
from guard.http.auth import LEGACY_IDENTITY, Authenticator, FailureLimiter, token_hash
from guard.ledger.db import migrate, open_engine
from guard.ledger.ledger import Ledger


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_locks_after_max_failures_and_releases_after_the_window() -> None:
    """Three failures within 60 s lock the address for what is left of the window; then it may try again."""
    clock = FakeClock()
    limiter = FailureLimiter(3, 60.0, clock)
    for step in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.record_failure("10.0.0.1")
        clock.now += 10 * (step < 2)
    assert limiter.retry_after("10.0.0.1") == pytest.approx(40.0)
    assert limiter.retry_after("10.0.0.2") is None
    clock.now += 40.0
    assert limiter.retry_after("10.0.0.1") is None


def test_limiter_announces_each_lockout_once() -> None:
    """first_refusal is True once per lockout, so a flood writes one audit record."""
    clock = FakeClock()
    limiter = FailureLimiter(2, 5.0, clock)
    limiter.record_failure("a")
    limiter.record_failure("a")
    assert [limiter.first_refusal("a") for _ in range(3)] == [True, False, False]
    clock.now += 6
    limiter.record_failure("a")
    limiter.record_failure("a")
    assert limiter.first_refusal("a") is True


@given(st.lists(st.floats(min_value=0, max_value=10), max_size=50))
def test_limiter_never_locks_below_the_threshold(gaps: list[float]) -> None:
    """Whatever the timing, fewer than max_failures failures never lock an address out."""
    clock = FakeClock()
    limiter = FailureLimiter(len(gaps) + 1, 60.0, clock)
    for gap in gaps:
        clock.now += gap
        limiter.record_failure("x")
        assert limiter.retry_after("x") is None


def test_token_hash_is_sha256_hex() -> None:
    """The hash [[http.tokens]] holds is the SHA-256 of the token's UTF-8 bytes, hex."""
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()


def test_identify_finds_the_identity_and_the_legacy_admin(tmp_path: Path) -> None:
    """A configured token maps to its identity and scopes; http.token is 'admin' with both scopes; others are nobody."""
    engine = open_engine(f"sqlite:///{tmp_path / 'l.sqlite'}")
    migrate(engine)
    settings = Settings.model_validate(
        {"http": {"token": "old", "tokens": [{"identity": "viewer", "scopes": ["read"], "sha256": token_hash("new")}]}}
    )
    auth = Authenticator(settings, Ledger(engine))
    viewer = auth.identify("new")
    assert viewer is not None
    assert (viewer.identity, viewer.scopes) == ("viewer", frozenset({TokenScope.READ}))
    admin = auth.identify("old")
    assert admin is not None
    assert (admin.identity, admin.scopes) == (LEGACY_IDENTITY, frozenset(TokenScope))
    assert auth.identify("neither") is None
    assert auth.identify(token_hash("new")) is None  # the hash itself is not a token
    engine.dispose()
