"""Patient identifiers out of the log when asked; secrets out of logs and configuration errors always."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as hs

from guard import runtime
from guard.config.settings import load_settings, redacted
from guard.domain.errors import ConfigError
from guard.domain.redaction import MASK, _mask_secrets, is_patient_key, scrub_text

SECRET = "s3cr3t-Zq9-token"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Capture the JSON log lines; structlog's defaults are restored afterwards."""
    stream = io.StringIO()
    yield stream
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _audit_like_line() -> None:
    structlog.get_logger("test").info(
        "instance.received",
        action="instance.received",
        patient_id="PAT-0042",
        study_uid="1.2.3",
        PatientName="DOE^JANE",
        evidence={"archive": ["1.2.3.4"], "AccessionNumber": "ACC77", "patient_birth_date": "19700101"},
    )


def test_patient_identifiers_are_left_out_when_asked(log_stream: io.StringIO) -> None:
    """With redaction on, Patient ID, name, accession number and birth date vanish, nested ones too; UIDs stay."""
    runtime.configure_logging(stream=log_stream, redact_patient_data=True)
    _audit_like_line()
    (line,) = _lines(log_stream)
    assert "PAT-0042" not in log_stream.getvalue()
    assert "DOE^JANE" not in log_stream.getvalue()
    assert "ACC77" not in log_stream.getvalue()
    assert "19700101" not in log_stream.getvalue()
    assert line["study_uid"] == "1.2.3"
    assert line["evidence"] == {"archive": ["1.2.3.4"]}
    assert line["event"] == "instance.received"


def test_patient_identifiers_are_logged_by_default(log_stream: io.StringIO) -> None:
    """Without the setting the log line is complete (the default for a workstation)."""
    runtime.configure_logging(stream=log_stream)
    _audit_like_line()
    (line,) = _lines(log_stream)
    assert line["patient_id"] == "PAT-0042"
    assert line["PatientName"] == "DOE^JANE"


def test_secrets_are_masked_whatever_the_setting(log_stream: io.StringIO) -> None:
    """Tokens under a secret's name, passwords in URLs and bearer headers never reach the log."""
    runtime.configure_logging(stream=log_stream)
    structlog.get_logger("test").warning(
        "backend.failed",
        token=SECRET,
        db_password=SECRET,
        url=f"postgresql+psycopg://guard:{SECRET}@db/guard",
        error=f"request to https://admin:{SECRET}@pacs/studies failed; header Authorization: Bearer {SECRET}",
    )
    text = log_stream.getvalue()
    assert SECRET not in text
    (line,) = _lines(log_stream)
    assert line["token"] == MASK
    assert line["url"] == f"postgresql+psycopg://guard:{MASK}@db/guard"
    assert f"https://admin:{MASK}@pacs/studies" in line["error"]


def test_exception_text_is_scrubbed(log_stream: io.StringIO) -> None:
    """A traceback that quotes a URL with a password is masked too (the scrubber runs after format_exc_info)."""
    runtime.configure_logging(stream=log_stream)
    try:
        msg = f"cannot connect to postgresql://guard:{SECRET}@db/guard"
        raise RuntimeError(msg)  # noqa: TRY301 - raised to be logged with its traceback
    except RuntimeError:
        structlog.get_logger("test").exception("ledger.unreachable")
    assert SECRET not in log_stream.getvalue()
    assert "ledger.unreachable" in log_stream.getvalue()


@pytest.mark.parametrize("key", ["patient_id", "PatientID", "patient-name", "PatientBirthDate", "accession_number", "OtherPatientIDs"])
def test_patient_keys_in_any_spelling(key: str) -> None:
    """The keys are recognised whatever their case or separators."""
    assert is_patient_key(key)


@pytest.mark.parametrize("key", ["study_uid", "sop_instance_uid", "peer_address", "actor", "patient_count"])
def test_other_keys_are_not_patient_keys(key: str) -> None:
    """UIDs, addresses and counts are not patient identifiers here."""
    assert not is_patient_key(key)


def test_scrub_text_leaves_plain_urls() -> None:
    """A URL without credentials is left as it is."""
    assert scrub_text("http://127.0.0.1:8042/studies") == "http://127.0.0.1:8042/studies"


def test_config_error_does_not_echo_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid value under a secret's key is reported by name, never by value."""
    monkeypatch.delenv("GUARD_CONFIG", raising=False)
    path = tmp_path / "guard.toml"
    path.write_text(f'[http]\ntoken = ["{SECRET}"]\n[ledger]\nurl = "postgresql+psycopg://guard:{SECRET}@db/guard"\nbogus = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "http.token" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_redacted_configuration_masks_credentials_in_every_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``guard config check`` data: the delete backend URL's password is masked like the ledger's."""
    monkeypatch.delenv("GUARD_CONFIG", raising=False)
    path = tmp_path / "guard.toml"
    path.write_text(f'[delete]\nbackend = "orthanc"\nurl = "http://orthanc:{SECRET}@pacs:8042"\n[http]\ntoken = "{SECRET}"\n')
    data = redacted(load_settings(path))
    assert SECRET not in json.dumps(data)
    assert data["delete"]["url"] == f"http://orthanc:{MASK}@pacs:8042"
    assert data["http"]["token"] == MASK


# Text around the literals the three secret patterns need, in any case, with and without the rest of a
# secret, and characters that case-insensitive matching could fold (long s, Kelvin sign).
_SECRET_PIECES = [
    "://",
    "postgresql+psycopg://guard:pw@db/guard",
    "Bearer ",
    "bEaReR abc.def",
    "-----BEGIN PRIVATE KEY-----",
    "PRIVATE KEY-----",
]
_FOLDING = ["\u017f", "\u212a", "\u00e9", " ", "\n"]
_texts = hs.lists(hs.one_of(hs.text(max_size=20), hs.sampled_from(_SECRET_PIECES), hs.sampled_from(_FOLDING)), max_size=8).map("".join)


@given(_texts)
def test_scrub_text_without_a_secret_marker_skips_the_patterns_and_answers_the_same(text: str) -> None:
    """The shortcut for text that cannot hold a secret answers exactly as the three substitutions, for any text."""
    assert _mask_secrets(text) == scrub_text(text)


def test_scrub_text_still_masks_each_kind_of_secret() -> None:
    """A URL password, a bearer token and a PEM key are each masked (the shortcut does not skip them)."""
    assert scrub_text("postgresql://guard:pw@db/guard") == f"postgresql://guard:{MASK}@db/guard"
    assert scrub_text("authorization: bearer abc.def") == f"authorization: bearer {MASK}"
    assert scrub_text("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----") == MASK
