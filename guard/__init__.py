"""guard: the DICOM node that refuses to let images be deleted before the archive has proven it holds them.

The package is laid out by responsibility:

- ``config``: the settings model and how it is loaded (TOML file, then environment).
- ``ledger``: the durable record of studies, instances and audit events (SQLAlchemy Core, Alembic).
- ``spool``: the on-disk copies of received instances.
- ``dicom``: the DICOM side (association policy, thin handlers, status codes).
- ``forward``: claiming pending instances and sending them to the archive.
- ``refarchive``: the built-in reference archive (a sandbox peer, never for production).
- ``service``: wires everything into one running node.
- ``cli``: the ``guard`` command.
"""

__version__ = "0.1.0"
