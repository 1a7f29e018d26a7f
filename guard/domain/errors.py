"""The exception tree of guard.

::

    GuardError                      base of everything guard raises on purpose
    ├── ConfigError                 the configuration cannot be loaded or is invalid
    ├── InvalidUIDError             a value is not a valid DICOM UID (PS3.5 9.1)
    ├── SpoolError                  the spool cannot take or give back an instance
    │   ├── TransientSpoolError     worth retrying later (no space left, I/O error)
    │   └── PermanentSpoolError     retrying will not help (not a DICOM file, hostile path)
    ├── LedgerError                 the ledger cannot read or record a fact
    │   ├── LedgerUnavailableError  transient: the database cannot be reached, is locked, or is full
    │   └── LedgerRejectedError     permanent: the database refused the statement (constraint, schema)
    ├── LeaseLostError              another node took the task over: the change was not made
    └── PeerError                   a remote DICOM peer did not do what was asked
        ├── TransientPeerError      worth retrying later (refused, aborted, timeout, 0xA7xx)
        │   └── ArchiveUnreachableError  no association at all: says nothing about the instance
        └── PermanentPeerError      retrying will not help (0xA9xx, 0xCxxx, context rejected)

Foreign exceptions (OS, SQLAlchemy, pynetdicom) are translated at exactly one seam each
(``raise ... from exc``) so that callers only ever handle these types. Whether a failure is
retried is decided by its type, never by parsing a message: ``TransientSpoolError``,
``LedgerUnavailableError`` and ``TransientPeerError`` are worth another attempt (0xA700 to a
sender, 503 on the admin API, a backoff in a worker loop); the others are not.
"""

from __future__ import annotations


class GuardError(Exception):
    """An error inside guard."""

    def __init__(self, message: str | None = None) -> None:
        """Use the class docstring as the default message."""
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(GuardError):
    """The configuration is invalid."""


class InvalidUIDError(GuardError):
    """The value is not a valid DICOM UID."""


class SpoolError(GuardError):
    """The spool cannot store or read an instance."""


class TransientSpoolError(SpoolError):
    """The spool cannot store or read an instance now (no space left, I/O error)."""


class PermanentSpoolError(SpoolError):
    """The spool will never store or read this instance (not a DICOM file, hostile path)."""


class LedgerError(GuardError):
    """The ledger cannot read or record the fact."""


class LedgerUnavailableError(LedgerError):
    """The ledger cannot be reached, is locked or is full now; try again later."""


class LedgerRejectedError(LedgerError):
    """The ledger refused the statement (constraint or schema); retrying will not help."""


class LeaseLostError(GuardError):
    """The lease of the task is no longer held here (another node took it over); the change was not made."""


class PeerError(GuardError):
    """A remote DICOM peer did not complete the operation."""

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        """Keep the DIMSE status the peer answered, when there was one."""
        super().__init__(message)
        self.status = status


class TransientPeerError(PeerError):
    """The peer failed in a way that may succeed later."""


class ArchiveUnreachableError(TransientPeerError):
    """The archive could not be reached (association refused, aborted or timed out)."""


class PermanentPeerError(PeerError):
    """The peer failed in a way that retrying will not fix."""
