"""A real syslog collector for the audit export tests: rsyslogd from Debian, on loopback.

Each collector has its own configuration, work folder and output file in a temporary folder;
it takes RFC 5424 messages over TCP (octet-counted framing) or TLS (rsyslog's gtls driver)
and writes every raw message as one line. It is stopped by its own pid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.certs import CertFiles
from tests.support.ports import free_port
from tests.support.processes import ManagedProcess, PeerError, find_tool
from tests.support.waiting import STARTUP_TIMEOUT, wait_for_port


@dataclass(frozen=True)
class CollectorTls:
    """The collector's certificate and key, and the CA that signed the guard's (unused in anon mode)."""

    server: CertFiles
    ca_file: Path


class Rsyslog:
    """One rsyslogd listening on 127.0.0.1, writing raw messages to ``output``."""

    def __init__(self, folder: Path, *, tls: CollectorTls | None = None, port: int | None = None) -> None:
        """Prepare (not start) a collector in ``folder``."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.output = folder / "messages.log"
        self.config = folder / "rsyslog.conf"
        self.config.write_text(self._config(), encoding="utf-8")
        self.process: ManagedProcess | None = None

    def _config(self) -> str:
        work = self.folder / "work"
        work.mkdir(exist_ok=True)
        lines = [f'global(workDirectory="{work}" maxMessageSize="256k"']
        if self.tls is not None:
            lines[0] += (
                f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{self.tls.ca_file}"'
                f' DefaultNetstreamDriverCertFile="{self.tls.server.certificate}"'
                f' DefaultNetstreamDriverKeyFile="{self.tls.server.private_key}"'
            )
            lines.append(
                'module(load="imtcp" MaxSessions="50" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")'
            )
        else:
            lines.append('module(load="imtcp" MaxSessions="50")')
        lines[0] += ")"
        lines += [
            f'input(type="imtcp" port="{self.port}" address="127.0.0.1")',
            'template(name="raw" type="string" string="%rawmsg%\\n")',
            f'*.* action(type="omfile" file="{self.output}" template="raw")',
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Rsyslog:
        """Start rsyslogd in the foreground and wait for its port."""
        pidfile = self.folder / "rsyslogd.pid"
        pidfile.unlink(missing_ok=True)
        argv = [find_tool("rsyslogd"), "-n", "-f", str(self.config), "-i", str(pidfile)]
        self.process = ManagedProcess(argv, self.folder / "rsyslogd.log")
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
        except Exception as exc:
            self.stop()
            msg = f"rsyslogd did not open port {self.port}: {self.process.describe()}"
            raise PeerError(msg) from exc
        return self

    def stop(self) -> None:
        """Stop rsyslogd (SIGTERM by pid; it flushes its output first)."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def messages(self) -> list[str]:
        """Every message written so far, one per line (the RFC 5424 header and the XML)."""
        if not self.output.exists():
            return []
        return [line for line in self.output.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
