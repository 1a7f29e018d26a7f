"""Reloading the certificates the guard serves with, without a restart (``kill -HUP``).

On SIGHUP ``guard serve`` calls ``reload_certificates``: the DICOM TLS contexts are built again
from ``tls.certificate``, ``tls.private_key`` and ``tls.ca_file`` and the admin API's HTTPS
certificate from ``http.certificate`` and ``http.private_key``. Associations and requests in
flight keep the certificate they started with; new ones get the new one. When a file cannot
be used (half-written, wrong key for the certificate) the previous certificate stays in use and
the failure is audited, so a botched rotation never takes the service down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from guard.config.settings import Settings
from guard.dicom import tls
from guard.domain.errors import GuardError
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.ledger import Ledger
from guard.runtime import tls as tls_contexts

log = structlog.get_logger("guard.services.certificates")

#: Reloads the HTTPS certificate and returns its SHA-256 fingerprint.
HttpsReload = Callable[[], str]


def reload_certificates(settings: Settings, ledger: Ledger, https: HttpsReload | None = None) -> bool:
    """Reload every configured certificate; audit the outcome as ``config.loaded`` (reload: certificates)."""
    loaded: dict[str, Any] = {}
    errors: list[str] = []
    if tls.in_use(settings):
        try:
            loaded["dicom_tls_sha256"] = tls_contexts.reload().certificate_sha256
        except GuardError as exc:
            errors.append(f"dicom tls: {exc}")
    if https is not None:
        try:
            loaded["https_sha256"] = https()
        except GuardError as exc:
            errors.append(f"https: {exc}")
    outcome = Outcome.FAILURE if errors else Outcome.SUCCESS
    detail: dict[str, Any] = {"reload": "certificates", **loaded}
    if errors:
        detail["errors"] = errors
        log.error("certificates.reload_failed", action="certificates.reload_failed", errors=errors)
    ledger.audit_or_log(AuditEvent.CONFIG_LOADED, outcome, actor=settings.node.ae_title, detail=detail)
    return not errors
