"""A whole guard in the test process, with the reference archive as its archive, on loopback ports."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from guard.app.service import GuardService
from guard.config.settings import Settings
from guard.ledger.schema import audit_log
from guard.sandbox.archive import ReferenceArchive
from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

GUARD_AE = "GUARD"
SOURCE_AE = "PACS"
ARCHIVE_AE = "ARCHIVE"


def settings_for(tmp_path: Path, archive_port: int, **overrides: Any) -> Settings:
    """Settings of a guard on a free port whose archive is ``archive_port``, fast loops, no admin API.

    The listener runs in the test process (``node.listener_process = false``): these tests are
    about the composition in one process and reach into its listener.
    """
    values: dict[str, Any] = {
        "node": {
            "ae_title": GUARD_AE,
            "bind": "127.0.0.1",
            "port": free_port(),
            "data_dir": str(tmp_path / "guard"),
            "listener_process": False,
        },
        "sources": [{"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": free_port()}],
        "archive": {"ae_title": ARCHIVE_AE, "host": "127.0.0.1", "port": archive_port, "confirm": "both", "probe_interval": 0},
        "forward": {"lease_seconds": 3, "backoff_base": 0.2, "backoff_max": 1.0, "idle_poll": 0.1, "timeout": 10},
        "confirm": {"poll_interval": 0.2, "commitment_timeout": 10, "retry_base": 0.5, "retry_max": 2, "report_retry_max": 2},
        "http": {"port": 0},
    }
    for section, value in overrides.items():
        if isinstance(value, list):  # [[sources]]: the list given replaces the default one
            values[section] = value
        else:
            values.setdefault(section, {}).update(value)
    return Settings.model_validate(values)


@contextmanager
def running_guard(tmp_path: Path, **overrides: Any) -> Iterator[tuple[GuardService, ReferenceArchive]]:
    """A started guard and its started reference archive (which reports commitment to the guard); both stopped after."""
    archive = ReferenceArchive(tmp_path / "archive", ae_title=ARCHIVE_AE).start()
    service = GuardService(settings_for(tmp_path, archive.port, **overrides))
    try:
        service.start()
        archive.add_requester(GUARD_AE, "127.0.0.1", service.settings.node.port)
        yield service, archive
    finally:
        service.stop()
        archive.stop()


def alerts(service: GuardService, alert: str) -> list[dict[str, Any]]:
    """The details of the ``security.alert`` records with this ``alert``, oldest first."""
    if service.ledger is None:
        return []
    query = select(audit_log.c.detail).where(audit_log.c.event == "security.alert").order_by(audit_log.c.seq)
    with service.ledger.engine.connect() as conn:
        details = [d if isinstance(d, dict) else json.loads(d) for d in conn.execute(query).scalars()]
    return [d for d in details if d.get("alert") == alert]
