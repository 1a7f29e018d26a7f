"""DCMTK's echoscu and storescu get the same association answer from the prepared negotiation as from pynetdicom's own.

Each case runs the same real DCMTK tool twice against one in-process guard: once as the guard
runs (``guard.runtime.negotiation``), once with pynetdicom's own ``negotiate_as_acceptor`` put
back. The A-ASSOCIATE-AC (or -RJ) that DCMTK prints (``-d``: every context's result, accepted
transfer syntax and role) and the statuses of the responses must be the same.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from pynetdicom import acse

from guard.runtime import negotiation
from guard.runtime.negotiation import SupportedContexts
from tests.integration.inprocess import GUARD_AE, SOURCE_AE, running_guard
from tests.support.datasets import make_study
from tests.support.dcmtk import run_tool
from tests.support.ports import LOOPBACK

if TYPE_CHECKING:
    from pathlib import Path

    from guard.app import GuardService

# The association answer as DCMTK prints it; the timestamps of the log prefix are not part of it.
_ANSWER = re.compile(r"=+ BEGIN A-ASSOCIATE-(?:AC|RJ) =+\n(.*?)=+ END A-ASSOCIATE-(?:AC|RJ) =+", re.DOTALL)
_REJECTED = re.compile(r"Association Rejected:\n.*Result: .*\n.*Reason: .*")
# The status of each DIMSE response (only responses carry one), as -d prints it: "0x0000".
_STATUS = re.compile(r"DIMSE Status\s+: (0x[0-9A-Fa-f]{4})")


def _answer(output: str) -> str:
    """The A-ASSOCIATE-AC as printed, or the result, source and reason of an A-ASSOCIATE-RJ."""
    found = _ANSWER.search(output)
    if found is not None:
        return found.group(1)
    rejected = _REJECTED.search(output)
    assert rejected is not None, output[-3000:]
    return rejected.group(0)


def _run(tool: str, service: GuardService, args: list[str], files: list[str]) -> tuple[str, list[str], int]:
    """The association answer, the store statuses and the exit status of one run of ``tool``."""
    network = ["-d", "-aet", SOURCE_AE, "-aec", GUARD_AE, "-to", "10", "-ta", "10", "-td", "10"]
    result = run_tool(tool, [*network, *args, LOOPBACK, str(service.settings.node.port), *files], timeout=60)
    output = result.stdout + result.stderr
    return _answer(output), _STATUS.findall(output), result.returncode


def _both_ways(
    monkeypatch: pytest.MonkeyPatch, service: GuardService, tool: str, args: list[str], files: list[str] | None = None
) -> tuple[str, list[str], int]:
    """Run ``tool`` with the guard's negotiation and with pynetdicom's; both runs must agree. The guard's run is returned."""
    assert acse.negotiate_as_acceptor is negotiation.negotiate_as_acceptor  # type: ignore[attr-defined]
    assert service.server is not None
    assert isinstance(service.server.contexts, SupportedContexts)
    prepared = _run(tool, service, args, files or [])
    with monkeypatch.context() as patch:
        patch.setattr(acse, "negotiate_as_acceptor", negotiation.pynetdicom_negotiate_as_acceptor)
        reference = _run(tool, service, args, files or [])
    assert prepared == reference
    return prepared


# storescu's transfer syntax proposals: uncompressed (explicit VR first), little endian, big
# endian, implicit only, JPEG lossless, RLE and deflated (each with the uncompressed ones), and
# only the required contexts.
STORESCU_OPTIONS = [["-x="], ["-xe"], ["-xb"], ["-xi"], ["-xs"], ["-xr"], ["-xd"], ["-R", "-xe"]]


@pytest.mark.parametrize("options", STORESCU_OPTIONS, ids=" ".join)
def test_storescu_is_answered_as_pynetdicom_answers_for_each_transfer_syntax_proposal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str]
) -> None:
    """Storescu with each -x option: the same contexts accepted with the same transfer syntax, and both instances stored."""
    study = make_study(tmp_path / "study", 2)
    with running_guard(tmp_path) as (service, _archive):
        answer, statuses, code = _both_ways(monkeypatch, service, "storescu", options, [str(p) for p in study.paths])
    assert code == 0
    assert statuses == ["0x0000", "0x0000"]
    assert "(Accepted)" in answer


def test_echoscu_is_answered_as_pynetdicom_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """echoscu: Verification accepted the same way by both."""
    with running_guard(tmp_path) as (service, _archive):
        answer, _statuses, code = _both_ways(monkeypatch, service, "echoscu", [])
    assert code == 0
    assert "(Accepted)" in answer


def test_a_source_without_store_has_its_storage_contexts_refused_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source allowed only Storage Commitment: storescu's storage contexts refused (abstract syntax not supported) by both."""
    study = make_study(tmp_path / "study", 1)
    sources = {"sources": [{"ae_title": SOURCE_AE, "host": LOOPBACK, "port": 11112, "services": ["commit"]}]}
    with running_guard(tmp_path, **sources) as (service, _archive):
        answer, statuses, code = _both_ways(monkeypatch, service, "storescu", ["-xe"], [str(study.paths[0])])
    assert code != 0
    assert statuses == []
    assert "(Accepted)" not in answer
    assert "Abstract Syntax Not Supported" in answer or "abstract syntax not supported" in answer.lower()


def test_an_unknown_calling_ae_is_rejected_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AE title that is no source: A-ASSOCIATE-RJ, the same from both."""
    with running_guard(tmp_path) as (service, _archive):
        network = ["-d", "-aet", "STRANGER", "-aec", GUARD_AE, "-to", "10", "-ta", "10", "-td", "10"]
        runs = []
        for reference in (False, True):
            with monkeypatch.context() as patch:
                if reference:
                    patch.setattr(acse, "negotiate_as_acceptor", negotiation.pynetdicom_negotiate_as_acceptor)
                result = run_tool("echoscu", [*network, LOOPBACK, str(service.settings.node.port)], timeout=60)
            runs.append((_answer(result.stdout + result.stderr), result.returncode))
    assert runs[0] == runs[1]
    assert runs[0][1] != 0
    assert "Rejected" in runs[0][0] or "REJECT" in runs[0][0].upper()
