"""HTTPS on 127.0.0.1 in front of :class:`SandboxApp` (standard library only).

One thread per connection (``ThreadingHTTPServer``, daemon threads); the TLS handshake is
done in that thread, not in the accepting one, so a slow or failing client never blocks
others. HTTP/1.1 keep-alive, ``Content-Length`` on every response.
"""

from __future__ import annotations

import contextlib
import http
import http.server
import socket
import socketserver
import ssl
import threading
from typing import Any

from ._app import SandboxApp
from ._model import SandboxRequest

__all__ = ["SandboxServer"]

MAX_BODY = 1 << 20
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "cfauth-sandbox"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log (the app keeps secret-free records instead)."""

    def _read_body(self) -> bytes:
        encoding = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in encoding:
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _BodyError(400, "bad chunk size") from None
                if size == 0:
                    while self.rfile.readline(65537).strip():
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise _BodyError(413, "body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise _BodyError(400, "bad Content-Length") from None
        if length < 0:
            raise _BodyError(400, "bad Content-Length")
        if length > MAX_BODY:
            raise _BodyError(413, "body too large")
        return self.rfile.read(length)

    def _dispatch(self) -> None:
        server = self.server
        assert isinstance(server, SandboxServer)
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            self.send_error(exc.status, str(exc))
            return
        request = SandboxRequest(
            method=self.command,
            host=self.headers.get("Host") or "",
            target=self.path,
            headers=tuple(self.headers.items()),
            body=body,
            sni=server.current_sni(),
        )
        response = server.app.handle(request)
        try:
            reason = http.HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        head = [
            f"HTTP/1.1 {response.status} {reason}",
            "Server: cfauth-sandbox",
            f"Date: {self.date_time_string()}",
            *(f"{name}: {value}" for name, value in response.headers),
            f"Content-Length: {len(response.body)}",
        ]
        if self.close_connection:
            head.append("Connection: close")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if self.command != "HEAD":
            payload += response.body
        # One write: headers then body in two small writes meet Nagle and delayed ACK.
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class SandboxServer(http.server.ThreadingHTTPServer):
    """A threading HTTPS server bound to 127.0.0.1 that feeds :class:`SandboxApp`."""

    daemon_threads = True
    request_queue_size = 1024
    # SO_REUSEADDR: a restarted sandbox can bind its port again at once while the
    # old connections linger in TIME_WAIT (a port in use by a listener stays refused).
    allow_reuse_address = True

    def __init__(self, port: int, app: SandboxApp, context: ssl.SSLContext) -> None:
        self.app = app
        self._context = context
        self._local = threading.local()
        self._conns: set[ssl.SSLSocket] = set()
        self._cond = threading.Condition()
        self._closing = False
        context.sni_callback = self._sni_callback
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def _sni_callback(
        self, sock: ssl.SSLSocket | ssl.SSLObject, name: str | None, context: ssl.SSLContext
    ) -> None:
        self._local.sni = name

    def current_sni(self) -> str | None:
        """The SNI the client of the connection served by this thread sent."""
        value = getattr(self._local, "sni", None)
        return value if isinstance(value, str) else None

    def finish_request(self, request: Any, client_address: Any) -> None:
        raw: socket.socket = request
        self._local.sni = None
        raw.settimeout(HANDSHAKE_TIMEOUT)
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self._context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except OSError:
            raw.close()
            return
        with self._cond:
            if self._closing:
                tls.close()
                return
            self._conns.add(tls)
        try:
            tls.do_handshake()
            tls.settimeout(IDLE_TIMEOUT)
            _Handler(tls, client_address, self)
        except (OSError, ValueError):
            pass  # handshake refused, client went away, or we are shutting down
        finally:
            with self._cond:
                self._conns.discard(tls)
                self._cond.notify_all()
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_RDWR)
            tls.close()

    def shutdown_request(self, request: Any) -> None:
        # finish_request closed the TLS socket; the raw one is detached (or closed).
        with contextlib.suppress(OSError):
            request.close()

    def close_connections(self, timeout: float = 5.0) -> None:
        """Close every open client connection and wait for their threads to finish."""
        with self._cond:
            self._closing = True
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    # The plain socket's shutdown: wakes the thread blocked in recv without
                    # tearing the TLS object out from under it (SSLSocket.shutdown would).
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
            self._cond.wait_for(lambda: not self._conns, timeout)
