"""Byte retrieval by C-GET (PS3.4 C.4.3): the archive hands instances back on the guard's own association.

The guard is the C-GET SCU and, on the same association, the Storage SCP of the sub-operations
(SCP role by role selection, PS3.7 D.3.3.4). It proposes each instance's SOP class in exactly
the transfer syntax the instance was received in, so an archive that keeps the bytes sends
them back unchanged (one that would have to transcode refuses the sub-operation, or converts
when it may: the comparison then says so).

Nothing is kept: each data set streams into a temporary file (the process-wide incoming-file
hook of ``guard.runtime``), hashed as it streams, and the file is removed before the
sub-operation is answered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

from guard import runtime
from guard.config.verify import CompareMode
from guard.dicom.conversation import associated, comment_of, drain, get_responses, outbound_ae, peer_failure
from guard.dicom.net import Peer
from guard.domain import status as st
from guard.domain.comparison import DigestError, content_digest, exact_digest
from guard.domain.errors import PermanentPeerError, TransientPeerError

_CHUNK = 1 << 20
#: At most 128 presentation contexts (PS3.8 9.3.2.2); one is the C-GET model.
_MAX_STORAGE_CONTEXTS = 127

#: SOP Instance UID -> (SOP Class UID, Transfer Syntax UID) of the instances to retrieve.
KindsOf = Callable[[Sequence[str]], Mapping[str, tuple[str, str]]]


class RetrieveNotOfferedError(PermanentPeerError):
    """The archive does not accept C-GET (the Study Root GET presentation context was rejected)."""


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def digest_file(path: Path, compare: CompareMode) -> str:
    """The digest of a retrieved Part 10 file by the ``compare`` rule; ``DigestError`` when it cannot be made."""
    if compare is CompareMode.EXACT:
        return exact_digest(_chunks(path))
    try:
        ds = dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        msg = f"the retrieved data set cannot be read: {exc}"
        raise DigestError(msg) from exc
    return content_digest(ds)


def digest_bytes(encoded: bytes, decoded: Dataset | None) -> str:
    """The digest of a data set received in memory: its encoded bytes (exact), or the content of ``decoded`` when given."""
    if decoded is not None:
        return content_digest(decoded)
    return hashlib.sha256(encoded).hexdigest()


def retrieve_query(study_uid: str, series_uid: str, sop_instance_uids: Sequence[str]) -> Dataset:
    """The IMAGE-level identifier naming the instances (Study Root, PS3.4 C.6.2.1)."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = series_uid
    query.SOPInstanceUID = list(sop_instance_uids) if len(sop_instance_uids) > 1 else sop_instance_uids[0]
    return query


def check_final(code: int, comment: str, what: str, archive: Peer, *, delivered: bool) -> None:
    """Raise for a final retrieve status that says nothing about the instances.

    A failure (or "completed with failures") with nothing delivered and no instance named as
    failed means the archive could not serve the request at all: a ``PeerError`` (doubt), not
    absence (evidence against the copies). Only a plain Success with nothing delivered says that
    the archive has none of them.
    """
    if delivered or code == st.SUCCESS:
        return
    if code == st.SUBOPERATIONS_COMPLETE_WITH_FAILURES or not st.is_success(code):
        raise peer_failure(code, what, archive, comment or "no instance delivered and none named as failed")


def _failed_uids(answer: Dataset | None) -> set[str]:
    """The SOP Instance UIDs the final response's Failed SOP Instance UID List names (PS3.4 C.4.3.1.3.1); empty values name none."""
    if answer is None:
        return set()
    try:
        listed = answer.get("FailedSOPInstanceUIDList", "")
    except (AttributeError, KeyError, TypeError, ValueError):
        return set()
    values = [listed] if isinstance(listed, str) else list(listed)
    return {str(uid).strip() for uid in values if str(uid).strip()}


class CGetRetriever:
    """A ``ByteRetriever`` by C-GET; one association per call (one series)."""

    method = "c-get"

    def __init__(self, own_ae: str, archive: Peer, *, timeout: float, compare: CompareMode, kinds_of: KindsOf) -> None:
        """Retrieve from ``archive`` as ``own_ae``; ``kinds_of`` tells each instance's SOP class and received transfer syntax."""
        self.own_ae = own_ae
        self.archive = archive
        self.timeout = timeout
        self.compare = compare
        self.kinds_of = kinds_of

    def digests(self, study_uid: str, series_uid: str, sop_instance_uids: Sequence[str]) -> Mapping[str, str]:
        """SOP Instance UID -> digest of what the archive returned; an instance it did not return is absent."""
        wanted = set(sop_instance_uids)
        if not wanted:
            return {}
        ae, roles = self._ae(sorted(wanted))
        found: dict[str, str] = {}
        received: list[str] = []
        broken: list[str] = []

        def on_store(event: Any) -> int:
            uid = str(event.request.AffectedSOPInstanceUID or "")
            received.append(uid)
            try:
                digest = self._digest_of(event)
            except DigestError:
                return st.CANNOT_UNDERSTAND  # absent from ``found``: not a copy that matches
            except Exception as exc:  # noqa: BLE001 - the sub-operation handler's boundary: the guard's own failure is no evidence
                broken.append(f"{exc.__class__.__name__}: {exc}")
                return st.PROCESSING_FAILURE
            if digest is None:
                return st.OUT_OF_RESOURCES
            if uid in wanted:
                found[uid] = digest
            return st.SUCCESS

        with associated(ae, self.archive, [(evt.EVT_C_STORE, on_store)], ext_neg=roles) as assoc:
            offered = any(str(cx.abstract_syntax) == str(StudyRootQueryRetrieveInformationModelGet) for cx in assoc.accepted_contexts)
            if not offered:
                msg = f"{self.archive.ae_title} does not accept C-GET (Study Root)"
                raise RetrieveNotOfferedError(msg)
            query = retrieve_query(study_uid, series_uid, sorted(wanted))
            final, answer = drain(get_responses(assoc, query, str(StudyRootQueryRetrieveInformationModelGet), self.archive))
        if broken:
            msg = f"C-GET from {self.archive.ae_title}: the guard could not digest what arrived ({broken[0]})"
            raise TransientPeerError(msg)
        named_failed = bool(wanted & _failed_uids(answer))
        check_final(int(final.Status), comment_of(final), "C-GET", self.archive, delivered=bool(received) or named_failed)
        return found

    def _ae(self, uids: list[str]) -> tuple[AE, list[Any]]:
        """The AE proposing the GET model and each instance's SOP class in its received transfer syntax, with the SCP roles."""
        pairs = sorted(set(self.kinds_of(uids).values()))[:_MAX_STORAGE_CONTEXTS]
        ae = outbound_ae(self.own_ae, self.timeout, [StudyRootQueryRetrieveInformationModelGet])
        for sop_class, syntax in pairs:
            ae.add_requested_context(sop_class, [syntax])
        return ae, [build_role(sop_class, scp_role=True) for sop_class in sorted({c for c, _ in pairs})]

    def _digest_of(self, event: Any) -> str | None:
        """The digest of a C-STORE sub-operation's data set; None when it could not be received (the disk)."""
        try:
            streamed = event.dataset_path
        except AttributeError:
            streamed = None
        if streamed is None:
            # Not streamed to a file (a process that did not configure guard.runtime, e.g. a CLI
            # command): the data set's encoded bytes are in memory, as received.
            return digest_bytes(event.request.DataSet.getvalue(), event.dataset if self.compare is CompareMode.CONTENT else None)
        path = Path(streamed)
        try:
            if runtime.take_receive_error(path) is not None:
                return None
            hashed = runtime.streamed_digest(path) if self.compare is CompareMode.EXACT else None
            return hashed or digest_file(path, self.compare)
        finally:
            path.unlink(missing_ok=True)
