"""C-STORE requests written straight to the socket (``guard.dicom.pdu_writer``), against real peers.

DCMTK ``storescp +B`` writes each data set exactly as it arrived, so its files show the bytes on
the wire; Orthanc answers as the archive; an in-process pynetdicom SCP aborts mid-message.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage

from guard import runtime
from guard.config.settings import ArchiveSettings
from guard.dicom.store import ArchiveSender
from guard.dicom.suboperations import destination_contexts, relayed_file, send_relayed_files
from guard.domain.digest import HEADER_LENGTH, dataset_offset
from guard.domain.errors import PermanentPeerError, TransientPeerError
from tests.hostile.peer import associate_ac
from tests.support.datasets import make_instance, make_study, make_undefined_length_instance
from tests.support.fixtures import require_tools
from tests.support.ports import LOOPBACK, free_port
from tests.support.storescp import Storescp
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.orthanc import Orthanc

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: A SOP class no archive knows: Orthanc refuses its presentation context.
UNKNOWN = "1.2.3.4.5.6"
#: storescp's smallest maximum length (it rounds odd ones down to even): 4092-byte fragments, a 0.5 MB image in 129 PDUs.
SMALL_MAX_PDU = 4096
#: An odd maximum length, which a pynetdicom SCP keeps as it is: every full fragment is then 4093 bytes, odd.
ODD_MAX_PDU = 4099


@pytest.fixture(autouse=True)
def _runtime_as_in_production(tmp_path: Path) -> None:
    """Pynetdicom set up as ``guard serve`` sets it, whatever ran before."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    runtime.configure_dicom(incoming)


def _sender(ae_title: str, port: int, *, timeout: float = 10) -> ArchiveSender:
    return ArchiveSender("GUARD", ArchiveSettings(ae_title=ae_title, host=LOOPBACK, port=port), timeout=timeout, max_pdu=0)


def _data_set_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(data[:HEADER_LENGTH]) :]


@pytest.fixture
def bit_preserving_scp(tmp_path: Path) -> Iterator[Storescp]:
    """DCMTK storescp writing data sets as received (``+B``), accepting PDUs of at most ``SMALL_MAX_PDU``."""
    require_tools("storescp")
    with Storescp(tmp_path / "storescp", aet="STORESCP", max_pdu=SMALL_MAX_PDU, bit_preserving=True) as scp:
        yield scp


def test_the_archive_receives_the_spool_files_data_set_bytes(bit_preserving_scp: Storescp, tmp_path: Path) -> None:
    """Written directly in small PDUs, an undefined-length sequence and a 0.5 MB image arrive at storescp byte for byte."""
    odd = make_undefined_length_instance(tmp_path / "odd.dcm")
    image = make_instance(tmp_path / "ct.dcm", study_uid="1.2.3", series_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5", rows=512, columns=512)
    with _sender("STORESCP", bit_preserving_scp.port) as sender:
        assert sender.send(odd, SECONDARY_CAPTURE, EXPLICIT) == 0x0000
        assert sender.writer is not None, "the direct writer sent it, not pynetdicom"
        assert sender.assoc is not None
        assert sender.assoc.acceptor.maximum_length == SMALL_MAX_PDU
        assert sender.send(image, CT, EXPLICIT) == 0x0000
    uids = [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in (odd, image)]
    bit_preserving_scp.wait_for(uids)
    received = {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): path for path in bit_preserving_scp.received_files()}
    assert _data_set_bytes(received[uids[0]]) == _data_set_bytes(odd)
    assert _data_set_bytes(received[uids[1]]) == _data_set_bytes(image)


def test_orthanc_answers_as_it_answered_pynetdicom(orthanc_archive: Orthanc, tmp_path: Path) -> None:
    """Success comes back as before; a context the archive refused is permanent; the association goes on serving."""
    study = make_study(tmp_path / "study", 3)
    unknown = make_instance(
        tmp_path / "x.dcm", study_uid=study.study_uid, series_uid="1.2.9", sop_instance_uid="1.2.9.1", sop_class="1.2.3.4.5.6"
    )
    with _sender(orthanc_archive.aet, orthanc_archive.dicom_port) as sender:
        assert sender.send(study.paths[0], CT, EXPLICIT) == 0x0000
        assert sender.writer is not None
        with pytest.raises(PermanentPeerError, match="did not accept"):
            sender.send(unknown, UNKNOWN, EXPLICIT)
        statuses = [sender.send(path, CT, EXPLICIT) for path in study.paths[1:]]
        assert sender.writer is not None
        sender.writer = None  # the same request by pynetdicom's send_c_store, on the same association
        statuses.append(sender.send(study.paths[0], CT, EXPLICIT))
    assert statuses == [0x0000] * 3
    assert orthanc_archive.count_instances() == 3


class _PynetdicomScp:
    """A pynetdicom storage SCP in this process, keeping each data set's bytes as they arrived.

    With ``abort_after`` it aborts its first association after that many P-DATA-TF PDUs.
    """

    def __init__(self, *, max_pdu: int = 16384, abort_after: int | None = None) -> None:
        self.abort_after = abort_after
        self.port = free_port()
        self.associations = 0
        #: SOP Instance UID -> the data set bytes received (streamed to a file by pynetdicom, after its own File Meta).
        self.received: dict[str, bytes] = {}
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self.ae = AE(ae_title="PYSCP")
        self.ae.add_supported_context(CTImageStorage, EXPLICIT)
        self.ae.add_supported_context(SECONDARY_CAPTURE, EXPLICIT)
        self.ae.maximum_pdu_size = max_pdu

    def _on_open(self, event: Any) -> None:
        with self._lock:
            self.associations += 1
            self._counts[id(event.assoc)] = 0 if self.associations == 1 and self.abort_after else -1

    def _on_pdu(self, event: Any) -> None:
        if not isinstance(event.pdu, P_DATA_TF):
            return
        with self._lock:
            count = self._counts.get(id(event.assoc), -1)
            if count < 0:
                return
            self._counts[id(event.assoc)] = count + 1
        if count + 1 == self.abort_after:
            event.assoc.abort()

    def _on_store(self, event: Any) -> int:
        path = Path(event.dataset_path)
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.received[uid] = _data_set_bytes(path)
        return 0x0000

    def __enter__(self) -> Self:
        handlers = [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_PDU_RECV, self._on_pdu), (evt.EVT_C_STORE, self._on_store)]
        self.server = self.ae.start_server((LOOPBACK, self.port), block=False, evt_handlers=handlers)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()


def test_an_odd_maximum_length_is_kept_and_the_bytes_arrive_unchanged(tmp_path: Path) -> None:
    """A peer accepting at most 4099 bytes: every PDU within it, and the undefined-length sequence and image arrive byte for byte."""
    odd = make_undefined_length_instance(tmp_path / "odd.dcm")
    image = make_instance(tmp_path / "ct.dcm", study_uid="1.2.3", series_uid="1.2.3.4", sop_instance_uid="1.2.3.4.6", rows=512, columns=512)
    with _PynetdicomScp(max_pdu=ODD_MAX_PDU) as scp, _sender("PYSCP", scp.port) as sender:
        assert sender.send(odd, SECONDARY_CAPTURE, EXPLICIT) == 0x0000
        assert sender.send(image, CT, EXPLICIT) == 0x0000
        assert sender.writer is not None
        assert sender.assoc is not None
        assert sender.assoc.acceptor.maximum_length == ODD_MAX_PDU
    odd_uid = str(dcmread(odd, stop_before_pixels=True).SOPInstanceUID)
    assert scp.received == {odd_uid: _data_set_bytes(odd), "1.2.3.4.6": _data_set_bytes(image)}


def test_a_peer_that_aborts_mid_send_is_transient_and_the_next_send_associates_again(tmp_path: Path) -> None:
    """An A-ABORT in the middle of a data set: TransientPeerError, the association dropped, the next send on a new one succeeds."""
    study = make_study(tmp_path / "study", 2, rows=1024, columns=1024)
    with _PynetdicomScp(abort_after=4) as scp, _sender("PYSCP", scp.port) as sender:
        # Depending on how far the request got when the abort came: a write refused, or no response.
        with pytest.raises(TransientPeerError, match=r"AssociationLostError|no response"):
            sender.send(study.paths[0], CT, EXPLICIT)
        assert sender.assoc is None, "the association of unknown state was let go"
        assert sender.send(study.paths[1], CT, EXPLICIT) == 0x0000
        assert sender.writer is not None
        assert scp.associations == 2


def test_an_abort_from_another_thread_never_cuts_a_pdu(tmp_path: Path) -> None:
    """``abort()`` while a data set is being written: the A-ABORT comes between two whole PDUs, the send fails as transient."""
    require_tools("storescp")
    study = make_study(tmp_path / "study", 3, rows=1024, columns=1024)
    with Storescp(tmp_path / "storescp", aet="STORESCP", max_pdu=SMALL_MAX_PDU) as scp, _sender("STORESCP", scp.port) as sender:
        assert sender.send(study.paths[0], CT, EXPLICIT) == 0x0000
        assoc, writer = sender.assoc, sender.writer
        assert assoc is not None
        assert writer is not None
        # The abort lands mid-data-set, whatever the load: the writing thread waits, after its tenth
        # PDU of the second instance (each written whole, under the lock), until the other thread
        # has aborted. Left to chance, the abort may come only once the last PDU is out.
        written, aborted = threading.Event(), threading.Event()
        write_pdu = writer._write_pdu
        count = [0]

        def write_then_wait(pdu: bytes | memoryview, timeout: float | None) -> None:
            write_pdu(pdu, timeout)
            count[0] += 1
            if count[0] == 10:
                written.set()
                aborted.wait(10)

        def abort_while_writing() -> None:
            if written.wait(10):
                assoc.abort()
            aborted.set()

        writer.__dict__["_write_pdu"] = write_then_wait
        aborter = threading.Thread(target=abort_while_writing)
        aborter.start()
        with pytest.raises(TransientPeerError):
            sender.send(study.paths[1], CT, EXPLICIT)
        aborter.join(10)
        assert count[0] == 10, "nothing was written after the abort"
        assert sender.send(study.paths[2], CT, EXPLICIT) == 0x0000, "the next send associates again"
    log = scp.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Aborted" in log
    assert not any(word in log for word in ("Illegal", "Unrecognized", "Invalid PDU")), log


class _StalledScp:
    """A peer that accepts the association (CT, Explicit VR Little Endian, context 1) and then reads nothing more."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer (inherited by the accepted socket) fills after a few PDUs.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.port = int(self.listener.getsockname()[1])
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            pdu_type, _, length = struct.unpack(">BBL", _read_exactly(conn, 6))
            assert pdu_type == 0x01
            conn.sendall(associate_ac(_read_exactly(conn, length), [(1, EXPLICIT)]))
            self._done.wait(30)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(10)
        self.listener.close()


def _read_exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def test_a_peer_that_stops_reading_times_out_as_transient(tmp_path: Path) -> None:
    """An archive that takes no more bytes: after the DIMSE timeout without progress, TransientPeerError, and nothing hangs."""
    image = make_instance(
        tmp_path / "big.dcm", study_uid="1.2.3", series_uid="1.2.3.4", sop_instance_uid="1.2.3.4.7", rows=2048, columns=2048
    )
    with _StalledScp() as scp, _sender("STALLED", scp.port, timeout=1) as sender:
        started = time.monotonic()
        with pytest.raises(TransientPeerError, match="TimeoutError"):
            sender.send(image, CT, EXPLICIT)
        assert time.monotonic() - started < 10
        assert sender.assoc is None


def test_a_deflated_instance_goes_by_pynetdicom_and_arrives_unchanged(tmp_path: Path) -> None:
    """Deflated Explicit VR Little Endian is left to ``send_c_store``; the archive still receives the spool file's data set bytes."""
    require_tools("storescp")
    path = make_instance(tmp_path / "deflated.dcm", study_uid="1.2.3", series_uid="1.2.3.4", sop_instance_uid="1.2.3.4.8")
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    with (
        Storescp(tmp_path / "storescp", aet="STORESCP", bit_preserving=True, extra_args=["+xa"]) as scp,
        _sender("STORESCP", scp.port) as sender,
    ):
        assert sender.send(path, CT, DeflatedExplicitVRLittleEndian) == 0x0000
        scp.wait_for(["1.2.3.4.8"])
    [received] = scp.received_files()
    assert _data_set_bytes(received) == _data_set_bytes(path)


def _with_group_length(path: Path) -> Path:
    """A CT instance whose data set begins with a Group Length (0008,0000), as older modalities write them.

    pydicom leaves data set group lengths out when it encodes a data set again, so decoding the
    file and sending it through pynetdicom would change its bytes (not its content).
    """
    make_instance(path, study_uid="1.2.3", series_uid="1.2.3.4", sop_instance_uid="1.2.3.4.6", rows=64, columns=64)
    data = path.read_bytes()
    offset = dataset_offset(data[:HEADER_LENGTH])
    group_0008 = _group_bytes(data[offset:], 0x0008)
    path.write_bytes(data[:offset] + struct.pack("<HH2sHL", 0x0008, 0x0000, b"UL", 4, group_0008) + data[offset:])
    return path


def _group_bytes(data_set: bytes, group: int) -> int:
    """The length of the leading elements of ``group`` in an Explicit VR Little Endian data set (none of them a sequence)."""
    position = 0
    while position < len(data_set) and struct.unpack_from("<H", data_set, position)[0] == group:
        vr = data_set[position + 4 : position + 6]
        if vr in {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"}:
            position += 12 + struct.unpack_from("<L", data_set, position + 8)[0]
        else:
            position += 8 + struct.unpack_from("<H", data_set, position + 6)[0]
    return position


def test_a_relayed_sub_operation_carries_the_file_as_it_is_and_its_move_originator(bit_preserving_scp: Storescp, tmp_path: Path) -> None:
    """A C-MOVE sub-operation (``RelayedFile``) arrives byte for byte; pynetdicom's own path would have re-encoded it."""
    relayed = _with_group_length(tmp_path / "grouped.dcm")
    reencoded = encode(dcmread(relayed), is_implicit_vr=False, is_little_endian=True)
    assert reencoded != _data_set_bytes(relayed), "the test needs a file that decoding changes"
    ae = AE(ae_title="GUARD")
    assoc = ae.associate(LOOPBACK, bit_preserving_scp.port, ae_title="STORESCP", contexts=destination_contexts([CT], classes_unknown=False))
    assert assoc.is_established
    try:
        send_relayed_files(assoc)
        dataset = relayed_file(relayed)
        assert dataset is not None
        status = assoc.send_c_store(dataset, msg_id=7, originator_aet="REQUESTER", originator_id=3)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    bit_preserving_scp.wait_for(["1.2.3.4.6"])
    [received] = bit_preserving_scp.received_files()
    assert _data_set_bytes(received) == _data_set_bytes(relayed)


def test_a_relayed_file_whose_syntax_was_not_accepted_is_converted_by_pynetdicom(tmp_path: Path) -> None:
    """The destination accepted only Implicit VR: the Explicit VR file goes through pynetdicom, decoded, and arrives."""
    received: list[tuple[str, str, int]] = []

    def on_store(event: Any) -> int:
        request = event.request
        received.append(
            (str(event.context.transfer_syntax), str(request.MoveOriginatorApplicationEntityTitle), int(request.MoveOriginatorMessageID))
        )
        return 0x0000

    scp = AE(ae_title="DEST")
    scp.add_supported_context(CTImageStorage, [ImplicitVRLittleEndian])
    server = scp.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        path = make_instance(
            tmp_path / "ct.dcm", study_uid="1.2.3", series_uid="1.2.3.4", sop_instance_uid="1.2.3.4.7", rows=64, columns=64
        )
        ae = AE(ae_title="GUARD")
        assoc = ae.associate(
            LOOPBACK, server.server_address[1], ae_title="DEST", contexts=destination_contexts([CT], classes_unknown=False)
        )
        assert assoc.is_established
        try:
            send_relayed_files(assoc)
            dataset = relayed_file(path)
            assert dataset is not None
            assert assoc.send_c_store(dataset, msg_id=1, originator_aet="REQUESTER", originator_id=9).Status == 0x0000
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert received == [(ImplicitVRLittleEndian, "REQUESTER", 9)]


def test_a_destination_that_aborts_mid_sub_operation_fails_it_and_every_later_one_at_once(tmp_path: Path) -> None:
    """An A-ABORT in the middle of a relayed data set: that send raises, the association is gone, the next send fails without waiting."""
    study = make_study(tmp_path / "study", 2, rows=1024, columns=1024)
    with _PynetdicomScp(abort_after=4) as scp:
        ae = AE(ae_title="GUARD")
        ae.dimse_timeout = 10
        assoc = ae.associate(LOOPBACK, scp.port, ae_title="PYSCP", contexts=destination_contexts([CT], classes_unknown=False))
        assert assoc.is_established
        send_relayed_files(assoc)
        first, second = (relayed_file(Path(path)) for path in study.paths)
        assert first is not None
        assert second is not None
        try:
            status = assoc.send_c_store(first, msg_id=1, originator_aet="REQUESTER", originator_id=1)
        except (OSError, EOFError, ValueError):
            status = None
        # Either the write was refused (raised) or no response came (an empty status): never Success.
        assert status is None or "Status" not in status
        wait_until(lambda: not assoc.is_established, 10, message="the association outlived the abort")
        started = time.monotonic()
        with pytest.raises((OSError, RuntimeError, ValueError)):
            assoc.send_c_store(second, msg_id=2, originator_aet="REQUESTER", originator_id=1)
        assert time.monotonic() - started < 5
    assert scp.received == {}
