"""TCP_NODELAY is set on both ends of the guard's associations."""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom import AE, evt

from guard.dicom.net import NODELAY_HANDLER
from tests.support.waiting import wait_until

VERIFICATION = "1.2.840.10008.1.1"


def test_nodelay_on_acceptor_and_requestor_sockets() -> None:
    """The EVT_CONN_OPEN handler disables Nagle on inbound and outbound sockets (else ~40 ms per response)."""
    seen: dict[bool, int] = {}

    def probe(event: Any) -> None:
        sock = event.assoc.dul.socket.socket
        seen[event.assoc.is_acceptor] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    scp = AE("SCP")
    scp.add_supported_context(VERIFICATION)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[NODELAY_HANDLER, (evt.EVT_ESTABLISHED, probe)])
    try:
        scu = AE("SCU")
        scu.add_requested_context(VERIFICATION)
        assoc = scu.associate("127.0.0.1", server.server_address[1], evt_handlers=[NODELAY_HANDLER, (evt.EVT_ESTABLISHED, probe)])
        assert assoc.is_established
        assoc.send_c_echo()
        assoc.release()
        wait_until(lambda: len(seen) == 2, 5, message="both ends not seen")
    finally:
        server.shutdown()
    assert seen == {True: 1, False: 1}
