"""``Sandbox``: the sandbox app served over real HTTPS on 127.0.0.1."""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

try:
    import trustme
except ImportError as error:  # installed without the sandbox extra
    from .._extras import missing_extra

    raise missing_extra("cfauth.sandbox", "sandbox", error) from None

from cfauth_core import InvalidInput, LocalProtocolError

from ._app import DEFAULT_REDIRECT_URI, EVIL_HOST, SandboxApp
from ._clock import Clock
from ._model import RequestRecord
from ._server import SandboxServer

if TYPE_CHECKING:
    import httpx

__all__ = ["Sandbox"]


class SandboxStateError(LocalProtocolError, RuntimeError):
    """The sandbox was used in the wrong state (started twice, used before start)."""


class Sandbox(SandboxApp):
    """A local Checkfront-compatible HTTPS server for demos and tests.

    Usage::

        with Sandbox(accounts=("acme",)) as sandbox:
            sandbox.port          # ephemeral port on 127.0.0.1
            sandbox.resolve       # {"acme.checkfront.com:443": "127.0.0.1:PORT", ...}
            sandbox.ca            # the trustme CA: sandbox.ca.configure_trust(ssl_ctx)
            sandbox.ca_file       # its PEM, for tools that want a path
            sandbox.account("acme").api_key

    Connect to ``127.0.0.1:PORT`` but keep the real host name for SNI, the certificate
    check and the ``Host`` header (like ``curl --resolve``). Everything in
    :class:`SandboxApp` (switches, records, the clock) is available on the sandbox.
    """

    def __init__(
        self,
        accounts: Sequence[str] = ("acme",),
        clock: Clock | None = None,
        *,
        port: int = 0,
        on_request: Callable[[RequestRecord], None] | None = None,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise InvalidInput(
                f"port={port!r}: pass a port number from 1 to 65535, or 0 for any free port"
            )
        super().__init__(accounts, clock, on_request=on_request, redirect_uri=redirect_uri)
        self._requested_port = port
        self.ca = trustme.CA()
        """The one certificate authority behind the sandbox's certificate."""
        self._leaf = self.ca.issue_cert(*self.hosts, "127.0.0.1")  # 127.0.0.1: the control path
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self._ca_file: Path | None = None
        self._start_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind 127.0.0.1, write the CA file, and serve from a background thread."""
        with self._start_lock:
            if self._server is not None:
                raise SandboxStateError(
                    "this sandbox is already running; stop() it first, or make another"
                )
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._leaf.configure_cert(context)
            tmpdir = tempfile.mkdtemp(prefix="cfauth-sandbox-")
            ca_file = Path(tmpdir) / "sandbox-ca.pem"
            try:
                self.ca.cert_pem.write_to_path(str(ca_file))
                server = SandboxServer(self._requested_port, self, context)
            except OSError as error:
                shutil.rmtree(tmpdir, ignore_errors=True)
                raise InvalidInput(
                    f"the sandbox cannot listen on 127.0.0.1:{self._requested_port} "
                    f"({error.strerror or type(error).__name__}); pass another port, or "
                    "port=0 for any free one"
                ) from None
            except BaseException:
                shutil.rmtree(tmpdir, ignore_errors=True)
                raise
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"cfauth-sandbox-{server.server_port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
            self._tmpdir, self._ca_file = tmpdir, ca_file
            thread.start()
            return self

    def stop(self) -> None:
        """Stop serving, close every connection, and remove the CA file's directory."""
        with self._start_lock:
            server, thread, tmpdir = self._server, self._thread, self._tmpdir
            self._server = self._thread = None
            self._tmpdir = self._ca_file = None
            if server is not None:
                server.shutdown()
                server.server_close()
                server.close_connections()
            if thread is not None:
                thread.join(timeout=5)
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- addresses --------------------------------------------------------------------

    def _running_server(self) -> SandboxServer:
        server = self._server
        if server is None:
            raise SandboxStateError(
                "the sandbox is not running; call start() or use `with Sandbox()`"
            )
        return server

    @property
    def port(self) -> int:
        """The port the sandbox listens on (127.0.0.1)."""
        return self._running_server().server_port

    @property
    def ca_file(self) -> str:
        """Path to the CA certificate (PEM); the file is removed when the sandbox stops."""
        self._running_server()
        assert self._ca_file is not None
        return str(self._ca_file)

    @property
    def resolve(self) -> dict[str, str]:
        """``{"HOST:443": "127.0.0.1:PORT"}`` for every host served (the clients' override)."""
        target = f"127.0.0.1:{self.port}"
        return {f"{host}:443": target for host in self.hosts}

    @property
    def evil_origin(self) -> str:
        """``https://evil.example``: an untrusted host served (and recorded) by the sandbox."""
        return f"https://{EVIL_HOST}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client ``SSLContext`` that trusts the sandbox CA (and nothing else)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ca.configure_trust(context)
        return context

    def httpx_transport(self, max_connections: int = 10) -> httpx.HTTPTransport:
        """An ``httpx.HTTPTransport`` that reaches the sandbox's hosts on loopback
        (SNI, the certificate check and ``Host`` keep the real names) and trusts
        its CA: ``httpx.Client(transport=sandbox.httpx_transport(), auth=...)``.
        Needs the ``httpx`` extra."""
        from ._httpx import transport  # noqa: PLC0415 - needs the httpx extra

        return transport(self.ssl_context(), self.resolve, max_connections)

    def httpx_async_transport(self, max_connections: int = 10) -> httpx.AsyncHTTPTransport:
        """The same for ``httpx.AsyncClient`` (asyncio or trio)."""
        from ._httpx import async_transport  # noqa: PLC0415 - needs the httpx extra

        return async_transport(self.ssl_context(), self.resolve, max_connections)

    def __repr__(self) -> str:
        where = f"port={self._server.server_port}" if self._server is not None else "stopped"
        return f"Sandbox(accounts={self.accounts!r}, {where})"
