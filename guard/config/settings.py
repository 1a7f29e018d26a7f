"""The settings model and how it is loaded.

Precedence, highest first: environment variables ``GUARD_<SECTION>__<KEY>``, then the TOML file
named by ``--config`` or ``GUARD_CONFIG``, then the defaults below. Every key is validated on
load; an error names the key and the problem. ``Settings`` is frozen: services receive it
explicitly and never read configuration from anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from guard.config.unknown import UnknownKey, environment_names, unknown_environment, unknown_file_keys
from guard.config.verify import CompareMode, VerifySettings
from guard.domain.admission import ALL_SERVICES, Service, parse_address_entry
from guard.domain.errors import ConfigError
from guard.domain.redaction import MASK, is_secret_key, scrub, scrub_text

CONFIG_ENV = "GUARD_CONFIG"
_AE_CHARS = set(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~")


def _check_ae_title(value: str) -> str:
    """Validate an AE title: 1 to 16 characters of the default repertoire, not only spaces (PS3.5 6.2)."""
    stripped = value.strip()
    if not stripped or len(value) > 16 or "\\" in value or not set(value) <= _AE_CHARS:
        msg = "must be 1 to 16 printable ASCII characters without backslash"
        raise ValueError(msg)
    return stripped


def _check_fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint: 64 hex digits, colons allowed (``openssl x509 -fingerprint -sha256``); empty = no pin."""
    digits = value.replace(":", "").strip().lower()
    if digits and (len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits)):
        msg = "must be the certificate's SHA-256 fingerprint: 64 hexadecimal digits (colons allowed)"
        raise ValueError(msg)
    return digits


_TLS_DESCRIPTION = (
    "Use DICOM TLS with this peer (PS3.15 Annex B): outbound associations are encrypted and check its certificate"
    " against tls.ca_file; inbound associations from it are refused unless they arrive on the TLS listener (tls.port)."
)
_PIN_DESCRIPTION = (
    "SHA-256 fingerprint of this peer's certificate (hex, colons allowed). When set, a TLS association with this AE title"
    " is refused unless the peer presents exactly this certificate (pinning). Empty: any certificate signed by tls.ca_file."
)


_NODE_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
NODE_ID_MAX = 32


def _check_node_id(value: str) -> str:
    """A node identity: empty (the host name) or 1 to 32 letters, digits, dots, hyphens and underscores."""
    if value and (len(value) > NODE_ID_MAX or not set(value) <= _NODE_ID_CHARS or value[0] in ".-_"):
        msg = f"must be 1 to {NODE_ID_MAX} letters, digits, '.', '-' or '_', starting with a letter or digit"
        raise ValueError(msg)
    return value


def default_node_id() -> str:
    """The host name's first label, cut to what a node identity allows (``guard`` if nothing is left)."""
    label = socket.gethostname().split(".", 1)[0]
    kept = "".join(c if c in _NODE_ID_CHARS else "-" for c in label).lstrip(".-_")[:NODE_ID_MAX]
    return kept or "guard"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    """The guard's own DICOM node."""

    ae_title: str = Field("GUARD", description="AE title the guard answers to; other called AE titles are rejected.")
    bind: str = Field("0.0.0.0", description="Address the DICOM listener binds to.")  # noqa: S104 - a DICOM node serves the network; admission is by AE title and host
    port: int = Field(11112, ge=1, le=65535, description="DICOM listener port.")
    listener_process: bool = Field(
        default=True,
        description=(
            "Run the DICOM listener in a process of its own, supervised by the main process (restarted if it dies), "
            "so that receiving and forwarding do not share one interpreter lock."
        ),
    )
    data_dir: Path = Field(Path("var"), description="Folder holding the spool and the default SQLite ledger.")
    check_called_ae: bool = Field(
        default=True,
        description=(
            "Reject associations whose called AE title is not ae_title."
            " Turn off only for a sandbox or for senders that cannot be configured."
        ),
    )
    max_pdu: int = Field(
        262144,
        ge=0,
        description=(
            "Largest PDU the guard accepts and proposes, in bytes; a peer sending a larger one is aborted"
            " (0: no limit is proposed, and PDUs are still capped at 64 MiB)."
        ),
    )
    max_associations: int = Field(20, ge=1, description="Most associations served at once; more are rejected (transient).")
    max_associations_per_address: int = Field(
        8, ge=1, description="Most associations served at once for one peer address; more are rejected (transient)."
    )
    max_pending_per_address: int = Field(
        4,
        ge=1,
        description="Most connections from one address that have not yet sent their A-ASSOCIATE-RQ; more are closed at once.",
    )
    max_pending: int = Field(
        64, ge=1, description="Most connections from all addresses that have not yet sent their A-ASSOCIATE-RQ; more are closed at once."
    )
    accept_backlog: int = Field(
        128,
        ge=1,
        description=(
            "Connections the operating system queues for the DICOM listener before it accepts them"
            " (the listen backlog; capped by the kernel's somaxconn); beyond it new connections wait or fail."
        ),
    )
    network_timeout: float = Field(
        60.0,
        gt=0,
        description=(
            "Idle association timeout: seconds without network activity before an association is aborted;"
            " also the longest time one PDU may take to arrive, and a send to a peer that does not read."
        ),
    )
    acse_timeout: float = Field(
        30.0, gt=0, description="ARTIM/ACSE timeout: seconds to wait for the A-ASSOCIATE-RQ after a connection opens, and for release."
    )
    dimse_timeout: float = Field(60.0, gt=0, description="Seconds to wait for a DIMSE message the guard expects from a peer.")
    max_dataset_size: int = Field(
        4 * 1024**3,
        ge=0,
        description="Largest data set accepted by C-STORE, in bytes; a larger one is refused with 0xA700 and not kept (0 = no limit).",
    )

    id: str = Field(
        "",
        description=(
            "This node's identity among guards sharing one ledger: in every audit record, guard status and /status."
            " Empty: the host name (its first label). 1 to 32 letters, digits, '.', '-', '_'; unique per node."
        ),
    )
    relay_ae_title: str = Field(
        "",
        description=(
            "AE title this node names as Move Destination when it relays a C-MOVE to the archive; the archive must reach it"
            " at this node's own address and port (not the load balancer's). Empty: ae_title (one node)."
        ),
    )
    lease_seconds: float = Field(
        30.0,
        gt=0,
        description=(
            "Lease of the cluster-wide tasks (confirmation, source reports, spool clean-up, audit export): a node that"
            " stops renewing it loses the task to another node after this many seconds."
        ),
    )
    heartbeat_seconds: float = Field(5.0, gt=0, description="How often the node records that it is alive in the ledger (nodes table).")
    drain_seconds: float = Field(
        0.0,
        ge=0,
        description=(
            "On SIGTERM, seconds /readyz answers 503 (draining) before the DICOM listener closes, so that a load balancer"
            " stops sending new associations first (behind HAProxy: more than fall x inter of its health check)."
        ),
    )

    _check_ae = field_validator("ae_title")(_check_ae_title)
    _check_id = field_validator("id")(_check_node_id)

    @field_validator("relay_ae_title")
    @classmethod
    def _check_relay_ae(cls, value: str) -> str:
        return _check_ae_title(value) if value else value


class SpoolSettings(_Section):
    """Where received instances wait for confirmation, and who may forward them."""

    dir: Path | None = Field(None, description="Folder of the spool (default: data_dir/spool).")
    shared: bool = Field(
        default=False,
        description=(
            "The spool folder is one directory mounted on every node: any node forwards any instance, and takes over"
            " a dead node's backlog after the lease. False (node-local): a node forwards and cleans only what it received."
        ),
    )


class LedgerSettings(_Section):
    """Where the ledger lives."""

    url: str = Field(
        "", description="SQLAlchemy URL; empty means sqlite:///<data_dir>/ledger.sqlite. PostgreSQL: postgresql+psycopg://user@host/db."
    )
    busy_timeout_ms: int = Field(30000, ge=0, description="SQLite: how long a writer waits for the lock.")


class SourceSettings(_Section):
    """A peer allowed to send to the guard (normally the PACS)."""

    ae_title: str = Field(description="Calling AE title of the source.")
    host: str = Field(
        "", description="Where the guard reaches the source; if set and allowed_addresses is empty, associations must come from it."
    )
    port: int = Field(104, ge=1, le=65535, description="Port where the guard reaches the source (reports, queries, pulls).")
    allowed_addresses: tuple[str, ...] = Field(
        (),
        description=(
            'Addresses, CIDR networks or host names this source may call from, e.g. ["10.1.0.0/16", "pacs.example"];'
            " when set it replaces the host check."
        ),
    )
    services: tuple[Service, ...] = Field(
        ALL_SERVICES,
        min_length=1,
        description="What the source may do: store, kos (IOCM rejection notes), commit, find, move (C-MOVE and C-GET).",
    )
    tls: bool = Field(default=False, description=_TLS_DESCRIPTION)
    tls_fingerprint: str = Field("", description=_PIN_DESCRIPTION)

    _check_ae = field_validator("ae_title")(_check_ae_title)
    _check_pin = field_validator("tls_fingerprint")(_check_fingerprint)

    @field_validator("allowed_addresses")
    @classmethod
    def _check_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Every entry must be an address, a CIDR network (no host bits) or a host name."""
        for entry in value:
            parse_address_entry(entry)
        return tuple(entry.strip() for entry in value)


class ConfirmMode(StrEnum):
    """How the archive proves it holds an instance."""

    COMMITMENT = "commitment"
    FIND = "find"
    BOTH = "both"


class ArchiveProtocol(StrEnum):
    """How the guard talks to the archive."""

    DIMSE = "dimse"
    DICOMWEB = "dicomweb"


class ArchiveAuth(StrEnum):
    """How the guard authenticates to a DICOMweb archive."""

    NONE = "none"
    BEARER = "bearer"
    BASIC = "basic"


class ArchiveSettings(_Section):
    """The long-term archive the guard forwards to."""

    protocol: ArchiveProtocol = Field(
        ArchiveProtocol.DIMSE,
        description="dimse (C-STORE, Storage Commitment, C-FIND to ae_title@host:port) | dicomweb (STOW-RS, QIDO-RS, WADO-RS to url).",
    )
    ae_title: str = Field("ARCHIVE", description="Called AE title of the archive.")
    host: str = Field("", description="Archive address. Empty: run the built-in reference archive (sandbox only).")
    port: int = Field(11113, ge=1, le=65535, description="Archive DICOM port (also the built-in archive's port).")
    confirm: ConfirmMode = Field(
        ConfirmMode.COMMITMENT, description="commitment | find | both (dicomweb: find, by QIDO-RS, the default and the only choice)."
    )
    probe_interval: float = Field(
        30.0,
        ge=0,
        description="Seconds between probes of the archive, C-ECHO or (dicomweb) an HTTP query (status page, metric"
        " guard_archive_reachable); 0 turns them off.",
    )
    tls: bool = Field(default=False, description=_TLS_DESCRIPTION)
    tls_fingerprint: str = Field("", description=_PIN_DESCRIPTION)
    url: str = Field(
        "", description="dicomweb: base URL of the archive's DICOMweb service, the prefix of /studies (https://vna.example/dicom-web)."
    )
    auth: ArchiveAuth = Field(
        ArchiveAuth.NONE, description="dicomweb: none | bearer (token from token_file) | basic (username, password from password_file)."
    )
    token_file: Path | None = Field(None, description="dicomweb, auth = bearer: file holding the bearer token (read at each request).")
    username: str = Field("", description="dicomweb, auth = basic: the user name.")
    password_file: Path | None = Field(None, description="dicomweb, auth = basic: file holding the password (read at each request).")
    ca_file: Path | None = Field(
        None,
        description="dicomweb over https: PEM file of the CA certificate(s) the archive's certificate must chain to; unset: the"
        " system's CAs.",
    )
    verify_tls: bool = Field(
        default=True, description="dicomweb over https: check the archive's certificate and host name. Turn off only for a test archive."
    )

    _check_ae = field_validator("ae_title")(_check_ae_title)
    _check_pin = field_validator("tls_fingerprint")(_check_fingerprint)

    @model_validator(mode="before")
    @classmethod
    def _dicomweb_confirms_by_find(cls, data: Any) -> Any:
        """Storage Commitment does not exist in DICOMweb: a DICOMweb archive confirms by QIDO-RS unless told otherwise (then refused)."""
        if isinstance(data, Mapping) and str(data.get("protocol", "")) == ArchiveProtocol.DICOMWEB and "confirm" not in data:
            return {**data, "confirm": ConfirmMode.FIND}
        return data

    @model_validator(mode="after")
    def _dicomweb_complete(self) -> ArchiveSettings:
        if self.protocol is ArchiveProtocol.DICOMWEB:
            check_dicomweb_archive(self)
        return self

    @property
    def builtin(self) -> bool:
        """Whether the built-in reference archive stands in for a real one (a DIMSE archive without a host)."""
        return self.protocol is ArchiveProtocol.DIMSE and not self.host

    @property
    def where(self) -> str:
        """The archive for people: ``AE@host:port`` or the DICOMweb URL."""
        if self.protocol is ArchiveProtocol.DICOMWEB:
            return self.url
        return f"{self.ae_title}@{self.host or 'builtin'}:{self.port}"


class CredentialFileError(ConfigError):
    """The archive's credentials file is not set, cannot be read, or is empty."""


def read_credential(archive: ArchiveSettings) -> str:
    """The secret of ``archive.auth`` (bearer token or basic password) read from its file now; never logged.

    ``CredentialFileError`` names the key and the file, never the content.
    """
    key, path = ("token_file", archive.token_file) if archive.auth is ArchiveAuth.BEARER else ("password_file", archive.password_file)
    if path is None:
        msg = f"archive.{key} is required for archive.auth = {archive.auth.value}"
        raise CredentialFileError(msg)
    try:
        content = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"archive.{key}: cannot read {path}: {exc.__class__.__name__}"
        raise CredentialFileError(msg) from exc
    if not content:
        msg = f"archive.{key}: {path} is empty"
        raise CredentialFileError(msg)
    return content


def check_dicomweb_archive(archive: ArchiveSettings) -> None:
    """The rules of a DICOMweb archive's settings; ``ValueError`` naming the key."""
    parsed = urlsplit(archive.url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        msg = "archive.url must be the http:// or https:// base URL of the DICOMweb service when archive.protocol = dicomweb"
        raise ValueError(msg)
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        msg = "archive.url must not carry credentials, a query or a fragment (credentials go in archive.auth and its file)"
        raise ValueError(msg)
    if archive.confirm is not ConfirmMode.FIND:
        msg = (
            f"archive.confirm = {archive.confirm.value} is not possible with archive.protocol = dicomweb: DICOMweb has no"
            " Storage Commitment; use confirm = find (QIDO-RS)"
        )
        raise ValueError(msg)
    if archive.tls:
        msg = "archive.tls is DICOM TLS (protocol dimse); a DICOMweb archive uses TLS when archive.url is https://"
        raise ValueError(msg)
    if archive.auth is ArchiveAuth.BASIC and (not archive.username or ":" in archive.username):
        msg = "archive.username is required for archive.auth = basic, without a colon (RFC 7617)"
        raise ValueError(msg)
    if archive.auth is not ArchiveAuth.NONE:
        try:
            read_credential(archive)
        except CredentialFileError as exc:
            raise ValueError(str(exc)) from exc
    elif archive.token_file is not None or archive.password_file is not None:
        msg = "archive.token_file or archive.password_file is set but archive.auth = none: set archive.auth = bearer or basic"
        raise ValueError(msg)
    if archive.ca_file is not None and not archive.ca_file.is_file():
        msg = f"archive.ca_file: {archive.ca_file} is not a file"
        raise ValueError(msg)


class ForwardSettings(_Section):
    """Forwarding to the archive."""

    workers: int = Field(1, ge=1, le=32, description="Concurrent sender associations to the archive.")
    batch_size: int = Field(32, ge=1, le=1000, description="Instances claimed per worker at a time.")
    lease_seconds: float = Field(
        30.0, gt=0, description="A claim not renewed within this time is taken over by another worker (crash recovery)."
    )
    max_attempts: int = Field(10, ge=1, description="Attempts before an instance is dead-lettered.")
    max_age_hours: float = Field(72.0, gt=0, description="Age after which a still-failing instance is dead-lettered.")
    backoff_base: float = Field(2.0, gt=0, description="First retry delay in seconds; doubles each attempt.")
    backoff_max: float = Field(300.0, gt=0, description="Longest retry delay in seconds.")
    idle_poll: float = Field(
        0.5,
        gt=0,
        description="Seconds between looks for new work right after work; while nothing comes the wait stretches to 5 s"
        " (a received instance wakes the workers at once).",
    )
    timeout: float = Field(30.0, gt=0, description="ACSE, DIMSE and connect timeout towards the archive, seconds.")
    idle_release: float = Field(5.0, ge=0, description="Release an idle archive association after this many seconds.")
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower than receiving the forwarding workers' CPU priority is (a nice increment; 0: the same)."
        " Applies with node.listener_process = true only: receiving, which the PACS waits for, then gets the CPU first"
        " on a busy machine, and forwarding catches up (ADR 0022).",
    )


class ConfirmSettings(_Section):
    """How and when the guard asks the archive for proof, and how long it keeps spool copies.

    When a commitment request goes out (ADR 0016): once a study has had nothing forwarded for
    `batch_wait` seconds, or at once when `max_references` of its instances wait. The
    confirmation loop is woken for exactly then, so a study is normally confirmed about
    `batch_wait` plus the archive's answer after its last instance reached the archive. The
    default, 0.5 s, keeps that under 2 s. The trade-off: a sender (or an archive) that pauses
    for longer than `batch_wait` in the middle of a study splits it into several requests (each
    an N-ACTION association, and an N-EVENT-REPORT association back); raise it for a source that
    sends a study in bursts, or an archive that takes seconds per instance.
    """

    poll_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between looks at the ledger while the confirmation loops have work; with none the wait stretches to 5 s"
        " (a forwarded batch wakes the loop when its study's request can be due, a report from the archive at once).",
    )
    max_references: int = Field(500, ge=1, le=10000, description="Most instances referenced by one Storage Commitment request.")
    batch_wait: float = Field(
        0.5,
        ge=0,
        description="Ask for commitment once a study has had nothing forwarded for this many seconds (or the request is full)."
        " Longer: fewer requests for a study sent with pauses; shorter: confirmed sooner.",
    )
    commitment_timeout: float = Field(60.0, gt=0, description="Seconds to wait for the archive's N-EVENT-REPORT before asking again.")
    report_wait: float = Field(
        0.0,
        ge=0,
        description="Seconds to keep the N-ACTION association open for a report on the same association (0: release at once).",
    )
    retry_base: float = Field(5.0, gt=0, description="First delay before asking again after a timeout or failure, seconds; doubles.")
    retry_max: float = Field(600.0, gt=0, description="Longest delay between two requests for the same instance, seconds.")
    max_resends: int = Field(3, ge=0, description="Re-sends of an instance the archive reported failed or missing, before dead-letter.")
    find_delay: float = Field(0.0, ge=0, description="Seconds after forwarding before a C-FIND confirmation is attempted.")
    reverify_interval_hours: float = Field(24.0, gt=0, description="Confirmed studies are checked again by C-FIND this often.")
    spool_grace_hours: float = Field(72.0, ge=0, description="Spool copies are removed this long after confirmation, never before.")
    source_report_deadline: float = Field(
        3600.0,
        gt=0,
        description="Seconds after a source's Storage Commitment request when unconfirmed instances are reported failed.",
    )
    report_retry_max: float = Field(300.0, gt=0, description="Longest delay between attempts to deliver a report to a source, seconds.")
    source_arrival_grace: float = Field(
        300.0,
        gt=0,
        description=(
            "Seconds after a source's Storage Commitment request to wait for referenced instances the guard never received; "
            "once every other one is confirmed, those are reported failed (0x0112) then, without waiting for the deadline."
        ),
    )


class DeleteBackend(StrEnum):
    """Who carries out a permitted delete."""

    DECISION_ONLY = "decision-only"
    ORTHANC = "orthanc"
    DICOMWEB = "dicomweb"


class DeleteSettings(_Section):
    """The delete gate."""

    backend: DeleteBackend = Field(DeleteBackend.DECISION_ONLY, description="decision-only | orthanc | dicomweb.")
    url: str = Field("", description="Base URL of the backend (Orthanc REST or DICOMweb).")
    reverify: bool = Field(default=True, description="Query the archive live at decision time.")
    source_check: bool = Field(default=True, description="Query the source for the study's instances at decision time.")


class DestinationSettings(_Section):
    """A C-MOVE destination that is not a source (a workstation, a viewer, another PACS)."""

    ae_title: str = Field(description="AE title the requester names as Move Destination.")
    host: str = Field(description="Address the guard sends the moved instances to.")
    port: int = Field(104, ge=1, le=65535, description="DICOM port of the destination.")
    tls: bool = Field(default=False, description="Send the moved instances over DICOM TLS (the certificate checked against tls.ca_file).")
    tls_fingerprint: str = Field("", description=_PIN_DESCRIPTION)

    _check_ae = field_validator("ae_title")(_check_ae_title)
    _check_pin = field_validator("tls_fingerprint")(_check_fingerprint)


class QuerySettings(_Section):
    """The query/retrieve relay (C-FIND and C-MOVE from sources, relayed to the archive) and guard pull."""

    timeout: float = Field(30.0, gt=0, description="ACSE, DIMSE and connect timeout of relayed queries and retrieves, seconds.")
    move_idle_timeout: float = Field(
        120.0,
        gt=0,
        description="A relayed C-MOVE fails when the archive sends neither an instance nor a response for this many seconds.",
    )
    ledger_fallback: bool = Field(
        default=False,
        description=(
            "When the archive cannot be reached, answer a C-FIND from the ledger (what the guard has received);"
            " every such answer is audited with answered_by = ledger."
        ),
    )


class TokenScope(StrEnum):
    """What a token of the admin API may do."""

    READ = "read"
    DELETE = "delete"


class HttpToken(_Section):
    """One token of the admin API: who holds it, what it may do, and its SHA-256 (never the token itself)."""

    identity: str = Field(min_length=1, max_length=64, description="Who holds the token; recorded as actor in the audit log.")
    scopes: tuple[TokenScope, ...] = Field(min_length=1, description="read, delete or both.")
    sha256: str = Field(description="SHA-256 of the token, hex (guard token hash).")

    @field_validator("sha256")
    @classmethod
    def _check_hash(cls, value: str) -> str:
        digits = value.strip().lower()
        if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
            msg = "must be 64 hexadecimal digits (guard token hash prints it)"
            raise ValueError(msg)
        return digits


class TlsVersion(StrEnum):
    """Lowest TLS version accepted (PS3.15 B.9 and later profiles: TLS 1.2 or newer)."""

    TLS_1_2 = "1.2"
    TLS_1_3 = "1.3"


class TlsSettings(_Section):
    """DICOM TLS: the guard's certificate and the CA its peers' certificates must chain to."""

    port: int = Field(
        0, ge=0, le=65535, description="Port of the DICOM TLS listener (2762 is the registered dicom-tls port); 0: no TLS listener."
    )
    plain_listener: bool = Field(
        default=True, description="Keep the unencrypted listener on node.port open too; turn off once every peer uses TLS."
    )
    certificate: Path | None = Field(None, description="PEM certificate (chain) the guard presents, as server and as client.")
    private_key: Path | None = Field(None, description="PEM private key of certificate (unencrypted; readable by the guard only).")
    ca_file: Path | None = Field(
        None, description="PEM file of the CA certificate(s) peers' certificates must chain to (client certificates are required)."
    )
    min_version: TlsVersion = Field(TlsVersion.TLS_1_2, description="Lowest TLS version: 1.2 or 1.3.")
    verify_hostname: bool = Field(
        default=False,
        description="Outbound: also require the peer's certificate to name the host connected to (off: DICOM peers are often"
        " addressed by IP; pin fingerprints instead).",
    )
    handshake_timeout: float = Field(10.0, gt=0, description="Seconds a connecting peer has to complete the TLS handshake.")

    @property
    def configured(self) -> bool:
        """Whether certificate, key and CA are all set."""
        return None not in (self.certificate, self.private_key, self.ca_file)


class LogSettings(_Section):
    """The JSON log on stdout."""

    redact_patient_data: bool = Field(
        default=False,
        description="Leave patient identifiers (Patient ID and name, birth date, accession number) out of the log;"
        " the audit table keeps them. Secrets are never logged either way.",
    )


class SyslogProtocol(StrEnum):
    """How ATNA audit messages travel to the collector."""

    TLS = "tls"
    TCP = "tcp"
    UDP = "udp"


class AuditSettings(_Section):
    """The audit log: start-up check of its hash chain, ATNA export over syslog, retention."""

    verify_tail: int = Field(
        10000, ge=0, description="At start-up, check the hash chain of this many newest records (0: skip; 'guard audit verify' checks all)."
    )
    syslog_host: str = Field("", description="Audit record repository (syslog collector) for DICOM audit messages; empty: no export.")
    syslog_port: int = Field(6514, ge=1, le=65535, description="Port of the collector (6514 is the registered syslog-over-TLS port).")
    syslog_protocol: SyslogProtocol = Field(
        SyslogProtocol.TLS, description="tls (RFC 5425), tcp (RFC 6587 octet counting) or udp (RFC 5426; no delivery guarantee)."
    )
    syslog_ca_file: Path | None = Field(None, description="CA bundle that signed the collector's certificate (tls); system CAs when unset.")
    syslog_certificate: Path | None = Field(None, description="Client certificate for collectors that require one (tls).")
    syslog_private_key: Path | None = Field(None, description="Private key of syslog_certificate.")
    syslog_batch: int = Field(200, ge=1, le=10000, description="Messages sent per round before the delivery cursor is saved.")
    syslog_retry_max: float = Field(60.0, gt=0, description="Longest wait between attempts to reach the collector, seconds.")
    site_id: str = Field("", description="Enterprise site of the guard in audit messages (AuditEnterpriseSiteID); empty: left out.")
    retention_days: float = Field(
        0.0, ge=0, description="Records older than this are exported to a compressed file and removed; 0 keeps them forever."
    )
    retention_dir: Path | None = Field(None, description="Folder of retention export files (default: data_dir/audit-export).")
    retention_interval_hours: float = Field(24.0, gt=0, description="How often retention runs, hours.")

    @model_validator(mode="after")
    def _client_pair(self) -> AuditSettings:
        if (self.syslog_certificate is None) != (self.syslog_private_key is None):
            msg = "audit.syslog_certificate and audit.syslog_private_key go together"
            raise ValueError(msg)
        return self


class HttpSettings(_Section):
    """The admin HTTP API."""

    bind: str = Field("127.0.0.1", description="Address of the admin API.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the admin API (0 disables it).")
    token: SecretStr = Field(
        SecretStr(""), description="Bearer token of the identity 'admin' (scopes read and delete). Prefer token_file or tokens."
    )
    token_file: Path | None = Field(None, description="File holding the 'admin' token (preferred over token); read at each request.")
    tokens: tuple[HttpToken, ...] = Field(
        (), description="Named tokens with scopes, stored as SHA-256 hashes ([[http.tokens]]; hash with: guard token hash)."
    )
    read_requires_token: bool = Field(
        default=False,
        description="Require a token with scope 'read' for /studies and /audit (health, readiness and metrics stay open).",
    )
    auth_failures_max: int = Field(5, ge=1, description="Failed authentications from one client address before it gets 429.")
    auth_failures_window: float = Field(
        60.0, gt=0, description="Seconds over which failed authentications are counted; also the longest Retry-After."
    )
    certificate: Path | None = Field(None, description="PEM certificate (chain) for HTTPS; with private_key, the API speaks only HTTPS.")
    private_key: Path | None = Field(None, description="PEM private key of certificate (HTTPS).")

    @model_validator(mode="after")
    def _https_pair(self) -> HttpSettings:
        if (self.certificate is None) != (self.private_key is None):
            msg = "http.certificate and http.private_key go together (HTTPS needs both)"
            raise ValueError(msg)
        return self


class _KnownEnvironment(EnvSettingsSource):
    """The environment source, reading only the ``GUARD_*`` variables that name a setting.

    An unknown one is a warning (``Settings.unknown_environment``), never a start failure:
    a container's environment carries variables for other programs too.
    """

    def _load_env_vars(self) -> Mapping[str, str | None]:
        known = {name.lower() for name in environment_names(self.settings_cls)}
        loaded = super()._load_env_vars()  # names lower case: the model is case-insensitive
        return {name: value for name, value in loaded.items() if not name.startswith("guard_") or name in known}


class Settings(BaseSettings):
    """The whole configuration of one guard."""

    model_config = SettingsConfigDict(
        env_prefix="GUARD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )
    toml_path: ClassVar[Path | None] = None
    _unknown_environment: tuple[UnknownKey, ...] = PrivateAttr(default=())

    node: NodeSettings = NodeSettings()
    spool: SpoolSettings = SpoolSettings()
    ledger: LedgerSettings = LedgerSettings()
    sources: tuple[SourceSettings, ...] = ()
    archive: ArchiveSettings = ArchiveSettings()
    forward: ForwardSettings = ForwardSettings()
    confirm: ConfirmSettings = ConfirmSettings()
    delete: DeleteSettings = DeleteSettings()
    destinations: tuple[DestinationSettings, ...] = ()
    query: QuerySettings = QuerySettings()
    http: HttpSettings = HttpSettings()
    tls: TlsSettings = TlsSettings()
    log: LogSettings = LogSettings()
    audit: AuditSettings = AuditSettings()
    verify: VerifySettings = VerifySettings()

    @model_validator(mode="after")
    def _dicomweb_bytes_exact(self) -> Settings:
        """A DICOMweb archive's copies are retrieved by WADO-RS in the transfer syntax it holds: compared exactly."""
        if self.archive.protocol is ArchiveProtocol.DICOMWEB and self.verify.compare is CompareMode.CONTENT:
            msg = (
                "verify.compare = content is for DIMSE archives that transcode; with archive.protocol = dicomweb the guard "
                "retrieves by WADO-RS the bytes the archive holds and compares them exactly (verify.compare = exact)"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> Settings:
        users = [f"sources[{s.ae_title}].tls" for s in self.sources if s.tls]
        users += [f"destinations[{d.ae_title}].tls" for d in self.destinations if d.tls]
        users += ["archive.tls"] if self.archive.tls else []
        users += ["tls.port"] if self.tls.port else []
        if users and not self.tls.configured:
            msg = f"{', '.join(users)} need tls.certificate, tls.private_key and tls.ca_file"
            raise ValueError(msg)
        if not self.tls.plain_listener and not self.tls.port:
            msg = "tls.plain_listener = false needs a TLS listener (tls.port)"
            raise ValueError(msg)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - replaced by _KnownEnvironment
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files: the container passes real environment
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - secrets come from token_file
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the TOML file, then defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, _KnownEnvironment(settings_cls)]
        if cls.toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_path))
        return tuple(sources)

    @property
    def unknown_environment(self) -> tuple[UnknownKey, ...]:
        """``GUARD_*`` variables found at load time that set nothing (ignored, logged and audited)."""
        return self._unknown_environment

    @property
    def spool_dir(self) -> Path:
        """Folder of the spool."""
        return self.spool.dir or self.node.data_dir / "spool"

    @property
    def relay_ae_title(self) -> str:
        """The Move Destination of this node's C-MOVE relays: ``node.relay_ae_title``, else ``node.ae_title``."""
        return self.node.relay_ae_title or self.node.ae_title

    @property
    def node_id(self) -> str:
        """The identity of the node: ``node.id``, else the host name."""
        return self.node.id or default_node_id()

    @property
    def retention_dir(self) -> Path:
        """Folder of audit retention export files."""
        return self.audit.retention_dir or self.node.data_dir / "audit-export"

    @property
    def ledger_url(self) -> str:
        """The effective ledger URL."""
        return self.ledger.url or f"sqlite:///{self.node.data_dir / 'ledger.sqlite'}"

    def source(self, ae_title: str) -> SourceSettings | None:
        """The configured source with this AE title, if any."""
        wanted = ae_title.strip()
        return next((s for s in self.sources if s.ae_title == wanted), None)

    def http_token(self) -> str:
        """The admin token, read from ``token_file`` when set."""
        if self.http.token_file is not None:
            return self.http.token_file.read_text(encoding="utf-8").strip()
        return self.http.token.get_secret_value()


def _format_errors(errors: list[Any], unknown: list[UnknownKey]) -> str:
    """Lines of ``section.key: problem``: the file's unknown keys (with the key meant), then pydantic's errors."""
    lines = [f"{key.name}: unknown key" + (f"; did you mean {key.suggestion}?" if key.suggestion else "") for key in unknown]
    already = {key.name.replace("[", ".").replace("]", "") for key in unknown}  # sources[0].hots is pydantic's sources.0.hots
    for err in errors:
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        problem = err["msg"]
        if err["type"] == "extra_forbidden":
            if key in already:
                continue
            problem = "unknown key"
        shown = MASK if any(is_secret_key(str(part)) for part in err["loc"]) else scrub_text(repr(err.get("input")))
        lines.append(f"{key}: {problem} (got {shown})" if err["type"] != "missing" else f"{key}: {problem}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _unknown_file_keys(path: Path | None) -> list[UnknownKey]:
    """The keys of the file the model does not know (none without a file)."""
    if path is None:
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"cannot read configuration {path}: {exc}"
        raise ConfigError(msg) from exc
    return unknown_file_keys(data, Settings)


def load_settings(path: Path | None = None) -> Settings:
    """Load and validate the configuration from ``path`` (or ``GUARD_CONFIG``) and the environment.

    An unknown key in the file is an error, reported with the nearest valid key; an unknown
    ``GUARD_*`` variable is ignored and kept in ``unknown_environment`` for the caller to warn about.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is not None and not path.is_file():
        msg = f"configuration file not found: {path}"
        raise ConfigError(msg)
    unknown = _unknown_file_keys(path)

    class _Loaded(Settings):
        toml_path = path

    try:
        loaded = _Loaded()
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc.errors(), unknown)) from exc
    except (OSError, ValueError) as exc:  # TOML syntax errors are ValueErrors
        msg = f"cannot read configuration {path}: {exc}"
        raise ConfigError(msg) from exc
    if unknown:  # normally caught above as extra keys; kept for keys pydantic would let through
        raise ConfigError(_format_errors([], unknown))
    settings = Settings.model_validate(loaded.model_dump())
    settings._unknown_environment = tuple(unknown_environment(os.environ, Settings))  # noqa: SLF001 - set once, by the loader
    return settings


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by ``***``."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    if settings.http.token.get_secret_value():
        data["http"]["token"] = MASK
    # Passwords in URLs (ledger.url, delete.url) and anything under a secret's name.
    cleaned: dict[str, Any] = scrub(data)
    return cleaned


def digest(settings: Settings) -> str:
    """SHA-256 of the redacted effective configuration, for the ``config.loaded`` audit record."""
    canonical = json.dumps(redacted(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
