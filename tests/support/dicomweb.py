"""Orthanc with Debian's DICOMweb plugin (``orthanc-dicomweb``) as a DICOMweb archive.

``DicomWebOrthanc`` is an ``Orthanc`` (own folder, free loopback ports, stopped by its pid)
that loads the plugin and serves STOW-RS, QIDO-RS and WADO-RS under ``/dicom-web``. It can
require credentials as a production archive would: HTTP basic (Orthanc's registered users) or
a bearer token (checked by Orthanc's ``IncomingHttpRequestFilter`` Lua callback, which sees
the request headers and answers 403 to a request it refuses).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.availability import unavailable
from tests.support.orthanc import Orthanc
from tests.support.processes import PeerError, find_tool

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator, Mapping

#: Where Debian's orthanc-dicomweb puts the plugin.
PLUGIN_FOLDER = Path("/usr/lib/orthanc")
DICOMWEB_ROOT = "/dicom-web"


def dicomweb_plugin() -> Path:
    """The plugin's shared library; ``PeerError`` when the package is not installed."""
    found = sorted(PLUGIN_FOLDER.glob("libOrthancDicomWeb.so*"))
    if not found:
        msg = f"the Orthanc DICOMweb plugin is not installed (Debian package orthanc-dicomweb; looked in {PLUGIN_FOLDER})"
        raise PeerError(msg)
    return found[-1]


def require_dicomweb() -> None:
    """Skip on a workstation, fail under ``CI=true``, when Orthanc or its DICOMweb plugin is missing."""
    try:
        find_tool("Orthanc")
        dicomweb_plugin()
    except PeerError as exc:
        unavailable(str(exc))


def running_dicomweb(workdir: Path, **kwargs: Any) -> Iterator[DicomWebOrthanc]:
    """A ``DicomWebOrthanc`` in ``workdir`` for the life of a fixture (``yield from``); skip or fail when it is not installed."""
    require_dicomweb()
    with DicomWebOrthanc(workdir, **kwargs) as orthanc:
        yield orthanc


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class DicomWebOrthanc(Orthanc):
    """An Orthanc serving DICOMweb at ``dicomweb_url``; ``users`` (basic) or ``bearer_token`` make it require credentials."""

    def __init__(self, workdir: Path, *, users: Mapping[str, str] | None = None, bearer_token: str | None = None, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.users = dict(users or {})
        self.bearer_token = bearer_token
        if self.users:
            self.rest_auth = httpx.BasicAuth(*next(iter(self.users.items())))
        elif bearer_token is not None:
            self.rest_auth = _Bearer(bearer_token)

    @property
    def dicomweb_url(self) -> str:
        """The base URL of the DICOMweb service (the prefix of ``/studies``)."""
        return f"{self.url}{DICOMWEB_ROOT}"

    def configuration(self) -> dict[str, Any]:
        """Orthanc's configuration with the plugin, and the credentials it requires."""
        config = super().configuration()
        config["Plugins"] = [str(dicomweb_plugin())]
        config["DicomWeb"] = {"Enable": True, "Root": f"{DICOMWEB_ROOT}/", "EnableWado": False, "Host": self.host, "Ssl": False}
        if self.users:
            config["AuthenticationEnabled"] = True
            config["RegisteredUsers"] = self.users
        if self.bearer_token is not None:
            script = self.workdir / "bearer.lua"
            expected = json.dumps(f"Bearer {self.bearer_token}")  # a JSON string is a valid Lua string literal here
            script.write_text(
                "function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)\n"
                f"  return httpHeaders['authorization'] == {expected}\n"
                "end\n",
                encoding="utf-8",
            )
            config["LuaScripts"] = [str(script)]
        return config
