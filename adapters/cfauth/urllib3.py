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

*The one retry.*  As in the stdlib transport: urllib3 itself drops idle
connections the server has closed before reusing them; when the server closes
one just as the request goes out (nothing of the response arrived, on a
reused connection), the request is sent once more on a new connection.
"""

from __future__ import annotations

import http.client
import ssl
import threading
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

from ._http import Response, TransportFailure
from ._tls import check_options, parse_resolve, tls_context, untrusted_certificate
from .stdlib import (
    _describe,
    _failure,
    _FirstByteResponse,
    _NothingReceived,
    _OriginKey,
    _Prepare,
    _Target,
)
from .stores import GrantStore, TokenStore
from .sync import Client, build_client

__all__ = ["Urllib3Transport", "client"]


class _Attempt(threading.local):
    """What this thread's current request learnt about its connection.

    urllib3 does not tell which connection a failed request used, so the
    connection records it here (the request runs in the caller's thread).
    """

    reused = False
    fresh_only = False


_attempt = _Attempt()

#: Bound of the transport's own map of pools: the manager's (``num_pools``).
_MAX_POOLS = 10


class _TrackedConnection(HTTPConnection):
    """Records whether a request goes out on a reused connection, and closes
    a reused one instead when this thread asked for a fresh one (the retry)."""

    response_class = _FirstByteResponse
    _used_socket: object = None  # the socket the last request went out on

    def request(self, *args: Any, **kwargs: Any) -> None:
        reused = self.sock is not None and self.sock is self._used_socket
        if reused and _attempt.fresh_only:
            self.close()  # http.client opens a new connection when sending
            reused = False
        _attempt.reused = reused
        super().request(*args, **kwargs)
        self._used_socket = self.sock


class _TrackedHTTPSConnection(_TrackedConnection, HTTPSConnection):
    pass


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
        resolve: Mapping[str, str] | None = None,
        pool_maxsize: int = 10,
    ) -> None:
        check_options(connect_timeout, read_timeout, pool_maxsize, pool="pool_maxsize", least=0)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
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
            raise TransportFailure("this transport is closed; create a new one")
        origin, target, headers, length = self._prepare(request)
        if length is not None:
            headers = headers.copy()
            headers["Content-Length"] = length
        pool = self._pools.get(origin.key)
        if pool is None or pool.pool is None:  # not looked up yet, or closed
            pool = self._pool(target)
            if len(self._pools) >= _MAX_POOLS:
                self._pools.clear()
            self._pools[origin.key] = pool
        fresh_only = False
        while True:
            if fresh_only:
                _attempt.fresh_only = True
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
                if _attempt.reused and not fresh_only:
                    fresh_only = True
                    continue  # the one retry (see the module docstring)
                detail = _describe(nothing.error)
                raise _failure("response from", target, detail, request) from nothing.error
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
        """urllib3's error type, and the OS or TLS error underneath it if any."""
        untrusted = untrusted_certificate(target.describe(), error)
        if untrusted is not None:
            return untrusted
        phase, timeout = "request to", None
        if isinstance(error, urllib3.exceptions.NewConnectionError):
            phase = "connect to"  # refused, unreachable, no such host: not a timeout
        elif isinstance(error, urllib3.exceptions.ConnectTimeoutError):
            phase, timeout = "connect to", self._connect_timeout
        elif isinstance(error, urllib3.exceptions.ReadTimeoutError):
            phase, timeout = "response from", self._read_timeout
        if timeout is not None:  # urllib3's TimeoutError is not the builtin one
            detail = f"{type(error).__name__}: timed out after {timeout:g} s"
            return _failure(phase, target, detail, request)
        cause = _root_cause(error)
        detail = type(error).__name__ + (f" ({_describe(cause)})" if cause is not None else "")
        return _failure(phase, target, detail, request)

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
