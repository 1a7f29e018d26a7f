"""Thin wrappers around the DCMTK command-line tools, run as the test's real peers.

Every tool runs with ``TCP_NODELAY=1`` (see ``processes.peer_env``), talks to 127.0.0.1
peers chosen by the caller, and is bounded by a timeout. ``Storescp`` is a storage SCP
that receives into a folder of its own (module ``storescp``, re-exported here).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread

from tests.support.ports import LOOPBACK
from tests.support.processes import PeerError, find_tool, peer_env
from tests.support.storescp import Storescp

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pydicom.dataset import Dataset

# Storescp lives in its own module; it is re-exported here with the other DCMTK wrappers.
__all__ = [
    "LOOPBACK",
    "DcmtkError",
    "Storescp",
    "echoscu",
    "failed_sop_instance_uids",
    "final_response",
    "findscu",
    "move_responses",
    "movescu",
    "run_tool",
    "store_responses",
    "storescu",
]


class DcmtkError(PeerError):
    """A DCMTK tool failed: non-zero exit, or no successful final response."""

    def __init__(self, message: str, result: subprocess.CompletedProcess[str]) -> None:
        """Keep the finished process so callers can inspect its output."""
        super().__init__(f"{message}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}")
        self.result = result


def run_tool(tool: str, args: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run DCMTK ``tool`` with ``args``, capture its text output, kill it after ``timeout`` s."""
    return subprocess.run(
        [find_tool(tool), *args],
        capture_output=True,
        text=True,
        errors="replace",
        env=peer_env(),
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _network_args(calling_ae: str, called_ae: str, timeout: float, max_pdu: int | None) -> list[str]:
    """Build the AE title, timeout and PDU options shared by the SCU tools."""
    seconds = str(max(1, int(timeout)))
    args = ["-aet", calling_ae, "-aec", called_ae, "-to", seconds, "-ta", seconds, "-td", seconds]
    if max_pdu is not None:
        args += ["-pdu", str(max_pdu)]
    return args


def _key_args(level: str, keys: Mapping[str, str]) -> list[str]:
    """Build ``-k`` options: the query level, then each key (an empty value is a return key)."""
    args = ["-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    return args


def storescu(
    host: str,
    port: int,
    paths_or_dir: Path | Sequence[Path],
    *,
    calling_ae: str,
    called_ae: str,
    timeout: float = 120,
    max_pdu: int | None = None,
    extra_args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Send files with ``storescu`` on one association and return the finished process.

    A directory is scanned recursively by storescu itself (``+sd +r``), which avoids argv
    limits for large studies; a sequence sends exactly those files. The result is not
    checked: a test decides whether a failure was expected (``storescu -nh`` via
    ``extra_args`` keeps sending after a refused instance).
    """
    if isinstance(paths_or_dir, Path):
        inputs = ["+sd", "+r", str(paths_or_dir)] if paths_or_dir.is_dir() else [str(paths_or_dir)]
    else:
        inputs = [str(path) for path in paths_or_dir]
    args = ["-v", *_network_args(calling_ae, called_ae, timeout, max_pdu), *extra_args, host, str(port), *inputs]
    return run_tool("storescu", args, timeout=timeout)


_STORE_RESPONSE = re.compile(r"Received Store Response \((.*)\)\s*$", re.MULTILINE)
_FINAL_RESPONSE = re.compile(r"Received Final (?:Find|Move|Get) Response \((.*)\)\s*$", re.MULTILINE)


def store_responses(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Return the status text of each C-STORE response in a ``storescu`` log, in order.

    For example ``["Success", "Success"]``; DCMTK prints a failure as its status name or
    code in hex.
    """
    return _STORE_RESPONSE.findall(result.stdout + result.stderr)


def final_response(result: subprocess.CompletedProcess[str]) -> str | None:
    """Return the status text of the final C-FIND or C-MOVE response (``"Success"``), or None.

    None means no final response came (association rejected or aborted). movescu and
    findscu exit 0 even after an abort, so tests check this instead of the exit status.
    """
    found = _FINAL_RESPONSE.findall(result.stdout + result.stderr)
    return str(found[-1]) if found else None


def echoscu(
    host: str,
    port: int,
    *,
    calling_ae: str = "ECHOSCU",
    called_ae: str = "ANY-SCP",
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Send one C-ECHO with ``echoscu`` and return the finished process (exit 0 on success)."""
    return run_tool("echoscu", [*_network_args(calling_ae, called_ae, timeout, None), host, str(port)], timeout=timeout)


def findscu(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    level: str,
    keys: Mapping[str, str],
    timeout: float = 60,
    model: str = "-S",
) -> list[Dataset]:
    """Run a C-FIND (Study Root by default) and return every response identifier.

    The responses are extracted by findscu itself (``-X``) into a temporary folder and read
    back in order, which is sturdier than parsing its log. Raise ``DcmtkError`` unless the
    final response is Success (rejected or aborted association, failure status).
    """
    with tempfile.TemporaryDirectory(prefix="findscu-") as out:
        # -v logs the final response (checked below), -sr keeps the answers out of the log.
        args = [
            "-v",
            "-sr",
            model,
            *_network_args(calling_ae, called_ae, timeout, None),
            *_key_args(level, keys),
            "-X",
            "-od",
            out,
            host,
            str(port),
        ]
        result = run_tool("findscu", args, timeout=timeout)
        status = final_response(result)
        if result.returncode != 0 or status != "Success":
            msg = f"findscu to {called_ae}@{host}:{port} failed: exit {result.returncode}, final response {status}"
            raise DcmtkError(msg, result)
        return [dcmread(path, force=True) for path in sorted(Path(out).glob("rsp*.dcm"))]


def movescu(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    move_destination: str,
    level: str,
    keys: Mapping[str, str],
    timeout: float = 120,
    model: str = "-S",
    debug: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Ask ``called_ae`` to C-MOVE the matching instances to ``move_destination``.

    The destination must be a separate SCP known to the mover (movescu opens no port of its
    own here). Returns the finished process: check ``final_response(result) == "Success"``,
    as movescu exits 0 even when the association is aborted. With ``debug`` every response
    is dumped with its sub-operation counts: read them with ``move_responses``.
    """
    args = [
        "-d" if debug else "-v",
        model,
        *_network_args(calling_ae, called_ae, timeout, None),
        "-aem",
        move_destination,
        *_key_args(level, keys),
        host,
        str(port),
    ]
    return run_tool("movescu", args, timeout=timeout)


_DIMSE_BLOCK = re.compile(r"Message Type\s*: C-MOVE RSP(.*?)END DIMSE MESSAGE", re.DOTALL)
_COUNT = re.compile(r"(Remaining|Completed|Failed|Warning) Suboperations\s*: (\d+)")
_STATUS = re.compile(r"DIMSE Status\s*: 0x([0-9a-fA-F]{4})")
_FAILED_UID = re.compile(r"\(0008,0058\) UI \[([^\]]*)\]")


def move_responses(result: subprocess.CompletedProcess[str]) -> list[dict[str, int]]:
    """Every C-MOVE response of a ``movescu(..., debug=True)`` run, in order.

    Each is ``{"status": 0xFF00, "remaining": 2, "completed": 1, "failed": 0, "warning": 0}``;
    a count the response did not carry is left out.
    """
    responses = []
    for block in _DIMSE_BLOCK.findall(result.stdout + result.stderr):
        status = _STATUS.search(block)
        response = {name.lower(): int(value) for name, value in _COUNT.findall(block)}
        if status is not None:
            response["status"] = int(status.group(1), 16)
        responses.append(response)
    return responses


def failed_sop_instance_uids(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The Failed SOP Instance UID List (0008,0058) of the final C-MOVE response, from a ``debug`` run."""
    found = _FAILED_UID.findall(result.stdout + result.stderr)
    return [uid for uid in found[-1].split("\\") if uid] if found else []
