from pathlib import Path

from pydicom import dcmread

from guard.domain.iocm import referenced_studies, rejection_title
from tests.support.datasets import REJECTION_TITLES, make_instance, make_rejection_note, make_study


def test_rejection_notes_are_recognised_by_title(tmp_path: Path) -> None:
    """Each of the four IOCM titles makes a KOS a rejection note naming its study; an image is not one."""
    study = make_study(tmp_path / "s", 2)
    for title in REJECTION_TITLES:
        note = dcmread(make_rejection_note(tmp_path / f"{title}.dcm", study, title=title))
        assert rejection_title(note) == title
        assert referenced_studies(note) == [study.study_uid]
    image = dcmread(make_instance(tmp_path / "i.dcm", study_uid="1.2", series_uid="1.2.1", sop_instance_uid="1.2.1.1"))
    assert rejection_title(image) is None


def test_a_kos_with_another_title_is_not_a_rejection(tmp_path: Path) -> None:
    """A Key Object Selection with a non-rejection title (e.g. 113000 Of Interest) is an ordinary instance."""
    study = make_study(tmp_path / "s", 1)
    note = dcmread(make_rejection_note(tmp_path / "n.dcm", study, title="113001"))
    note.ConceptNameCodeSequence[0].CodeValue = "113000"
    assert rejection_title(note) is None
