"""The query/retrieve relay as the listener sees it: three handlers, each taking the pynetdicom event.

Only configured sources may query or retrieve through the guard; anyone else (in practice the
archive, admitted to deliver commitment reports) is refused and a ``security.alert`` written.
The handlers stay plain functions of the event so the listener can wrap them (admission,
limits) without knowing what they do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from pydicom import Dataset

from guard.config.settings import Settings
from guard.domain import status as st
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.ledger import Ledger
from guard.services.qr.common import FIND_MODELS, MOVE_MODELS, status_dataset
from guard.services.qr.find import FindRelay
from guard.services.qr.inflight import RelayRegistry
from guard.services.qr.move import MoveNotPossibleError, MoveRelay

log = structlog.get_logger("guard.qr")

#: The Query/Retrieve SOP classes the guard serves as SCP.
SUPPORTED_MODELS: tuple[str, ...] = (*FIND_MODELS, *MOVE_MODELS)


class QueryRetrieveRelay:
    """C-FIND and C-MOVE SCP for sources, relayed to the archive."""

    def __init__(self, settings: Settings, ledger: Ledger, registry: RelayRegistry | None = None) -> None:
        """Relay for the sources and archive named by ``settings``; audit into ``ledger``; moves in flight in ``registry``."""
        self.settings = settings
        self.ledger = ledger
        self.find = FindRelay(settings, ledger)
        self.move = MoveRelay(settings, ledger, registry)

    def on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """EVT_C_FIND."""
        if not self._from_source(event, "find"):
            yield status_dataset(st.REFUSED_NOT_AUTHORIZED, "only sources may query the guard"), None
            return
        yield from self.find.on_find(event)

    def on_move(self, event: Any) -> Iterator[Any]:
        """EVT_C_MOVE."""
        if not self._from_source(event, "move"):
            # Raised before the first yield: pynetdicom answers 0xC514 (Unable to Process).
            msg = "only sources may retrieve through the guard"
            raise MoveNotPossibleError(msg)
        yield from self.move.on_move(event)

    def take_store(self, event: Any) -> Dataset | None:
        """The answer to a C-STORE sub-operation of a relayed move, or None for an ordinary C-STORE."""
        return self.move.take_store(event)

    def _from_source(self, event: Any, service: str) -> bool:
        calling = str(event.assoc.requestor.ae_title).strip()
        if self.settings.source(calling) is not None:
            return True
        self.ledger.audit_or_log(
            AuditEvent.SECURITY_ALERT,
            Outcome.REFUSED,
            actor=calling,
            peer_address=str(event.assoc.requestor.address),
            detail={"alert": f"{service}-from-non-source"},
        )
        return False
