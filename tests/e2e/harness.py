"""One blocking interface over the three drivers, for the end-to-end tests.

``stdlib`` and ``urllib3`` are the blocking driver over each transport;
``trio`` is the async driver over the h11 transport, run in a trio loop on a
background thread and called through ``trio.from_thread`` so the same test
body drives all three.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from cfauth import Response
from cfauth.cli import browse
from cfauth.sandbox import Sandbox
from cfauth.stdlib import HttpClientTransport
from cfauth.stores import MemoryGrant
from cfauth.sync import Driver as SyncDriver
from cfauth.trio import Driver as TrioDriver
from cfauth.trio import H11Transport
from cfauth.urllib3 import Urllib3Transport
from cfauth_core import Account, Credential, Machine, OAuth2App, Params, TokenSet

KINDS = ("stdlib", "urllib3", "trio")
T = TypeVar("T")


class RecordingStore(MemoryGrant):
    """A MemoryGrant that remembers every token set saved (to scan logs for them)."""

    def __init__(self, tokens: TokenSet | None = None) -> None:
        super().__init__(tokens)
        self.saved: list[TokenSet] = []

    def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
        self.saved.append(tokens)
        super().save(tokens, client_auth)


class TrioThread:
    """A trio event loop on a background thread, callable from this one."""

    def __init__(self) -> None:
        ready = threading.Event()
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None

        async def main() -> None:
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            ready.set()
            await self._stop.wait()

        self._thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self._thread.start()
        ready.wait(10)

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def close(self) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)


class Harness:
    """A client of one kind, wired to the sandbox through ``resolve`` with its
    CA, its virtual clock, and a sleep that advances that clock."""

    def __init__(
        self,
        kind: str,
        sandbox: Sandbox,
        credential: Credential,
        *,
        account: str = "acme",
        tokens: TokenSet | None = None,
        store: RecordingStore | None = None,
    ) -> None:
        self.kind = kind
        self.sandbox = sandbox
        self.store = store if store is not None else RecordingStore(tokens)
        self.machine = Machine(Account.parse(account), credential, tokens)
        self.slept: list[float] = []
        self._trio: TrioThread | None = None
        context = sandbox.ssl_context()
        if kind == "trio":
            self._trio = TrioThread()
            self._h11 = H11Transport(ssl_context=context, resolve=sandbox.resolve)

            async def sleep(seconds: float) -> None:
                self.slept.append(seconds)
                sandbox.clock.advance(seconds)

            self._async = TrioDriver(
                self.machine,
                self._h11,
                store=self.store,
                clock=sandbox.clock.now,
                sleep=sleep,
            )
        else:
            transport: HttpClientTransport | Urllib3Transport
            if kind == "stdlib":
                transport = HttpClientTransport(ssl_context=context, resolve=sandbox.resolve)
            else:
                transport = Urllib3Transport(ssl_context=context, resolve=sandbox.resolve)
            self._transport = transport

            def sleep_sync(seconds: float) -> None:
                self.slept.append(seconds)
                sandbox.clock.advance(seconds)

            self._sync = SyncDriver(
                self.machine,
                transport,
                store=self.store,
                clock=sandbox.clock.now,
                sleep=sleep_sync,
            )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        data: Params | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        if self._trio is not None:

            async def call() -> Response:
                return await self._async.request(
                    method, path, params=params, data=data, headers=headers
                )

            return self._trio.run(call)
        return self._sync.request(method, path, params=params, data=data, headers=headers)

    def login(self) -> None:
        """The whole OAuth2 dance, with a minimal 'browser' for the consent redirect."""
        state, verifier = "state-" + "x" * 20, "verifier-" + "v" * 40
        if self._trio is not None:
            url = self._async.authorize(state, verifier)
        else:
            url = self._sync.authorize(state, verifier)
        callback = browse(url, port=self.sandbox.port, context=self.sandbox.ssl_context())
        if self._trio is not None:
            trio_driver = self._async

            async def complete() -> None:
                await trio_driver.complete_authorization(callback)

            self._trio.run(complete)
        else:
            self._sync.complete_authorization(callback)

    def close(self) -> None:
        if self._trio is not None:
            self._trio.run(self._h11.aclose)
            self._trio.close()
        else:
            self._transport.close()


def unknown_ca_context() -> ssl.SSLContext:
    """A client context trusting a CA that did not sign the sandbox's certificate."""
    import trustme

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(context)
    return context


def app_of(sandbox: Sandbox) -> OAuth2App:
    account = sandbox.account("acme")
    return OAuth2App(account.client_id, account.client_secret, account.redirect_uri)
