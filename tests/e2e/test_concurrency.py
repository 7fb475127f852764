"""Single flight against the real sandbox: many callers, one expired token,
exactly one refresh request on the wire."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import trio

from cfauth.sandbox import Sandbox
from cfauth.stores import MemoryGrant
from cfauth.sync import Driver as SyncDriver
from cfauth.trio import Driver as TrioDriver
from cfauth.trio import H11Transport
from cfauth.urllib3 import Urllib3Transport
from cfauth_core import Account, CfauthError, Machine, OAuth2App, RefreshFailed, TokenSet

from .harness import Harness


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


def expired_grant(sandbox: Sandbox) -> tuple[OAuth2App, TokenSet]:
    """A logged-in grant whose access token has just expired."""
    account = sandbox.account("acme")
    app = OAuth2App(account.client_id, account.client_secret, account.redirect_uri)
    login = Harness("stdlib", sandbox, app)
    login.login()
    login.close()
    tokens = login.machine.tokens
    assert tokens is not None
    sandbox.clock.advance(14_001)
    sandbox.clear_requests()
    return app, tokens


def test_32_threads_on_the_urllib3_driver_share_one_refresh(sandbox: Sandbox) -> None:
    app, tokens = expired_grant(sandbox)
    transport = Urllib3Transport(
        ssl_context=sandbox.ssl_context(), resolve=sandbox.resolve, pool_maxsize=32
    )
    store = MemoryGrant(tokens)
    driver = SyncDriver(
        Machine(Account.parse("acme"), app, tokens), transport, store=store, clock=sandbox.clock.now
    )
    barrier = threading.Barrier(32)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            statuses.append(driver.request("GET", "booking/index").status)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    transport.close()
    assert errors == []
    assert statuses == [200] * 32
    assert len(sandbox.token_requests("refresh_token")) == 1
    api = [r for r in sandbox.requests if r.path.startswith("/api/")]
    assert len(api) == 32
    assert all(r.status == 200 for r in api)  # nobody used the old token after the refresh
    assert store.load() == driver.machine.tokens


def test_200_trio_tasks_share_one_refresh(sandbox: Sandbox) -> None:
    app, tokens = expired_grant(sandbox)
    statuses: list[int] = []

    async def main() -> None:
        transport = H11Transport(
            ssl_context=sandbox.ssl_context(),
            resolve=sandbox.resolve,
            max_connections_per_origin=20,
        )
        driver = TrioDriver(
            Machine(Account.parse("acme"), app, tokens),
            transport,
            store=MemoryGrant(tokens),
            clock=sandbox.clock.now,
        )

        async def one() -> None:
            statuses.append((await driver.request("GET", "item")).status)

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(one)
        await transport.aclose()

    trio.run(main)
    assert statuses == [200] * 200
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert len([r for r in sandbox.requests if r.path.startswith("/api/")]) == 200


def test_refresh_answered_500_fails_every_waiter_then_recovers(sandbox: Sandbox) -> None:
    app, tokens = expired_grant(sandbox)
    sandbox.fail_next(1, status=500, path_prefix="/oauth/token/")
    transport = Urllib3Transport(
        ssl_context=sandbox.ssl_context(), resolve=sandbox.resolve, pool_maxsize=8
    )
    driver = SyncDriver(
        Machine(Account.parse("acme"), app, tokens),
        transport,
        store=MemoryGrant(tokens),
        clock=sandbox.clock.now,
    )
    barrier = threading.Barrier(8)
    errors: list[CfauthError] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        try:
            driver.request("GET", "item")
        except CfauthError as error:
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Every caller that waited for the failed refresh got the very same error;
    # a caller that arrived after it may have refreshed again successfully.
    assert errors
    assert all(isinstance(error, RefreshFailed) for error in errors)
    assert len({id(error) for error in errors}) == 1
    refreshes = sandbox.token_requests("refresh_token")
    assert refreshes[0].status == 500
    assert driver.request("GET", "item").status == 200
    assert [r.status for r in sandbox.token_requests("refresh_token")][-1] == 200
    transport.close()
