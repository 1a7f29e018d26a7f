"""DCMTK ``storescp`` as a storage SCP peer, receiving into a folder of its own."""

from __future__ import annotations

import shlex
import warnings
from typing import TYPE_CHECKING, Self

from pydicom import dcmread

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, PeerError, find_tool
from tests.support.waiting import STARTUP_TIMEOUT, port_is_open, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path
    from types import TracebackType

    from pydicom.dataset import Dataset


def _read_quietly(path: Path) -> Dataset:
    """Read a received file; a hostile UID sent on purpose would otherwise warn on every poll."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path)


class Storescp:
    """DCMTK ``storescp`` on a free loopback port, receiving into ``directory``.

    Files get unique generated names (``+uf``), never names built from received UIDs, so a
    hostile UID cannot steer where it is written, and a re-sent instance shows up twice.
    storescp writes into the final file name, so a file may be seen half written; with
    ``track_completion`` (the default) storescp itself appends each file's name to
    ``directory/.storescp.done`` once the file is written (``--exec-on-reception``), and
    only those files count as received. That costs a shell per instance (about 2 ms);
    benchmarks may turn it off and count files after the sender has finished (storescp
    answers a C-STORE only after writing the file). Its log is ``directory/.storescp.log``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        aet: str = "STORESCP",
        port: int | None = None,
        max_pdu: int | None = None,
        bit_preserving: bool = False,
        fork: bool = False,
        track_completion: bool = True,
        extra_args: Sequence[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        """Choose the port and options; nothing runs until ``start`` (or ``with``).

        ``bit_preserving`` (``+B``) writes data sets exactly as received. ``fork`` serves
        several associations at once (storescp otherwise serves one at a time).
        """
        self.directory = directory
        self.aet = aet
        self.port = port if port is not None else free_port()
        self.log_path = directory / ".storescp.log"
        self.done_path = directory / ".storescp.done" if track_completion else None
        self.startup_timeout = startup_timeout
        options = ["-v", "-aet", aet, "-od", str(directory), "+uf", "-dhl"]
        if max_pdu is not None:
            options += ["-pdu", str(max_pdu)]
        if bit_preserving:
            options.append("+B")
        if fork:
            options.append("--fork")
        if self.done_path is not None:
            # storescp replaces #f with the generated file name (digits, dots, letters only)
            # and runs the command with /bin/sh; O_APPEND keeps concurrent lines whole.
            options += ["-xcr", f"printf '%s\\n' '#f' >> {shlex.quote(str(self.done_path))}"]
        self._options = [*options, *extra_args]
        self._process: ManagedProcess | None = None

    def start(self) -> Self:
        """Start storescp and wait until its port accepts connections."""
        if self._process is not None and self._process.is_running():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess([find_tool("storescp"), *self._options, str(self.port)], self.log_path)
        self._process = process

        def ready() -> bool:
            if not process.is_running():
                msg = f"storescp died during startup: {process.describe()}"
                raise PeerError(msg)
            return port_is_open(LOOPBACK, self.port)

        try:
            wait_until(ready, self.startup_timeout, message=f"storescp not listening on {self.port}")
        except TimeoutError as exc:
            self.stop()
            raise PeerError(process.describe()) from exc
        return self

    def stop(self) -> None:
        """Stop our storescp process (terminate, then kill after a bounded wait)."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def __enter__(self) -> Self:
        """Start on entry."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on exit."""
        self.stop()

    def received_files(self) -> list[Path]:
        """Return the completely written files, in order of completion when tracked."""
        if self.done_path is None:
            files = [path for path in self.directory.iterdir() if path.is_file() and not path.name.startswith(".")]
            return sorted(files, key=lambda path: (path.stat().st_mtime_ns, path.name))
        try:
            names = self.done_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        # A line caught while being appended names no existing file and is skipped until whole.
        return [self.directory / name for name in names if name and (self.directory / name).is_file()]

    def received_datasets(self) -> list[Dataset]:
        """Return the received data sets, in the order of ``received_files``."""
        return [_read_quietly(path) for path in self.received_files()]

    def received_sop_instance_uids(self) -> set[str]:
        """Return the SOP Instance UIDs of the completely received instances."""
        return {str(ds.SOPInstanceUID) for ds in self.received_datasets()}

    def wait_for(self, sop_instance_uids: Iterable[str], timeout: float = 30.0) -> set[str]:
        """Wait until every given SOP Instance UID has been received; return all received UIDs."""
        wanted = set(sop_instance_uids)
        wait_until(
            lambda: wanted <= self.received_sop_instance_uids(),
            timeout,
            interval=0.1,
            message=f"storescp did not receive all of {len(wanted)} instances within {timeout} s",
        )
        return self.received_sop_instance_uids()
