"""A blocking transport on :mod:`http.client`, with no third-party dependency.

``HttpClientTransport()`` is a ``send(Request) -> Response`` callable for the
:class:`~cfauth.sync.Driver`; :func:`client` builds the machine, the transport
and the driver in one call::

    from cfauth import stdlib
    from cfauth_core import ApiKey

    with stdlib.client("acme", ApiKey(key, secret)) as api:
        print(api.get("booking", params={"limit": 10}).json())

Theory of operation
-------------------
*Exactly what was asked.*  The transport sends the request's method, path and
query, headers and body as they are, and returns whatever status came back:
redirects, 401s and 429s are the machine's business, never the transport's.
It adds only what HTTP/1.1 framing needs and the request leaves out: ``Host``
(the real host name, with the port when it is not the default) and
``Content-Length`` (the body's length; ``0`` for a bodiless POST, PUT or PATCH,
as :mod:`http.client` does).  Nothing else: no ``Accept-Encoding``, no
``User-Agent`` of its own, no decoding of the body.

*TLS.*  ``https`` URLs are always sent over TLS, verified against the system's
CAs (``ssl.create_default_context()``), a ``ca_file``, or the ``ssl_context``
you pass; a context that does not verify certificates and host names is
refused.  Plain ``http`` is used only when the request URL itself is ``http``
(the machine produces those only for loopback with its ``insecure_loopback``
test switch).

*resolve.*  Like curl's ``--resolve``: ``{"acme.checkfront.com:443":
"127.0.0.1:8443"}`` makes the TCP connection go to 127.0.0.1:8443 while the
real host name is kept for SNI, the certificate check and the ``Host``
header.

*Timeouts.*  ``connect_timeout`` bounds the TCP connect and the TLS handshake;
``read_timeout`` then bounds every send and receive on the socket (it is the
longest silence allowed, not a deadline for the whole response).

*Keep-alive.*  Idle connections are pooled per origin (scheme, host, port),
at most ``max_idle_per_origin`` of them, under one lock.  A request takes an
idle connection (or opens a new one), owns it alone until the whole response
body has been read, and then gives it back, unless the server said
``Connection: close`` or the exchange failed; a connection is never used by
two threads at once.  Before an idle connection is reused it is polled: if it
is readable, the server closed it (or sent something unasked) and it is
dropped.

*The one retry.*  The transport never retries, with one exception.  A server
may close an idle keep-alive connection at the very moment a request is
written to it; the request then fails before a single byte of response
arrives (a reset, a broken pipe, or end-of-file where the status line should
be).  That failure is not the request's fault, so it is sent once more on a
new connection.  This happens only on a *reused* connection and only when no
response byte was received; a failure on a new connection, a timeout, or any
failure after the response began is reported as it is.  (Like every HTTP
client that reuses connections, this can in principle deliver a request
twice if the server processed it and then dropped the connection without
answering.)

*Failures* raise :class:`~cfauth.TransportFailure` naming the phase, the host
(and the address it was resolved to) and the error type; never a header, a
URL query or a body.
"""

from __future__ import annotations

import http.client
import re
import select
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import NamedTuple
from urllib.parse import urlsplit

from cfauth_core import Account, Config, Credential, Request, TokenSet

from ._http import Response, TransportFailure, parse_resolve
from .stores import TokenStore
from .sync import Client, build_client

__all__ = ["HttpClientTransport", "client"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: RFC 9110 ``token``: what a method or a header name may contain.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Header values: visible Latin-1 and spaces/tabs; no CR, LF, NUL or other controls.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

#: Errors that mean "the peer closed the connection", when no response byte arrived.
_DROPPED: tuple[type[BaseException], ...] = (
    ConnectionResetError,  # includes http.client.RemoteDisconnected
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


# -- what the transports share (cfauth.urllib3 imports these) ------------------


class _Target(NamedTuple):
    """Where a request goes: the URL's origin and target, and the address to connect to."""

    scheme: str
    host: str
    port: int
    target: str
    address: tuple[str, int]

    @property
    def resolved(self) -> bool:
        return self.address != (self.host, self.port)

    def describe(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{shown}:{self.port}"
        if self.resolved:
            addr, port = self.address
            text += f" (via {f'[{addr}]' if ':' in addr else addr}:{port})"
        return text


def _target(request: Request, resolve: Mapping[tuple[str, int], tuple[str, int]]) -> _Target:
    """Split the request URL; refuse what cannot be sent (without showing the URL's query)."""
    try:
        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise TransportFailure("the request URL is not a valid URL") from None
    if scheme not in _DEFAULT_PORTS or not host:
        raise TransportFailure(
            f"the request URL must be an http(s) URL with a host, not {scheme or 'no'} scheme"
        )
    if parts.username is not None or parts.password is not None:
        raise TransportFailure(f"{host}: credentials in the URL are refused")
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if not target.startswith("/") or any(c <= " " or c >= "\x7f" for c in target):
        raise TransportFailure(
            f"{host}: the request path must be printable ASCII (percent-encode the rest)"
        )
    if not _TOKEN.fullmatch(request.method):
        raise TransportFailure(f"{host}: {request.method[:20]!r} is not an HTTP method")
    address = resolve.get((host, port), (host, port))
    return _Target(scheme, host, port, target, address)


def _headers(request: Request, target: _Target) -> list[tuple[str, str]]:
    """The request's headers, checked, plus ``Host`` and ``Content-Length`` if missing.

    A header that could not be sent as it is (a CR/LF, a control character,
    non-Latin-1 text) fails the request naming the header, never its value.
    """
    names = set()
    for name, value in request.headers:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise TransportFailure(
                f"{target.host}: a header name is not a valid HTTP token: {str(name)[:40]!r}"
            )
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise TransportFailure(
                f"{target.host}: the value of header {name!r} cannot be sent (control "
                "characters, CR/LF or non-Latin-1 text); the value is not shown"
            )
        names.add(name.lower())
    headers = list(request.headers)
    if "host" not in names:
        shown = f"[{target.host}]" if ":" in target.host else target.host
        port = "" if target.port == _DEFAULT_PORTS[target.scheme] else f":{target.port}"
        headers.insert(0, ("Host", shown + port))
    if "content-length" not in names and "transfer-encoding" not in names:
        if request.body is not None:
            headers.append(("Content-Length", str(len(request.body))))
        elif request.method.upper() in _METHODS_WITH_BODY:
            headers.append(("Content-Length", "0"))
    return headers


def _tls_context(ssl_context: ssl.SSLContext | None, ca_file: str | None) -> ssl.SSLContext:
    """The context to verify servers with: the given one, or the default one
    (with ``ca_file`` as the trusted CAs instead of the system's, if given)."""
    if ssl_context is not None and ca_file is not None:
        raise ValueError(
            "pass ssl_context or ca_file, not both (load the CA file into your context "
            "with ssl_context.load_verify_locations(ca_file))"
        )
    if ssl_context is None:
        return ssl.create_default_context(cafile=ca_file)
    if ssl_context.verify_mode != ssl.CERT_REQUIRED or not ssl_context.check_hostname:
        raise ValueError(
            "ssl_context must verify certificates and host names (verify_mode=CERT_REQUIRED, "
            "check_hostname=True); to trust a private CA, pass ca_file or load it into a "
            "context made with ssl.create_default_context()"
        )
    return ssl_context


def _check_options(connect_timeout: float, read_timeout: float, pool_size: int) -> None:
    if not connect_timeout > 0 or not read_timeout > 0:
        raise ValueError("connect_timeout and read_timeout must be positive numbers of seconds")
    if pool_size < 0:
        raise ValueError("the pool size must be 0 or more")


def _describe(error: BaseException) -> str:
    """The error's type and, for errors whose text comes from the OS or TLS
    library (not from headers or bodies), its message."""
    name = type(error).__name__
    if isinstance(error, (OSError, http.client.RemoteDisconnected, http.client.IncompleteRead)):
        text = str(error).strip()
        if text:
            return f"{name}: {text[:300]}"
    return name


def _scrub(message: str, request: Request) -> str:
    """Defence in depth: hide any credential of the request that a message might quote."""
    for name, value in request.headers:
        if name.lower() in _SECRET_HEADERS and value:
            for secret in (value, *value.split()[1:]):
                if len(secret) >= 4:
                    message = message.replace(secret, "<hidden>")
    return message


def _detail(error: BaseException, timeout: float | None) -> str:
    """How a failure is shown: "timed out after N s" for a timeout when
    ``timeout`` is known, else :func:`_describe`."""
    if timeout is not None and isinstance(error, TimeoutError):
        return f"{type(error).__name__}: timed out after {timeout:g} s"
    return _describe(error)


def _failure(phase: str, target: _Target, detail: str, request: Request) -> TransportFailure:
    """The failure to raise: the method, the phase, the host and the detail."""
    return TransportFailure(
        _scrub(f"{request.method} {phase} {target.describe()} failed: {detail}", request)
    )


class _NothingReceived(Exception):
    """The connection was found closed before any byte of the response arrived.

    Not an ``OSError`` on purpose: urllib3 lets it through unwrapped.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(_describe(error))
        self.error = error


class _FirstByteResponse(http.client.HTTPResponse):
    """An ``HTTPResponse`` that tells "closed before the first byte" apart.

    ``begin`` first waits for one byte: if the connection was closed or reset
    before it, nothing of the response has arrived and :class:`_NothingReceived`
    says so; anything after that is reported as it is.
    """

    def begin(self) -> None:
        try:
            first = self.fp.peek(1)
        except _DROPPED as error:
            raise _NothingReceived(error) from error
        if not first:
            raise _NothingReceived(
                http.client.RemoteDisconnected("Remote end closed connection without response")
            )
        super().begin()


def _is_dropped(sock: socket.socket | None) -> bool:
    """Whether an idle connection is unusable: closed, or readable (a server
    says nothing unasked on an idle HTTP/1.1 connection, except goodbye)."""
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)  # pragma: no cover - Windows
        return bool(readable)  # pragma: no cover - Windows
    except (OSError, ValueError):
        return True


# -- the http.client transport ---------------------------------------------------


class _Connection(http.client.HTTPConnection):
    """One HTTP/1.1 connection to ``host``, over TCP to ``address``, with TLS
    (SNI and certificate check for ``host``) when a context is given."""

    response_class = _FirstByteResponse

    def __init__(
        self,
        host: str,
        port: int,
        *,
        address: tuple[str, int],
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self._address = address
        self._ssl_context = ssl_context
        self._read_timeout = read_timeout

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        sock = socket.create_connection(self._address, self.timeout)
        try:
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Stale(Exception):
    """An attempt failed because the connection was closed before any response byte."""

    def __init__(self, failure: TransportFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


_OriginKey = tuple[str, str, int]


class HttpClientTransport:
    """A thread-safe, keep-alive ``send(Request) -> Response`` on :mod:`http.client`.

    ``ssl_context`` or ``ca_file`` replace the system's CAs (the context must
    verify certificates and host names); ``connect_timeout`` bounds the TCP
    connect and TLS handshake, ``read_timeout`` each later send or receive;
    ``resolve`` maps ``"host:port"`` to the ``"address:port"`` to connect to,
    keeping the host name for SNI, the certificate and ``Host``;
    ``max_idle_per_origin`` idle connections are kept per origin for reuse.

    See the module docstring for what is sent, the one retry, and failures.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        resolve: Mapping[str, str] | None = None,
        max_idle_per_origin: int = 4,
    ) -> None:
        _check_options(connect_timeout, read_timeout, max_idle_per_origin)
        self._ssl_context = _tls_context(ssl_context, ca_file)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._resolve = parse_resolve(resolve)
        self._max_idle = max_idle_per_origin
        self._lock = threading.Lock()
        self._idle: dict[_OriginKey, list[_Connection]] = {}
        self._closed = False

    def __call__(self, request: Request) -> Response:
        """Send ``request`` as it is and return the response, whatever its status."""
        if self._closed:
            raise TransportFailure("this transport is closed; create a new one")
        target = _target(request, self._resolve)
        headers = _headers(request, target)
        conn, reused = self._take(target)
        try:
            return self._attempt(conn, not reused, target, request, headers)
        except _Stale as stale:
            if not reused:
                raise stale.failure from stale.__cause__
        # The server closed the idle connection as the request went out: the
        # one retry, on a new connection (see the module docstring).
        try:
            return self._attempt(self._new(target), True, target, request, headers)
        except _Stale as stale:
            raise stale.failure from stale.__cause__

    def close(self) -> None:
        """Close the idle connections and refuse new requests.  Connections in
        use are closed when their request finishes."""
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def __enter__(self) -> HttpClientTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        with self._lock:
            idle = sum(len(conns) for conns in self._idle.values())
        return f"<HttpClientTransport {idle} idle connections{' closed' if self._closed else ''}>"

    # -- connections --------------------------------------------------------------

    def _new(self, target: _Target) -> _Connection:
        return _Connection(
            target.host,
            target.port,
            address=target.address,
            ssl_context=self._ssl_context if target.scheme == "https" else None,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
        )

    def _take(self, target: _Target) -> tuple[_Connection, bool]:
        """An idle connection to the target's origin (``True``), or a new one (``False``)."""
        key = (target.scheme, target.host, target.port)
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._new(target), False
            if not _is_dropped(conn.sock):
                return conn, True
            conn.close()

    def _give_back(self, target: _Target, conn: _Connection) -> None:
        key = (target.scheme, target.host, target.port)
        with self._lock:
            if not self._closed:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self._max_idle:
                    idle.append(conn)
                    return
        conn.close()

    # -- one exchange ---------------------------------------------------------------

    def _attempt(
        self,
        conn: _Connection,
        fresh: bool,
        target: _Target,
        request: Request,
        headers: list[tuple[str, str]],
    ) -> Response:
        """Send on ``conn``; give it back after a complete response, close it otherwise.

        Raises :class:`_Stale` when the connection turned out closed before any
        response byte, ``TransportFailure`` for every other failure.
        """
        phase = "connect to"
        try:
            if fresh:
                conn.connect()
            phase = "send to"
            conn.putrequest(
                request.method, target.target, skip_host=True, skip_accept_encoding=True
            )
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(request.body)
            phase = "response from"
            response = conn.getresponse()
            try:
                body = response.read()
            finally:
                response.close()
            keep = not response.will_close and conn.sock is not None
            result = Response(response.status, response.getheaders(), body, request.url)
        except _NothingReceived as nothing:
            conn.close()
            failure = _failure(phase, target, _describe(nothing.error), request)
            raise _Stale(failure) from nothing.error
        except (OSError, http.client.HTTPException, ValueError) as error:
            conn.close()
            timeout = self._connect_timeout if phase == "connect to" else self._read_timeout
            failure = _failure(phase, target, _detail(error, timeout), request)
            if phase == "send to" and isinstance(error, _DROPPED):
                raise _Stale(failure) from error
            raise failure from error
        except BaseException:
            conn.close()
            raise
        if keep:
            self._give_back(target, conn)
        else:
            conn.close()
        return result


def client(
    account: str | Account,
    credential: Credential,
    *,
    tokens: TokenSet | None = None,
    store: TokenStore | None = None,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    ca_file: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    resolve: Mapping[str, str] | None = None,
    max_idle_per_origin: int = 4,
    on_behalf: str | None = None,
    forwarded_for: str | None = None,
    on_account_moved: Callable[[str, str], None] | None = None,
) -> Client:
    """A blocking API client over :class:`HttpClientTransport`.

    ``account`` is an :class:`~cfauth_core.Account` or a string for
    :meth:`Account.parse <cfauth_core.Account.parse>` (``"acme"``,
    ``"https://acme.checkfront.com"``).  For OAuth2 without ``tokens``, the
    tokens are loaded from ``store`` if one is given.  The transport options
    are :class:`HttpClientTransport`'s; ``on_behalf``, ``forwarded_for`` are
    :class:`~cfauth.sync.Client`'s, ``on_account_moved`` the
    :class:`~cfauth.sync.Driver`'s.  Closing the client closes the transport.
    """
    return build_client(
        account,
        credential,
        HttpClientTransport(
            ssl_context=ssl_context,
            ca_file=ca_file,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            resolve=resolve,
            max_idle_per_origin=max_idle_per_origin,
        ),
        tokens=tokens,
        store=store,
        config=config,
        on_behalf=on_behalf,
        forwarded_for=forwarded_for,
        on_account_moved=on_account_moved,
    )
