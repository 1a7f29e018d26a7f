"""The File Meta of received files written directly (``guard.runtime.file_meta``) is byte for byte what pydicom writes."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

from hypothesis import example, given, settings
from hypothesis import strategies as strat
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import create_file_meta

from guard.runtime import file_meta

_uids = (
    strat.lists(strat.integers(0, 10**12), min_size=1, max_size=10)
    .map(lambda parts: "1." + ".".join(map(str, parts)))
    .filter(lambda uid: len(uid) <= 64)
)
_any_text = strat.text(alphabet=strat.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=70)


def _pydicom_bytes(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    out = BytesIO()
    write_file_meta_info(out, create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=syntax))
    return out.getvalue()


def _direct_bytes(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    out = BytesIO()
    file_meta.write(out, file_meta.prepare(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=syntax))
    return out.getvalue()


def _outcome(write: Callable[[str, str, str], bytes], sop_instance: str) -> bytes | str:
    """The bytes written, or the kind of error raised (pydicom refuses an empty UID, for one)."""
    try:
        return write("1.2.840.10008.5.1.4.1.1.2", sop_instance, ExplicitVRLittleEndian)
    except (ValueError, AttributeError) as error:
        return type(error).__name__


@settings(max_examples=80, deadline=None)
@given(
    sop_class=_uids,
    sop_instance=_uids,
    syntax=strat.sampled_from([ImplicitVRLittleEndian, ExplicitVRLittleEndian, "1.2.840.10008.1.2.4.50"]),
)
@example(sop_class="1.2", sop_instance="1.23", syntax=ImplicitVRLittleEndian)  # even and odd lengths
def test_plain_uids_are_written_directly_with_the_same_bytes(sop_class: str, sop_instance: str, syntax: str) -> None:
    """Plain UIDs take the direct path, and the bytes are pydicom's."""
    assert isinstance(
        file_meta.prepare(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=syntax), file_meta.PreparedFileMeta
    )
    assert _pydicom_bytes(sop_class, sop_instance, syntax) == _direct_bytes(sop_class, sop_instance, syntax)


@settings(max_examples=60, deadline=None)
@given(sop_instance=_any_text)
@example(sop_instance="1.2.3 ")
@example(sop_instance="1." + "2" * 70)
@example(sop_instance=" ")  # empty once padding is stripped: pydicom refuses it, and so does the direct path
def test_any_other_value_is_left_to_pydicom(sop_instance: str) -> None:
    """A hostile or malformed instance UID from the command set gives exactly what pynetdicom would have written."""
    prepared = file_meta.prepare(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop_instance, transfer_syntax=ExplicitVRLittleEndian
    )
    if not file_meta._PLAIN_UID.fullmatch(sop_instance):
        assert not isinstance(prepared, file_meta.PreparedFileMeta)
    assert _outcome(_direct_bytes, sop_instance) == _outcome(_pydicom_bytes, sop_instance)


def test_configure_dicom_installs_it(tmp_path: object) -> None:
    """The guard's processes receive through the direct writer (``configure_dicom``)."""
    from pathlib import Path  # noqa: PLC0415 - local to this test

    from pynetdicom import dimse_messages  # noqa: PLC0415 - idem

    from guard import runtime  # noqa: PLC0415 - idem

    runtime.configure_dicom(Path(str(tmp_path)))
    assert dimse_messages.create_file_meta is file_meta.prepare  # type: ignore[attr-defined]
    assert dimse_messages.write_file_meta_info is file_meta.write  # type: ignore[attr-defined]
