"""The end-to-end matrix: every driver, over real TLS on loopback, against the sandbox.

Each case runs once per driver (blocking over http.client, blocking over
urllib3, trio over h11), connecting to 127.0.0.1 through the ``resolve``
override while SNI, the certificate check and ``Host`` use the real names.
"""

from __future__ import annotations

import logging

import pytest

from cfauth import TransportFailure
from cfauth.sandbox import Sandbox
from cfauth.stdlib import HttpClientTransport
from cfauth.sync import Driver
from cfauth.urllib3 import Urllib3Transport
from cfauth_core import (
    Account,
    ApiKey,
    Machine,
    NetworkError,
    ReauthorizationRequired,
    Request,
    TokenSet,
    UntrustedRedirect,
)

from .conftest import ISO_TIME
from .harness import KINDS, Harness, RecordingStore, app_of, unknown_ca_context

OLD = "acme.checkfront.com"
NEW = "acme.manage.na1.bookingplatform.app"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pair_client(kind: str, sandbox: Sandbox) -> Harness:
    account = sandbox.account("acme")
    return Harness(kind, sandbox, ApiKey(account.api_key, account.api_secret))


def logged_in(kind: str, sandbox: Sandbox) -> Harness:
    client = Harness(kind, sandbox, app_of(sandbox))
    client.login()
    return client


def test_token_pair_call(kind: str, sandbox: Sandbox) -> None:
    client = pair_client(kind, sandbox)
    try:
        body = client.request("GET", "booking/index", params={"status_id": "PAID"}).json()
        assert body["request"]["status"] == "OK"
        record = sandbox.requests[-1]
        assert (record.host, record.path, record.credential) == (
            OLD,
            "/api/3.0/booking/index",
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
        assert "client_secret" not in exchanges[0].form_fields
    finally:
        client.close()


def test_proactive_refresh_after_the_clock_moves(kind: str, sandbox: Sandbox) -> None:
    client = logged_in(kind, sandbox)
    try:
        first = client.machine.tokens
        sandbox.clock.advance(14000 - 100)  # inside the 300 s leeway, not yet expired
        assert client.request("GET", "item").status == 200
        refreshes = sandbox.token_requests("refresh_token")
        assert len(refreshes) == 1
        assert client.machine.tokens != first
        assert client.store.saved[-1] == client.machine.tokens
        # The API saw only one call: the refresh came first, no 401 round trip.
        api = [r for r in sandbox.requests if r.path.startswith("/api/")]
        assert [r.status for r in api] == [200]
    finally:
        client.close()


def test_reactive_refresh_after_revocation(kind: str, sandbox: Sandbox) -> None:
    client = logged_in(kind, sandbox)
    try:
        sandbox.revoke_access_token("acme")
        assert client.request("GET", "customer").status == 200
        api = [r.status for r in sandbox.requests if r.path.startswith("/api/")]
        assert api == [401, 200]
        assert len(sandbox.token_requests("refresh_token")) == 1
    finally:
        client.close()


@pytest.mark.parametrize("bare", [False, True], ids=["full-location", "bare-origin"])
def test_migration_get_then_new_origin_directly(kind: str, sandbox: Sandbox, bare: bool) -> None:
    client = logged_in(kind, sandbox)
    try:
        sandbox.migrate("acme", bare_location=bare)
        sandbox.clear_requests()
        assert client.request("GET", "booking/index").status == 200
        hosts = [(r.host, r.status) for r in sandbox.requests]
        assert hosts == [(OLD, 301), (NEW, 200)]
        assert sandbox.requests[1].credential == "bearer"
        assert client.machine.account.origin == "https://" + NEW
        sandbox.clear_requests()
        sandbox.clock.advance(14000)  # the refresh goes to the new token URL too
        assert client.request("GET", "item").status == 200
        assert {r.host for r in sandbox.requests} == {NEW}
        assert len(sandbox.token_requests("refresh_token")) == 1
    finally:
        client.close()


def test_migration_keeps_post_and_body(kind: str, sandbox: Sandbox) -> None:
    client = pair_client(kind, sandbox)
    try:
        sandbox.migrate("acme")
        response = client.request(
            "POST", "customer", data={"customer_name": "Ada", "customer_email": "a@example.com"}
        )
        assert response.status == 200
        old, new = sandbox.requests[-2:]
        assert (old.host, old.method, old.status) == (OLD, "POST", 301)
        assert (new.host, new.method, new.credential) == (NEW, "POST", "basic-pair")
        assert set(new.form_fields) == {"customer_name", "customer_email"}
        assert b"Ada" in response.body
    finally:
        client.close()


def test_redirect_to_untrusted_host_is_refused(kind: str, sandbox: Sandbox) -> None:
    client = logged_in(kind, sandbox)
    try:
        sandbox.redirect_next(1, "https://evil.example/steal")
        with pytest.raises(UntrustedRedirect) as caught:
            client.request("GET", "booking/index")
        assert "evil.example" in str(caught.value)
        assert sandbox.evil_requests() == []
    finally:
        client.close()


def test_rate_limit_retry_after_is_honoured(kind: str, sandbox: Sandbox) -> None:
    client = pair_client(kind, sandbox)
    try:
        sandbox.fail_next(1, status=429, retry_after="2")
        assert client.request("GET", "item").status == 200
        assert client.slept == [2.0]
        statuses = [r.status for r in sandbox.requests if r.path.startswith("/api/")]
        assert statuses == [429, 200]
    finally:
        client.close()


def test_reusing_a_rotated_refresh_token_needs_reauthorization(kind: str, sandbox: Sandbox) -> None:
    client = logged_in(kind, sandbox)
    try:
        stale = client.machine.tokens
        assert stale is not None
        sandbox.clock.advance(14000)
        assert client.request("GET", "item").status == 200  # rotates the pair
    finally:
        client.close()
    # A second process still holding the old pair (no shared store).
    copy = TokenSet(
        stale.access_token,
        stale.refresh_token,
        stale.expires_at,
        stale.refresh_expires_at,
        stale.updated_at,
    )
    other = Harness(kind, sandbox, app_of(sandbox), tokens=copy, store=RecordingStore(copy))
    try:
        with pytest.raises(ReauthorizationRequired):
            other.request("GET", "item")
        refused = sandbox.token_requests("refresh_token")[-1]
        assert refused.status == 400
    finally:
        other.close()


def test_debug_logs_carry_no_secret(
    kind: str, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = sandbox.account("acme")
    client = logged_in(kind, sandbox)
    pair = pair_client(kind, sandbox)
    try:
        sandbox.clock.advance(14000)
        client.request("GET", "item")
        sandbox.revoke_access_token("acme")
        client.request("POST", "customer", data={"customer_name": "Ada"})
        sandbox.migrate("acme")
        client.request("GET", "item")
        pair.request("GET", "item")
        sandbox.redirect_next(1, "https://evil.example/x")
        with pytest.raises(UntrustedRedirect):
            pair.request("GET", "item")
        secrets = [account.api_secret, account.client_secret]
        for tokens in client.store.saved:
            secrets += [tokens.access_token, tokens.refresh_token]
        assert len(secrets) >= 6
        text = "\n".join(record.getMessage() for record in caplog.records)
        assert any(record.name == "cfauth" for record in caplog.records)  # it did log
        assert ISO_TIME.search(text)  # "storing new tokens (expiring at ...)"
        for secret in secrets:
            assert secret not in text
    finally:
        client.close()
        pair.close()


@pytest.mark.parametrize("transport_kind", ["stdlib", "urllib3"])
def test_unknown_ca_is_refused(sandbox: Sandbox, transport_kind: str) -> None:
    context = unknown_ca_context()
    transport = (
        HttpClientTransport(ssl_context=context, resolve=sandbox.resolve)
        if transport_kind == "stdlib"
        else Urllib3Transport(ssl_context=context, resolve=sandbox.resolve)
    )
    request = Request("GET", "https://acme.checkfront.com/api/3.0/item", ())
    with pytest.raises(TransportFailure):
        transport(request)
    transport.close()
    assert sandbox.requests == []


def test_unknown_ca_is_refused_by_the_trio_transport(sandbox: Sandbox) -> None:
    import trio

    from cfauth.trio import H11Transport

    async def main() -> None:
        transport = H11Transport(ssl_context=unknown_ca_context(), resolve=sandbox.resolve)
        with pytest.raises(TransportFailure):
            await transport(Request("GET", "https://acme.checkfront.com/api/3.0/item", ()))
        await transport.aclose()

    trio.run(main)
    assert sandbox.requests == []


@pytest.mark.parametrize("transport_kind", ["stdlib", "urllib3"])
def test_default_trust_refuses_the_sandbox_certificate(
    sandbox: Sandbox, transport_kind: str
) -> None:
    """TLS verification is on by default: the system trust store does not know the sandbox CA."""
    transport = (
        HttpClientTransport(resolve=sandbox.resolve)
        if transport_kind == "stdlib"
        else Urllib3Transport(resolve=sandbox.resolve)
    )
    driver = Driver(Machine(Account.parse("acme"), ApiKey("key", "secret")), transport)
    with pytest.raises(NetworkError, match=r"certificate|CERTIFICATE|verify"):
        driver.request("GET", "item")
    transport.close()
    assert sandbox.requests == []
