"""multipart/related bodies of DICOMweb (PS3.18 media types; RFC 2387), streamed both ways.

``related_body`` writes one ``application/dicom`` part around a file handle, chunk by chunk,
with the exact length up front (``Content-Length``: no chunked encoding, which not every
archive's HTTP server takes). ``DicomParts`` reads a response as it arrives
(python-multipart's streaming parser) and feeds each part's bytes to a ``DatasetDigest``:
nothing of a retrieved copy is kept but its digest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from guard.domain.digest import DatasetDigest, NotPart10Error
from guard.domain.errors import PermanentPeerError

DICOM_MEDIA_TYPE = "application/dicom"
DICOM_JSON = "application/dicom+json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RelatedBody:
    """A multipart/related body: its Content-Type, its length and the chunks to send."""

    content_type: str
    length: int
    chunks: Iterator[bytes]


def related_body(fh: BinaryIO, size: int) -> RelatedBody:
    """One ``application/dicom`` part holding the ``size`` bytes read from ``fh``, as it is read."""
    boundary = uuid.uuid4().hex  # 128 random bits: never found inside a data set by chance
    head = f"--{boundary}\r\nContent-Type: {DICOM_MEDIA_TYPE}\r\n\r\n".encode("ascii")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")

    def chunks() -> Iterator[bytes]:
        yield head
        while chunk := fh.read(_CHUNK):
            yield chunk
        yield tail

    content_type = f'multipart/related; type="{DICOM_MEDIA_TYPE}"; boundary={boundary}'
    return RelatedBody(content_type, len(head) + size + len(tail), chunks())


def boundary_of(content_type: str) -> str | None:
    """The boundary of a ``multipart/related`` Content-Type; None for a single-part body."""
    media, params = parse_options_header(content_type)
    if media.lower() != b"multipart/related":
        return None
    boundary = params.get(b"boundary", b"")
    if not boundary:
        msg = f"multipart response without a boundary: {content_type!r}"
        raise PermanentPeerError(msg)
    return boundary.decode("latin-1")


@dataclass
class DicomParts:
    """Feed a multipart/related body in chunks; ``digests`` holds one entry per DICOM part, in order."""

    boundary: str
    digests: list[str] = field(default_factory=list)
    malformed: int = 0
    _current: DatasetDigest | None = None
    _ended: bool = False

    def __post_init__(self) -> None:
        """Set up the streaming parser."""
        self._parser = MultipartParser(
            self.boundary,
            {
                "on_part_begin": self._begin,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_end": self._finish,
            },
        )

    def _begin(self) -> None:
        self._current = DatasetDigest()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:
            return
        try:
            self._current.update(data[start:end])
        except NotPart10Error:
            self._current = None
            self.malformed += 1

    def _end(self) -> None:
        if self._current is None:
            return
        try:
            self.digests.append(self._current.hexdigest())
        except NotPart10Error:
            self.malformed += 1
        self._current = None

    def _finish(self) -> None:
        self._ended = True

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the body."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            msg = f"malformed multipart response: {exc}"
            raise PermanentPeerError(msg) from exc

    @property
    def complete(self) -> bool:
        """Whether the closing boundary has been read (else the body was cut short)."""
        return self._ended
