"""The guard's DICOM listeners do not run a full garbage collection every 30 s while nothing connects.

pynetdicom's threaded server calls ``gc.collect()`` on every 60th pass of its loop (each pass
is 0.5 s), connection or not; in the guard's process that was the largest share of an idle
guard's CPU. The passes are driven here directly (no clock involved) and the collections
counted with ``gc.callbacks``.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from guard.dicom.net import start_quiet_server
from guard.listener.limits import LimitedAssociationServer, LimitedRequestHandler
from tests.support.ports import LOOPBACK
from tests.support.waiting import wait_until

PASSES = 180  # three of pynetdicom's collection periods


@pytest.fixture
def full_collections() -> Iterator[list[int]]:
    """Generations of the collections started while the test runs (2: a full collection)."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(int(info["generation"]))

    gc.callbacks.append(note)
    yield seen
    gc.callbacks.remove(note)


def _full(generations: list[int]) -> int:
    return sum(1 for g in generations if g == 2)


def test_listener_collects_nothing_while_idle(full_collections: list[int]) -> None:
    """The guard's listener class, passing its loop with no connection, starts no full collection."""
    ae = AE(ae_title="GUARD")
    ae.add_supported_context(Verification)
    server = ae.make_server((LOOPBACK, 0), server_class=LimitedAssociationServer, request_handler=LimitedRequestHandler)
    try:
        gc.disable()  # only collections the server asks for are counted
        try:
            for _ in range(PASSES):
                server.service_actions()
        finally:
            gc.enable()
    finally:
        server.server_close()
    assert _full(full_collections) == 0


def test_reference_archive_server_collects_only_after_a_connection(full_collections: list[int]) -> None:
    """The quiet server collects nothing while idle, and after an accepted connection only the young generations."""
    ae = AE(ae_title="ARCHIVE")
    ae.add_supported_context(Verification)
    server = start_quiet_server(ae, (LOOPBACK, 0), [], name="test-quiet-server")
    try:
        gc.disable()
        try:
            for _ in range(PASSES):
                server.service_actions()
            assert full_collections == []
            with socket.create_connection((LOOPBACK, int(server.server_address[1])), timeout=5):
                wait_until(lambda: server._accepted_since_gc, 10, message="connection not accepted")
            for _ in range(PASSES):
                server.service_actions()
        finally:
            gc.enable()
    finally:
        server.shutdown()
    assert full_collections == [1]
