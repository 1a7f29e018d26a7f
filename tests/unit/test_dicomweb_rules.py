import hashlib
import io
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.domain.digest import NotPart10Error, dataset_offset, dataset_sha256
from guard.domain.errors import ArchiveUnreachableError, PeerError, PermanentPeerError, TransientPeerError
from guard.web.errors import status_error
from guard.web.multipart import DicomParts, boundary_of, related_body
from guard.web.stow import stow_outcome

BASE = "https://vna.example/dicom-web"
SOP = "1.2.3.4.5"


def _part10(dataset: bytes, meta_extra: bytes = b"") -> bytes:
    """A minimal Part 10 file: preamble, DICM, a File Meta Information Group Length and ``meta_extra``, then ``dataset``."""
    group_length = len(meta_extra)
    return b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + group_length.to_bytes(4, "little") + meta_extra + dataset


def _response(*, failed: int | None = None, stored: bool = False, warning: int | None = None) -> dict[str, object]:
    body: dict[str, object] = {"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}}
    item = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}, "00081155": {"vr": "UI", "Value": [SOP]}}
    if failed is not None:
        body["00081198"] = {"vr": "SQ", "Value": [{**item, "00081197": {"vr": "US", "Value": [failed]}}]}
    if stored:
        extra = {} if warning is None else {"00081196": {"vr": "US", "Value": [warning]}}
        body["00081199"] = {"vr": "SQ", "Value": [{**item, **extra}]}
    return body


@given(
    dataset=st.binary(max_size=3000),
    meta=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=3500), max_size=8),
)
def test_the_digest_is_the_same_however_the_file_is_cut(dataset: bytes, meta: bytes, cuts: list[int]) -> None:
    """Fed in chunks of any sizes, the digest is the SHA-256 of the data set alone, the file meta excluded."""
    raw = _part10(dataset, meta)
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    chunks = [raw[a:b] for a, b in itertools.pairwise(points)]
    assert hashlib.sha256(dataset).hexdigest() == dataset_sha256(chunks)
    assert len(raw) - len(dataset) == dataset_offset(raw[:144])


def test_the_digest_ignores_the_file_meta() -> None:
    """Two files with one data set and different file meta have one digest."""
    assert dataset_sha256([_part10(b"DATA", b"\x02\x00\x13\x00")]) == dataset_sha256([_part10(b"DATA", b"")])


@pytest.mark.parametrize("raw", [b"", b"\0" * 200, _part10(b"", b"META")[:-2]])
def test_not_a_part10_file_has_no_digest(raw: bytes) -> None:
    """No DICM header, or a file that ends inside its file meta: NotPart10Error, never a digest."""
    with pytest.raises(NotPart10Error):
        dataset_sha256([raw])


@given(dataset=st.binary(max_size=5000), chunk=st.integers(min_value=1, max_value=700))
def test_a_related_body_reads_back_as_one_dicom_part(dataset: bytes, chunk: int) -> None:
    """The STOW-RS body written around a file parses back, chunk by chunk, to the file's digest; its length is exact."""
    raw = _part10(dataset)
    body = related_body(io.BytesIO(raw), len(raw))
    data = b"".join(body.chunks)
    assert len(data) == body.length
    boundary = boundary_of(body.content_type)
    assert boundary is not None
    parts = DicomParts(boundary)
    for start in range(0, len(data), chunk):
        parts.feed(data[start : start + chunk])
    assert (True, [hashlib.sha256(dataset).hexdigest()], 0) == (parts.complete, parts.digests, parts.malformed)


def test_a_body_cut_short_is_not_complete() -> None:
    """A multipart body without its closing boundary is reported incomplete (the retrieve is retried, not trusted)."""
    raw = _part10(b"DATA")
    body = related_body(io.BytesIO(raw), len(raw))
    data = b"".join(body.chunks)
    parts = DicomParts(boundary_of(body.content_type) or "")
    parts.feed(data[:-10])
    assert not parts.complete


def test_a_single_part_content_type_has_no_boundary() -> None:
    """application/dicom is not multipart; multipart without a boundary is a permanent failure."""
    assert boundary_of("application/dicom") is None
    with pytest.raises(PermanentPeerError):
        boundary_of('multipart/related; type="application/dicom"')


@pytest.mark.parametrize(
    ("code", "body", "expected"),
    [
        (200, _response(stored=True), 0x0000),
        (200, None, 0x0000),
        (202, _response(stored=True, warning=0xB000), 0xB000),
        (202, _response(stored=True, warning=0xB007), 0xB007),
    ],
)
def test_stored_instances_return_their_status(code: int, body: object, expected: int) -> None:
    """A Referenced SOP Sequence item is stored: Success, or its Warning Reason (0008,1196)."""
    assert expected == stow_outcome(code, body, BASE)


@pytest.mark.parametrize(
    ("code", "body", "error", "status"),
    [
        (409, _response(failed=0xA700), TransientPeerError, 0xA700),
        (202, _response(failed=0xA7FF), TransientPeerError, 0xA7FF),
        (409, _response(failed=0x0110), TransientPeerError, 0x0110),
        (409, _response(failed=0x0213), TransientPeerError, 0x0213),
        (409, _response(failed=0xA900), PermanentPeerError, 0xA900),
        (409, _response(failed=0xC000), PermanentPeerError, 0xC000),
        (409, _response(failed=0xC122), PermanentPeerError, 0xC122),
        (409, _response(failed=0x0122), PermanentPeerError, 0x0122),
        (409, _response(failed=0x0124), PermanentPeerError, 0x0124),
        (400, _response(), PermanentPeerError, None),
        (409, None, PermanentPeerError, None),
        (413, None, PermanentPeerError, None),
        (415, None, PermanentPeerError, None),
        (500, None, TransientPeerError, None),
        (408, None, TransientPeerError, None),
        (401, None, ArchiveUnreachableError, None),
        (403, _response(failed=0xA900), ArchiveUnreachableError, None),
        (404, None, ArchiveUnreachableError, None),
        (429, None, ArchiveUnreachableError, None),
        (503, _response(failed=0xA900), ArchiveUnreachableError, None),
        (302, None, ArchiveUnreachableError, None),
    ],
)
def test_stow_failures_map_to_transient_or_permanent(code: int, body: object, error: type[PeerError], status: int | None) -> None:
    """The Failure Reason decides like a C-STORE status; without one, the HTTP status; the archive's own troubles are 'unreachable'."""
    with pytest.raises(PeerError) as raised:
        stow_outcome(code, body, BASE)
    assert (error, status) == (type(raised.value), raised.value.status)


def test_credential_refusals_say_what_to_check() -> None:
    """401 and 403 name the settings to check; the message never carries a credential."""
    message = str(status_error(401, "QIDO-RS", BASE, "Unauthorized"))
    assert "refused the credentials (check archive.auth and its file)" in message
