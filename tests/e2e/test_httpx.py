"""cfauth.httpx end to end: the matrix the other drivers run, on httpx.Client,
httpx.AsyncClient under asyncio and under trio, over real TLS on loopback
against the sandbox; plus what only an httpx auth meets: requests to other
hosts through the same client, ``follow_redirects``, streaming bodies,
``base_url`` and full URLs, and httpx's response history."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest

from cfauth.httpx import BodyNotReplayable
from cfauth.sandbox import Sandbox
from cfauth_core import (
    ApiKey,
    CredentialsRejected,
    ReauthorizationRequired,
    TokenSet,
    UntrustedRedirect,
)

from .conftest import ISO_TIME
from .harness import RecordingStore, app_of
from .httpx_harness import BASE, HTTPX_KINDS, HttpxHarness, async_transport, transport
from .raw_server import RawServer

OLD = "acme.checkfront.com"
NEW = "acme.manage.na1.bookingplatform.app"


@pytest.fixture(params=HTTPX_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pair(kind: str, sandbox: Sandbox, *, follow_redirects: bool = False) -> HttpxHarness:
    account = sandbox.account("acme")
    credential = ApiKey(account.api_key, account.api_secret)
    return HttpxHarness(kind, sandbox, credential, follow_redirects=follow_redirects)


def logged_in(kind: str, sandbox: Sandbox, *, follow_redirects: bool = False) -> HttpxHarness:
    client = HttpxHarness(kind, sandbox, app_of(sandbox), follow_redirects=follow_redirects)
    client.login()
    return client


def api_statuses(sandbox: Sandbox) -> list[int]:
    return [r.status for r in sandbox.requests if r.path.startswith("/api/")]


# -- the matrix ---------------------------------------------------------------------


def test_token_pair_call_with_base_url_and_full_url(kind: str, sandbox: Sandbox) -> None:
    client = pair(kind, sandbox)
    try:
        response = client.request("GET", "booking/index", params={"status_id": "PAID"})
        assert response.json()["request"]["status"] == "OK"
        record = sandbox.requests[-1]
        assert (record.host, record.path, record.credential) == (
            OLD,
            "/api/3.0/booking/index",
            "basic-pair",
        )
        assert record.query == (("status_id", "PAID"),)
        full = client.request("GET", "https://acme.checkfront.com/api/3.0/item?limit=2")
        assert full.status_code == 200
        assert (sandbox.requests[-1].path, sandbox.requests[-1].credential) == (
            "/api/3.0/item",
            "basic-pair",
        )
    finally:
        client.close()


def test_oauth_login_then_call(kind: str, sandbox: Sandbox) -> None:
    client = logged_in(kind, sandbox)
    try:
        assert client.store.load() is not None
        assert client.request("GET", "item").json()["request"]["status"] == "OK"
        assert sandbox.requests[-1].credential == "bearer"
        exchanges = sandbox.token_requests("authorization_code")
        assert len(exchanges) == 1
        assert exchanges[0].credential == "basic-client"
        assert "code_verifier" in exchanges[0].form_fields
    finally:
        client.close()


def test_proactive_refresh_after_the_clock_moves(kind: str, sandbox: Sandbox) -> None:
    client = logged_in(kind, sandbox)
    try:
        first = client.machine.tokens
        sandbox.clock.advance(14000 - 100)
        response = client.request("GET", "item")
        assert response.status_code == 200
        assert len(sandbox.token_requests("refresh_token")) == 1
        assert client.machine.tokens != first
        assert client.store.saved[-1] == client.machine.tokens
        assert api_statuses(sandbox) == [200]
        # httpx's history holds neither the token request nor its response
        assert response.history == []
    finally:
        client.close()


def test_reactive_refresh_after_revocation(kind: str, sandbox: Sandbox) -> None:
    client = logged_in(kind, sandbox)
    try:
        sandbox.revoke_access_token("acme")
        response = client.request("POST", "customer", data={"customer_name": "Ada"})
        assert response.status_code == 200
        assert api_statuses(sandbox) == [401, 200]
        assert len(sandbox.token_requests("refresh_token")) == 1
        assert sandbox.requests[-1].form_fields == ("customer_name",)
        assert response.history == []
    finally:
        client.close()


@pytest.mark.parametrize("follow", [False, True], ids=["no-follow", "follow"])
@pytest.mark.parametrize("bare", [False, True], ids=["full-location", "bare-origin"])
def test_migration_get_then_new_origin_directly(
    kind: str, sandbox: Sandbox, bare: bool, follow: bool
) -> None:
    moves: list[tuple[str, str]] = []
    client = logged_in(kind, sandbox, follow_redirects=follow)
    client.auth.driver._user_on_account_moved = lambda old, new: moves.append((old, new))
    try:
        sandbox.migrate("acme", bare_location=bare)
        sandbox.clear_requests()
        response = client.request("GET", "booking/index")
        assert response.status_code == 200
        hosts = [(r.host, r.status, r.credential) for r in sandbox.requests]
        if follow:  # httpx followed without credentials; the flow re-sent with them
            # (to the URL the core chose: a bare-origin Location keeps the path)
            lost = 404 if bare else 401
            assert hosts == [(OLD, 301, "bearer"), (NEW, lost, "none"), (NEW, 200, "bearer")]
        else:
            assert hosts == [(OLD, 301, "bearer"), (NEW, 200, "bearer")]
        assert [r.status_code for r in response.history] == [301]
        assert client.machine.account.origin == "https://" + NEW
        assert moves == [("https://" + OLD, "https://" + NEW)]
        sandbox.clear_requests()
        sandbox.clock.advance(14000)
        # base_url still names the old host: the call goes to the new origin
        assert client.request("GET", "item").status_code == 200
        assert {r.host for r in sandbox.requests} == {NEW}
        assert len(sandbox.token_requests("refresh_token")) == 1
    finally:
        client.close()


@pytest.mark.parametrize("follow", [False, True], ids=["no-follow", "follow"])
def test_migration_keeps_post_and_body(kind: str, sandbox: Sandbox, follow: bool) -> None:
    client = pair(kind, sandbox, follow_redirects=follow)
    try:
        sandbox.migrate("acme")
        response = client.request(
            "POST", "customer", data={"customer_name": "Ada", "customer_email": "a@example.com"}
        )
        assert response.status_code == 200
        old, new = sandbox.requests[0], sandbox.requests[-1]
        assert (old.host, old.method, old.status) == (OLD, "POST", 301)
        assert (new.host, new.method, new.credential) == (NEW, "POST", "basic-pair")
        assert set(new.form_fields) == {"customer_name", "customer_email"}
        assert b"Ada" in response.content
        # httpx turns a 301 POST into a GET without credentials; nothing else went out
        assert len(sandbox.requests) == (3 if follow else 2)
    finally:
        client.close()


@pytest.mark.parametrize("follow", [False, True], ids=["no-follow", "follow"])
def test_redirect_to_untrusted_host_is_refused(kind: str, sandbox: Sandbox, follow: bool) -> None:
    client = logged_in(kind, sandbox, follow_redirects=follow)
    try:
        sandbox.redirect_next(1, "https://evil.example/steal")
        with pytest.raises(UntrustedRedirect) as caught:
            client.request("GET", "booking/index")
        assert "evil.example" in str(caught.value)
        evil = sandbox.evil_requests()
        if follow:  # httpx went there itself, without credentials
            assert [r.credential for r in evil] == ["none"]
        else:
            assert evil == []
    finally:
        client.close()


def test_rate_limit_retry_after_is_honoured(kind: str, sandbox: Sandbox) -> None:
    client = pair(kind, sandbox)
    try:
        sandbox.fail_next(1, status=429, retry_after="2")
        assert client.request("GET", "item").status_code == 200
        assert client.slept == [2.0]
        assert api_statuses(sandbox) == [429, 200]
    finally:
        client.close()


def test_reusing_a_rotated_refresh_token_needs_reauthorization(kind: str, sandbox: Sandbox) -> None:
    client = logged_in(kind, sandbox)
    try:
        stale = client.machine.tokens
        assert stale is not None
        sandbox.clock.advance(14000)
        assert client.request("GET", "item").status_code == 200  # rotates the pair
    finally:
        client.close()
    copy = TokenSet(
        stale.access_token,
        stale.refresh_token,
        stale.expires_at,
        stale.refresh_expires_at,
        stale.updated_at,
    )
    other = HttpxHarness(kind, sandbox, app_of(sandbox), tokens=copy, store=RecordingStore(copy))
    try:
        with pytest.raises(ReauthorizationRequired):
            other.request("GET", "item")
        assert sandbox.token_requests("refresh_token")[-1].status == 400
    finally:
        other.close()


def test_a_rejected_token_pair_is_a_clear_error(kind: str, sandbox: Sandbox) -> None:
    client = HttpxHarness(kind, sandbox, ApiKey("wrong", "pair-secret"))
    try:
        with pytest.raises(CredentialsRejected):
            client.request("GET", "item")
    finally:
        client.close()


def test_debug_logs_carry_no_secret(
    kind: str, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = sandbox.account("acme")
    client = logged_in(kind, sandbox)
    keys = pair(kind, sandbox)
    try:
        sandbox.clock.advance(14000)
        client.request("GET", "item")
        sandbox.revoke_access_token("acme")
        client.request("POST", "customer", data={"customer_name": "Ada"})
        client.request("GET", "https://evil.example/elsewhere")
        sandbox.migrate("acme")
        client.request("GET", "item")
        keys.request("GET", "item")
        sandbox.redirect_next(1, "https://evil.example/x")
        with pytest.raises(UntrustedRedirect):
            keys.request("GET", "item")
        secrets = [account.api_secret, account.client_secret]
        for tokens in client.store.saved:
            secrets += [tokens.access_token, tokens.refresh_token]
        assert len(secrets) >= 6
        text = "\n".join(record.getMessage() for record in caplog.records)
        assert any(record.name == "cfauth" for record in caplog.records)
        assert "sent without credentials" in text
        assert ISO_TIME.search(text)
        for secret in secrets:
            assert secret not in text
    finally:
        client.close()
        keys.close()


# -- what only an httpx auth meets ----------------------------------------------------


@pytest.fixture
def second_host() -> Iterator[RawServer]:
    server = RawServer(("api.example.org",))
    yield server
    server.close()


def test_a_shared_client_sends_no_credentials_to_another_host(
    kind: str, sandbox: Sandbox, second_host: RawServer
) -> None:
    """One client, the auth on the client: the account gets credentials, the
    other host none (no Authorization at all), the account's public pages none."""
    client = logged_in(kind, sandbox)
    context = sandbox.ssl_context()
    second_host.ca.configure_trust(context)
    resolve = {**sandbox.resolve, **second_host.resolve}

    def check(statuses: list[int]) -> None:
        assert statuses[:2] == [200, 200]
        seen = second_host.seen
        assert len(seen) == 1
        assert seen[0].header("authorization") == []
        assert seen[0].sni == "api.example.org"
        records = [r for r in sandbox.requests if r.path in ("/api/3.0/item", "/reserve/")]
        assert [(r.path, r.credential) for r in records] == [
            ("/api/3.0/item", "bearer"),
            ("/reserve/", "none"),
        ]

    try:
        if kind == "sync":
            with httpx.Client(
                base_url=BASE, auth=client.auth, transport=transport(context, resolve)
            ) as shared:
                statuses = [
                    shared.get("item").status_code,
                    shared.get("https://api.example.org/api/3.0/item").status_code,
                    shared.get("https://acme.checkfront.com/reserve/").status_code,
                ]
        else:

            async def main() -> list[int]:
                async with httpx.AsyncClient(
                    base_url=BASE, auth=client.auth, transport=async_transport(context, resolve)
                ) as shared:
                    return [
                        (await shared.get("item")).status_code,
                        (await shared.get("https://api.example.org/api/3.0/item")).status_code,
                        (await shared.get("https://acme.checkfront.com/reserve/")).status_code,
                    ]

            statuses = anyio.run(main, backend=kind)
        check(statuses)
    finally:
        client.close()


def test_a_streaming_body_is_refused_when_it_must_be_sent_again(
    kind: str, sandbox: Sandbox
) -> None:
    """A body that cannot be replayed goes once; when a 401 needs the call sent
    again, it fails with BodyNotReplayable instead of sending it half-read."""
    client = logged_in(kind, sandbox)
    form = b"customer_name=Ada"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        if kind == "sync":

            def chunks() -> Iterator[bytes]:
                yield form

            def send() -> httpx.Response:
                assert client.client is not None
                return client.client.post("customer", content=chunks(), headers=headers)
        else:

            async def achunks() -> AsyncIterator[bytes]:
                yield form

            def send() -> httpx.Response:
                async def call(c: httpx.AsyncClient) -> httpx.Response:
                    return await c.post("customer", content=achunks(), headers=headers)

                return client.run(call)

        assert send().status_code == 200  # no re-send needed: streamed once
        sandbox.revoke_access_token("acme")
        with pytest.raises(BodyNotReplayable, match=r"POST https://acme.checkfront.com/api"):
            send()
        assert api_statuses(sandbox) == [200, 401]  # nothing sent after the 401
        # the refresh did happen, and the next call uses its token
        assert client.request("GET", "item").status_code == 200
        assert api_statuses(sandbox)[-1] == 200
    finally:
        client.close()


def test_a_request_outside_the_api_base_gets_no_credentials(sandbox: Sandbox) -> None:
    client = pair("sync", sandbox)
    try:
        client.request("GET", "https://acme.checkfront.com/oauth/")
        assert sandbox.requests[-1].credential == "none"
    finally:
        client.close()


# -- single flight --------------------------------------------------------------------


def expired(sandbox: Sandbox, kind: str) -> HttpxHarness:
    client = logged_in("sync", sandbox)
    client.close()
    sandbox.clock.advance(14_001)
    sandbox.clear_requests()
    fresh = HttpxHarness(kind, sandbox, app_of(sandbox), store=client.store)
    assert fresh.machine.tokens == client.machine.tokens
    return fresh


def test_32_threads_on_one_client_share_one_refresh(sandbox: Sandbox) -> None:
    import threading

    harness = expired(sandbox, "sync")
    client = httpx.Client(
        base_url=BASE, auth=harness.auth, transport=transport(harness.context, harness.resolve, 32)
    )
    barrier = threading.Barrier(32)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            statuses.append(client.get("booking/index").status_code)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    client.close()
    assert errors == []
    assert statuses == [200] * 32
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert api_statuses(sandbox) == [200] * 32
    assert harness.store.load() == harness.machine.tokens


def test_200_asyncio_tasks_share_one_refresh(sandbox: Sandbox) -> None:
    harness = expired(sandbox, "asyncio")
    statuses: list[int] = []

    async def main() -> None:
        async with harness.async_client(limit=20) as client:

            async def one() -> None:
                statuses.append((await client.get("item")).status_code)

            async with anyio.create_task_group() as group:
                for _ in range(200):
                    group.start_soon(one)

    anyio.run(main, backend="asyncio")
    assert statuses == [200] * 200
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert api_statuses(sandbox) == [200] * 200


def test_a_stored_migration_applies_to_requests_on_the_old_host(sandbox: Sandbox) -> None:
    """The store says the account moved: a client whose base_url still names
    the old host gets its calls sent to the new origin, with credentials."""
    first = logged_in("sync", sandbox)
    sandbox.migrate("acme")
    assert first.request("GET", "item").status_code == 200  # learns and saves the move
    first.close()
    assert first.store.load_record() is not None
    later = HttpxHarness("sync", sandbox, app_of(sandbox), store=first.store)
    try:
        assert later.machine.account.origin == "https://" + NEW
        sandbox.clear_requests()
        assert later.request("GET", BASE + "item").status_code == 200
        assert [(r.host, r.credential) for r in sandbox.requests] == [(NEW, "bearer")]
    finally:
        later.close()
