"""What never leaves the process in clear: secrets always, patient identifiers when asked.

Two kinds of data are kept out of the stdout log (and, for secrets, out of error messages and
``guard config check``):

- **Secrets**, always: bearer tokens, passwords, the password part of a URL
  (``postgresql+psycopg://guard:PASSWORD@db/guard``), a PEM private key. A value is masked
  when its key names a secret (``token``, ``password``, ``secret``, ``authorization``, ...)
  or when the text itself carries one (a URL with credentials, ``Bearer ...``, a PEM block).
- **Patient identifiers**, when ``log.redact_patient_data`` is on: Patient ID, Patient's Name,
  birth date, accession number, other patient IDs, address. The keys are removed from the log
  line; the audit table in the ledger keeps them (it is the record an administrator queries).

The functions are pure; ``LogScrubber`` is the structlog processor ``runtime.configure_logging``
installs before the JSON renderer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

#: The marker that stands in for a secret.
MASK = "***"

# Keys compared after lower-casing and dropping "_", "-" and spaces, so that ``patient_id``,
# ``PatientID`` and ``patient-id`` are one key.
_PATIENT_KEYS = frozenset(
    {
        "patientid",
        "patientname",
        "patientsname",
        "patientbirthdate",
        "patientsbirthdate",
        "birthdate",
        "dateofbirth",
        "accessionnumber",
        "otherpatientids",
        "otherpatientidssequence",
        "otherpatientnames",
        "patientaddress",
        "patientsaddress",
        "patientmothersbirthname",
        "patientsmothersbirthname",
        "patienttelephonenumbers",
        "patientstelephonenumbers",
        "medicalrecordlocator",
    }
)
_SECRET_SUFFIXES = ("token", "password", "passwd", "secret", "authorization", "apikey", "cookie", "privatekeypem")

_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<secret>[^@/\s]+)@")
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)


@functools.lru_cache(maxsize=1024)
def _normal(key: str) -> str:
    """``key`` lower-cased without spaces, ``_`` and ``-`` (cached: log lines repeat a few hundred keys)."""
    return re.sub(r"[\s_-]", "", key).lower()


def is_patient_key(key: str) -> bool:
    """Whether a field called ``key`` carries a patient identifier."""
    return _normal(key) in _PATIENT_KEYS


def is_secret_key(key: str) -> bool:
    """Whether a field called ``key`` carries a secret (``token``, ``db_password``, ``Authorization``...)."""
    return _normal(key).endswith(_SECRET_SUFFIXES)


def scrub_text(text: str) -> str:
    """``text`` with the secrets it carries masked: URL passwords, bearer tokens, PEM private keys."""
    # Each pattern needs its literal: "://", "bearer" (any case) or "PRIVATE KEY-----". ASCII text
    # without any of them is returned as it is, without running the three substitutions (most
    # values of every log line); other text goes through them.
    if text.isascii() and "://" not in text and "PRIVATE KEY-----" not in text and "bearer" not in text.lower():
        return text
    return _mask_secrets(text)


def _mask_secrets(text: str) -> str:
    """The three substitutions of ``scrub_text``."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
    return _PEM_KEY.sub(MASK, text)


def scrub(value: Any, *, patient_data: bool = False) -> Any:
    """A copy of ``value`` (nested dicts, lists, strings) with secrets masked and, if asked, patient keys removed."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return _scrub_mapping(value, patient_data=patient_data)
    if isinstance(value, (list, tuple)):
        return [scrub(item, patient_data=patient_data) for item in value]
    return value


def _scrub_mapping(mapping: Mapping[Any, Any], *, patient_data: bool) -> dict[Any, Any]:
    clean: dict[Any, Any] = {}
    for key, item in mapping.items():
        name = str(key)
        if patient_data and is_patient_key(name):
            continue
        clean[key] = MASK if is_secret_key(name) and item not in (None, "") else scrub(item, patient_data=patient_data)
    return clean


class LogScrubber:
    """structlog processor: secrets masked always, patient identifiers removed when ``patient_data``."""

    def __init__(self, *, patient_data: bool) -> None:
        """Remove patient identifiers from every log line when ``patient_data`` is True."""
        self.patient_data = patient_data

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Return the cleaned event dict."""
        return _scrub_mapping(event_dict, patient_data=self.patient_data)
