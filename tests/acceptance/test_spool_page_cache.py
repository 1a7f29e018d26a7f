"""The running guard keeps no spooled file in the page cache (ADR 0025): storescu as the PACS, Orthanc as the archive."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.conftest import GuardFactory
from tests.support.availability import unavailable
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.pagecache import page_cache_honours_dontneed, resident_pages
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

COUNT = 12


def _spooled(guard: GuardProcess) -> list[Path]:
    spool = guard.data_dir / "spool"
    return sorted(path for path in spool.glob("*/*.dcm") if path.parent.name != ".incoming")


def _cached(guard: GuardProcess) -> dict[str, int]:
    """The spooled files with pages in the cache, and how many."""
    return {path.name: pages for path in _spooled(guard) if (pages := resident_pages(path))}


def _send(guard: GuardProcess, synthetic_study: StudyFactory) -> None:
    if not page_cache_honours_dontneed(guard.data_dir):
        unavailable(f"the file system of {guard.data_dir} keeps a synced file's pages when told to drop them (tmpfs?)")
    study = synthetic_study(COUNT, rows=256, columns=256)
    result = storescu("127.0.0.1", guard.port, study.paths[0].parent, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"] * COUNT, result.stderr
    assert len(_spooled(guard)) == COUNT


def test_forwarded_files_leave_no_page_in_the_cache(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Written once and read once: after forwarding, none of the spooled files is cached."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port).start()
    _send(guard, synthetic_study)
    wait_until(lambda: list(guard.instance_states().values()) == ["forwarded"] * COUNT, 60, message="not all forwarded")
    assert _cached(guard) == {}


def test_files_waiting_for_an_unreachable_archive_leave_no_page_in_the_cache(
    guard_factory: GuardFactory, synthetic_study: StudyFactory
) -> None:
    """Durable and acknowledged, waiting for the archive: not cached either, including the one read ahead for a send that failed."""
    guard = guard_factory(archive_port=free_port()).start()
    _send(guard, synthetic_study)
    wait_until(lambda: len(guard.audit_records("instance.failed")) >= COUNT, 30, message="no forwarding attempt failed")
    assert set(guard.instance_states().values()) == {"failed"}
    assert _cached(guard) == {}
