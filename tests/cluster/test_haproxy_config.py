"""The HAProxy configuration of the cluster tests is the one ``docs/nodes.md`` shows, and HAProxy accepts it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.fixtures import require_tools
from tests.support.haproxy import Backend, render_config
from tests.support.processes import find_tool

NODES_DOC = Path(__file__).resolve().parents[2] / "docs" / "nodes.md"
#: The addresses docs/nodes.md uses in its example of the tests' configuration.
EXAMPLE = ("127.0.0.1:10104", "127.0.0.1:10404", [Backend("node-a", 11112, 8081), Backend("node-b", 11113, 8082)])


def _documented() -> str:
    found = re.search(r"<!-- haproxy-test-config -->\n```\n(.*?)```", NODES_DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert found is not None, "docs/nodes.md lost its example of the tests' HAProxy configuration"
    return found.group(1)


def test_docs_show_the_configuration_the_helper_writes() -> None:
    """docs/nodes.md shows, character for character, what tests/support/haproxy.py writes for its example addresses."""
    assert render_config(*EXAMPLE) == _documented()


def test_haproxy_accepts_the_documented_configuration(tmp_path: Path) -> None:
    """``haproxy -c`` (Debian's HAProxy) finds the documented configuration valid."""
    require_tools("haproxy")
    config = tmp_path / "haproxy.cfg"
    config.write_text(_documented(), encoding="utf-8")
    result = subprocess.run([find_tool("haproxy"), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
