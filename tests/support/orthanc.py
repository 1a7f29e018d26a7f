"""A real Orthanc server as a test peer: the archive, or a source PACS with a REST delete.

Each ``Orthanc`` has its own folder (configuration, storage, index, log) and two free
ports chosen up front, so a test can configure the guard before Orthanc runs and can stop
and start it again on the same ports and the same storage.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Self

import httpx

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, PeerError, find_tool
from tests.support.waiting import STARTUP_TIMEOUT, port_is_open, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from types import TracebackType

#: name -> (AE title, host, port) of a peer Orthanc must know to answer or call it.
Modalities = dict[str, tuple[str, str, int]]


def _modality_entry(ae: str, host: str, port: int) -> dict[str, Any]:
    """Describe one peer for ``DicomModalities`` with every service allowed."""
    return {
        "AET": ae,
        "Host": host,
        "Port": port,
        "Manufacturer": "Generic",
        "AllowEcho": True,
        "AllowFind": True,
        "AllowGet": True,
        "AllowMove": True,
        "AllowStore": True,
        "AllowStorageCommitment": True,
        "AllowTranscoding": True,
    }


class Orthanc:
    """One Orthanc 1.10 process on free ports, with its own configuration in ``workdir``.

    ``check_called_aet`` defaults to True (``DicomCheckCalledAet``): an association that
    calls the wrong AE title is rejected, as a production archive would, so a misconfigured
    guard fails its tests instead of passing by accident. Stores are accepted from any AE
    (Orthanc's default); C-FIND, C-MOVE and Storage Commitment only from ``modalities``
    (Storage Commitment reports are sent to the address listed there).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        check_called_aet: bool = True,
        verbose: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        """Choose ports and settings; nothing runs until ``start`` (or ``with``)."""
        self.workdir = workdir
        self.aet = aet
        self.host = LOOPBACK
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.storage_dir = workdir / "storage"
        self.config_path = workdir / "orthanc.json"
        self.log_path = workdir / "orthanc.log"
        self.modalities: Modalities = dict(modalities or {})
        self.extra_config = dict(extra_config or {})
        self.check_called_aet = check_called_aet
        self.verbose = verbose
        self.startup_timeout = startup_timeout
        self._process: ManagedProcess | None = None
        self._client: httpx.Client | None = None
        #: Credentials of the REST client, for an Orthanc that requires them (``DicomWebOrthanc``).
        self.rest_auth: httpx.Auth | None = None

    @property
    def url(self) -> str:
        """Return the base URL of the REST API."""
        return f"http://{self.host}:{self.http_port}"

    def configuration(self) -> dict[str, Any]:
        """Return the JSON configuration Orthanc is started with."""
        config: dict[str, Any] = {
            "Name": self.aet,
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "StorageCompression": False,
            "MaximumStorageSize": 0,
            "MaximumPatientCount": 0,
            "Plugins": [],
            "ConcurrentJobs": 2,
            # Jobs of an earlier run must not resume after a restart test.
            "SaveJobs": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpDescribeErrors": True,
            "HttpCompressionEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomScuTimeout": 10,
            "DicomModalitiesInDatabase": False,
            "DicomModalities": {name: _modality_entry(*peer) for name, peer in self.modalities.items()},
            "OrthancPeers": {},
            "OverwriteInstances": True,
            "ExecuteLuaEnabled": False,
        }
        config.update(self.extra_config)
        return config

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Write the configuration, start Orthanc, and wait until REST and DICOM answer."""
        if self._process is not None and self._process.is_running():
            return self
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.configuration(), indent=2), encoding="utf-8")
        argv = [find_tool("Orthanc"), *(["--verbose"] if self.verbose else []), str(self.config_path)]
        process = ManagedProcess(argv, self.log_path, cwd=self.workdir)
        self._process = process
        self._client = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False, auth=self.rest_auth)

        def ready() -> bool:
            if not process.is_running():
                msg = f"Orthanc died during startup: {process.describe()}"
                raise PeerError(msg)
            try:
                answered = self.rest().get("/system", timeout=1.0).status_code == httpx.codes.OK
            except httpx.TransportError:
                return False
            return answered and port_is_open(self.host, self.dicom_port)

        try:
            wait_until(ready, self.startup_timeout, interval=0.1, message="Orthanc did not become ready")
        except (TimeoutError, PeerError) as exc:
            description = process.describe()
            self.stop()
            raise PeerError(description) from exc
        return self

    def stop(self, grace: float = 15.0) -> None:
        """Stop our Orthanc process, keeping its data.

        It gets ``grace`` seconds to shut down after SIGTERM (a clean stop takes about 3 s),
        then is killed; ``grace=0`` simulates a crash.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._process is not None:
            self._process.stop(grace=grace)
            self._process = None

    def restart(self) -> Self:
        """Stop and start again on the same ports with the same storage."""
        self.stop()
        return self.start()

    @property
    def pid(self) -> int | None:
        """The Orthanc process id while it runs (the benchmark reads its CPU time)."""
        return self._process.pid if self._process is not None and self._process.is_running() else None

    def is_running(self) -> bool:
        """Tell whether our Orthanc process is alive."""
        return self._process is not None and self._process.is_running()

    def __enter__(self) -> Self:
        """Start on entry."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Kill on exit: nothing reads this peer's data after its ``with`` block (a fixture's teardown), and a clean stop takes 3 s."""
        self.stop(grace=0)

    # -- REST helpers -----------------------------------------------------------------

    def rest(self) -> httpx.Client:
        """Return the HTTP client of the running server."""
        if self._client is None:
            msg = f"Orthanc {self.aet} is not running"
            raise PeerError(msg)
        return self._client

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one REST request, raise on an HTTP error status, return the decoded JSON."""
        response = self.rest().request(method, path, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_modality(self, name: str, ae: str, host: str, port: int) -> None:
        """Make a peer known to Orthanc now (REST) and on every later start (configuration)."""
        self.modalities[name] = (ae, host, port)
        if self.is_running():
            self._json("PUT", f"/modalities/{name}", json=_modality_entry(ae, host, port))

    def lookup(self, uid: str) -> list[dict[str, Any]]:
        """Return Orthanc's ``/tools/lookup`` answer for a DICOM UID: ``[{"ID", "Type", "Path"}]``."""
        result: list[dict[str, Any]] = self._json("POST", "/tools/lookup", content=uid.encode())
        return result

    def find_instances(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """Return the expanded instance resources matching ``query`` (DICOM keyword -> value)."""
        body = {"Level": "Instance", "Query": dict(query), "Expand": True, "CaseSensitive": True}
        result: list[dict[str, Any]] = self._json("POST", "/tools/find", json=body)
        return result

    def instance_uids_of_study(self, study_uid: str) -> set[str]:
        """Return the SOP Instance UIDs Orthanc holds for ``study_uid``."""
        found = self.find_instances({"StudyInstanceUID": study_uid})
        return {str(item["MainDicomTags"]["SOPInstanceUID"]) for item in found}

    def count_instances(self) -> int:
        """Return how many instances Orthanc stores (``/statistics``)."""
        return int(self._json("GET", "/statistics")["CountInstances"])

    def _delete(self, uid: str, kind: str) -> bool:
        """Delete every resource of Orthanc type ``kind`` (``Study``, ``Instance``) with DICOM UID ``uid``."""
        deleted = False
        for match in self.lookup(uid):
            if match.get("Type") == kind:
                # Orthanc's own resource path, e.g. /studies/{id} or /instances/{id}.
                self._json("DELETE", str(match["Path"]))
                deleted = True
        return deleted

    def delete_instance(self, sop_instance_uid: str) -> bool:
        """Delete one instance by SOP Instance UID; return whether Orthanc held it."""
        return self._delete(sop_instance_uid, "Instance")

    def delete_study(self, study_uid: str) -> bool:
        """Delete a whole study by Study Instance UID; return whether Orthanc held it."""
        return self._delete(study_uid, "Study")

    def upload(self, paths: Iterable[Path]) -> list[str]:
        """Store files through REST (no DICOM association); return their Orthanc ids."""
        ids = []
        for path in paths:
            answer = self._json("POST", "/instances", content=path.read_bytes())
            ids.append(str(answer["ID"]))
        return ids
