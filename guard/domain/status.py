"""DIMSE status codes the guard answers with or interprets (PS3.4 and PS3.7 Annex C)."""

from __future__ import annotations

SUCCESS = 0x0000

# Storage Service Class, PS3.4 B.2.3
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
WARNING_COERCION = 0xB000
WARNING_ELEMENTS_DISCARDED = 0xB006
WARNING_DOES_NOT_MATCH = 0xB007

# PS3.7 C.5: general failures
REFUSED_NOT_AUTHORIZED = 0x0124
SOP_CLASS_NOT_SUPPORTED = 0x0122
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
NO_SUCH_ACTION_TYPE = 0x0123
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
CLASS_INSTANCE_CONFLICT = 0x0119
RESOURCE_LIMITATION = 0x0213


def is_success(status: int) -> bool:
    """Success, or a Warning (0x0001, 0xB000-0xBFFF), both mean the peer stored the instance."""
    return status == SUCCESS or status == 0x0001 or 0xB000 <= status <= 0xBFFF  # noqa: PLR1714 - reads as the standard's list


def is_transient(status: int) -> bool:
    """Out of resources (0xA7xx) and the general "try later" statuses are worth retrying."""
    return 0xA700 <= status <= 0xA7FF or status in {RESOURCE_LIMITATION, PROCESSING_FAILURE}


def describe(status: int) -> str:
    """A short human description of a storage status."""
    if is_success(status):
        return "success" if status == SUCCESS else "warning"
    if 0xA700 <= status <= 0xA7FF:
        return "refused: out of resources"
    if 0xA900 <= status <= 0xA9FF:
        return "error: data set does not match SOP class"
    if 0xC000 <= status <= 0xCFFF:
        return "error: cannot understand"
    return {
        REFUSED_NOT_AUTHORIZED: "refused: not authorized",
        SOP_CLASS_NOT_SUPPORTED: "refused: SOP class not supported",
        PROCESSING_FAILURE: "processing failure",
    }.get(status, "failure")


# Query/Retrieve Service Class: C-FIND (PS3.4 C.4.1.1.4) and C-MOVE (PS3.4 C.4.2.1.5)
PENDING = 0xFF00
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
UNABLE_TO_CALCULATE_MATCHES = 0xA701
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC001
SUBOPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
#: pynetdicom's C-MOVE SCP answer when the handler raised before the sub-operations (PS3.4 C.4.2.1.5: 0xCxxx).
MOVE_UNABLE_TO_PROCESS = 0xC513
#: The one set of pending statuses: more responses follow (PS3.4 C.4.1.1.4, C.4.2.1.5).
PENDING_STATUSES = frozenset({PENDING, PENDING_WARNING})
