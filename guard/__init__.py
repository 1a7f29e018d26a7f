"""guard: the DICOM node that refuses to let images be deleted before the archive has proven it holds them.

The package is laid out by layer; each imports only the layers below it (checked by
import-linter, ``.importlinter``; drawn in ``docs/development.md``):

- ``entry``: the ``guard`` command's start, before anything heavy is imported.
- ``cli``: the ``guard`` command.
- ``app``: the composition root; builds every service and entry point from the settings.
- ``listener``, ``http``, ``sandbox``: entry points: the DICOM listener and its handlers, the
  admin HTTP API, the built-in reference archive.
- ``services``: ingest, forward, confirm, delete, qr, audit.
- ``ledger``, ``spool``, ``dicom``, ``web``: adapters: all SQL, the on-disk copies, every
  outbound DICOM conversation, HTTP clients of other systems.
- ``runtime``: process-wide state (logging, pynetdicom's globals, TLS contexts, metrics).
- ``config``: the settings model and how it is loaded.
- ``domain``: values, errors and pure rules.
"""

__version__ = "0.1.0"
