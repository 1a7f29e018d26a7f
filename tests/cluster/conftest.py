"""Fixtures of the several-node tests: a cluster on its own PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterFactory
from tests.support.fixtures import require_tools
from tests.support.postgres import scratch_database


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start clusters (nodes, HAProxy, Orthanc archive) on a fresh PostgreSQL database; all stopped at teardown."""
    require_tools("Orthanc", "haproxy", "storescu")
    with scratch_database("guard_cluster") as (url, _admin), ClusterFactory(tmp_path, url) as factory:
        yield factory
