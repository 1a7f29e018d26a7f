"""Serving the admin API: uvicorn in a background thread of the guard process.

uvicorn installs no signal handlers outside the main thread, so ``guard serve`` keeps its own
SIGTERM handling; ``stop`` asks the server to finish and waits, bounded. ``log_config=None``
leaves the process's logging (structlog) as the service configured it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from guard.domain.errors import ConfigError, GuardError
from guard.runtime.tls import fingerprint


class AdminServerError(GuardError):
    """The admin API could not be started."""


#: Seconds between two ticks of uvicorn's main loop (uvicorn's own: 0.1), which checks for shutdown.
TICK_SECONDS = 0.5
#: uvicorn counts ticks of 0.1 s (its Date header is renewed every 10th); each of ours counts for this many.
_TICKS_PER_TICK = round(TICK_SECONDS / 0.1)


class _QuietServer(uvicorn.Server):
    """uvicorn's server waking twice a second instead of ten times: an idle guard spends no CPU on it.

    Its main loop only renews the Date header (once a second, still) and checks whether to
    stop; requests are served by the event loop whatever the tick. Stopping waits at most one tick.
    """

    async def main_loop(self) -> None:
        """The ``main_loop`` of uvicorn, with a longer sleep."""
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + _TICKS_PER_TICK) % 864000
            await asyncio.sleep(TICK_SECONDS)
            should_exit = await self.on_tick(counter)


class AdminServer:
    """The admin API served by uvicorn on ``host:port`` from a daemon thread."""

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str,
        port: int,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        certificate: Path | None = None,
        private_key: Path | None = None,
    ) -> None:
        """Serve ``app`` on ``host:port`` (port 0: any free port, see ``port``), HTTPS with a certificate; nothing runs until ``start``."""
        self.host = host
        self.certificate = certificate
        self.private_key = private_key
        self._requested_port = port
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(stop_timeout / 2)),
            ssl_certfile=certificate,
            ssl_keyfile=private_key,
        )
        self._server = _QuietServer(config)
        self._thread: threading.Thread | None = None

    def start(self) -> AdminServer:
        """Start serving and wait (at most ``start_timeout``) until the port accepts connections."""
        if self._thread is not None:
            return self
        thread = self._thread = threading.Thread(target=self._server.run, name="admin-http", daemon=True)
        thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not thread.is_alive():
                self._thread = None
                msg = f"the admin API could not start on {self.host}:{self._requested_port} (port in use or address not available?)"
                raise AdminServerError(msg)
            if time.monotonic() >= deadline:
                self.stop()
                msg = f"the admin API did not start on {self.host}:{self._requested_port} within {self.start_timeout:.1f} s"
                raise AdminServerError(msg)
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        """The port actually bound (differs from the configured one only when that was 0)."""
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._requested_port

    @property
    def url(self) -> str:
        """Base URL of the running API."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.certificate else 'http'}://{host}:{self.port}"

    def reload_certificate(self) -> str:
        """Load the HTTPS certificate and key again into the live context (new connections use them); its SHA-256."""
        context = self._server.config.ssl
        if self.certificate is None or self.private_key is None or not isinstance(context, ssl.SSLContext):
            msg = "the admin API does not serve HTTPS"
            raise ConfigError(msg)
        try:
            der = ssl.PEM_cert_to_DER_cert(self.certificate.read_text(encoding="ascii"))
            context.load_cert_chain(str(self.certificate), str(self.private_key))
        except (OSError, ValueError, ssl.SSLError) as exc:
            msg = f"cannot load http.certificate {self.certificate} with http.private_key {self.private_key}: {exc}"
            raise ConfigError(msg) from exc
        return fingerprint(der)

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive() and self._server.started

    def stop(self) -> None:
        """Stop serving: finish open requests (bounded), then close; forced after ``stop_timeout``."""
        thread = self._thread
        if thread is None:
            return
        self._server.should_exit = True
        thread.join(self.stop_timeout)
        if thread.is_alive():
            self._server.force_exit = True
            thread.join(self.stop_timeout)
        self._thread = None
