"""pytest fixtures for real peers and synthetic data.

``tests/conftest.py`` loads them with ``pytest_plugins = ["tests.support.fixtures"]``.
Each peer is function-scoped: a fresh process, fresh storage and fresh ports for every
test, stopped by its own pid afterwards.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from tests.support.availability import unavailable
from tests.support.datasets import Study, make_study
from tests.support.dcmtk import Storescp
from tests.support.dicomweb import DicomWebOrthanc, running_dicomweb
from tests.support.orthanc import Modalities, Orthanc
from tests.support.processes import PeerError, find_tool

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ARCHIVE_AET = "ARCHIVE"
STORESCP_AET = "STORESCP"


class StudyFactory(Protocol):
    """Signature of the ``synthetic_study`` fixture: ``make_study`` without the directory."""

    def __call__(self, count: int, **kwargs: Any) -> Study:
        """Write a study of ``count`` instances into a fresh folder under ``tmp_path``."""
        ...


def require_tools(*names: str) -> None:
    """Fail under ``CI=true``, skip elsewhere, when a peer program is not installed.

    The same rule as ``tests/conftest.py``: CI must never hide a missing dependency, while a
    workstation without DCMTK or Orthanc can still run the rest of the suite.
    """
    for name in names:
        try:
            find_tool(name)
        except PeerError as exc:
            unavailable(str(exc))


@pytest.fixture
def orthanc_modalities() -> Modalities:
    """Peers the ``orthanc_archive`` fixture knows at start; override in a test module to add some.

    Peers can also be added later with ``Orthanc.add_modality``.
    """
    return {}


@pytest.fixture
def orthanc_archive(tmp_path: Path, orthanc_modalities: Modalities) -> Iterator[Orthanc]:
    """Run a fresh Orthanc with AE title ARCHIVE, the archive peer of the guard."""
    require_tools("Orthanc")
    with Orthanc(tmp_path / "orthanc-archive", aet=ARCHIVE_AET, modalities=orthanc_modalities) as orthanc:
        yield orthanc


@pytest.fixture
def storescp_peer(tmp_path: Path) -> Iterator[Storescp]:
    """Run a fresh DCMTK storescp with AE title STORESCP, receiving into its own folder."""
    require_tools("storescp")
    with Storescp(tmp_path / "storescp", aet=STORESCP_AET) as scp:
        yield scp


@pytest.fixture
def synthetic_study(tmp_path: Path) -> StudyFactory:
    """Return a factory writing synthetic CT studies, each into its own folder under ``tmp_path``."""
    counter = itertools.count(1)

    def factory(count: int, **kwargs: Any) -> Study:
        return make_study(tmp_path / f"study-{next(counter)}", count, **kwargs)

    return factory


@pytest.fixture
def dicomweb_archive(tmp_path: Path) -> Iterator[DicomWebOrthanc]:
    """Run a fresh Orthanc with the DICOMweb plugin (no credentials required), the guard's DICOMweb archive."""
    yield from running_dicomweb(tmp_path / "orthanc-dicomweb", aet=ARCHIVE_AET)
