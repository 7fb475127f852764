"""The h11 transport of the trio binding: :class:`H11Transport`, an HTTP/1.1
client on trio streams and h11 with a keep-alive connection pool.

Theory of operation: the transport
----------------------------------
:class:`H11Transport` keeps a pool of kept-alive connections per origin
(scheme, host, port).  A semaphore per origin bounds how many requests (hence
connections: one is opened only when no idle one is left) are in progress at
once; tasks beyond the cap wait for a slot.  A connection goes back to the pool
only when h11 says both sides finished the exchange cleanly (``DONE``/``DONE``)
and nothing arrived after the response: not in h11's buffer
(``trailing_data``), nor in the TLS layer, decrypted or not.  Those bytes (a
second response, a body longer than declared) would otherwise be read as the
next request's answer.  After any error, timeout or cancellation it is
closed, never reused, so a half-sent request can never be followed by another
one on the same socket.  Before an idle connection is reused its socket is
polled: readable means the server closed it or sent something unasked (a
``408`` before closing), and it is closed instead.

A kept-alive connection may have been closed by the server while idle; that
shows as an error before the first byte of the response.  Only then, only for
a connection taken from the pool, and only if the server cannot have acted on
the request twice (nothing of it written, an idempotent method, or an
``Idempotency-Key`` header), the request is sent again, once, on a fresh
connection.  A ``POST`` or ``PATCH`` that may have been processed raises
:class:`~cfauth.OutcomeUnknown` instead.  Nothing else is retried, and
redirects are returned as they are: the machine decides what to do with them.

``read_timeout`` bounds each wait for the server; ``total_timeout`` (default
60 s, ``None`` for none) the whole exchange once connected, so a server
dripping a byte at a time cannot hold a request for ever.  A body larger than
``max_response_size`` (default 64 MiB; 64 KiB for the token endpoint) fails
the request before it is buffered.  An end-of-file without TLS
``close_notify`` ends nothing: a body that only the close delimits is
incomplete then.  Messages never quote the response (h11's may).

The hot path is kept short: a free pool slot is taken without a checkpoint;
the parsed origin of each URL prefix and the h11 request head of each
(method, URL, headers, body length) are cached (bounded, emptied when full;
h11 validated each head, CR/LF included, when it was built); and the socket
under the TLS stream tries to send or receive before it waits, so a request
yields to the scheduler only where ``SSLStream`` does (its locks) or where it
must wait, and only those waits pay for a cancel scope (``read_timeout``).
"""

from __future__ import annotations

import errno
import logging
import re
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

try:
    import h11
    import trio
except ImportError as error:  # installed without the trio extra
    from ._extras import missing_extra

    raise missing_extra("cfauth.trio", "trio", error) from None

from cfauth_core import Request

from ._http import (
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_TOTAL_TIMEOUT,
    Response,
    TransportFailure,
    check_limits,
    failure_reason,
    replayable,
    request_failure,
    response_cap,
)
from ._tls import check_options, parse_resolve, tls_context, untrusted_certificate

__all__ = ["H11Transport"]

log = logging.getLogger("cfauth")


# -- the transport --------------------------------------------------------------

_DEFAULT_PORTS = {"https": 443, "http": 80}
_READ_SIZE = 65536
#: Errors that, on a kept-alive connection before any byte of the response,
#: mean the server closed it while it was idle.
_STALE = (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError)
#: How many parsed origins (per URL prefix) and built request heads are kept;
#: a full cache is emptied and refilled.
_ORIGIN_CACHE = 32
_MESSAGE_CACHE = 128
_END = h11.EndOfMessage()
#: What no header value may hold (RFC 9110 5.5): control characters but tab.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NEED_DATA = h11.NEED_DATA
_DONE = h11.DONE


class _StaleConnection(Exception):
    """A pooled connection turned out to be closed: send again on a fresh one."""


class _TotalTimeout(trio.TooSlowError):
    """The request's ``total_timeout`` ran out."""


class _Origin:
    """Where a URL's requests go: its pool key, host and ``Host`` header."""

    __slots__ = ("authority", "host", "key", "port", "scheme", "text")

    def __init__(self, scheme: str, host: str, port: int, text: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.key = (scheme, host, port)
        authority = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORTS[scheme]:
            authority += f":{port}"
        self.authority = authority
        self.text = text  # scheme://netloc, for messages


class _SocketStream(trio.abc.Stream):
    """A connected TCP socket as a trio stream that waits only when it must.

    ``trio.SocketStream`` yields to the scheduler on every call; under
    ``trio.SSLStream`` (which takes a lock, itself a checkpoint, around each
    use of its transport) that doubles the scheduler passes per request.  This
    one tries the socket first and waits for it only when it would block; each
    such wait is bounded by ``timeout`` (raising ``trio.TooSlowError``), which
    is what bounds every wait for the server, with no cancel scope on the
    path that does not wait.  With ``checkpoints`` (when nothing above it
    checkpoints: plain HTTP) every call is a checkpoint, as in trio.
    """

    __slots__ = ("checkpoints", "deadline", "poller", "sent", "sock", "timeout")

    def __init__(self, sock: socket.socket, timeout: float, checkpoints: bool) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.timeout = timeout
        self.checkpoints = checkpoints
        #: the request's ``total_timeout`` on trio's clock, if any
        self.deadline: float | None = None
        #: bytes the socket took, ever (a failure compares it to tell whether
        #: anything of its request went out)
        self.sent = 0
        self.poller: Any = None

    def idle(self) -> bool:
        """Whether the socket has nothing to read (no byte, no end-of-file):
        a server says nothing unasked on an idle HTTP/1.1 connection."""
        poller = self.poller
        try:
            if poller is None:
                poller = self.poller = select.poll()
                poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint_if_cancelled()
        sock = self.sock
        with memoryview(data) as view:
            total = len(view)
            sent = 0
            while sent < total:
                try:
                    taken = sock.send(view[sent:])
                    sent += taken
                    self.sent += taken
                except BlockingIOError:
                    await self._wait(trio.lowlevel.wait_writable)
                except OSError as error:
                    raise _stream_error(error) from error
        if self.checkpoints:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._wait(trio.lowlevel.wait_writable)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.checkpoints:
            await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            try:
                data = self.sock.recv(max_bytes or _READ_SIZE)
            except BlockingIOError:
                if yielded:
                    await self._wait(trio.lowlevel.wait_readable)
                else:
                    # Let the scheduler run once first: an answer due within
                    # microseconds (loopback) then needs no cancel scope and
                    # no epoll registration.
                    yielded = True
                    await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            except OSError as error:
                raise _stream_error(error) from error
            if self.checkpoints:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]]) -> None:
        until = trio.current_time() + self.timeout
        total = self.deadline is not None and self.deadline < until
        if total:
            until = self.deadline  # type: ignore[assignment]
        with trio.CancelScope(deadline=until) as scope:
            await wait(self.sock)
        if scope.cancelled_caught:
            raise _TotalTimeout if total else trio.TooSlowError

    async def aclose(self) -> None:
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)  # a task waiting on it gets ClosedResourceError
            self.sock.close()
        await trio.lowlevel.checkpoint()


def _stream_error(error: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if error.errno == errno.EBADF:
        return trio.ClosedResourceError("the connection was closed")
    return trio.BrokenResourceError(f"socket connection broken: {error}")


class _Connection:
    """One HTTP/1.1 connection: a trio stream (``raw``, or TLS over it) and
    its h11 state."""

    __slots__ = ("h11", "raw", "stream", "tls")

    def __init__(self, stream: trio.abc.Stream, raw: _SocketStream) -> None:
        self.stream = stream
        self.raw = raw
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        #: for TLS, what holds bytes received but not yet read: the TLS object
        #: (decrypted bytes, ``pending()``) and the buffer of bytes not yet
        #: decrypted (``SSLStream`` keeps both private; ``None`` if not found)
        self.tls: tuple[Any, Any] | None = None
        if isinstance(stream, trio.SSLStream):
            self.tls = (getattr(stream, "_ssl_object", None), getattr(stream, "_incoming", None))

    def clean(self) -> bool:
        """Whether nothing was received beyond the response just read: not in
        h11's buffer, nor in the TLS layer (decrypted or not).  Bytes there
        were not asked for, and would be read as the next request's answer."""
        if self.h11.trailing_data[0]:
            return False
        if self.tls is not None:
            decrypted, encrypted = self.tls
            if decrypted is None or encrypted is None:  # pragma: no cover - another trio
                return False  # cannot tell: never reuse
            if decrypted.pending() or encrypted.pending:
                return False
        return True


class _Pool:
    """The idle connections to one origin and the slots bounding its use."""

    __slots__ = ("idle", "slots")

    def __init__(self, size: int) -> None:
        self.idle: list[_Connection] = []
        self.slots = trio.Semaphore(size)


def _describe(error: BaseException) -> str:
    """What went wrong, for a message: trio wraps the OS or TLS error as the cause."""
    cause = error.__cause__ or error.__context__
    if isinstance(error, trio.BrokenResourceError) and cause is not None:
        error = cause
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"TLS certificate verification failed: {error.verify_message}"
    return failure_reason(error)


def _split(url: str) -> tuple[_Origin, str, str | None]:
    """``url``'s origin, request target, and the prefix (``scheme://netloc``,
    exactly as written) under which the origin may be cached, if any."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        host = port = None
    if scheme not in _DEFAULT_PORTS or not host or port is None or "@" in parts.netloc:
        raise TransportFailure(
            f"cannot send to {scheme}://{parts.hostname}: only http(s)://host[:port] "
            "URLs without user info are supported"
        )
    text = f"{scheme}://{parts.netloc}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    end = url.find("/", 8)
    prefix = url[:end] if end > 0 else None
    if prefix is not None and prefix.lower() != text.lower():
        prefix = None  # whitespace, a query or a fragment before the path: not cacheable
    return _Origin(scheme, host, port, text), target, prefix


class H11Transport:
    """An HTTP/1.1 client on trio streams with h11, for :class:`Driver`.

    Sends each request exactly as given: no redirects, no retries (except one
    resend on a fresh connection when a kept-alive one was found closed before
    any answer).  TLS is verified against the system's CAs by default, or
    ``ca_file``, or ``ssl_context`` (which must verify certificates and host
    names over TLS 1.2 or later, or it is refused).  ``resolve`` maps
    ``"host:port"`` to the ``"address:port"`` to connect to instead, like
    curl's ``--resolve``: SNI, the certificate check and ``Host`` keep the real
    name.  ``connect_timeout`` bounds connecting and the TLS handshake;
    ``read_timeout`` bounds each wait for the server (sending or receiving),
    ``total_timeout`` (``None``: no limit) the whole exchange once connected;
    ``max_response_size`` is the largest response body accepted.
    At most ``max_connections_per_origin`` requests per origin are in progress
    at once; further tasks wait for a free connection.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        resolve: Mapping[str, str] | None = None,
        total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        max_connections_per_origin: int = 10,
    ) -> None:
        check_options(
            connect_timeout,
            read_timeout,
            max_connections_per_origin,
            pool="max_connections_per_origin",
            least=1,
        )
        check_limits(total_timeout, max_response_size)
        self._ssl_context = tls_context(ssl_context, ca_file, alpn=["http/1.1"])
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._max_response_size = max_response_size
        self._resolve = parse_resolve(resolve)
        self._max_connections = max_connections_per_origin
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        # URL prefix ("https://acme.checkfront.com") -> its parsed origin.
        self._origins: dict[str, _Origin] = {}
        # (method, url, headers, body length) -> the validated h11 request head.
        self._messages: dict[
            tuple[str, str, tuple[tuple[str, str], ...], int | None],
            tuple[h11.Request, _Origin],
        ] = {}
        self._closed = False

    async def __call__(self, request: Request) -> Response:
        url = request.url
        body = request.body
        key = (request.method, url, request.headers, None if body is None else len(body))
        try:
            cached = self._messages.get(key)
            hashable = True
        except TypeError:  # unhashable headers (lists): build every time
            cached = None
            hashable = False
        if cached is None:
            message, origin = self._message(request)
            if hashable:
                if len(self._messages) >= _MESSAGE_CACHE:
                    self._messages.clear()
                self._messages[key] = message, origin
        else:
            message, origin = cached
        if self._closed:
            raise TransportFailure("this transport is closed; create a new one")

        pool = self._pools.get(origin.key)
        if pool is None:
            pool = self._pools[origin.key] = _Pool(self._max_connections)
        slots = pool.slots
        try:
            slots.acquire_nowait()  # no checkpoint when a slot is free
        except trio.WouldBlock:
            await slots.acquire()
        total = self._total_timeout
        deadline = None if total is None else trio.current_time() + total
        try:
            idle = pool.idle
            while idle:
                connection = idle.pop()
                if not connection.raw.idle():
                    # closed, or bytes nobody asked for (a 408 before closing)
                    await trio.aclose_forcefully(connection.stream)
                    continue
                try:
                    return await self._send_on(pool, connection, message, request, deadline, True)
                except _StaleConnection as error:
                    log.debug(
                        "a kept-alive connection to %s was closed (%s); sending again",
                        origin.authority,
                        _describe(error.__cause__ or error),
                    )
                    break
            connection = await self._connect(origin)
            return await self._send_on(pool, connection, message, request, deadline, False)
        finally:
            slots.release()

    def _message(self, request: Request) -> tuple[h11.Request, _Origin]:
        """The h11 request head for ``request`` (validated by h11) and its origin."""
        url = request.url
        end = url.find("/", 8)
        origin = self._origins.get(url[:end]) if end > 0 else None
        target = url[end:]
        # A fragment, a tab or newline (urlsplit drops them) or a bare "?" take
        # the slow path; otherwise the target is the URL after its origin.
        if (
            origin is None
            or "#" in target
            or "\t" in target
            or "\r" in target
            or "\n" in target
            or target.endswith("?")
        ):
            origin, target, prefix = _split(url)
            if prefix is not None:
                if len(self._origins) >= _ORIGIN_CACHE:
                    self._origins.clear()
                self._origins[prefix] = origin
        headers = [("Host", origin.authority)]
        headers += [(k, v) for k, v in request.headers if k.lower() not in _FRAMING_HEADERS]
        body = request.body
        if body is not None or request.method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body or b""))))
        try:
            # h11 validates the method, target and headers (refusing CR/LF).
            message = h11.Request(method=request.method, target=target, headers=headers)
        except h11.LocalProtocolError:
            # h11's message may quote the offending header value: a credential.
            raise TransportFailure(
                f"{request.method} {target.partition('?')[0]}: the method, target or a header "
                "is not valid HTTP/1.1 (not shown)"
            ) from None
        return message, origin

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        self._closed = True
        self._messages.clear()
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            idle, pool.idle = pool.idle, []
            for connection in idle:
                await trio.aclose_forcefully(connection.stream)

    async def __aenter__(self) -> H11Transport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _connect(self, origin: _Origin) -> _Connection:
        host, port = origin.host, origin.port
        address, address_port = self._resolve.get((host, port), (host, port))
        tls = origin.scheme == "https"
        try:
            with trio.fail_after(self._connect_timeout):
                opened = await trio.open_tcp_stream(address, address_port)
                # Take the socket (TCP_NODELAY set by trio) from trio's stream.
                fd = opened.socket.detach()
                try:
                    sock = socket.socket(fileno=fd)
                except BaseException:  # pragma: no cover - a valid fd is always taken
                    socket.close(fd)
                    raise
                # Until connected, each wait is bounded by the connect timeout.
                raw = _SocketStream(sock, self._connect_timeout, checkpoints=not tls)
                stream: trio.abc.Stream = raw
                if tls:
                    # https_compatible=False: an end-of-file without TLS
                    # close_notify is an error, not the end of a response
                    stream = wrapped = trio.SSLStream(
                        raw, self._ssl_context, server_hostname=host, https_compatible=False
                    )
                    try:
                        await wrapped.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(wrapped)
                        raise
                raw.timeout = self._read_timeout
        except trio.TooSlowError:
            raise TransportFailure(
                f"connecting to {host}:{port} (TCP and TLS handshake) timed out after "
                f"{self._connect_timeout:g} s (connect_timeout)",
                unsent=True,
            ) from None
        except (OSError, trio.BrokenResourceError) as error:
            shown = f"{host}:{port}"
            if (address, address_port) != (host, port):
                shown += f" (via {address}:{address_port})"
            untrusted = untrusted_certificate(shown, error)
            if untrusted is not None:
                raise untrusted from error
            raise TransportFailure(
                f"could not connect to {shown}: {_describe(error)}", unsent=True
            ) from error
        return _Connection(stream, raw)

    async def _send_on(
        self,
        pool: _Pool,
        connection: _Connection,
        message: h11.Request,
        request: Request,
        deadline: float | None,
        reused: bool,
    ) -> Response:
        """One exchange on ``connection``; it goes back to the pool only if
        both sides finished cleanly and nothing followed the response.

        ``read_timeout`` bounds every wait for the server and ``deadline``
        (``total_timeout``) all of them: the connection's :class:`_SocketStream`
        applies both where it waits.
        """
        state = connection.h11
        stream = connection.stream
        raw = connection.raw
        raw.deadline = deadline
        sent_before = raw.sent
        body = request.body
        url = request.url
        complete = False  # the whole request went out
        received = False  # any byte of the response received
        keep = False
        limit = self._max_response_size
        if message.target.startswith(b"/oauth/token/"):
            limit = response_cap("/oauth/token/", limit)
        try:
            outgoing = state.send(message) or b""
            if body:
                outgoing += state.send(h11.Data(data=body)) or b""
            outgoing += state.send(_END) or b""
            response: h11.Response | None = None
            chunks: list[bytes] = []
            size = 0
            await stream.send_all(outgoing)
            complete = True
            while True:
                event = state.next_event()
                if event is _NEED_DATA:
                    chunk = await stream.receive_some(_READ_SIZE)
                    if chunk:
                        received = True
                    state.receive_data(bytes(chunk))
                elif type(event) is h11.Data:
                    size += len(event.data)
                    if size > limit:
                        raise TransportFailure(
                            f"the response from {_origin(url)} is larger than {limit} bytes "
                            "(max_response_size)"
                        )
                    chunks.append(event.data)
                elif type(event) is h11.Response:
                    response = event
                    for name, value in event.headers:
                        if _BAD_VALUE.search(value):
                            # h11 keeps control characters in values; the
                            # other transports refuse them, and so does this one
                            raise h11.RemoteProtocolError("control character in a header value")
                        if name == b"content-length" and int(value) > limit:
                            raise TransportFailure(
                                f"the response from {_origin(url)} ({int(value)} bytes) is "
                                f"larger than {limit} bytes (max_response_size)"
                            )
                elif type(event) is h11.EndOfMessage:
                    break
                elif type(event) is h11.ConnectionClosed:  # pragma: no cover - h11 raises
                    raise h11.RemoteProtocolError("the server closed the connection")
                # InformationalResponse (1xx): wait for the final response.
            assert response is not None
            if (
                state.our_state is _DONE
                and state.their_state is _DONE
                and not self._closed
                and connection.clean()
            ):
                state.start_next_cycle()
                raw.deadline = None
                pool.idle.append(connection)
                keep = True
        except trio.TooSlowError as error:
            if isinstance(error, _TotalTimeout):
                detail = (
                    f"{request.method} {_origin(url)}: the total timeout "
                    f"({self._total_timeout:g} s) ran out"
                )
            else:
                detail = (
                    f"{request.method}: no answer from {_origin(url)} within "
                    f"{self._read_timeout:g} s (read_timeout)"
                )
            raise self._failure(detail, request, raw.sent - sent_before, complete) from None
        except _STALE as error:
            written = raw.sent - sent_before
            if reused and not received and (written == 0 or replayable(request)):
                raise _StaleConnection from error
            if isinstance(error, h11.RemoteProtocolError):
                # h11's message may quote the response (a header line, a cookie)
                detail = f"{_origin(url)} sent a response that is not valid HTTP/1.1 (not shown)"
            else:
                detail = f"the connection to {_origin(url)} failed: {_describe(error)}"
            raise self._failure(
                f"{request.method}: {detail}", request, written, complete
            ) from error
        except h11.LocalProtocolError as error:  # pragma: no cover - heads are checked when built
            raise TransportFailure(
                f"{_origin(url)}: the request could not be sent: {type(error).__name__}"
            ) from error
        finally:
            if not keep:
                # Errors, timeouts and cancellation all land here: a connection
                # in an unknown state is never reused.
                await trio.aclose_forcefully(stream)
        headers = [
            (name.lower().decode("latin-1"), value.decode("latin-1"))
            for name, value in response.headers.raw_items()
        ]
        return Response(response.status_code, headers, b"".join(chunks), url)

    @staticmethod
    def _failure(message: str, request: Request, written: int, complete: bool) -> TransportFailure:
        return request_failure(message, request, written=written, complete=complete)


_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
