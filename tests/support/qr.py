"""Helpers for query/retrieve tests: an archive filled with studies that knows the guard, comparable identifiers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.support.guard import GUARD_AE, SOURCE_AE

if TYPE_CHECKING:
    from pydicom import Dataset

    from tests.support.datasets import Study
    from tests.support.fixtures import StudyFactory
    from tests.support.guard import GuardProcess
    from tests.support.orthanc import Orthanc


def archive_with_studies(archive: Orthanc, guard: GuardProcess, factory: StudyFactory, shapes: list[tuple[int, int, str]]) -> list[Study]:
    """Store studies of (instances, series, patient ID) in ``archive`` by REST; make it know the guard and the test's SCU."""
    archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    archive.add_modality("scu", SOURCE_AE, "127.0.0.1", 1)
    studies = [factory(count, series_per_study=series, patient_id=patient) for count, series, patient in shapes]
    for study in studies:
        archive.upload(study.paths)
    return studies


def canonical(answers: list[Dataset]) -> list[str]:
    """Identifiers as sorted text, Retrieve AE Title left out (the guard names itself there, by design)."""
    rendered = []
    for ds in answers:
        copy = ds.copy()
        if "RetrieveAETitle" in copy:
            del copy.RetrieveAETitle
        rendered.append("\n".join(f"{elem.tag} {elem.VR} {elem.value!r}" for elem in copy))
    return sorted(rendered)
