"""Free loopback TCP ports for peers started by the tests, from a block of ports of this worker's own.

A port found free by probing is free only until someone else binds it. Two hazards follow when
the tests run in parallel (pytest-xdist): two workers probing the kernel's ephemeral range can be
offered the same port between probe and bind, and any outgoing connection (``storescu``, an HTTP
client) can be given a probed port as its source port. So every process hands out ports only from
its own block, below the ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``, 32768 and up
on Linux): worker ``gwN`` of pytest-xdist takes block ``N``, a serial run takes block 0. Within the
block each candidate is still probed with a bind, which skips ports held by anything else on the
machine (another test run, a database), and a port is not handed out twice while the block has
others left.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading

#: Every peer started by the tests listens and is reached on this address only.
LOOPBACK = "127.0.0.1"

#: Where the blocks start and how large each is: 12 blocks from 20000 to 31999.
BLOCK_BASE = 20000
BLOCK_SIZE = 1000
BLOCKS = 12


def worker_block(worker: str | None) -> range:
    """The ports of the pytest-xdist worker named ``worker`` (``gw0``, ``gw1``...), block 0 without one."""
    found = re.fullmatch(r"gw(\d+)", worker or "")
    index = int(found.group(1)) % BLOCKS if found else 0
    start = BLOCK_BASE + index * BLOCK_SIZE
    return range(start, start + BLOCK_SIZE)


class PortBlock:
    """Hands out free ports of one block, each once until every port of the block has been handed out."""

    def __init__(self, ports: range) -> None:
        """Start at a random place in ``ports``, so that two runs on one machine seldom probe the same ports in turn."""
        self.ports = ports
        self._next = random.randrange(len(ports))
        self._handed_out: set[int] = set()
        self._lock = threading.Lock()

    def free_port(self) -> int:
        """Return a port of the block that nothing is bound to now and that was not handed out since the last wrap."""
        with self._lock:
            for _round in range(2):
                for _ in range(len(self.ports)):
                    port = self.ports[self._next]
                    self._next = (self._next + 1) % len(self.ports)
                    if port not in self._handed_out and _bindable(port):
                        self._handed_out.add(port)
                        return port
                # Every port of the block was handed out: the peers of earlier tests are long stopped.
                self._handed_out.clear()
        msg = f"no free port in {self.ports.start}-{self.ports.stop - 1} on {LOOPBACK}"
        raise RuntimeError(msg)


def _bindable(port: int) -> bool:
    # No SO_REUSEADDR: a port with a connection still in TIME_WAIT counts as taken too.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


_BLOCKS: list[PortBlock] = []
_BLOCKS_LOCK = threading.Lock()


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1, from this worker's block, not handed out before in this process."""
    with _BLOCKS_LOCK:
        if not _BLOCKS:
            # Read at first use, not at import: pytest-xdist names the worker in its environment.
            _BLOCKS.append(PortBlock(worker_block(os.environ.get("PYTEST_XDIST_WORKER"))))
        block = _BLOCKS[0]
    return block.free_port()
