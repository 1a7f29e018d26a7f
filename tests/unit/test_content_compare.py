"""The content comparison (``verify.compare = content``): what it treats as the same instance, and what not."""

from __future__ import annotations

import importlib.machinery
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian

from guard.config.verify import CompareMode, VerifySettings
from guard.domain.comparison import content_digest, exact_digest
from tests.support.datasets import make_study


def _reencoded(path: Path) -> bytes:
    """The same instance written again in Implicit VR Little Endian, as an archive that transcodes would."""
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return out.getvalue()


def test_a_transcoded_copy_matches_by_content_and_not_exactly(tmp_path: Path) -> None:
    """Another transfer syntax changes the exact digest but not the content digest; a changed pixel changes both."""
    [path] = make_study(tmp_path / "study", 1, rows=16, columns=16, patient_id="CONTENT").paths
    original = path.read_bytes()
    transcoded = _reencoded(path)
    assert exact_digest([original]) != exact_digest([transcoded])
    assert content_digest(dcmread(BytesIO(original))) == content_digest(dcmread(BytesIO(transcoded)))

    damaged = dcmread(BytesIO(transcoded))
    pixels = bytearray(damaged.PixelData)
    pixels[0] ^= 0xFF
    damaged.PixelData = bytes(pixels)
    assert content_digest(damaged) != content_digest(dcmread(BytesIO(original)))


def test_content_compare_is_refused_at_load_without_a_pixel_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without numpy, verify.compare = content is a configuration error naming the extra, not a failure at every check."""
    real = importlib.machinery.PathFinder.find_spec
    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec", lambda name, *a: None if name == "numpy" else real(name, *a))
    with pytest.raises(ValueError, match="guard\\[content\\]"):
        VerifySettings(compare=CompareMode.CONTENT)
    assert VerifySettings(compare=CompareMode.EXACT).compare is CompareMode.EXACT
