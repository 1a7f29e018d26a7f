"""Incoming files in a real pynetdicom listener (the guard's limited server, in this process) when a receive is cut short.

The peer is the hostile suite's raw socket; the listener is ``guard.listener.limits`` with the
guard's ``IncomingFile``; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, dimse_messages
from pynetdicom import _config as pynetdicom_config

from guard import runtime
from guard.listener.limits import LimitedAssociationServer, Limits, start_limited_server
from tests.hostile.peer import CT_STORAGE, EXPLICIT_LE, RawPeer, command, p_data, pdu
from tests.support.waiting import wait_until

A_ASSOCIATE_AC = 0x02
A_ABORT = pdu(0x07, b"\0\0\0\0")
LIMIT = 4096


@pytest.fixture
def incoming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Receive into ``tmp_path/incoming`` with a data set limit of 4 KiB, as ``runtime.configure_dicom`` does (undone afterwards)."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    monkeypatch.setattr(runtime, "_incoming_dir", folder)
    monkeypatch.setattr(runtime, "_max_dataset_size", LIMIT)
    monkeypatch.setattr(pynetdicom_config, "STORE_RECV_CHUNKED_DATASET", True)
    monkeypatch.setattr(dimse_messages, "NamedTemporaryFile", runtime.IncomingFile)
    return folder


@pytest.fixture
def listener(incoming: Path) -> Iterator[LimitedAssociationServer]:
    """The guard's limited association server on a free loopback port, storing nothing (its handler is never reached here)."""
    del incoming
    ae = AE(ae_title="GUARD")
    ae.add_supported_context(CT_STORAGE, ALL_TRANSFER_SYNTAXES)

    def ignore(*_args: Any) -> None:
        return None

    server = start_limited_server(
        ae, ("127.0.0.1", 0), [], Limits(network_timeout=5, acse_timeout=5), report_refusal=ignore, report_violation=ignore
    )
    yield server
    server.shutdown()
    server.server_close()


def test_an_aborted_oversized_receive_leaves_neither_its_file_nor_its_error(listener: LimitedAssociationServer, incoming: Path) -> None:
    """A data set that passes the size limit and is then aborted: no file, and its receive error is forgotten with its association."""
    before = runtime.held_receive_errors()
    peer = RawPeer(int(listener.server_address[1]))
    assert peer.associate("PACS", "GUARD", [(CT_STORAGE, [EXPLICIT_LE])]).pdu_type == A_ASSOCIATE_AC
    peer.send(p_data(1, 0x03, command(0x0001, sop_class=CT_STORAGE, sop_instance="1.2.3.4", has_dataset=True)))
    for _ in range(4):
        peer.send(p_data(1, 0x00, b"\0" * 2000))
    # Past the limit the file is removed at once and the error kept for the handler that never comes.
    wait_until(lambda: runtime.held_receive_errors() > before, 10, message="the size limit was not met")
    peer.send(A_ABORT)
    peer.closed_within(10)
    peer.close()
    wait_until(lambda: not listener.active_associations, 10, message="the association did not end")
    wait_until(lambda: runtime.held_receive_errors() == before, 10, message="the receive error of an aborted association is kept for ever")
    assert list(incoming.iterdir()) == []
    assert runtime.incoming_in_use() == frozenset()


def test_a_received_data_set_is_hashed_as_it_streams(incoming: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest taken while pynetdicom writes the fragments equals the data-set digest of the file read back (the spool's rule)."""
    del incoming
    monkeypatch.setattr(runtime, "_max_dataset_size", 0)  # data sets of several PDUs
    from pydicom import dcmread  # noqa: PLC0415 - only this test reads files back
    from pynetdicom import evt  # noqa: PLC0415

    from guard.domain.digest import dataset_sha256  # noqa: PLC0415
    from tests.support.datasets import make_study  # noqa: PLC0415

    seen: list[tuple[str | None, str]] = []

    def on_store(event: Any) -> int:
        path = Path(event.dataset_path)
        seen.append((runtime.streamed_digest(path), dataset_sha256([path.read_bytes()])))
        return 0x0000

    ae = AE(ae_title="GUARD")
    ae.add_supported_context(CT_STORAGE, ALL_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = 16384  # many fragments for one data set
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        study = make_study(tmp_path / "study", 2, rows=64, columns=64, patient_id="STREAM")
        scu = AE(ae_title="STORESCU")
        scu.add_requested_context(CT_STORAGE, EXPLICIT_LE)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="GUARD")
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(dcmread(path)).Status) for path in study.paths]
        assoc.release()
    finally:
        server.shutdown()
    assert statuses == [0x0000, 0x0000]
    assert len(seen) == 2
    assert all(streamed == read_back for streamed, read_back in seen), seen
    assert all(streamed is not None for streamed, _ in seen)
