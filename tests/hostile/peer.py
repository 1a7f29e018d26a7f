"""A misbehaving DICOM peer of the project's own: PDUs built by hand with ``struct`` (PS3.8 9.3).

Everything here talks to 127.0.0.1 (or another loopback address, to look like a second peer),
with a timeout on every socket operation.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def pdu(pdu_type: int, body: bytes, *, length: int | None = None) -> bytes:
    """A PDU: type, reserved, 4-byte length (the true one unless ``length`` lies), body."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def associate_rq(calling: str, called: str, contexts: list[tuple[str, list[str]]], max_pdu: int = 16384) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing ``contexts`` as (abstract syntax, transfer syntaxes)."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
    body += _item(0x10, APPLICATION_CONTEXT.encode())
    for index, (abstract, syntaxes) in enumerate(contexts):
        sub = _item(0x30, _uid(abstract)) + b"".join(_item(0x40, _uid(s)) for s in syntaxes)
        body += _item(0x20, struct.pack(">BBBB", 2 * index + 1, 0, 0, 0) + sub)
    body += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.9999"))
    return pdu(0x01, body)


def associate_ac(request: bytes, accepted: list[tuple[int, str]], max_pdu: int = 16384) -> bytes:
    """A-ASSOCIATE-AC (PS3.8 9.3.3) answering the A-ASSOCIATE-RQ body ``request``, accepting (context ID, transfer syntax) pairs."""
    body = request[:4] + request[4:36] + b"\0" * 32  # version, reserved, the AE titles echoed, reserved
    body += _item(0x10, APPLICATION_CONTEXT.encode())
    for context_id, syntax in accepted:
        body += _item(0x21, struct.pack(">BBBB", context_id, 0, 0, 0) + _item(0x40, _uid(syntax)))
    body += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.9999"))
    return pdu(0x02, body)


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """One P-DATA-TF carrying one PDV: control bit 0 = command, bit 1 = last fragment (PS3.8 E.2)."""
    return pdu(0x04, struct.pack(">LBB", len(data) + 2, context_id, control) + data)


def element(group: int, elem: int, value: bytes) -> bytes:
    """An Implicit VR Little Endian element."""
    return struct.pack("<HHL", group, elem, len(value)) + value


def command(field: int, *, sop_class: str, sop_instance: str = "", has_dataset: bool) -> bytes:
    """A command set (PS3.7 9.3) with its group length."""
    body = element(0, 0x0002, _uid(sop_class)) + element(0, 0x0100, struct.pack("<H", field))
    body += element(0, 0x0110, struct.pack("<H", 1))
    if field == 0x0001:  # C-STORE-RQ
        body += element(0, 0x0700, struct.pack("<H", 0))
    body += element(0, 0x0800, struct.pack("<H", 0x0000 if has_dataset else 0x0101))
    if sop_instance:
        body += element(0, 0x1000, _uid(sop_instance))
    return element(0, 0x0000, struct.pack("<L", len(body))) + body


@dataclass
class Received:
    """What the guard answered: the PDU type (None: connection closed) and the body."""

    pdu_type: int | None
    body: bytes = b""


class RawPeer:
    """One TCP connection to the guard driven byte by byte."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", timeout: float = 10.0) -> None:
        """Connect from ``source`` (another loopback address looks like another peer)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))

    def send(self, data: bytes) -> bool:
        """Send; False when the guard has already closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def receive(self, timeout: float = 10.0) -> Received:
        """The next PDU, or ``Received(None)`` once the guard closed the connection."""
        self.sock.settimeout(timeout)
        try:
            header = self._exactly(6)
            if header is None:
                return Received(None)
            pdu_type, _, length = struct.unpack(">BBL", header)
            return Received(pdu_type, self._exactly(length) or b"")
        except (ConnectionResetError, BrokenPipeError):
            return Received(None)

    def _exactly(self, count: int) -> bytes | None:
        data = bytearray()
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                return None
            data.extend(chunk)
        return bytes(data)

    def closed_within(self, timeout: float) -> float:
        """Seconds until the guard closes the connection (reading and dropping whatever comes first)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                self.sock.settimeout(max(0.1, timeout - (time.monotonic() - start)))
                if not self.sock.recv(65536):
                    return time.monotonic() - start
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - start
            except TimeoutError:
                break
        msg = f"the guard kept the connection open for {timeout} s"
        raise AssertionError(msg)

    def associate(self, calling: str, called: str, contexts: list[tuple[str, list[str]]]) -> Received:
        """Send an A-ASSOCIATE-RQ and return the answer."""
        self.send(associate_rq(calling, called, contexts))
        return self.receive()

    def close(self) -> None:
        """Close our end."""
        self.sock.close()


def explicit(group: int, elem: int, vr: str, value: bytes, *, length: int | None = None) -> bytes:
    """An Explicit VR Little Endian element; ``length`` may lie."""
    size = len(value) if length is None else length
    if vr in {"OB", "OW", "SQ", "UN", "UT", "UC", "UR"}:
        return struct.pack("<HH", group, elem) + vr.encode() + b"\0\0" + struct.pack("<L", size) + value
    return struct.pack("<HH", group, elem) + vr.encode() + struct.pack("<H", size) + value


def status_of(body: bytes) -> int | None:
    """The Status (0000,0900) of a DIMSE response carried by a P-DATA-TF body."""
    data = bytearray()
    pos = 0
    while pos + 6 <= len(body):
        (length,) = struct.unpack_from(">L", body, pos)
        if body[pos + 5] & 0x01:
            data.extend(body[pos + 6 : pos + 4 + length])
        pos += 4 + length
    pos = 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHL", data, pos)
        if (group, elem) == (0, 0x0900):
            return int(struct.unpack_from("<H", data, pos + 8)[0])
        pos += 8 + length
    return None


def store_raw(port: int, dataset: bytes, *, sop_instance: str, syntax: str = EXPLICIT_LE, calling: str = "STORESCU") -> int | None:
    """C-STORE ``dataset`` bytes exactly as given (CT Image Storage); the response status, None if none came."""
    peer = RawPeer(port)
    try:
        answer = peer.associate(calling, "GUARD", [(CT_STORAGE, [syntax])])
        if answer.pdu_type != 0x02:
            return None
        peer.send(p_data(1, 0x03, command(0x0001, sop_class=CT_STORAGE, sop_instance=sop_instance, has_dataset=True)))
        peer.send(p_data(1, 0x02, dataset))
        response = peer.receive(timeout=30)
        status = status_of(response.body) if response.pdu_type == 0x04 else None
        peer.send(pdu(0x05, b"\0\0\0\0"))
        peer.receive(timeout=5)
        return status
    finally:
        peer.close()
