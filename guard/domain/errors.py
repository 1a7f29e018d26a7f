"""The exception tree of guard.

::

    GuardError                      base of everything guard raises on purpose
    ├── ConfigError                 the configuration cannot be loaded or is invalid
    ├── InvalidUIDError             a value is not a valid DICOM UID (PS3.5 9.1)
    ├── SpoolError                  the spool cannot take or give back an instance
    ├── LedgerError                 the ledger cannot record a fact
    └── PeerError                   a remote DICOM peer did not do what was asked
        ├── TransientPeerError      worth retrying later (refused, aborted, timeout, 0xA7xx)
        │   └── ArchiveUnreachableError  no association at all: says nothing about the instance
        └── PermanentPeerError      retrying will not help (0xA9xx, 0xCxxx, context rejected)

Foreign exceptions (OS, SQLAlchemy, pynetdicom) are translated at exactly one seam each
(``raise ... from exc``) so that callers only ever handle these types. Whether a failure is
retried is decided by its type, never by parsing a message.
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


class LedgerError(GuardError):
    """The ledger cannot record the fact."""


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
