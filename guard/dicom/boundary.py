"""The boundary around every inbound DICOM handler, like pynetdicom's ``service_class.attempt``.

A handler answers what it expects itself (a refusal, a decode failure, a full disk). Whatever it
did not expect is caught here: logged with its traceback, reported once per cause (throttled,
``guard.domain.throttle``: a handler failing on every request must not become one audit record
per request), and answered with the failure status the service names, never Success
(invariant 1) and never a dead association thread (invariant 6).

``DecodeGuard`` does the same one level down, for what pynetdicom raises while decoding a DIMSE
message in the association's own thread, before any handler runs: a command set without a
Command Field (0000,0100) ends in ``AttributeError`` there (PS3.7 6.3.1 makes the field
mandatory). The association is aborted, as pynetdicom does for a message it cannot convert
(Evt19, PS3.8 9.2), and the cause reported instead of a thread traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, cast

import structlog
from pydicom import Dataset
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from guard.domain.throttle import AUDIT_WINDOW, RefusalThrottle, Reporter
from guard.runtime.commands import store_response_bytes

log = structlog.get_logger("guard.dicom.boundary")

Handler = Callable[[Any], Any]


def _address(event_or_assoc: Any) -> str:
    assoc = getattr(event_or_assoc, "assoc", event_or_assoc)
    return str(getattr(getattr(assoc, "requestor", None), "address", "") or "")


def _calling(assoc: Any) -> str:
    return str(getattr(getattr(assoc, "requestor", None), "ae_title", "") or "").strip()


def failure_answer(status: int, exc: BaseException) -> Dataset:
    """A failure status with an Error Comment (LO, 64 characters) naming the kind of error, not its text."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = f"internal error: {exc.__class__.__name__}"[:64]
    return ds


class HandlerBoundary:
    """Wraps handlers so that an unexpected error becomes a failure status, a log line and a throttled report."""

    def __init__(self, report: Reporter, window: float = AUDIT_WINDOW) -> None:
        """Report to ``report(address, cause, detail)``, at most once per address and cause per ``window`` seconds."""
        self._report = RefusalThrottle(report, window)

    def failed(self, assoc: Any, service: str, exc: BaseException, status: int | None) -> None:
        """Record an unexpected error of ``service``'s handler (``status``: what the peer was answered)."""
        cause = f"{service}:{exc.__class__.__name__}"
        log.error("handler.failed", action="handler.failed", service=service, error=repr(exc)[:300], exc_info=exc)
        detail: dict[str, Any] = {"service": service, "calling_ae": _calling(assoc), "error": f"{exc.__class__.__name__}: {exc}"[:300]}
        if status is not None:
            detail["status"] = f"0x{status:04X}"
        try:
            self._report(_address(assoc), cause, detail)
        except Exception:  # the report itself failing must not take the answer with it
            log.exception("handler.report_failed", action="handler.report_failed", service=service)

    def plain(self, service: str, handler: Handler, status: int) -> Handler:
        """A handler returning one answer: an unexpected error answers ``status``."""

        @functools.wraps(handler)
        def guarded(event: Any) -> Any:
            try:
                return handler(event)
            except Exception as exc:  # noqa: BLE001 - the handler boundary: log, report, answer a failure status
                self.failed(event.assoc, service, exc, status)
                return failure_answer(status, exc)

        return guarded

    def pairs(self, service: str, handler: Handler, status: int) -> Handler:
        """A handler returning (status, data set) (N-ACTION, N-EVENT-REPORT): an unexpected error answers (``status``, None)."""

        @functools.wraps(handler)
        def guarded(event: Any) -> Any:
            try:
                return handler(event)
            except Exception as exc:  # noqa: BLE001 - the handler boundary: log, report, answer a failure status
                self.failed(event.assoc, service, exc, status)
                return failure_answer(status, exc), None

        return guarded

    def find(self, service: str, handler: Handler, status: int) -> Handler:
        """A C-FIND generator: an unexpected error ends the responses with ``status`` (PS3.4 C.4.1.1.4)."""

        @functools.wraps(handler)
        def guarded(event: Any) -> Iterator[Any]:
            try:
                yield from handler(event)
            except Exception as exc:  # noqa: BLE001 - the handler boundary: log, report, answer a failure status
                self.failed(event.assoc, service, exc, status)
                yield failure_answer(status, exc), None

        return guarded

    def move(self, service: str, handler: Handler, expected: tuple[type[BaseException], ...]) -> Handler:
        """A C-MOVE generator: an unexpected error is reported, then left to pynetdicom, which answers 0xC5xx.

        pynetdicom's C-MOVE SCP answers a handler that raised with a failure status that depends on
        where in the protocol it raised (destination, count, sub-operations); the generator cannot
        answer for itself there. ``expected`` errors were audited by the handler already.
        """

        @functools.wraps(handler)
        def guarded(event: Any) -> Iterator[Any]:
            try:
                yield from handler(event)
            except expected:
                raise
            except Exception as exc:
                self.failed(event.assoc, service, exc, None)
                raise

        return guarded

    def guard_decoding(self, event: Any) -> None:
        """``EVT_CONN_OPEN`` handler: decode this association's DIMSE messages inside ``DecodeGuard``."""
        dimse = getattr(event.assoc, "dimse", None)
        if type(dimse) is DIMSEServiceProvider:
            dimse.__class__ = DecodeGuard
            cast("DecodeGuard", dimse).boundary = self


class DecodeGuard(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, aborting (and reporting) a message it cannot decode instead of dying with it."""

    boundary: HandlerBoundary

    def receive_primitive(self, primitive: Any) -> None:
        """Decode as pynetdicom does; a message that breaks the decoder aborts the association (Evt19)."""
        try:
            super().receive_primitive(primitive)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
            self.message = None
            self.boundary.failed(self.assoc, "dimse-decode", exc, None)
            self.dul.event_queue.put("Evt19")

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send as pynetdicom does; a C-STORE response goes as its command set, written directly, in one P-DATA.

        pynetdicom turns every response into a message object and a pydicom data set before
        encoding it; for the one response sent per received instance that was about a sixth of
        the receiving thread's work. The bytes are the ones pynetdicom would send
        (``store_response_bytes``, compared in ``tests/unit/test_commands.py``); anything unusual
        (an Offending Element, a handler bound to EVT_DIMSE_SENT, a PDU too small for the command
        set) goes through pynetdicom.
        """
        if (
            type(primitive) is C_STORE
            and primitive.MessageIDBeingRespondedTo is not None
            and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            encoded = store_response_bytes(primitive)
            limit = self.maximum_pdu_size
            if encoded is not None and (limit == 0 or len(encoded) <= limit - 6):
                pdata = P_DATA()
                # Message Control Header 0x03: command, last fragment (PS3.8 E.2).
                pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)
