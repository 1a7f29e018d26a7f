"""Who carries out a permitted delete on the source: nobody (the caller), Orthanc REST, or DICOMweb."""

from __future__ import annotations

from typing import Protocol

import httpx

from guard.config.settings import DeleteBackend, DeleteSettings
from guard.domain.errors import GuardError


class BackendError(GuardError):
    """The backend could not carry out the delete."""


class Backend(Protocol):
    """Carries out a permitted delete."""

    name: str

    def delete(self, study_uid: str) -> None:
        """Delete the study on the source, or raise ``BackendError``."""


class DecisionOnly:
    """The guard only answers; the caller deletes."""

    name = "decision-only"

    def delete(self, study_uid: str) -> None:
        """Nothing to do."""


class OrthancBackend:
    """Orthanc REST on the source: look the study up, then delete it."""

    name = "orthanc"

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        """Talk to the Orthanc REST API at ``url``."""
        self.url = url.rstrip("/")
        self.timeout = timeout

    def delete(self, study_uid: str) -> None:
        """``POST /tools/lookup`` then ``DELETE /studies/{id}``."""
        try:
            with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
                found = client.post("/tools/lookup", content=study_uid)
                found.raise_for_status()
                ids = [item["ID"] for item in found.json() if item.get("Type") == "Study"]
                if not ids:
                    msg = f"Orthanc at {self.url} has no study {study_uid}"
                    raise BackendError(msg)
                for orthanc_id in ids:
                    client.delete(f"/studies/{orthanc_id}").raise_for_status()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            msg = f"Orthanc delete failed: {exc}"
            raise BackendError(msg) from exc


class DicomWebBackend:
    """A DICOMweb-style ``DELETE {url}/studies/{uid}``."""

    name = "dicomweb"

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        """Use the DICOMweb base ``url``."""
        self.url = url.rstrip("/")
        self.timeout = timeout

    def delete(self, study_uid: str) -> None:
        """Delete the study; any status other than 2xx is a failure."""
        try:
            response = httpx.delete(f"{self.url}/studies/{study_uid}", timeout=self.timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            msg = f"DICOMweb delete failed: {exc}"
            raise BackendError(msg) from exc


def make_backend(settings: DeleteSettings) -> Backend:
    """The backend named by ``delete.backend``."""
    if settings.backend is DeleteBackend.ORTHANC:
        return OrthancBackend(settings.url)
    if settings.backend is DeleteBackend.DICOMWEB:
        return DicomWebBackend(settings.url)
    return DecisionOnly()
