"""The retriever ``verify.retrieve`` names; ``auto`` asks by C-GET and falls back to C-MOVE when the archive refuses C-GET."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import structlog

from guard.config.settings import ArchiveProtocol, Settings
from guard.config.verify import RetrieveMethod
from guard.dicom.net import archive_peer
from guard.dicom.retrieve import CGetRetriever, KindsOf, RetrieveNotOfferedError
from guard.domain.errors import PermanentPeerError
from guard.ledger.byte_checks import instance_kinds
from guard.ledger.ledger import Ledger
from guard.services.qr.inflight import RelayRegistry
from guard.services.verify.move import CMoveRetriever
from guard.services.verify.retriever import ByteRetriever
from guard.services.verify.verifier import ByteVerifier
from guard.spool import Spool
from guard.web.dicomweb import DicomWebArchive

log = structlog.get_logger("guard.services.verify")


class NoMoveDestination:
    """C-MOVE needs the listener of ``guard serve`` (a command run from a shell has none): always refuses.

    The archive sends a C-MOVE's instances to the guard's AE title, that is to the listener of
    ``guard serve`` (in its own process or not, ``guard.app.listener_moves``); a process without
    that listener would ask for instances it can never receive.
    """

    method = "c-move"

    def __init__(self, settings: Settings) -> None:
        """Explain the refusal for the configuration of ``settings``."""
        where = (
            "this process has no DICOM listener (a command run from a shell, such as guard delete); "
            "ask the running guard instead (the admin API's DELETE /studies/{uid})"
        )
        if settings.verify.retrieve is RetrieveMethod.C_MOVE:
            method, remedy = "verify.retrieve = c-move", "; or use verify.retrieve = auto or c-get if the archive serves C-GET"
        else:
            method = "the archive refused C-GET, and the fallback C-MOVE"
            remedy = "; or let the archive serve C-GET to the guard's AE title"
        self.reason = f"{method}: C-MOVE delivers the archive's instances to the guard's own DICOM listener, and {where}{remedy}"

    def digests(self, study_uid: str, series_uid: str, sop_instance_uids: Sequence[str]) -> Mapping[str, str]:  # noqa: ARG002 - the protocol's signature
        """Raise: the instances could not arrive anywhere."""
        raise PermanentPeerError(self.reason)


class AutoRetriever:
    """C-GET while the archive accepts it; once it refuses the C-GET model, C-MOVE from then on (remembered for the process)."""

    def __init__(self, get: CGetRetriever, move: ByteRetriever) -> None:
        """Try ``get`` first, ``move`` when the archive does not offer C-GET."""
        self.get = get
        self.move = move
        self._use_move = False
        self._lock = threading.Lock()

    @property
    def method(self) -> str:
        """The method in use now."""
        return "c-move" if self._use_move else "c-get"

    def digests(self, study_uid: str, series_uid: str, sop_instance_uids: Sequence[str]) -> Mapping[str, str]:
        """Retrieve by the method in use; switch to C-MOVE on the first refusal of C-GET."""
        if not self._use_move:
            try:
                return self.get.digests(study_uid, series_uid, sop_instance_uids)
            except RetrieveNotOfferedError as exc:
                with self._lock:
                    self._use_move = True
                log.warning("verify.c_get_not_offered", action="verify.c_get_not_offered", error=str(exc), fallback="c-move")
        return self.move.digests(study_uid, series_uid, sop_instance_uids)


def make_retriever(settings: Settings, kinds_of: KindsOf, registry: RelayRegistry | None) -> ByteRetriever:
    """The retriever for ``settings.verify``: WADO-RS for a DICOMweb archive; else C-GET and/or C-MOVE.

    Without a ``registry`` (no listener in this process) C-MOVE cannot be used.
    """
    verify = settings.verify
    if settings.archive.protocol is ArchiveProtocol.DICOMWEB:
        return DicomWebArchive(settings.archive, timeout=verify.timeout)
    get = CGetRetriever(
        settings.node.ae_title, archive_peer(settings.archive), timeout=verify.timeout, compare=verify.compare, kinds_of=kinds_of
    )
    move: ByteRetriever = NoMoveDestination(settings) if registry is None else CMoveRetriever(settings, registry, compare=verify.compare)
    if verify.retrieve is RetrieveMethod.C_GET:
        return get
    if verify.retrieve is RetrieveMethod.C_MOVE:
        return move
    return AutoRetriever(get, move)


def build_verifier(settings: Settings, ledger: Ledger, spool: Spool, registry: RelayRegistry | None) -> ByteVerifier:
    """The byte verifier of ``settings.verify``, retrieving as ``make_retriever`` chooses."""
    retriever = make_retriever(settings, lambda uids: instance_kinds(ledger, uids), registry)
    return ByteVerifier(settings, ledger, spool, retriever)
