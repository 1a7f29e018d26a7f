"""The one seam of outbound DICOM: the AE builder, the DIMSE loops, and pynetdicom outcomes as ``PeerError``.

Every outbound conversation of the guard (C-ECHO, C-FIND, C-STORE, N-ACTION, N-EVENT-REPORT,
C-MOVE, C-GET) is made with an AE from ``outbound_ae`` on an association from ``associated`` (or
``guard.dicom.net.open_association`` for one held open), and every answer is read by
``status_of`` and, when it is a failure, turned into a ``PeerError`` by ``peer_failure``:

- no association: ``ArchiveUnreachableError`` (``guard.dicom.net.open_association``);
- no response (timeout, association lost): ``TransientPeerError``;
- a failure status: ``TransientPeerError`` when retrying may help (0xA7xx, 0x0110, 0x0213),
  ``PermanentPeerError`` otherwise (``guard.domain.status.is_transient``).

C-FIND and C-MOVE responses are read by one loop each (``find_responses``, ``move_responses``):
pending responses (PS3.4 C.4.1.1.4, C.4.2.1.5) go to the caller as they arrive, the final one is
the loop's return value.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from guard.dicom.net import Peer, open_association
from guard.domain import status as st
from guard.domain.errors import PeerError, PermanentPeerError, TransientPeerError

T = TypeVar("T")
R = TypeVar("R")


def outbound_ae(own_ae: str, timeout: float, contexts: Iterable[str] = (), *, max_pdu: int | None = None) -> AE:
    """An AE for outbound associations: every pynetdicom timeout is ``timeout``, proposing ``contexts``."""
    ae = AE(ae_title=own_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    if max_pdu is not None:
        ae.maximum_pdu_size = max_pdu
    for context in contexts:
        ae.add_requested_context(context)
    return ae


@contextmanager
def associated(ae: AE, peer: Peer, handlers: list[Any] | None = None, **kwargs: Any) -> Iterator[Association]:
    """An association with ``peer`` for one conversation, released at its end (unless it already ended)."""
    assoc = open_association(ae, peer, handlers or [], **kwargs)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def status_of(response: Dataset | None, what: str, peer: Peer) -> int:
    """The Status (0000,0900) of a response; no response at all raises ``TransientPeerError``."""
    if response is None or "Status" not in response:
        msg = f"{what} to {peer.ae_title}: no response (association lost or timed out)"
        raise TransientPeerError(msg)
    return int(response.Status)


def peer_failure(code: int, what: str, peer: Peer, comment: str = "") -> PeerError:
    """The ``PeerError`` for a failure status ``code`` answered to ``what``: transient or permanent by the status."""
    detail = f"{peer.ae_title} answered the {what} with 0x{code:04X} ({st.describe(code)})" + (f": {comment}" if comment else "")
    if st.is_transient(code):
        return TransientPeerError(detail, status=code)
    return PermanentPeerError(detail, status=code)


def expect_success(response: Dataset | None, what: str, peer: Peer) -> int:
    """The status of a response that must be Success (or a Warning); anything else raises a ``PeerError``."""
    code = status_of(response, what, peer)
    if not st.is_success(code):
        raise peer_failure(code, what, peer, comment_of(response))
    return code


def comment_of(response: Dataset | None) -> str:
    """The Error Comment (0000,0902) of a response, or empty."""
    return "" if response is None else str(response.get("ErrorComment", "") or "").strip()


def find_responses(assoc: Association, query: Dataset, model: str, peer: Peer) -> Generator[tuple[int, Dataset], None, Dataset]:
    """The one C-FIND loop: yield (pending status, identifier) per match as it arrives, return the final response.

    No response raises ``TransientPeerError``; a final failure is returned, for the caller to relay
    or raise (``find_all``).
    """
    for response, identifier in assoc.send_c_find(query, model):
        code = status_of(response, "C-FIND", peer)
        if code not in st.PENDING_STATUSES:
            return response
        if identifier is not None:
            yield code, identifier
    msg = f"C-FIND to {peer.ae_title}: no final response"
    raise TransientPeerError(msg)


def find_all(own_ae: str, peer: Peer, query: Dataset, model: str, *, timeout: float) -> Iterator[Dataset]:
    """C-FIND ``peer`` on an association of its own and yield each match as it arrives; a failure raises ``PeerError``."""
    with associated(outbound_ae(own_ae, timeout, [model]), peer) as assoc:
        responses = find_responses(assoc, query, model, peer)
        while True:
            try:
                _, identifier = next(responses)
            except StopIteration as end:
                final: Dataset = end.value
                break
            yield identifier
        code = int(final.Status)
        if code != st.SUCCESS:
            raise peer_failure(code, "C-FIND", peer, comment_of(final))


MoveFinal = tuple[Dataset, Dataset | None]


def move_responses(
    assoc: Association, identifier: Dataset, destination: str, model: str, peer: Peer, *, msg_id: int = 1
) -> Generator[Dataset, None, MoveFinal]:
    """The one C-MOVE loop: yield each pending response (with its sub-operation counts), return the final one.

    The final response comes with its identifier (the Failed SOP Instance UID List, PS3.4
    C.4.2.1.4.2), as the peer sent them. No response raises ``TransientPeerError``.
    """
    return _retrieve_responses(assoc.send_c_move(identifier, destination, model, msg_id=msg_id), "C-MOVE", peer)


def get_responses(
    assoc: Association, identifier: Dataset, model: str, peer: Peer, *, msg_id: int = 1
) -> Generator[Dataset, None, MoveFinal]:
    """The one C-GET loop (PS3.4 C.4.3): as ``move_responses``; the C-STOREs arrive on the same association, to its EVT_C_STORE handler."""
    return _retrieve_responses(assoc.send_c_get(identifier, model, msg_id=msg_id), "C-GET", peer)


def _retrieve_responses(responses: Iterable[tuple[Dataset, Dataset | None]], what: str, peer: Peer) -> Generator[Dataset, None, MoveFinal]:
    for response, answer in responses:
        code = status_of(response, what, peer)
        if code not in st.PENDING_STATUSES:
            return response, answer
        yield response
    msg = f"{what} to {peer.ae_title}: no final response"
    raise TransientPeerError(msg)


def drain(responses: Generator[T, None, R], on_item: Callable[[T], object] = lambda _: None) -> R:
    """Run a response loop to its end, handing each pending item to ``on_item``; return its final value."""
    while True:
        try:
            item = next(responses)
        except StopIteration as end:
            return cast("R", end.value)
        on_item(item)


def cancel(assoc: Association, model: str, msg_id: int) -> bool:
    """Send C-CANCEL for request ``msg_id`` (PS3.7 9.3.2.3); False when it could not be sent."""
    for context in assoc.accepted_contexts:
        if str(context.abstract_syntax) == model:
            try:
                assoc.send_c_cancel(msg_id, context.context_id)
            except (RuntimeError, ValueError, OSError):
                return False
            return True
    return False


def echo(ae: AE, peer: Peer) -> int:
    """One C-ECHO on an association of its own; anything but Success raises a ``PeerError`` (PS3.7 9.3.5.2: no warnings)."""
    with associated(ae, peer) as assoc:
        response = assoc.send_c_echo()
    code = status_of(response, "C-ECHO", peer)
    if code != st.SUCCESS:
        raise peer_failure(code, "C-ECHO", peer, comment_of(response))
    return code
