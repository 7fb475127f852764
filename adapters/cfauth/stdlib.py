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
you pass; a context that does not verify certificates and host names, or
allows a TLS version older than 1.2, is refused when the transport is made
(:class:`~cfauth_core.InsecureTransport`, the same rule for every transport).
A certificate that is not trusted fails the request with a non-retryable
failure that names the host and the fix (``ca_file=`` or ``ssl_context=``).
Plain ``http`` is used only when the request URL itself is ``http`` (the
machine produces those only for loopback with its ``insecure_loopback`` test
switch, and ``resolve`` may map a loopback host only to a loopback address).

*resolve.*  Like curl's ``--resolve``: ``{"acme.checkfront.com:443":
"127.0.0.1:8443"}`` makes the TCP connection go to 127.0.0.1:8443 while the
real host name is kept for SNI, the certificate check and the ``Host``
header.

*Timeouts.*  ``connect_timeout`` bounds the TCP connect and the TLS handshake;
``read_timeout`` then bounds every send and receive on the socket (it is the
longest silence allowed, not a deadline for the whole response);
``total_timeout`` (default 60 s, ``None`` for none) bounds the whole exchange
once connected, from the first byte sent to the last received, so a server
dripping a byte at a time cannot hold a request for ever.  A failure names
the phase and the timeout that ran out.

*What counts as a response.*  The status line and every header line up to
the blank line, then the whole body: as many bytes as ``Content-Length``
says, every chunk and the end of a chunked body, or (with neither) everything
up to a TLS ``close_notify``.  End-of-file anywhere before that, a malformed
status or header line (never quoted in the message), a ``Content-Length``
that is not one number, or a transfer coding other than chunked fail the
request: a partial answer is never delivered.  Interim responses (``100
Continue``, ``103 Early Hints``, any ``1xx``) are read and skipped.  A body
larger than ``max_response_size`` (default 64 MiB) fails the request before
it is buffered; the token endpoint's answers (``/oauth/token/``) are held to
64 KiB.

*Keep-alive.*  Idle connections are pooled per origin (scheme, host, port),
at most ``max_idle_per_origin`` of them, under one lock.  A request takes an
idle connection (or opens a new one), owns it alone until the whole response
body has been read, and then gives it back only when nothing else arrived
after the response: no byte in the reader's buffer, in the TLS layer
(``SSLSocket.pending()``) or in the socket, and the server did not say
``Connection: close``.  Bytes nobody asked for (a second response, a body
longer than declared, a ``408`` before closing) would be read as the next
request's answer, so such a connection is closed.  A connection is never
used by two threads at once.  Before an idle connection is reused it is
polled: if it is readable, the server closed it (or sent something unasked)
and it is dropped.

*The one retry.*  The transport never retries, with one exception.  A server
may close an idle keep-alive connection at the very moment a request is
written to it; the request then fails before a single byte of response
arrives (a reset, a broken pipe, or end-of-file where the status line should
be).  Such a request is sent once more on a new connection, but only if the
server cannot have acted on it twice: when nothing of it was written, or its
method is idempotent (``GET``, ``HEAD``, ``OPTIONS``, ``PUT``, ``DELETE``), or
it carries an ``Idempotency-Key`` header (Go's ``net/http`` rule).  This
happens only on a *reused* connection and only when no response byte was
received; a failure on a new connection, a timeout, or any failure after the
response began is reported as it is.  A ``POST`` (or ``PATCH``) without an
``Idempotency-Key`` that failed after some of it was written raises
:class:`~cfauth.OutcomeUnknown`, which says whether it was fully written: the
server may have processed it, so check before sending it again.

*Failures* raise :class:`~cfauth.TransportFailure` naming the phase, the host
(and the address it was resolved to) and the error type; never a header, a
URL query or a body.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress

from cfauth_core import Account, Config, Credential, Request, TokenSet

from ._http import (
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_TOTAL_TIMEOUT,
    Response,
    TransportFailure,
    check_limits,
    replayable,
    request_failure,
    response_cap,
)
from ._tls import check_options, parse_resolve, tls_context, untrusted_certificate
from .stores import GrantStore, TokenStore
from .sync import Client, build_client

__all__ = ["HttpClientTransport", "client"]

from ._wire import (
    _DROPPED,
    _JOIN_BODY_UP_TO,
    TotalTimeout,
    _describe,
    _detail,
    _encode_headers,
    _FirstByteResponse,
    _is_dropped,
    _message,
    _NothingReceived,
    _Origin,
    _OriginKey,
    _Prepare,
    _send_counted,
    _Target,
)

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
        self._poller: select.poll | None = None

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        sock = socket.create_connection(self._address, self.timeout)
        try:
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
                # an end-of-file without TLS close_notify is an error, not the end
                sock.suppress_ragged_eofs = False  # type: ignore[attr-defined]
            sock.settimeout(self._read_timeout)
            self._poller = None
            if hasattr(select, "poll"):
                self._poller = select.poll()
                self._poller.register(sock, select.POLLIN)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def dropped(self) -> bool:
        """:func:`_is_dropped` for this connection, with the poll object made
        once per socket in :meth:`connect`."""
        if self.sock is None or self._poller is None:
            return _is_dropped(self.sock)
        try:
            return bool(self._poller.poll(0))
        except (OSError, ValueError):
            return True


class _Stale(Exception):
    """An attempt failed because the connection was closed before any response
    byte; ``unsent``: before any byte of the request was written, too."""

    def __init__(self, failure: TransportFailure, unsent: bool) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.unsent = unsent


class HttpClientTransport:
    """A thread-safe, keep-alive ``send(Request) -> Response`` on :mod:`http.client`.

    ``ssl_context`` or ``ca_file`` replace the system's CAs (the context must
    verify certificates and host names); ``connect_timeout`` bounds the TCP
    connect and TLS handshake, ``read_timeout`` each later send or receive,
    ``total_timeout`` (``None``: no limit) the whole exchange once connected;
    ``max_response_size`` is the largest response body accepted;
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
        total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        resolve: Mapping[str, str] | None = None,
        max_idle_per_origin: int = 4,
    ) -> None:
        check_options(
            connect_timeout, read_timeout, max_idle_per_origin, pool="max_idle_per_origin", least=0
        )
        check_limits(total_timeout, max_response_size)
        self._ssl_context = tls_context(ssl_context, ca_file)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._max_response_size = max_response_size
        self._resolve = parse_resolve(resolve)
        self._max_idle = max_idle_per_origin
        self._lock = threading.Lock()
        self._idle: dict[_OriginKey, list[_Connection]] = {}
        self._closed = False
        self._prepare: _Prepare[bytes] = _Prepare(self._resolve, _encode_headers)

    def __call__(self, request: Request) -> Response:
        """Send ``request`` as it is and return the response, whatever its status."""
        if self._closed:
            raise TransportFailure("this transport is closed; create a new one", unsent=True)
        try:
            origin, target, head, length = self._prepare(request)
        except TransportFailure as error:
            error.unsent = True  # refused before anything was sent
            raise
        head = b"%s %s HTTP/1.1\r\n%s" % (request.method.encode(), target.target.encode(), head)
        if length is not None:
            head += b"Content-Length: %s\r\n" % length.encode()
        head += b"\r\n"
        total = self._total_timeout
        deadline = None if total is None else time.monotonic() + total
        conn, reused = self._take(origin)
        try:
            return self._attempt(conn, not reused, origin, target, request, head, deadline)
        except _Stale as stale:
            if not reused or not (stale.unsent or replayable(request)):
                raise stale.failure from stale.__cause__
        # The server closed the idle connection as the request went out: the
        # one retry, on a new connection (see the module docstring).
        try:
            return self._attempt(self._new(target), True, origin, target, request, head, deadline)
        except _Stale as stale:
            raise stale.failure from stale.__cause__

    def close(self) -> None:
        """Close the idle connections and refuse new requests.  Connections in
        use are closed when their request finishes."""
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        self._prepare.clear()
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

    def _take(self, origin: _Origin[bytes]) -> tuple[_Connection, bool]:
        """An idle connection to the origin (``True``), or a new one (``False``)."""
        key = origin.key
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._new(origin.target("")), False
            if not conn.dropped():
                return conn, True
            conn.close()

    def _give_back(self, origin: _Origin[bytes], conn: _Connection) -> None:
        with self._lock:
            if not self._closed:
                idle = self._idle.get(origin.key)
                if idle is None:
                    idle = self._idle[origin.key] = []
                if len(idle) < self._max_idle:
                    idle.append(conn)
                    return
        conn.close()

    # -- one exchange ---------------------------------------------------------------

    def _attempt(
        self,
        conn: _Connection,
        fresh: bool,
        origin: _Origin[bytes],
        target: _Target,
        request: Request,
        head: bytes,
        deadline: float | None,
    ) -> Response:
        """Send on ``conn``; give it back after a complete response with
        nothing after it, close it otherwise.

        ``head`` is the request line and headers, encoded and checked; a
        :class:`_FirstByteResponse` reads the response.  Raises :class:`_Stale`
        when the connection turned out closed before any response byte,
        ``TransportFailure`` (or :class:`~cfauth.OutcomeUnknown`) for every
        other failure.
        """
        phase = "connect to"
        sent = [0]
        body = request.body
        size = len(head) + (len(body) if body else 0)
        try:
            if fresh:
                conn.connect()
            phase = "send to"
            sock = conn.sock
            if body and len(body) <= _JOIN_BODY_UP_TO:
                _send_counted(sock, head + body, sent, deadline)  # one write
            else:
                _send_counted(sock, head, sent, deadline)
                if body:
                    _send_counted(sock, body, sent, deadline)
            phase = "response from"
            response = _FirstByteResponse(
                sock,
                method=request.method,
                deadline=deadline,
                max_body=response_cap(target.target, self._max_response_size),
                poller=conn._poller,
            )
            try:
                response.begin()
                body = response.read()
            finally:
                response.close()
            keep = not response.will_close
            result = Response(response.status, list(response.msg.raw_items()), body, request.url)
        except _NothingReceived as nothing:
            conn.close()
            failure = request_failure(
                _message(phase, target, _describe(nothing.error), request),
                request,
                written=sent[0],
                complete=sent[0] == size,
            )
            raise _Stale(failure, sent[0] == 0) from nothing.error
        except (OSError, http.client.HTTPException, ValueError) as error:
            conn.close()
            untrusted = untrusted_certificate(target.describe(), error)
            if untrusted is not None:
                raise untrusted from error
            if isinstance(error, TotalTimeout):
                detail = f"the total timeout ({self._total_timeout:g} s) ran out"
            elif phase == "connect to":
                detail = _detail(error, self._connect_timeout, "connect_timeout")
            else:
                detail = _detail(error, self._read_timeout, "read_timeout")
            failure = request_failure(
                _message(phase, target, detail, request),
                request,
                written=sent[0],
                complete=sent[0] == size,
            )
            if phase == "send to" and isinstance(error, _DROPPED):
                raise _Stale(failure, sent[0] == 0) from error
            raise failure from error
        except BaseException:
            conn.close()
            raise
        if keep:
            self._give_back(origin, conn)
        else:
            conn.close()
        return result


def client(
    account: str | Account,
    credential: Credential,
    *,
    tokens: TokenSet | None = None,
    store: TokenStore | GrantStore | None = None,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    ca_file: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    resolve: Mapping[str, str] | None = None,
    pool_size: int | None = None,
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
    :class:`~cfauth.sync.Driver`'s.  ``pool_size`` (every factory takes it)
    sets the transport's own pool option, here ``max_idle_per_origin``.
    Closing the client closes the transport.
    """
    return build_client(
        account,
        credential,
        HttpClientTransport(
            ssl_context=ssl_context,
            ca_file=ca_file,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            total_timeout=total_timeout,
            max_response_size=max_response_size,
            resolve=resolve,
            max_idle_per_origin=max_idle_per_origin if pool_size is None else pool_size,
        ),
        tokens=tokens,
        store=store,
        config=config,
        on_behalf=on_behalf,
        forwarded_for=forwarded_for,
        on_account_moved=on_account_moved,
    )
