"""UID checks remembered for valid values warn, log and raise exactly as pydicom's and pynetdicom's own checks."""

from __future__ import annotations

import warnings
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import config as pydicom_config
from pydicom.uid import UID
from pynetdicom import _config as pynetdicom_config

from guard.runtime import uid_checks

# Valid UIDs, non-conformant ones (leading zeros, letters, too long, spaces, empty), and repeats of each.
_values = st.one_of(
    st.sampled_from(["1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.02.3", "1.2.3 ", " 1.2", "", "1.2.a", "9" * 70]),
    st.from_regex(r"[0-9.]{0,70}", fullmatch=True),
    st.text(max_size=12),
)
_modes = st.sampled_from([pydicom_config.IGNORE, pydicom_config.WARN, pydicom_config.RAISE])


def _outcome(check: Any, *args: Any) -> tuple[Any, list[str]]:
    """What a call does that anyone could see: its answer or exception, and its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            answer: Any = check(*args)
        except ValueError as exc:
            answer = ("ValueError", str(exc))
    return answer, [str(w.message) for w in caught]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_values, _modes), max_size=12))
def test_pydicom_validation_of_ui_values_is_pydicoms_for_any_sequence_of_values_and_modes(calls: list[tuple[str, int]]) -> None:
    """Any sequence of UI values (valid, invalid, repeated) in any validation mode: the same warnings and exceptions as pydicom."""
    for value, mode in calls:
        expected = _outcome(uid_checks._pydicom_validate_value, "UI", value, mode)
        assert _outcome(uid_checks.checked_validate_value, "UI", value, mode) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_values, st.booleans()), max_size=12))
def test_pynetdicom_validation_of_uids_is_pynetdicoms_for_any_sequence_of_values_and_conformance_modes(
    calls: list[tuple[str, bool]],
) -> None:
    """Any sequence of values, with pynetdicom's strict conformance switched on and off between them: the same answers and warnings."""
    saved = pynetdicom_config.ENFORCE_UID_CONFORMANCE
    try:
        for value, enforce in calls:
            pynetdicom_config.ENFORCE_UID_CONFORMANCE = enforce
            expected = _outcome(uid_checks._pynetdicom_validate_ui, value)
            assert _outcome(uid_checks.checked_validate_ui, value) == expected
    finally:
        pynetdicom_config.ENFORCE_UID_CONFORMANCE = saved


def test_the_checks_are_in_place_and_a_uid_is_still_a_pydicom_uid() -> None:
    """After ``install`` pydicom and pynetdicom call the remembering checks, and UIDs are made as before."""
    import pydicom.uid  # noqa: PLC0415 - the module whose name is replaced

    uid_checks.install()
    assert pydicom.uid.validate_value is uid_checks.checked_validate_value  # type: ignore[attr-defined]
    assert pynetdicom_config.VALIDATORS["UI"] is uid_checks.checked_validate_ui
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        uid = UID("1.2.a")
    assert uid == "1.2.a"
    assert caught
