"""cfauth.httpx when things go wrong: a refresh whose request fails or is
cancelled must not leave other threads or tasks waiting; a token request's
body never follows a redirect httpx takes; the flow runs the machine with no
I/O of its own (stepped by hand)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest

from cfauth.httpx import CheckfrontAuth
from cfauth.sandbox import Sandbox
from cfauth.stores import SqliteStore
from cfauth_core import (
    ApiKey,
    CfauthError,
    ReauthorizationRequired,
    TokenSet,
    UntrustedRedirect,
)

from .harness import RecordingStore, app_of
from .httpx_harness import BASE, HttpxHarness, async_transport, transport


def expired(sandbox: Sandbox, kind: str) -> HttpxHarness:
    """A harness of ``kind`` holding a logged-in grant whose access token just expired."""
    login = HttpxHarness("sync", sandbox, app_of(sandbox))
    login.login()
    login.close()
    sandbox.clock.advance(14_001)
    sandbox.clear_requests()
    return HttpxHarness(kind, sandbox, app_of(sandbox), store=login.store)


class FailFirstTokenRequest(httpx.BaseTransport):
    """The real transport, except that the first token request fails to connect."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.failed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token/" and not self.failed:
            self.failed = True
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_refresh_whose_request_fails_frees_every_waiting_thread(sandbox: Sandbox) -> None:
    harness = expired(sandbox, "sync")
    faulty = FailFirstTokenRequest(transport(harness.context, harness.resolve, 8))
    client = httpx.Client(base_url=BASE, auth=harness.auth, transport=faulty)
    barrier = threading.Barrier(8)
    outcomes: list[object] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        try:
            result: object = client.get("item").status_code
        except (httpx.ConnectError, CfauthError) as error:
            result = type(error)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)  # nobody left waiting
    assert faulty.failed
    assert len(outcomes) == 8
    assert httpx.ConnectError in outcomes  # the refresher saw its own failure
    # the lease was released: the next call refreshes and succeeds
    assert client.get("item").status_code == 200
    assert sandbox.token_requests("refresh_token")[-1].status == 200
    client.close()
    harness.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancelled_refresher_frees_every_waiting_task(sandbox: Sandbox, backend: str) -> None:
    harness = expired(sandbox, backend)
    inner = async_transport(harness.context, harness.resolve, 10)
    results: list[object] = []

    async def scoped() -> None:
        stuck = anyio.Event()

        class Stall(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if request.url.path == "/oauth/token/" and not stuck.is_set():
                    stuck.set()
                    await anyio.sleep_forever()
                return await inner.handle_async_request(request)

        async with httpx.AsyncClient(base_url=BASE, auth=harness.auth, transport=Stall()) as client:

            async def call() -> None:
                try:
                    results.append((await client.get("item")).status_code)
                except CfauthError as error:
                    results.append(type(error))

            async def refresher(scope: anyio.CancelScope) -> None:
                with scope:
                    await call()

            scope = anyio.CancelScope()
            async with anyio.create_task_group() as group:
                group.start_soon(refresher, scope)
                await stuck.wait()
                for _ in range(5):
                    group.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
            assert (await client.get("item")).status_code == 200
        await inner.aclose()

    anyio.run(scoped, backend=backend)
    # the cancelled refresher recorded nothing; the 5 waiters all ended
    assert len(results) == 5
    assert all(result == 200 or isinstance(result, type) for result in results)
    assert sandbox.token_requests("refresh_token")[-1].status == 200


def test_a_token_request_body_never_follows_a_redirect_httpx_takes(sandbox: Sandbox) -> None:
    """follow_redirects=True: a 307 from the token URL to another host would
    make httpx send the refresh token there; the body refuses to be read twice."""
    harness = expired(sandbox, "sync")
    sandbox.redirect_next(1, "https://evil.example/token", 307, path_prefix="/oauth/token/")
    client = httpx.Client(
        base_url=BASE,
        auth=harness.auth,
        transport=transport(harness.context, harness.resolve),
        follow_redirects=True,
    )
    with pytest.raises(UntrustedRedirect, match="follow_redirects=False"):
        client.get("item")
    assert all(not r.form_fields for r in sandbox.evil_requests())
    client.close()
    harness.close()


def test_the_flow_steps_by_hand_with_no_io() -> None:
    """The flow is a generator: step it with responses made by hand."""
    auth = CheckfrontAuth("acme", ApiKey("key", "pair-secret"))
    request = httpx.Request("GET", "https://acme.checkfront.com/api/3.0/item?x=1")
    flow = auth.sync_auth_flow(request)
    sent = next(flow)
    assert sent is request
    assert sent.headers["Authorization"] == ApiKey("key", "pair-secret").authorization
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, request=sent))
    other = httpx.Request("GET", "https://api.example.org/api/3.0/item")
    flow = auth.sync_auth_flow(other)
    assert "Authorization" not in next(flow).headers
    plain_http = httpx.Request("GET", "http://acme.checkfront.com/api/3.0/item")
    assert "Authorization" not in next(auth.sync_auth_flow(plain_http)).headers
    assert "pair-secret" not in repr(auth)


def test_the_desktop_login_and_logout_through_an_httpx_client(sandbox: Sandbox) -> None:
    """login() is the other clients' (the loopback receiver, the same core);
    the code exchange goes through the httpx client given."""
    from cfauth.stores import MemoryStore
    from tests.test_login_client import Browser, app_for

    app = app_for(sandbox)
    store = MemoryStore()
    auth = CheckfrontAuth("acme", app, store=store)
    with httpx.Client(base_url=BASE, auth=auth, transport=sandbox.httpx_transport()) as client:
        browser = Browser(sandbox, forged_first=True)
        assert auth.grant_status().logged_in is False
        auth.login(client, open_browser=False, timeout=30, show=browser)
        assert [status for status, _ in browser.answers] == [400, 404, 200]
        assert auth.grant_status().logged_in
        assert client.get("item").status_code == 200
        assert sandbox.requests[-1].credential == "bearer"
        auth.logout()
        assert not auth.grant_status().logged_in
        with pytest.raises(ReauthorizationRequired):
            client.get("item")


class ThreadRecordingStore(RecordingStore):
    """Remembers which thread each lease and save ran on."""

    def __init__(self, tokens: TokenSet | None = None) -> None:
        super().__init__(tokens)
        self.threads: list[tuple[str, int]] = []

    def acquire_lease(self, timeout: float | None = None) -> None:
        self.threads.append(("lease", threading.get_ident()))
        super().acquire_lease(timeout)

    def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
        self.threads.append(("save", threading.get_ident()))
        super().save(tokens, client_auth)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_store_io_runs_off_the_event_loop(sandbox: Sandbox, backend: str) -> None:
    login = expired(sandbox, "sync")
    login.close()
    tokens = login.machine.tokens
    store = ThreadRecordingStore(tokens)
    auth = CheckfrontAuth("acme", app_of(sandbox), store=store, clock=sandbox.clock.now)
    loop_thread: list[int] = []

    async def main() -> int:
        loop_thread.append(threading.get_ident())
        transport = sandbox.httpx_async_transport()
        async with httpx.AsyncClient(base_url=BASE, auth=auth, transport=transport) as client:
            return (await client.get("item")).status_code

    assert anyio.run(main, backend=backend) == 200
    assert [kind for kind, _ in store.threads] == ["lease", "save"]
    assert all(ident != loop_thread[0] for _, ident in store.threads)
    assert store.saved[-1] == auth.driver.machine.tokens


class SlowSaveStore(RecordingStore):
    """Saves slowly, noting how many API calls had reached the sandbox by then."""

    def __init__(self, sandbox: Sandbox, tokens: TokenSet | None) -> None:
        super().__init__(tokens)
        self.sandbox = sandbox
        self.api_calls_when_saved: list[int] = []

    def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
        time.sleep(0.3)  # a slow database: a window for a call to go out too early
        self.api_calls_when_saved.append(
            len([r for r in self.sandbox.requests if r.path.startswith("/api/")])
        )
        super().save(tokens, client_auth)


def test_no_call_uses_new_tokens_before_they_are_saved(sandbox: Sandbox) -> None:
    """Tasks released by a refresh wait until its tokens are saved (the save
    runs in a worker thread, so the event loop goes on meanwhile)."""
    login = expired(sandbox, "sync")
    login.close()
    store = SlowSaveStore(sandbox, login.machine.tokens)
    auth = CheckfrontAuth("acme", app_of(sandbox), store=store, clock=sandbox.clock.now)
    statuses: list[int] = []

    async def main() -> None:
        transport = sandbox.httpx_async_transport()
        async with httpx.AsyncClient(base_url=BASE, auth=auth, transport=transport) as client:

            async def call() -> None:
                statuses.append((await client.get("item")).status_code)

            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(call)

    anyio.run(main, backend="asyncio")
    assert statuses == [200] * 5
    assert store.api_calls_when_saved == [0]
    assert len(sandbox.token_requests("refresh_token")) == 1


class GatedTokenRequest(httpx.BaseTransport):
    """The real transport; the first token request waits until ``gate`` is set."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.in_flight = threading.Event()
        self.gate = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token/" and not self.in_flight.is_set():
            self.in_flight.set()
            assert self.gate.wait(30)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_auth_shared_by_a_thread_and_an_event_loop(sandbox: Sandbox, backend: str) -> None:
    """A refresh started by a Client in one thread releases the tasks of an
    AsyncClient waiting for it in an event loop (woken across threads)."""
    harness = expired(sandbox, "sync")
    gated = GatedTokenRequest(harness.sync_client()._transport)
    sync_client = httpx.Client(base_url=BASE, auth=harness.auth, transport=gated)
    sync_status: list[int] = []
    refresher = threading.Thread(
        target=lambda: sync_status.append(sync_client.get("item").status_code)
    )
    refresher.start()
    assert gated.in_flight.wait(30)
    statuses: list[int] = []

    async def main() -> None:
        async with harness.async_client() as client:

            async def call() -> None:
                statuses.append((await client.get("item")).status_code)

            async with anyio.create_task_group() as group:
                for _ in range(10):
                    group.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                gated.gate.set()  # the refresh answers; the thread releases the tasks

    anyio.run(main, backend=backend)
    refresher.join(30)
    sync_client.close()
    harness.close()
    assert sync_status == [200]
    assert statuses == [200] * 10
    assert len(sandbox.token_requests("refresh_token")) == 1


def test_two_auths_sharing_a_store_make_one_refresh(sandbox: Sandbox, tmp_path: Path) -> None:
    """Two auths (as two worker processes would have) on one SQLite store, both
    holding an expired token, called at once: the store's lease lets one refresh;
    the other reloads the saved tokens and sends no refresh."""
    login = HttpxHarness("sync", sandbox, app_of(sandbox))
    login.login()
    login.close()
    path = tmp_path / "grants.sqlite3"
    tokens = login.machine.tokens
    assert tokens is not None
    first = SqliteStore(path)
    first.grant("acme", app_of(sandbox).client_id).save(tokens)
    first.close()
    sandbox.clock.advance(14_001)
    sandbox.clear_requests()
    stores = [SqliteStore(path) for _ in range(2)]
    auths = [
        CheckfrontAuth("acme", app_of(sandbox), store=store, clock=sandbox.clock.now)
        for store in stores
    ]
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def worker(auth: CheckfrontAuth) -> None:
        with httpx.Client(base_url=BASE, auth=auth, transport=sandbox.httpx_transport()) as client:
            barrier.wait()
            statuses.append(client.get("item").status_code)

    threads = [threading.Thread(target=worker, args=(auth,)) for auth in auths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in stores:
        store.close()
    assert statuses == [200, 200]
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert auths[0].driver.machine.tokens == auths[1].driver.machine.tokens
