"""A blocking transport on urllib3 (``pip install cfauth[urllib3]``).

``Urllib3Transport()`` is a ``send(Request) -> Response`` callable for the
:class:`~cfauth.sync.Driver`; :func:`client` builds the machine, the transport
and the driver in one call::

    from cfauth import urllib3 as cfurllib3
    from cfauth_core import ApiKey

    with cfurllib3.client("acme", ApiKey(key, secret)) as api:
        print(api.get("booking").json())

It behaves like :class:`cfauth.stdlib.HttpClientTransport` (read that
module's docstring): the request is sent exactly as given, plus ``Host`` and
``Content-Length`` if missing (urllib3's own ``User-Agent`` and
``Accept-Encoding`` are suppressed); ``retries=False`` and ``redirect=False``
on every request; TLS verified (``cert_reqs="CERT_REQUIRED"`` with the default
context, your ``ca_file`` or your ``ssl_context``); ``urllib3.Timeout(connect,
read)``; the body is returned as received (``decode_content=False``).

*resolve.*  A mapped request goes to a pool for the mapped address whose
``server_hostname`` is the real host: urllib3 sends it as SNI and, with
``check_hostname`` left on, :mod:`ssl` checks the certificate against it (no
``assert_hostname``, which would make urllib3 turn ``check_hostname`` off on
the context).  The ``Host`` header carries the real host as well.

*Pools.*  urllib3 keeps one pool per origin (per mapped address and real host
under ``resolve``) holding up to ``pool_maxsize`` idle connections.  The pools
do not block (``block=False``): when more threads than ``pool_maxsize`` send to
one origin at once, the extra ones open extra connections, which are closed
after use instead of kept (urllib3 logs "Connection pool is full" at WARNING
when that happens).  Set ``pool_maxsize`` to the number of threads you run
to keep them all alive.

*Responses, keep-alive, the one retry, timeouts.*  Exactly as in the stdlib
transport, whose response reader this one uses: partial or malformed
responses fail, interim (``1xx``) responses are skipped, a connection with
anything after its response is closed rather than given back to urllib3's
pool, ``total_timeout`` bounds each exchange once connected and
``max_response_size`` each body, and a request is sent once more (on a new
connection) only when a reused connection was found closed before any byte of
the answer and the request cannot have been acted on twice (nothing written,
an idempotent method, or an ``Idempotency-Key``).  urllib3 itself drops idle
connections the server has closed before reusing them.  A stalled TLS
handshake is reported as such, under ``connect_timeout`` (urllib3 calls it a
read timeout).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Union

try:
    import urllib3
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.util import SKIP_HEADER, Retry
except ImportError as error:  # installed without the urllib3 extra
    from ._extras import missing_extra

    raise missing_extra("cfauth.urllib3", "urllib3", error) from None

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
from ._wire import (
    TotalTimeout,
    _describe,
    _FirstByteResponse,
    _message,
    _NothingReceived,
    _OriginKey,
    _Prepare,
    _send_counted,
    _Target,
)
from .stores import GrantStore, TokenStore
from .sync import Client, build_client

__all__ = ["Urllib3Transport", "client"]


class _Attempt(threading.local):
    """What this thread's current request learnt about its connection, and the
    limits its response is read with.

    urllib3 does not tell which connection a failed request used, so the
    connection records it here (the request runs in the caller's thread).
    """

    reused = False
    fresh_only = False
    #: "connect", "send" or "response": where the request got to
    phase = "connect"
    #: bytes of the request the socket took, and whether all of it went out
    written = 0
    complete = False
    deadline: float | None = None
    max_body = DEFAULT_MAX_RESPONSE_SIZE


_attempt = _Attempt()

#: Bound of the transport's own map of pools: the manager's (``num_pools``).
_MAX_POOLS = 10


class _TrackedConnection(HTTPConnection):
    """Records whether a request goes out on a reused connection (and closes
    a reused one instead when this thread asked for a fresh one: the retry),
    how far it got and how many bytes went out; reads the response with
    :class:`~cfauth.stdlib._FirstByteResponse` under this request's limits."""

    _used_socket: object = None  # the socket the last request went out on

    def response_class(  # type: ignore[override]
        self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, **_: Any
    ) -> _FirstByteResponse:
        _attempt.phase = "response"
        return _FirstByteResponse(
            sock,
            debuglevel,
            method,
            deadline=_attempt.deadline,
            max_body=_attempt.max_body,
            owner=self,
        )

    def connect(self) -> None:
        _attempt.phase = "connect"
        super().connect()
        if isinstance(self.sock, ssl.SSLSocket):
            # an end-of-file without TLS close_notify is an error, not the end
            self.sock.suppress_ragged_eofs = False  # type: ignore[attr-defined]

    def request(self, *args: Any, **kwargs: Any) -> None:
        reused = self.sock is not None and self.sock is self._used_socket
        if reused and _attempt.fresh_only:
            self.close()  # http.client opens a new connection when sending
            reused = False
        _attempt.reused = reused
        super().request(*args, **kwargs)
        self._used_socket = self.sock
        _attempt.complete = True

    def send(self, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):  # pragma: no cover
            super().send(data)  # urllib3 sends bytes; http.client could send files
            _attempt.written += 1
            return
        if self.sock is None:
            self.connect()  # as http.client does
        _attempt.phase = "send"
        sent = [0]
        try:
            _send_counted(self.sock, data, sent, _attempt.deadline)
        finally:
            _attempt.written += sent[0]


class _TrackedHTTPSConnection(_TrackedConnection, HTTPSConnection):
    def connect(self) -> None:
        _attempt.phase = "connect"
        HTTPSConnection.connect(self)
        if isinstance(self.sock, ssl.SSLSocket):
            self.sock.suppress_ragged_eofs = False  # type: ignore[attr-defined]


class _Pool(HTTPConnectionPool):
    ConnectionCls = _TrackedConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


def _root_cause(error: BaseException) -> BaseException | None:
    """The innermost OS, TLS or http.client error that urllib3 wrapped (as an
    argument, a cause or a context), if any: its message says what happened
    without quoting the exchange, unlike some of urllib3's own messages."""
    found: BaseException | None = None
    pending, seen = [error], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current is not error and isinstance(current, (OSError, http.client.HTTPException)):
            found = current
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return found


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``error`` or any error it wraps (argument, cause, context) is a ``kind``."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if isinstance(current, kind):
            return True
        if id(current) not in seen:
            seen.add(id(current))
            pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
            pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def _header_pairs(response: urllib3.BaseHTTPResponse) -> list[tuple[str, str]]:
    """The response headers in the order they came (``HTTPHeaderDict`` groups
    repeated names; http.client's message, which urllib3 keeps, does not)."""
    original = getattr(response, "_original_response", None)
    if isinstance(original, http.client.HTTPResponse):
        # raw_items() is items() without the policy's pass over each value,
        # which changes nothing in text http.client decoded as Latin-1
        return list(original.msg.raw_items())
    return list(response.headers.items())  # pragma: no cover - other urllib3 backends


#: What urllib3 gets as ``headers``: a plain dict when no name repeats.
_Headers = Union[dict[str, str], urllib3.HTTPHeaderDict]

#: ``retries=False, redirect=False`` as urllib3 makes it from those on every
#: request (a Retry is never changed, only copied).
_NO_RETRIES = Retry.from_int(False, redirect=False)


def _build_headers(pairs: list[tuple[str, str]]) -> _Headers:
    """Checked headers (with ``Host``) as urllib3 takes them, with its own
    ``User-Agent`` and ``Accept-Encoding`` suppressed unless given."""
    names = {name.lower() for name, _ in pairs}
    headers: _Headers
    if len(names) == len(pairs):
        headers = dict(pairs)
    else:  # a repeated name: each value goes out as its own line
        headers = urllib3.HTTPHeaderDict()
        for name, value in pairs:
            headers.add(name, value)
    for name in ("User-Agent", "Accept-Encoding"):
        if name.lower() not in names:
            headers[name] = SKIP_HEADER
    return headers


class Urllib3Transport:
    """A thread-safe, keep-alive ``send(Request) -> Response`` on ``urllib3.PoolManager``.

    The options are :class:`cfauth.stdlib.HttpClientTransport`'s, except that
    ``pool_maxsize`` (connections kept per origin, at least 1; see the module
    docstring) takes the place of ``max_idle_per_origin``.
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
        pool_maxsize: int = 10,
    ) -> None:
        check_options(connect_timeout, read_timeout, pool_maxsize, pool="pool_maxsize", least=0)
        check_limits(total_timeout, max_response_size)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._max_response_size = max_response_size
        self._resolve = parse_resolve(resolve)
        self._closed = False
        self._manager = urllib3.PoolManager(
            maxsize=max(pool_maxsize, 1),
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            cert_reqs="CERT_REQUIRED",
            ssl_context=tls_context(ssl_context, ca_file),
        )
        self._manager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}
        self._prepare: _Prepare[_Headers] = _Prepare(self._resolve, _build_headers)
        #: the manager's pool for each origin, looked up once (while it is open)
        self._pools: dict[_OriginKey, HTTPConnectionPool] = {}

    def __call__(self, request: Request) -> Response:
        """Send ``request`` as it is and return the response, whatever its status."""
        if self._closed:
            raise TransportFailure("this transport is closed; create a new one", unsent=True)
        try:
            origin, target, headers, length = self._prepare(request)
        except TransportFailure as error:
            error.unsent = True  # refused before anything was sent
            raise
        if length is not None:
            headers = headers.copy()
            headers["Content-Length"] = length
        pool = self._pools.get(origin.key)
        if pool is None or pool.pool is None:  # not looked up yet, or closed
            pool = self._pool(target)
            if len(self._pools) >= _MAX_POOLS:
                self._pools.clear()
            self._pools[origin.key] = pool
        total = self._total_timeout
        _attempt.deadline = None if total is None else time.monotonic() + total
        _attempt.max_body = response_cap(target.target, self._max_response_size)
        fresh_only = False
        while True:
            if fresh_only:
                _attempt.fresh_only = True
            _attempt.phase = "connect"
            _attempt.written = 0
            _attempt.complete = False
            try:
                response = pool.urlopen(
                    request.method,
                    target.target,
                    body=request.body,
                    headers=headers,
                    retries=_NO_RETRIES,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=True,
                    decode_content=False,
                )
            except _NothingReceived as nothing:
                written = _attempt.written
                if _attempt.reused and not fresh_only and (written == 0 or replayable(request)):
                    fresh_only = True
                    continue  # the one retry (see the module docstring)
                detail = _describe(nothing.error)
                raise request_failure(
                    _message("response from", target, detail, request),
                    request,
                    written=written,
                    complete=_attempt.complete,
                ) from nothing.error
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                raise self._failure(target, error, request) from error
            finally:
                _attempt.reused = _attempt.fresh_only = False
            return Response(response.status, _header_pairs(response), response.data, request.url)

    def _pool(self, target: _Target) -> HTTPConnectionPool:
        if target.resolved:
            addr, port = target.address
            return self._manager.connection_from_host(
                addr, port, target.scheme, pool_kwargs={"server_hostname": target.host}
            )
        return self._manager.connection_from_host(target.host, target.port, target.scheme)

    def _failure(self, target: _Target, error: BaseException, request: Request) -> TransportFailure:
        """urllib3's error type, and the OS or TLS error underneath it if any,
        with the phase the request got to and the timeout that ran out."""
        untrusted = untrusted_certificate(target.describe(), error)
        if untrusted is not None:
            return untrusted
        phase = {"connect": "connect to", "send": "send to"}.get(_attempt.phase, "response from")
        cause = _root_cause(error)
        if _caused_by(error, TotalTimeout):
            detail = f"the total timeout ({self._total_timeout:g} s) ran out"
        elif isinstance(error, urllib3.exceptions.NewConnectionError):
            phase = "connect to"  # refused, unreachable, no such host: not a timeout
            detail = type(error).__name__ + (f" ({_describe(cause)})" if cause else "")
        elif isinstance(error, urllib3.exceptions.ConnectTimeoutError) or (
            isinstance(error, urllib3.exceptions.TimeoutError) and phase == "connect to"
        ):
            # urllib3 calls a stalled TLS handshake a read timeout: the connect
            # timeout is what bounds it
            phase = "connect to" if _attempt.phase == "connect" else phase
            handshake = isinstance(error, urllib3.exceptions.ReadTimeoutError)
            what = "TLS handshake" if handshake else "connect"
            detail = f"{what} timed out after {self._connect_timeout:g} s (connect_timeout)"
        elif isinstance(error, urllib3.exceptions.TimeoutError):
            detail = (
                f"{type(error).__name__}: timed out after {self._read_timeout:g} s (read_timeout)"
            )
        else:
            detail = type(error).__name__ + (f" ({_describe(cause)})" if cause is not None else "")
        return request_failure(
            _message(phase, target, detail, request),
            request,
            written=_attempt.written,
            complete=_attempt.complete,
        )

    def close(self) -> None:
        """Close the idle connections and refuse new requests."""
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        self._manager.clear()
        for pool in pools:  # the manager forgets its pools; these are closed too
            pool.close()
        self._prepare.clear()

    def __enter__(self) -> Urllib3Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Urllib3Transport{' closed' if self._closed else ''}>"


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
    pool_maxsize: int = 10,
    on_behalf: str | None = None,
    forwarded_for: str | None = None,
    on_account_moved: Callable[[str, str], None] | None = None,
) -> Client:
    """A blocking API client over :class:`Urllib3Transport`; the arguments are
    :func:`cfauth.stdlib.client`'s, with ``pool_maxsize`` for the pool size.
    Closing the client closes the transport."""
    return build_client(
        account,
        credential,
        Urllib3Transport(
            ssl_context=ssl_context,
            ca_file=ca_file,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            total_timeout=total_timeout,
            max_response_size=max_response_size,
            resolve=resolve,
            pool_maxsize=pool_maxsize if pool_size is None else pool_size,
        ),
        tokens=tokens,
        store=store,
        config=config,
        on_behalf=on_behalf,
        forwarded_for=forwarded_for,
        on_account_moved=on_account_moved,
    )
