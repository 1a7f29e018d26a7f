"""Fixtures for acceptance tests: the guard as a real process between real peers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guard.sandbox.archive import ReferenceArchive
from tests.support.guard import GuardProcess

GuardFactory = Callable[..., GuardProcess]


@pytest.fixture
def guard_factory(tmp_path: Path) -> Iterator[GuardFactory]:
    """Build (not start) guard processes; every one is stopped by its own pid at teardown."""
    made: list[GuardProcess] = []

    def factory(*, archive_port: int, name: str = "guard", **kwargs: Any) -> GuardProcess:
        guard = GuardProcess(tmp_path / name, archive_port=archive_port, **kwargs)
        made.append(guard)
        return guard

    yield factory
    for guard in made:
        guard.stop()


@pytest.fixture
def ref_archive(tmp_path: Path) -> Iterator[ReferenceArchive]:
    """The project's reference archive, in this process (plain DICOM, switchable faults)."""
    archive = ReferenceArchive(tmp_path / "ref-archive").start()
    yield archive
    archive.stop()
