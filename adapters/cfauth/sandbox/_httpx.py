"""httpx transports that reach loopback servers under their real host names
(httpx has no ``resolve`` option): httpcore network backends connect to the
mapped address, while SNI, the certificate check and ``Host`` keep the name
in the URL.  Imported only when asked for (it needs the ``httpx`` extra)."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from typing import Any

try:
    import httpx  # noqa: I001 - the extra's own module first, named when it is missing
    import httpcore
except ImportError as error:  # installed without the httpx extra
    from .._extras import missing_extra

    raise missing_extra("cfauth.sandbox (httpx transports)", "httpx", error) from None

__all__ = ["async_transport", "transport"]


def _target(resolve: Mapping[str, str], host: str, port: int) -> tuple[str, int]:
    mapped = resolve.get(f"{host}:{port}")
    if mapped is None:
        return host, port
    address, _, mapped_port = mapped.rpartition(":")
    return address, int(mapped_port)


class _Resolving(httpcore.NetworkBackend):
    def __init__(self, resolve: Mapping[str, str]) -> None:
        self._resolve = dict(resolve)
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        address, mapped = _target(self._resolve, host, port)
        return self._backend.connect_tcp(address, mapped, timeout, local_address, socket_options)


class _AsyncResolving(httpcore.AsyncNetworkBackend):
    def __init__(self, resolve: Mapping[str, str]) -> None:
        self._resolve = dict(resolve)
        self._backend = httpcore.AnyIOBackend()  # asyncio and trio

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address, mapped = _target(self._resolve, host, port)
        return await self._backend.connect_tcp(
            address, mapped, timeout, local_address, socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def transport(
    context: ssl.SSLContext, resolve: Mapping[str, str], max_connections: int = 10
) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` whose connections go where ``resolve`` maps them."""
    result = httpx.HTTPTransport(verify=context)
    result._pool = httpcore.ConnectionPool(
        ssl_context=context,
        network_backend=_Resolving(resolve),
        max_connections=max_connections,
    )
    return result


def async_transport(
    context: ssl.SSLContext, resolve: Mapping[str, str], max_connections: int = 10
) -> httpx.AsyncHTTPTransport:
    """The same for ``httpx.AsyncClient`` (asyncio or trio)."""
    result = httpx.AsyncHTTPTransport(verify=context)
    result._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        network_backend=_AsyncResolving(resolve),
        max_connections=max_connections,
    )
    return result
