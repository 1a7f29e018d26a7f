"""DICOM UID grammar (PS3.5 section 9.1).

A UID is at most 64 characters of digits and dots; each component is a number without a
leading zero (a single ``0`` is allowed). Anything received from a peer is checked with
``require_uid`` before it is used in a path or stored.
"""

from __future__ import annotations

import re

from guard.domain.errors import InvalidUIDError

MAX_UID_LENGTH = 64
_COMPONENT = r"(?:0|[1-9][0-9]*)"
_UID_RE = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")


def is_valid_uid(value: object) -> bool:
    """Tell whether ``value`` is a string that follows the DICOM UID grammar."""
    return isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH and _UID_RE.fullmatch(value) is not None


def require_uid(value: object, what: str) -> str:
    """Return ``value`` when it is a valid UID, else raise ``InvalidUIDError`` naming ``what``."""
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        msg = f"{what} is not a valid DICOM UID: {shown}"
        raise InvalidUIDError(msg)
    return str(value)
