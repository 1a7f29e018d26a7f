"""The interface of every byte retriever (DIMSE C-GET or C-MOVE, DICOMweb WADO-RS)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class ByteRetriever(Protocol):
    """Retrieves instances of one series from the archive and digests each one as it streams; nothing is kept."""

    def digests(self, study_uid: str, series_uid: str, sop_instance_uids: Sequence[str]) -> Mapping[str, str]:
        """SOP Instance UID -> hex SHA-256 of the retrieved data set (file meta excluded, same rule as guard.spool's receive digest).

        With ``verify.compare = content`` the digest is ``guard.domain.comparison.content_digest`` of
        the retrieved data set instead. An instance the archive did not return is absent.
        Raises ArchiveUnreachableError / TransientPeerError / PermanentPeerError (guard.domain.errors).
        """
        ...
