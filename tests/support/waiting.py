"""Bounded polling helpers: tests wait for conditions, never for a fixed time."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

#: How long a peer (the guard, Orthanc, storescp, rsyslogd) may take to start. Generous on
#: purpose: on a loaded machine (parallel test workers, other jobs) importing the guard alone can
#: take tens of seconds. Readiness is polled, so a quick start costs no more than before.
STARTUP_TIMEOUT = 120.0


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05, message: str = "") -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Raise ``TimeoutError(message)`` when ``timeout`` seconds pass first. Exceptions raised by
    the predicate propagate at once: a predicate that can fail transiently must catch its
    own expected errors and return a falsy value instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(message or f"condition not met within {timeout:.1f} s")
        time.sleep(min(interval, remaining))


def port_is_open(host: str, port: int) -> bool:
    """Tell whether a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Wait until ``host:port`` accepts TCP connections, or raise ``TimeoutError``."""
    wait_until(
        lambda: port_is_open(host, port),
        timeout,
        message=f"nothing listening on {host}:{port} after {timeout:.1f} s",
    )
