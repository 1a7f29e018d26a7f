"""C-FIND answers from the ledger (query.ledger_fallback) on real SQLite and PostgreSQL."""

from __future__ import annotations

from pydicom import Dataset

from guard.ledger.instances import ReceivedInstance, record_received
from guard.ledger.ledger import Ledger
from guard.ledger.query_answers import answer_from_ledger, values_of


def _receive(ledger: Ledger, sop: str, study: str, series: str, patient: str, modality: str) -> None:
    item = ReceivedInstance(
        sop_instance_uid=sop,
        study_uid=study,
        series_uid=series,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        size=10,
        sha256="a" * 64,
        spool_path=f"{study}/{sop}.dcm",
        patient_id=patient,
        modality=modality,
        calling_ae="PACS",
        peer_address="127.0.0.1",
    )
    with ledger.transaction() as tx:
        record_received(tx, item)


def _query(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_ledger_answers_each_level_with_the_requested_keys(ledger: Ledger) -> None:
    """STUDY, SERIES and IMAGE answers group what the ledger holds; unknown requested keys come back empty."""
    _receive(ledger, "1.1.1.1", "1.1", "1.1.1", "P1", "CT")
    _receive(ledger, "1.1.1.2", "1.1", "1.1.1", "P1", "CT")
    _receive(ledger, "1.1.2.1", "1.1", "1.1.2", "P1", "SR")
    _receive(ledger, "2.1.1.1", "2.1", "2.1.1", "P2", "MR")

    studies = list(
        answer_from_ledger(
            ledger,
            _query("STUDY", StudyInstanceUID="", PatientID="P*", ModalitiesInStudy="", NumberOfStudyRelatedInstances="", StudyDate=""),
            retrieve_ae="GUARD",
        )
    )
    assert [(str(a.StudyInstanceUID), values_of(a, "ModalitiesInStudy"), int(a.NumberOfStudyRelatedInstances)) for a in studies] == [
        ("1.1", ["CT", "SR"], 3),
        ("2.1", ["MR"], 1),
    ]
    assert all(a.StudyDate == "" and a.RetrieveAETitle == "GUARD" and a.QueryRetrieveLevel == "STUDY" for a in studies)

    series = list(answer_from_ledger(ledger, _query("SERIES", StudyInstanceUID="1.1", SeriesInstanceUID="", Modality=""), retrieve_ae="G"))
    assert [(str(a.SeriesInstanceUID), a.Modality) for a in series] == [("1.1.1", "CT"), ("1.1.2", "SR")]

    images = list(answer_from_ledger(ledger, _query("IMAGE", SOPInstanceUID=["1.1.1.2", "2.1.1.1"]), retrieve_ae="G"))
    assert [str(a.SOPInstanceUID) for a in images] == ["1.1.1.2", "2.1.1.1"]

    assert list(answer_from_ledger(ledger, _query("STUDY", StudyInstanceUID="9.9"), retrieve_ae="G")) == []
