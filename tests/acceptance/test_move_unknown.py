"""A C-MOVE of something the archive does not hold is never answered Success by the relay.

The relay asks the archive itself and relays the archive's own final failure status (Orthanc
answers 0xC000 for a study it does not hold); the same at every level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydicom.uid import generate_uid

from tests.support.dcmtk import move_responses, movescu
from tests.support.fixtures import require_tools
from tests.support.guard import GUARD_AE, SOURCE_AE
from tests.support.orthanc import Orthanc
from tests.support.qr import archive_with_studies

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.acceptance.conftest import GuardFactory
    from tests.support.fixtures import StudyFactory
    from tests.support.guard import GuardProcess

pytestmark = pytest.mark.interop

PACS_AE = "PACS"
SUCCESS = 0x0000


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    """An Orthanc in the role of the PACS that retrieves through the guard."""
    require_tools("Orthanc")
    with Orthanc(tmp_path / "orthanc-pacs", aet=PACS_AE) as orthanc:
        yield orthanc


def _guard(guard_factory: GuardFactory, pacs: Orthanc, archive: Orthanc, factory: StudyFactory) -> GuardProcess:
    """A running guard with the PACS as a source (and so a move destination); the archive holds one other study."""
    sources = [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": pacs.dicom_port}, {"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": 1}]
    guard = guard_factory(archive_port=archive.dicom_port, sources=sources)
    archive_with_studies(archive, guard, factory, [(2, 1, "PAT-K")])
    pacs.add_modality("GUARD", GUARD_AE, "127.0.0.1", guard.port)
    return guard.start()


def test_orthanc_moving_an_unknown_study_through_the_guard_is_told_it_failed(
    guard_factory: GuardFactory, pacs: Orthanc, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Orthanc's ``POST /modalities/GUARD/move`` for a study nobody holds does not report success; the audit says failure."""
    guard = _guard(guard_factory, pacs, orthanc_archive, synthetic_study)
    unknown = str(generate_uid())
    body = {"Level": "Study", "Resources": [{"StudyInstanceUID": unknown}], "Timeout": 30}
    response = pacs.rest().post("/modalities/GUARD/move", json=body, timeout=60)
    assert not response.is_success, response.text
    [record] = guard.audit_records("move.relayed")
    assert record["outcome"] == "failure"
    assert record["study_uid"] == unknown
    assert record["detail"]["status"] != "0x0000"
    assert record["detail"]["expected"] == 0


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
def test_a_move_of_nothing_the_archive_holds_relays_the_archive_status_at_every_level(
    guard_factory: GuardFactory, pacs: Orthanc, orthanc_archive: Orthanc, synthetic_study: StudyFactory, level: str
) -> None:
    """At STUDY, SERIES and IMAGE level alike, unknown UIDs get the archive's own final status (Orthanc: 0xC000), with an Error Comment."""
    guard = _guard(guard_factory, pacs, orthanc_archive, synthetic_study)
    keys = {"StudyInstanceUID": str(generate_uid())}
    if level in {"SERIES", "IMAGE"}:
        keys["SeriesInstanceUID"] = str(generate_uid())
    if level == "IMAGE":
        keys["SOPInstanceUID"] = str(generate_uid())
    result = movescu(
        "127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, move_destination=PACS_AE, level=level, keys=keys, debug=True
    )
    final = move_responses(result)[-1]
    assert final["status"] == 0xC000, result.stdout + result.stderr
    assert "Error Comment" in result.stdout + result.stderr or "ErrorComment" in result.stdout + result.stderr
    [record] = guard.audit_records("move.relayed")
    assert (record["outcome"], record["detail"]["status"], record["detail"]["archive_status"]) == ("failure", "0xC000", "0xC000")
    assert pacs.count_instances() == 0
