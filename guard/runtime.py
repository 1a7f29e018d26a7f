"""Process-wide state, owned here and nowhere else.

pynetdicom is configured through module globals and the standard ``tempfile`` module through
``tempfile.tempdir``; structlog through its global configuration. This module sets all of
them once, at start-up, so that the rest of the code never touches globals:

- received data sets stream to a temporary file (``STORE_RECV_CHUNKED_DATASET``) in the
  spool's ``.incoming`` folder, on the same file system as the spool, so it can be renamed
  into place without a copy;
- instances are sent from the spool file without loading them (``STORE_SEND_CHUNKED_DATASET``);
- pynetdicom's own logging is quiet; the guard's audit and log lines are JSON on stdout.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import structlog
from pynetdicom import _config as pynetdicom_config


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stdout, one object per event (container convention)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def configure_dicom(incoming_dir: Path) -> None:
    """Make pynetdicom stream data sets to and from disk, receiving into ``incoming_dir``."""
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    # Hostile or broken UIDs must reach our handler (which answers a failure status and
    # audits) rather than be rejected silently inside the library.
    pynetdicom_config.ENFORCE_UID_CONFORMANCE = False
    tempfile.tempdir = str(incoming_dir)
