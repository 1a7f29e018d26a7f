"""A PostgreSQL database of one's own on the test server, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tests.support.availability import unavailable

PG_ADMIN_DSN = os.environ.get("GUARD_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test")


@contextmanager
def scratch_database(prefix: str) -> Iterator[tuple[str, psycopg.Connection[tuple[object, ...]]]]:
    """Create a fresh database; yield its SQLAlchemy URL and an autocommit admin connection; drop it (FORCE) at the end.

    Skips on a workstation without the server, fails under ``CI=true``.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL not reachable ({PG_ADMIN_DSN}): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        info = admin.info
        try:
            yield f"postgresql+psycopg://{info.user}@{info.host}:{info.port}/{name}", admin
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
