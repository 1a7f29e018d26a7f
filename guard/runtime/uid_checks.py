"""pydicom's and pynetdicom's UID checks, skipped for a value already found valid.

Every UID that pynetdicom decodes or sets (an A-ASSOCIATE-RQ's application context, abstract and
transfer syntaxes and implementation class, the acceptor's own, the UIDs of every DIMSE command)
is made a pydicom ``UID``, which checks it against the UI value rules (``validate_value``, a
regular expression and a length), and most are checked again by pynetdicom's own ``validate_ui``
(``utils.set_uid``, which makes a second ``UID`` of it). An association set-up runs about fifty
of these, nearly always on the same few dozen strings.

A check of a valid value has no effect: no warning, no log line, no exception. So a value that
passed once passes again without being checked: ``install()`` replaces pydicom's
``validate_value`` (as ``pydicom.uid`` calls it) and pynetdicom's UI validator with versions that
remember the valid values (``LIMIT`` of them; the set is emptied when full). Any other value, any
other VR, a validator of the caller's own, or pynetdicom's strict conformance mode being changed in
between is handled by the original function, so warnings, log lines and exceptions for invalid
UIDs are exactly pydicom's and pynetdicom's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pydicom.uid
from pydicom import config as pydicom_config
from pydicom.valuerep import VALIDATORS, validate_value
from pynetdicom import _config as pynetdicom_config
from pynetdicom._validators import validate_ui

#: Most valid values remembered by each check. The values that recur (an association set-up's)
#: are a few dozen; each instance's own UIDs pass through once and only fill the set, which is
#: emptied when full, so a small limit keeps the recurring ones as well as a large one does. At
#: 4,096 a full set held about 3 MB of ``UID`` objects, and a process has two or three of them.
LIMIT = 1024

_pydicom_validate_value = validate_value
_pydicom_ui_validator: Callable[[str, Any], tuple[bool, str]] = VALIDATORS["UI"]
_pynetdicom_validate_ui = validate_ui

#: UI values pydicom's validator accepted.
_valid_values: set[str] = set()
#: UI values pynetdicom's ``validate_ui`` accepted (that pydicom accepted too), by conformance mode.
_valid_for_pynetdicom: dict[bool, set[str]] = {False: set(), True: set()}
_installed = False
_install_lock = threading.Lock()


def _remember(values: set[str], value: str) -> None:
    if len(values) >= LIMIT:
        values.clear()
    values.add(value)


def _is_plain_str(value: Any) -> bool:
    """A ``str`` or pydicom ``UID``: hashable, and compared as its text."""
    return type(value) is str or type(value) is pydicom.uid.UID


def checked_validate_value(
    vr: str, value: Any, validation_mode: int, validator: Callable[[str, Any], tuple[bool, str]] | None = None
) -> None:
    """Pydicom's ``validate_value``; a UI value pydicom's own validator accepted before is not checked again."""
    plain_ui = vr == "UI" and validator is None and _is_plain_str(value) and VALIDATORS.get("UI") is _pydicom_ui_validator
    if not plain_ui or validation_mode == pydicom_config.IGNORE:
        _pydicom_validate_value(vr, value, validation_mode, validator)
        return
    if value in _valid_values:
        return
    if _pydicom_ui_validator(vr, value)[0]:
        _remember(_valid_values, value)
        return
    _pydicom_validate_value(vr, value, validation_mode, validator)  # warns or raises, as pydicom does


def checked_validate_ui(value: Any) -> tuple[bool, str]:
    """Pynetdicom's ``validate_ui``; a value it accepted before (in the same conformance mode) is not checked again.

    Only values pydicom also accepted are remembered: for those the ``UID`` that ``validate_ui``
    makes has no effect of its own.
    """
    if not _is_plain_str(value):
        return _pynetdicom_validate_ui(value)
    enforce = bool(pynetdicom_config.ENFORCE_UID_CONFORMANCE)
    remembered = _valid_for_pynetdicom[enforce]
    if value in remembered:
        return True, ""
    result = _pynetdicom_validate_ui(value)
    if result[0] and value in _valid_values:
        _remember(remembered, value)
    return result


def install() -> None:
    """Put both checks in place (once per process)."""
    global _installed  # noqa: PLW0603 - one process-wide switch, set once
    with _install_lock:
        if _installed:
            return
        pydicom.uid.validate_value = checked_validate_value  # type: ignore[attr-defined]
        if pynetdicom_config.VALIDATORS.get("UI") is _pynetdicom_validate_ui:
            pynetdicom_config.VALIDATORS["UI"] = checked_validate_ui
        _installed = True
