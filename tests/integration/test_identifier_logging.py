"""pynetdicom does not format query identifiers for a log nobody reads, once the guard has configured it.

A confirmation by C-FIND and a relayed query read hundreds of identifiers; pynetdicom would
format each one line by line (``pretty_dataset``) for a logger the guard keeps quiet. A real
C-FIND over loopback, on both sides in this process, counts the calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, association, evt, service_class
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from guard import runtime
from tests.support.ports import free_port

_ANSWERS = 5


def _matches(_event: Any) -> Iterator[tuple[int, Dataset]]:
    for index in range(_ANSWERS):
        answer = Dataset()
        answer.QueryRetrieveLevel = "STUDY"
        answer.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{index + 1}"
        yield 0xFF00, answer


def test_identifiers_are_not_formatted_for_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``pretty_dataset`` call for the request or any of the five responses."""
    runtime.configure_dicom(tmp_path)
    calls: list[str] = []

    def counting(ds: Dataset, *_args: Any, **_kwargs: Any) -> list[str]:
        calls.append(type(ds).__name__)
        return []

    monkeypatch.setattr(association, "pretty_dataset", counting)
    monkeypatch.setattr(service_class, "pretty_dataset", counting)
    scp = AE(ae_title="ARCHIVE")
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, _matches)])
    try:
        scu = AE(ae_title="GUARD")
        scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 10
        scu.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = scu.associate("127.0.0.1", port, ae_title="ARCHIVE")
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        answers = [ds for _status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind) if ds is not None]
        assoc.release()
    finally:
        server.shutdown()
    assert len(answers) == _ANSWERS
    assert calls == []
