"""The spool keeps no file in the page cache (ADR 0025), checked with ``mincore`` on a real file system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from guard.spool import Spool
from tests.support.availability import unavailable
from tests.support.datasets import make_study
from tests.support.pagecache import page_cache_honours_dontneed, resident_pages
from tests.support.waiting import wait_until


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    """A spool on the tests' own disk (the advice means nothing on tmpfs, which is memory)."""
    if not page_cache_honours_dontneed(tmp_path):
        unavailable(f"the file system of {tmp_path} keeps a synced file's pages when told to drop them (tmpfs?)")
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    return spool


def _received(spool: Spool, tmp_path: Path) -> tuple[Path, str, str]:
    """A 512x512 instance written into the spool's receiving folder, as a receive leaves it (in the page cache)."""
    study = make_study(tmp_path / "study", 1, rows=512, columns=512)
    source = study.paths[0]
    temp = spool.incoming / "incoming-1.dcm"
    temp.write_bytes(source.read_bytes())
    assert resident_pages(temp) > 0, "a file just written is in the page cache"
    return temp, study.study_uid, study.sop_instance_uids[0]


def test_a_placed_file_leaves_no_page_in_the_cache(spool: Spool, tmp_path: Path) -> None:
    """Once durable, the file's pages are given back: the next receive writes into them."""
    temp, study_uid, sop_uid = _received(spool, tmp_path)
    stored = spool.place(temp, study_uid, sop_uid)
    placed = spool.path_of(stored.relative_path)
    assert placed.stat().st_size == stored.size > 500_000
    assert resident_pages(placed) == 0


def test_read_ahead_brings_a_file_in_and_drop_pages_gives_it_back(spool: Spool, tmp_path: Path) -> None:
    """The forwarder's two calls: the next file is read in the background, a sent one is given back."""
    temp, study_uid, sop_uid = _received(spool, tmp_path)
    stored = spool.place(temp, study_uid, sop_uid)
    placed = spool.path_of(stored.relative_path)
    assert resident_pages(placed) == 0
    spool.read_ahead(stored.relative_path)
    pages = (stored.size + os.sysconf("SC_PAGE_SIZE") - 1) // os.sysconf("SC_PAGE_SIZE")
    wait_until(lambda: resident_pages(placed) == pages, 10, message="the file was not read ahead")
    Spool.drop_pages(placed)
    assert resident_pages(placed) == 0


def test_advice_on_a_missing_file_changes_nothing(spool: Spool) -> None:
    """A file gone from the spool is the forwarder's read's to report, not the advice's."""
    missing = f"{generate_uid()}/gone.dcm"
    spool.read_ahead(missing)
    Spool.drop_pages(spool.path_of(missing))
    assert not spool.path_of(missing).exists()
