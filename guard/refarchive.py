"""The built-in reference archive: a small storage SCP for the sandbox and for tests.

It is NOT an archive for production: it keeps files in one folder, with no index beyond the
file names and no redundancy. ``guard serve`` runs it when no archive host is configured so
that receive, forward and status work on a fresh machine, and says so loudly.

Tests use it as a peer whose faults can be switched on while it runs: refuse associations,
abort them, answer slowly, answer a failure status, or answer Success and silently not keep
the instance (an archive that lies).
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from guard.dicom import status as st
from guard.dicom.net import NODELAY_HANDLER
from guard.uids import is_valid_uid

_REJECTED_TRANSIENT = 0x02
_SERVICE_PROVIDER_PRESENTATION = 0x03
_TEMPORARY_CONGESTION = 0x01


@dataclass
class Faults:
    """Faults to inject; change them at any time, they apply to the next request."""

    refuse: bool = False
    abort: bool = False
    delay: float = 0.0
    status: int | None = None
    drop: bool = False

    def clear(self) -> None:
        """Behave correctly again."""
        self.refuse = self.abort = self.drop = False
        self.delay = 0.0
        self.status = None


class ReferenceArchive:
    """A storage SCP that keeps what it receives in ``directory``."""

    def __init__(self, directory: Path, *, ae_title: str = "ARCHIVE", bind: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``bind:port`` (0 picks a free port) as ``ae_title``."""
        self.directory = directory
        self.bind = bind
        self.requested_port = port
        self.faults = Faults()
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_pdu_size = 262144
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self.server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()
        self.received_count = 0

    @property
    def ae_title(self) -> str:
        """The archive's AE title."""
        return str(self.ae.ae_title)

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self.server is None:
            return self.requested_port
        return int(self.server.server_address[1])

    def start(self) -> ReferenceArchive:
        """Open the port."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handlers: list[Any] = [
            NODELAY_HANDLER,
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda _e: st.SUCCESS),
        ]
        self.server = self.ae.start_server((self.bind, self.requested_port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        """Close the port and abort associations in flight (an archive going down)."""
        server, self.server = self.server, None
        if server is not None:
            self.requested_port = int(server.server_address[1])
            server.shutdown()
            for assoc in server.active_associations:
                assoc.abort()

    def holds(self, sop_instance_uid: str) -> bool:
        """Whether the archive keeps this instance."""
        return is_valid_uid(sop_instance_uid) and (self.directory / f"{sop_instance_uid}.dcm").is_file()

    def held_uids(self) -> set[str]:
        """Every SOP Instance UID the archive keeps."""
        return {p.stem for p in self.directory.glob("*.dcm")}

    def _on_requested(self, event: Any) -> None:
        if self.faults.refuse:
            event.assoc.acse.send_reject(_REJECTED_TRANSIENT, _SERVICE_PROVIDER_PRESENTATION, _TEMPORARY_CONGESTION)
            event.assoc.kill()

    def _on_store(self, event: Any) -> Dataset | int:
        faults = self.faults
        if faults.delay:
            time.sleep(faults.delay)
        if faults.abort:
            event.assoc.abort()
            return st.PROCESSING_FAILURE
        if faults.status is not None:
            return faults.status
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        if not is_valid_uid(sop_uid):
            return st.CANNOT_UNDERSTAND
        with self._lock:
            self.received_count += 1
        if faults.drop:
            return st.SUCCESS
        target = self.directory / f"{sop_uid}.dcm"
        try:
            path = getattr(event.request, "_dataset_path", None)
            if path is not None:
                source = path[0] if isinstance(path, tuple) else path
                shutil.copyfile(source, target)
            else:
                ds = event.dataset
                ds.file_meta = event.file_meta
                ds.save_as(target, enforce_file_format=True)
        except OSError:
            return st.OUT_OF_RESOURCES
        return st.SUCCESS
