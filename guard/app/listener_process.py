"""The DICOM listener in a process of its own (``node.listener_process = true``).

One Python process shares one interpreter lock between receiving, forwarding and confirming:
while the forwarder sends, the PACS waits for its C-STORE responses. With this setting the main
process (forwarding, confirmation, the admin API, audit tasks) starts a child process that runs
only the listener: admission, durable ingest, Storage Commitment requests and reports, the
query/retrieve relay. Both work on the same ledger and spool; the ledger is the only shared state
(its transactions already serialise every state change), so invariant 1 (no Success before the
file is fsynced and its row committed) holds in the child exactly as in one process.

The two processes talk over a Unix datagram socket pair made by the main process and inherited by
the child. The child sends:

- ``port N`` once its listening socket is bound (the main process waits for it at start);
- ``alive`` every ``HEARTBEAT`` seconds (readiness: the listener is "up" only while these arrive);
- ``received`` after each new instance (wakes the forwarder at once instead of at its next poll);
- ``confirm`` after a commitment request from a source or a report from the archive (wakes the
  confirmation loops);
- ``latency S`` when an archive report arrives, ``S`` seconds after its request (the main
  process owns the metrics that ``/metrics`` serves: ``guard_commitment_latency_seconds``);
- ``{"op": "arrived", ...}`` for each instance a byte check's C-MOVE brought; the main process
  sends ``{"op": "expect", ...}`` and ``{"op": "forget", ...}`` for those moves the other way
  (``guard.app.listener_moves``).

Supervision: when the child exits for any reason but a requested stop, the main process audits a
``security.alert`` (``listener-process-exited``, with the exit code or signal), reports not ready,
and starts a new child after an exponential backoff. The child asks the kernel to send it SIGTERM
when its parent dies (``PR_SET_PDEATHSIG``), so a main process killed with SIGKILL leaves no
listener behind that would accept instances nobody forwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from guard.app.listener_moves import MAX_MESSAGE, ListenerMoves, decode
from guard.config.settings import Settings
from guard.domain.errors import GuardError
from guard.domain.retry import backoff_delay
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.ledger import Ledger
from guard.runtime.metrics import COMMITMENT_LATENCY

log = structlog.get_logger("guard.app.listener_process")

#: Seconds between the child's heartbeats.
HEARTBEAT = 1.0
#: Heartbeats that may be missed before the listener counts as down.
MISSED_HEARTBEATS = 3
#: Seconds the main process waits for a new child to bind its port.
START_TIMEOUT = 60.0
#: Restart backoff: base and cap, seconds (equal jitter, ``guard.domain.retry.backoff_delay``).
RESTART_BASE = 1.0
RESTART_CAP = 30.0
_PR_SET_PDEATHSIG = 1


class ListenerProcessError(GuardError):
    """The listener process could not be started."""


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits (``prctl(PR_SET_PDEATHSIG)``); no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ChildChannel:
    """The child's end: tells the main process what happened; never blocks the listener."""

    def __init__(self, fd: int) -> None:
        """Wrap the inherited datagram socket ``fd``."""
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)  # noqa: FBT003 - the socket API's own flag

    def send(self, message: str) -> None:
        """Send ``message``; a full buffer or a closed peer drops it (heartbeats and wakes are idempotent)."""
        with contextlib.suppress(OSError):
            self.sock.send(message.encode("ascii"))

    def send_within(self, message: str, timeout: float) -> bool:
        """Send ``message``, waiting up to ``timeout`` seconds for room; whether it was sent (for what must not be lost)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.send(message.encode("ascii"))
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([], [self.sock], [], min(left, 0.5))
            except OSError:
                return False
            else:
                return True

    def receive(self, timeout: float) -> str | None:
        """The next message of the main process, or None when none came within ``timeout`` seconds."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return None
        try:
            return self.sock.recv(MAX_MESSAGE).decode("ascii", "replace")
        except (BlockingIOError, InterruptedError):
            return None

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class ListenerSupervisor:
    """The main process's side: starts the listener process, hears it, restarts it when it dies."""

    def __init__(
        self,
        settings: Settings,
        config_path: str | None,
        ledger: Ledger,
        on_received: Callable[[], None],
        on_confirm: Callable[[], None],
        moves: ListenerMoves | None = None,
    ) -> None:
        """Supervise a listener for ``settings``; ``on_received`` and ``on_confirm`` are called for those messages.

        ``moves``: the byte checks' C-MOVEs, whose instances the listener hands over (``guard.app.listener_moves``).
        """
        self.moves = moves
        if moves is not None:
            moves.bind(self.tell)
        self.settings = settings
        self.config_path = config_path
        self.ledger = ledger
        self.on_received = on_received
        self.on_confirm = on_confirm
        self.on_latency: Callable[[float], None] = COMMITMENT_LATENCY.observe
        self.port = settings.node.port
        self._process: subprocess.Popen[bytes] | None = None
        self._last_alive = 0.0
        self._bound = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        """The listener process's pid, while one runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> ListenerSupervisor:
        """Start the child and wait (bounded) until it has bound its port; ``ListenerProcessError`` if it does not."""
        self._ours.settimeout(HEARTBEAT)
        receiver = threading.Thread(target=self._receive, name="listener-channel", daemon=True)
        receiver.start()
        self._threads.append(receiver)
        self._spawn()
        if not self._wait_bound():
            self.stop()
            msg = f"the listener process did not bind port {self.settings.node.port} within {START_TIMEOUT:.0f} s (see its log lines)"
            raise ListenerProcessError(msg)
        watcher = threading.Thread(target=self._watch, name="listener-supervisor", daemon=True)
        watcher.start()
        self._threads.append(watcher)
        return self

    def alive(self) -> bool:
        """Whether the listener process runs and has been heard from lately."""
        recent = time.monotonic() - self._last_alive <= HEARTBEAT * MISSED_HEARTBEATS
        return self.pid is not None and self._bound.is_set() and recent

    def stop(self, timeout: float = 45.0) -> None:
        """Ask the child to drain and stop (SIGTERM); SIGKILL after ``timeout`` seconds."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for thread in self._threads:
            thread.join(timeout=5)
        self._ours.close()
        self._theirs.close()

    def forward_signal(self, signum: int) -> None:
        """Pass ``signum`` (SIGHUP: reload certificates) on to the listener process."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "guard", "listener", "--channel-fd", str(self._theirs.fileno())]
        if self.config_path:
            argv += ["--config", self.config_path]
        return argv

    def _spawn(self) -> None:
        self._bound.clear()
        fd = self._theirs.fileno()
        # stdout and stderr are inherited: the child's JSON lines join the main process's.
        process = subprocess.Popen(self._argv(), pass_fds=(fd,), cwd=Path.cwd())  # noqa: S603 - our own interpreter and module
        with self._lock:
            self._process = process
        log.info("listener.started", action="listener.started", pid=process.pid)

    def _wait_bound(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not self._stopping.is_set():
            if self._bound.wait(0.2):
                return True
            process = self._process
            if process is None or process.poll() is not None:
                return False
        return False

    def _receive(self) -> None:
        """Read the child's messages until the supervisor stops."""
        while not self._stopping.is_set():
            try:
                data = self._ours.recv(MAX_MESSAGE)
            except TimeoutError:
                continue
            except OSError:
                return
            self._handle(data.decode("ascii", "replace"))

    def tell(self, message: str) -> bool:
        """Send ``message`` to the listener process (bounded by the channel's timeout); whether it was sent."""
        try:
            self._ours.send(message.encode("ascii"))
        except OSError:
            return False
        return True

    def _handle(self, message: str) -> None:
        if message.startswith("{"):
            parsed = decode(message)
            if parsed is not None and parsed.get("op") == "arrived" and self.moves is not None:
                self.moves.arrived(parsed)
        elif message == "received":
            self.on_received()
        elif message == "confirm":
            self.on_confirm()
        elif message == "alive":
            self._last_alive = time.monotonic()
        elif message.startswith("latency "):
            with contextlib.suppress(ValueError):
                self.on_latency(float(message.split()[1]))
        elif message.startswith("port "):
            self.port = int(message.split()[1])
            self._last_alive = time.monotonic()
            self._bound.set()
            if self.moves is not None:
                self.moves.announce_all()  # a new listener process knows none of the moves in flight

    def _watch(self) -> None:
        """Restart the child whenever it exits without being asked to."""
        restarts = 0
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            restarts += 1
            self._report_exit(process.pid, code)
            delay = backoff_delay(restarts, RESTART_BASE, RESTART_CAP, 0.5)
            if self._stopping.wait(delay):
                return
            self._spawn()
            if self._wait_bound():
                log.info("listener.restarted", action="listener.restarted", pid=self.pid, restarts=restarts)
                restarts = 0 if self._stable_for(RESTART_CAP) else restarts

    def _stable_for(self, seconds: float) -> bool:
        """Whether the new child stays up for ``seconds`` (so that a crash loop keeps backing off)."""
        return not self._stopping.wait(seconds) and self.pid is not None

    def _report_exit(self, pid: int, code: int) -> None:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        message = f"the DICOM listener process {pid} ended ({how}); restarting it"
        log.error("listener.exited", action="listener.exited", pid=pid, returncode=code, message=message)
        self.ledger.audit_or_log(
            AuditEvent.SECURITY_ALERT,
            Outcome.FAILURE,
            actor=self.settings.node.ae_title,
            detail={"alert": "listener-process-exited", "pid": pid, "returncode": code, "message": message},
        )


def parent_alive(expected_parent: int) -> bool:
    """Whether the process that started this one is still its parent (it is not, once it died)."""
    return os.getppid() == expected_parent
