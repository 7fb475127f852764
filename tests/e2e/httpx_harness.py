"""httpx clients wired to loopback TLS servers, for the cfauth.httpx tests.

The transports come from ``cfauth.sandbox`` (``Sandbox.httpx_transport``):
httpcore network backends that connect to the mapped address, while SNI, the
certificate check and ``Host`` keep the real name.  :class:`HttpxHarness`
drives one :class:`~cfauth.httpx.CheckfrontAuth` through an ``httpx.Client``
(``sync``) or an ``httpx.AsyncClient`` under ``asyncio`` or ``trio``, with
the sandbox's virtual clock.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import httpx

from cfauth.cli import browse
from cfauth.httpx import CheckfrontAuth
from cfauth.sandbox import Sandbox, _httpx
from cfauth_core import Credential, Machine, TokenSet

from .harness import RecordingStore

HTTPX_KINDS = ("sync", "asyncio", "trio")
BASE = "https://acme.checkfront.com/api/3.0/"
T = TypeVar("T")


def transport(
    context: ssl.SSLContext, resolve: Mapping[str, str], limit: int = 10
) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` whose connections go where ``resolve`` says."""
    return _httpx.transport(context, resolve, limit)


def async_transport(
    context: ssl.SSLContext, resolve: Mapping[str, str], limit: int = 10
) -> httpx.AsyncHTTPTransport:
    return _httpx.async_transport(context, resolve, limit)


class HttpxHarness:
    """One :class:`CheckfrontAuth` on an httpx client of one kind, against the sandbox."""

    def __init__(
        self,
        kind: str,
        sandbox: Sandbox,
        credential: Credential,
        *,
        account: str = "acme",
        tokens: TokenSet | None = None,
        store: RecordingStore | None = None,
        follow_redirects: bool = False,
    ) -> None:
        self.kind = kind
        self.sandbox = sandbox
        self.store = store if store is not None else RecordingStore(tokens)
        self.slept: list[float] = []
        self.follow_redirects = follow_redirects

        def sleep(seconds: float) -> None:
            self.slept.append(seconds)
            sandbox.clock.advance(seconds)

        self.auth = CheckfrontAuth(
            account,
            credential,
            store=self.store,
            tokens=tokens,
            clock=sandbox.clock.now,
            sleep=sleep,
        )
        self.context = sandbox.ssl_context()
        self.resolve = dict(sandbox.resolve)
        self.client: httpx.Client | None = None
        if kind == "sync":
            self.client = self.sync_client()

    @property
    def machine(self) -> Machine:
        return self.auth.driver.machine

    def sync_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=BASE,
            auth=self.auth,
            transport=transport(self.context, self.resolve),
            follow_redirects=self.follow_redirects,
        )

    def async_client(self, limit: int = 10) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=BASE,
            auth=self.auth,
            transport=async_transport(self.context, self.resolve, limit),
            follow_redirects=self.follow_redirects,
        )

    def run(self, fn: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        """Run ``fn(client)`` on a fresh AsyncClient in a fresh event loop of this kind."""

        async def main() -> T:
            async with self.async_client() as client:
                return await fn(client)

        return anyio.run(main, backend=self.kind)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.client is not None:
            return self.client.request(method, url, **kwargs)

        async def call(client: httpx.AsyncClient) -> httpx.Response:
            return await client.request(method, url, **kwargs)

        return self.run(call)

    def login(self) -> None:
        """The whole OAuth2 dance, with a minimal 'browser' for the consent redirect."""
        start = self.auth.authorization_url()
        callback = browse(start.url, port=self.sandbox.port, context=self.context)
        if self.client is not None:
            self.auth.complete_authorization(callback, client=self.client)
            return

        async def complete(client: httpx.AsyncClient) -> None:
            await self.auth.acomplete_authorization(callback, client=client)

        self.run(complete)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
