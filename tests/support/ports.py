"""Free loopback TCP ports for peers started by the tests."""

from __future__ import annotations

import socket
import threading

#: Every peer started by the tests listens and is reached on this address only.
LOOPBACK = "127.0.0.1"

# Ports already handed out in this process. The kernel may offer a port again once the
# probing socket is closed; remembering them keeps two peers of one test from colliding
# before either has bound its port.
_HANDED_OUT: set[int] = set()
_LOCK = threading.Lock()
_MAX_ATTEMPTS = 200


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 and was never returned before in this process."""
    with _LOCK:
        for _ in range(_MAX_ATTEMPTS):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((LOOPBACK, 0))
                port = int(probe.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    msg = f"no new free port found in {_MAX_ATTEMPTS} attempts"
    raise RuntimeError(msg)
