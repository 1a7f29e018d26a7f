"""Byte retrieval by C-MOVE to the guard itself, for archives that do not offer C-GET.

The archive moves the instances to the guard's own AE title; its C-STORE sub-operations arrive
on the guard's listener, which hands those of a registered move to it (``RelayRegistry``, the
same mechanism as the C-MOVE relay, ``guard.services.qr``). Each arrives in its temporary file,
is digested and removed at once; nothing enters the spool or the forwarding queue.

With the listener in a process of its own (``node.listener_process``) the registry is a
``guard.app.listener_moves.ListenerMoves``: the listener process is told each move and hands its
instances over. The archive must know the guard's AE title and address (as it already must to
report Storage Commitment).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping, Sequence

from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from guard.config.settings import Settings
from guard.config.verify import CompareMode
from guard.dicom.net import archive_peer
from guard.dicom.retrieve import check_final, digest_file, retrieve_query
from guard.domain.comparison import DigestError
from guard.domain.errors import ArchiveUnreachableError, TransientPeerError
from guard.services.qr.common import RelayRequest
from guard.services.qr.inflight import ActiveRelay, ArchiveDone, RelayRegistry
from guard.services.qr.move import ArchiveMove

_POLL = 0.1


class CMoveRetriever:
    """A ``ByteRetriever`` by C-MOVE with the guard as Move Destination."""

    method = "c-move"

    def __init__(self, settings: Settings, registry: RelayRegistry, *, compare: CompareMode) -> None:
        """Move from the archive of ``settings`` to the guard; the listener matches the sub-operations in ``registry``."""
        self.settings = settings
        self.registry = registry
        self.compare = compare

    def digests(self, study_uid: str, series_uid: str, sop_instance_uids: Sequence[str]) -> Mapping[str, str]:
        """SOP Instance UID -> digest of what the archive moved to the guard; an instance it did not move is absent."""
        wanted = set(sop_instance_uids)
        if not wanted:
            return {}
        relay = self.registry.open(self.settings.archive.ae_title, wanted)
        request = RelayRequest(
            calling_ae=self.settings.node.ae_title,
            peer_address="",
            model=str(StudyRootQueryRetrieveInformationModelMove),
            identifier=retrieve_query(study_uid, series_uid, sorted(wanted)),
        )
        mover = ArchiveMove(self.settings, request, relay)
        mover.start()
        try:
            found, received, broken, done = self._collect(relay, mover, wanted)
        finally:
            self.registry.close(relay)
            mover.join(self.settings.query.timeout)
        if broken:
            msg = f"C-MOVE from {self.settings.archive.ae_title}: the guard could not read what arrived ({broken[0]})"
            raise TransientPeerError(msg)
        if done.status is None:
            msg = f"C-MOVE to {self.settings.archive.ae_title}: {done.error}"
            raise ArchiveUnreachableError(msg)
        check_final(done.status, done.error, "C-MOVE", archive_peer(self.settings.archive), delivered=received > 0)
        return found

    def _collect(self, relay: ActiveRelay, mover: ArchiveMove, wanted: set[str]) -> tuple[dict[str, str], int, list[str], ArchiveDone]:
        """Digest each arrival until the archive's final answer; (digests, arrivals, the guard's own read errors, the answer)."""
        found: dict[str, str] = {}
        broken: list[str] = []
        received = 0
        idle = self.settings.verify.timeout
        idle_until = time.monotonic() + idle
        while True:
            try:
                item = relay.inbox.get(timeout=_POLL)
            except queue.Empty:
                if time.monotonic() > idle_until:
                    mover.abort()
                    msg = f"C-MOVE to {self.settings.archive.ae_title}: nothing from the archive for {idle:g} s"
                    raise TransientPeerError(msg) from None
                continue
            idle_until = time.monotonic() + idle
            if isinstance(item, ArchiveDone):
                return found, received, broken, item
            received += 1
            try:
                if item.sop_instance_uid in wanted:
                    found[item.sop_instance_uid] = digest_file(item.path, self.compare)
            except DigestError:
                pass  # absent from ``found``: not a copy that matches
            except OSError as exc:  # the guard's own disk: no evidence about the copy
                broken.append(str(exc))
            finally:
                relay.done_with(item)
