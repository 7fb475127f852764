"""The sandbox, driven by a plain standard-library client over real TLS.

The client connects to 127.0.0.1:PORT but keeps the real host name for SNI, the
certificate check and the Host header (like ``curl --resolve``). Time is virtual: the
tests move ``sandbox.clock`` instead of sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import secrets
import socket
import ssl
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import pytest
import trustme

from cfauth.sandbox import (
    DEFAULT_REDIRECT_URI,
    EVIL_HOST,
    RequestRecord,
    Sandbox,
    SandboxApp,
    SandboxClock,
    SandboxRequest,
)
from cfauth.sandbox.__main__ import banner

pytest_plugins = ["cfauth.sandbox.pytest_plugin", "pytester"]

ACME = "https://acme.checkfront.com"
ACME_NA1 = "https://acme.manage.na1.bookingplatform.app"
BOOKINGS = "/api/3.0/booking/index"
TOKEN = "/oauth/token/"


# ---------------------------------------------------------------------------
# A plain client: http.client over TLS to 127.0.0.1 with the real host name
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def location_query(self) -> dict[str, str]:
        location = self.header("Location")
        assert location is not None
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class ResolvedConnection(http.client.HTTPSConnection):
    """An HTTPS connection to ``host`` that dials 127.0.0.1:``port`` instead."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, 443, context=context, timeout=10)
        self.sandbox_port = port
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.sandbox_port), timeout=10)
        # http.client writes headers and body separately: without NODELAY, Nagle and the
        # server's delayed ACK add ~40 ms to every POST (urllib3 and trio set it too).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


class Client:
    """One keep-alive connection per host, like a real pooled client."""

    def __init__(self, sandbox: Sandbox, context: ssl.SSLContext | None = None) -> None:
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            sandbox.ca.configure_trust(context)
        self.sandbox = sandbox
        self.context = context
        self.connections: dict[str, ResolvedConnection] = {}

    def connection(self, host: str) -> ResolvedConnection:
        if host not in self.connections:
            self.connections[host] = ResolvedConnection(host, self.sandbox.port, self.context)
        return self.connections[host]

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
        authorization: str | None = None,
    ) -> Reply:
        parts = urlsplit(url)
        assert parts.scheme == "https"
        assert parts.hostname is not None
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        all_headers = dict(headers or {})
        body = None
        if form is not None:
            body = urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        if authorization is not None:
            all_headers["Authorization"] = authorization
        conn = self.connection(parts.hostname)
        conn.request(method, target, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, response.headers, data)

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()
        self.connections.clear()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def client_basic(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: form-encode id and secret, then Basic."""
    return basic(quote_plus(client_id), quote_plus(client_secret))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(accounts=("acme", "beta")) as sb:
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    c = Client(sandbox)
    try:
        yield c
    finally:
        c.close()


def pair_auth(sandbox: Sandbox, account: str = "acme") -> str:
    info = sandbox.account(account)
    return basic(info.api_key, info.api_secret)


def authorize(
    client: Client,
    sandbox: Sandbox,
    *,
    challenge: str | None = None,
    state: str = "s-123",
    origin: str = ACME,
    client_id: str | None = None,
    redirect_uri: str | None = None,
) -> Reply:
    info = sandbox.account("acme")
    params = {
        "client_id": client_id or info.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri or info.redirect_uri,
        "state": state,
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    return client.request("GET", f"{origin}/oauth/?{urlencode(params)}")


def exchange(
    client: Client,
    sandbox: Sandbox,
    code: str,
    *,
    verifier: str | None = None,
    origin: str = ACME,
    redirect_uri: str | None = None,
) -> Reply:
    info = sandbox.account("acme")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri or info.redirect_uri,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return client.request(
        "POST",
        f"{origin}{TOKEN}",
        form=form,
        authorization=client_basic(info.client_id, info.client_secret),
    )


def refresh(client: Client, sandbox: Sandbox, token: str, *, origin: str = ACME) -> Reply:
    info = sandbox.account("acme")
    return client.request(
        "POST",
        f"{origin}{TOKEN}",
        form={"grant_type": "refresh_token", "refresh_token": token},
        authorization=client_basic(info.client_id, info.client_secret),
    )


def login(client: Client, sandbox: Sandbox) -> dict[str, Any]:
    verifier, challenge = pkce()
    reply = authorize(client, sandbox, challenge=challenge)
    assert reply.status == 302
    reply = exchange(client, sandbox, reply.location_query()["code"], verifier=verifier)
    assert reply.status == 200, reply.body
    tokens: dict[str, Any] = reply.json()
    return tokens


def bearer_get(client: Client, token: str, url: str = ACME + BOOKINGS) -> Reply:
    return client.request("GET", url, authorization=f"Bearer {token}")


def assert_oauth_error(reply: Reply, status: int, error: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.header("Content-Type") == "application/json"
    body: dict[str, Any] = reply.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    return body


# ---------------------------------------------------------------------------
# Addresses, TLS, transport
# ---------------------------------------------------------------------------


def test_addresses_and_lifecycle() -> None:
    sb = Sandbox(accounts=("acme",))
    with pytest.raises(RuntimeError, match="not running"):
        _ = sb.port
    with sb:
        assert sb.running
        port = sb.port
        assert sb.resolve == {
            "acme.checkfront.com:443": f"127.0.0.1:{port}",
            "acme.manage.na1.bookingplatform.app:443": f"127.0.0.1:{port}",
            "acme.manage.eu1.bookingplatform.app:443": f"127.0.0.1:{port}",
            "evil.example:443": f"127.0.0.1:{port}",
        }
        assert sb.origin("acme") == ACME
        assert sb.new_origin("acme") == ACME_NA1
        assert sb.evil_origin == "https://evil.example"
        ca_file = sb.ca_file
        with open(ca_file, encoding="ascii") as fh:
            assert fh.read().startswith("-----BEGIN CERTIFICATE-----")
        with pytest.raises(RuntimeError, match="already running"):
            sb.start()
    assert not sb.running
    assert not os.path.exists(ca_file)
    assert not os.path.exists(os.path.dirname(ca_file))


def test_listens_on_loopback_only(sandbox: Sandbox) -> None:
    server = sandbox._server
    assert server is not None
    assert server.server_address[0] == "127.0.0.1"


def test_unknown_ca_fails_certificate_check(sandbox: Sandbox) -> None:
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(other)
    c = Client(sandbox, other)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            c.request("GET", ACME + BOOKINGS)
    finally:
        c.close()


def test_certificate_covers_only_the_served_hosts(sandbox: Sandbox) -> None:
    c = Client(sandbox)
    try:
        for origin in (ACME, ACME_NA1, "https://beta.checkfront.com", "https://evil.example"):
            assert c.request("GET", origin + "/nothing").status in (200, 404)
        with pytest.raises(ssl.SSLCertVerificationError):
            c.request("GET", "https://gamma.checkfront.com/")
    finally:
        c.close()


def test_sandbox_ssl_context_helper(sandbox: Sandbox) -> None:
    c = Client(sandbox, sandbox.ssl_context())
    try:
        assert c.request("GET", ACME + BOOKINGS, authorization=pair_auth(sandbox)).status == 200
    finally:
        c.close()


def test_keep_alive_reuses_one_connection(sandbox: Sandbox, client: Client) -> None:
    auth = pair_auth(sandbox)
    assert client.request("GET", ACME + BOOKINGS, authorization=auth).status == 200
    sock = client.connection("acme.checkfront.com").sock
    for _ in range(3):
        reply = client.request("GET", ACME + "/api/3.0/item", authorization=auth)
        assert reply.status == 200
        assert reply.header("Content-Length") == str(len(reply.body))
    assert client.connection("acme.checkfront.com").sock is sock
    assert len(sandbox.requests) == 4


def test_two_hundred_concurrent_connections(sandbox: Sandbox) -> None:
    auth = pair_auth(sandbox)
    context = sandbox.ssl_context()
    conns = [ResolvedConnection("acme.checkfront.com", sandbox.port, context) for _ in range(200)]
    try:
        for conn in conns:  # all 200 open at once, each held by its own server thread
            conn.connect()
        for conn in conns:
            conn.request("GET", "/api/3.0/item", headers={"Authorization": auth})
        statuses = []
        for conn in conns:
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        for conn in conns:
            conn.close()
    assert statuses == [200] * 200
    assert len(sandbox.requests) == 200


def test_sni_must_match_host(sandbox: Sandbox, client: Client) -> None:
    conn = client.connection("acme.checkfront.com")
    conn.request("GET", BOOKINGS, headers={"Host": "beta.checkfront.com"})
    response = conn.getresponse()
    response.read()
    assert response.status == 421
    assert sandbox.requests[-1].sni == "acme.checkfront.com"


def test_stop_closes_open_connections() -> None:
    sb = Sandbox().start()
    c = Client(sb)
    try:
        assert c.request("GET", ACME + BOOKINGS, authorization=pair_auth(sb)).status == 200
        sb.stop()
        with pytest.raises((OSError, http.client.HTTPException)):
            c.request("GET", ACME + BOOKINGS, authorization=pair_auth(sb))
    finally:
        c.close()
        sb.stop()


# ---------------------------------------------------------------------------
# Token pairs and the API
# ---------------------------------------------------------------------------


def test_token_pair_get_envelope(sandbox: Sandbox, client: Client) -> None:
    reply = client.request("GET", ACME + BOOKINGS, authorization=pair_auth(sandbox))
    assert reply.status == 200
    body = reply.json()
    assert body["version"] == "3.0"
    assert body["account_id"] == 1
    assert body["host_id"] == "acme.checkfront.com"
    assert isinstance(body["name"], str)
    assert isinstance(body["locale"], dict)
    request = body["request"]
    assert request["status"] == "OK"
    assert request["resource"] == "booking/index"
    assert request["method"] == "get"
    assert request["page"] == request["pages"] == 1
    assert request["records"] == len(body["booking/index"]) == 5
    assert isinstance(request["time"], float)
    record = sandbox.requests[-1]
    assert record.credential == "basic-pair"
    assert record.account == "acme"
    assert record.sni == "acme.checkfront.com"


def test_booking_index_filters_by_status(sandbox: Sandbox, client: Client) -> None:
    reply = client.request(
        "GET", ACME + BOOKINGS + "?status_id=PAID&limit=10", authorization=pair_auth(sandbox)
    )
    body = reply.json()
    assert {b["status_id"] for b in body["booking/index"].values()} == {"PAID"}
    assert body["request"]["records"] == 2
    assert body["request"]["limit"] == 10
    assert sandbox.requests[-1].param("status_id") == "PAID"


def test_booking_by_id_and_unknown_id(sandbox: Sandbox, client: Client) -> None:
    auth = pair_auth(sandbox)
    reply = client.request("GET", ACME + "/api/3.0/booking/1", authorization=auth)
    assert reply.status == 200
    booking = reply.json()["booking"]
    assert booking["booking_id"] == 1
    by_code = client.request(
        "GET", ACME + f"/api/3.0/booking/{booking['code']}", authorization=auth
    )
    assert by_code.json()["booking"] == booking
    missing = client.request("GET", ACME + "/api/3.0/booking/999", authorization=auth)
    assert_oauth_error(missing, 404, "not_found")


def test_items_customers_and_posts(sandbox: Sandbox, client: Client) -> None:
    auth = pair_auth(sandbox)
    items = client.request("GET", ACME + "/api/3.0/item", authorization=auth).json()
    assert items["request"]["records"] == len(items["items"]) == 3
    customers = client.request("GET", ACME + "/api/3.0/customer", authorization=auth).json()
    assert len(customers["customers"]) == 2
    created = client.request(
        "POST",
        ACME + "/api/3.0/booking/create",
        form={"customer_name": "Grace Hopper", "item_id": "2"},
        authorization=auth,
    )
    assert created.status == 200
    booking = created.json()["booking"]
    assert booking["customer_name"] == "Grace Hopper"
    assert booking["item_id"] == "2"
    assert created.json()["request"]["method"] == "post"
    fetched = client.request(
        "GET", ACME + f"/api/3.0/booking/{booking['booking_id']}", authorization=auth
    )
    assert fetched.json()["booking"]["customer_name"] == "Grace Hopper"
    customer = client.request(
        "POST", ACME + "/api/3.0/customer", form={"customer_name": "Edsger"}, authorization=auth
    )
    assert customer.json()["customer"]["customer_name"] == "Edsger"
    assert sandbox.requests[-1].form_fields == ("customer_name",)
    wrong = client.request("GET", ACME + "/api/3.0/booking/create", authorization=auth)
    assert wrong.status == 405
    assert wrong.header("Allow") == "POST"


def test_api_v4_is_served_too(sandbox: Sandbox, client: Client) -> None:
    reply = client.request("GET", ACME + "/api/4.0/item", authorization=pair_auth(sandbox))
    assert reply.json()["version"] == "4.0"


def test_accounts_are_separate(sandbox: Sandbox, client: Client) -> None:
    beta = "https://beta.checkfront.com"
    assert (
        client.request("GET", beta + BOOKINGS, authorization=pair_auth(sandbox, "beta")).status
        == 200
    )
    reply = client.request("GET", beta + BOOKINGS, authorization=pair_auth(sandbox, "acme"))
    assert reply.status == 401


def test_bad_pair_is_401(sandbox: Sandbox, client: Client) -> None:
    info = sandbox.account("acme")
    reply = client.request("GET", ACME + BOOKINGS, authorization=basic(info.api_key, "wrong"))
    body = assert_oauth_error(reply, 401, "invalid_client")
    assert body["error_description"] == "The client credentials are invalid"
    reply = client.request("GET", ACME + BOOKINGS, authorization="Basic not-base64!")
    assert_oauth_error(reply, 400, "invalid_request")


def test_no_credentials_is_401_invalid_request(client: Client) -> None:
    reply = client.request("GET", ACME + BOOKINGS)
    body = assert_oauth_error(reply, 401, "invalid_request")
    assert body["error_description"] == "The access token was not found."
    assert reply.header("WWW-Authenticate") == 'Bearer realm="Service"'


def test_unknown_path_is_404(sandbox: Sandbox, client: Client) -> None:
    assert_oauth_error(client.request("GET", ACME + "/nowhere"), 404, "not_found")
    reply = client.request("GET", ACME + "/api/3.0/nothing/here", authorization=pair_auth(sandbox))
    assert_oauth_error(reply, 404, "not_found")


def test_client_credentials_refused_on_api(sandbox: Sandbox, client: Client) -> None:
    info = sandbox.account("acme")
    reply = client.request(
        "GET", ACME + BOOKINGS, authorization=client_basic(info.client_id, info.client_secret)
    )
    assert_oauth_error(reply, 403, "access_denied")
    assert sandbox.requests[-1].credential == "basic-client"


# ---------------------------------------------------------------------------
# OAuth2
# ---------------------------------------------------------------------------


def test_full_code_flow_with_pkce(sandbox: Sandbox, client: Client) -> None:
    verifier, challenge = pkce()
    reply = authorize(client, sandbox, challenge=challenge, state="st-1")
    assert reply.status == 302
    location = reply.header("Location")
    assert location is not None
    assert location.startswith(DEFAULT_REDIRECT_URI + "?")
    query = reply.location_query()
    assert query["state"] == "st-1"
    reply = exchange(client, sandbox, query["code"], verifier=verifier)
    assert reply.status == 200
    assert reply.header("Cache-Control") == "no-store"
    tokens = reply.json()
    assert set(tokens) == {"access_token", "expires_in", "token_type", "scope", "refresh_token"}
    assert tokens["expires_in"] == 14000
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] is None
    reply = client.request("GET", ACME + BOOKINGS, authorization=f"BEARER {tokens['access_token']}")
    assert reply.status == 200
    assert sandbox.requests[-1].credential == "bearer"
    [token_record] = sandbox.token_requests("authorization_code")
    assert token_record.credential == "basic-client"
    assert set(token_record.form_fields) == {"grant_type", "code", "redirect_uri", "code_verifier"}


def test_code_flow_without_pkce(sandbox: Sandbox, client: Client) -> None:
    code = authorize(client, sandbox).location_query()["code"]
    assert exchange(client, sandbox, code).status == 200


def test_code_reuse_is_invalid_grant(sandbox: Sandbox, client: Client) -> None:
    code = authorize(client, sandbox).location_query()["code"]
    assert exchange(client, sandbox, code).status == 200
    assert_oauth_error(exchange(client, sandbox, code), 400, "invalid_grant")


def test_code_expires_after_60_seconds(sandbox: Sandbox, client: Client) -> None:
    code = authorize(client, sandbox).location_query()["code"]
    sandbox.clock.advance(61)
    body = assert_oauth_error(exchange(client, sandbox, code), 400, "invalid_grant")
    assert body["error_description"] == "The authorization code has expired"


def test_code_within_60_seconds_is_fine(sandbox: Sandbox, client: Client) -> None:
    code = authorize(client, sandbox).location_query()["code"]
    sandbox.clock.advance(60)
    assert exchange(client, sandbox, code).status == 200


def test_pkce_mismatch_and_missing_verifier(sandbox: Sandbox, client: Client) -> None:
    _, challenge = pkce()
    other_verifier, _ = pkce()
    code = authorize(client, sandbox, challenge=challenge).location_query()["code"]
    body = assert_oauth_error(
        exchange(client, sandbox, code, verifier=other_verifier), 400, "invalid_grant"
    )
    assert body["error_description"] == 'Failed to verify "code_verifier"'
    code = authorize(client, sandbox, challenge=challenge).location_query()["code"]
    assert_oauth_error(exchange(client, sandbox, code), 400, "invalid_grant")
    code = authorize(client, sandbox).location_query()["code"]
    assert_oauth_error(
        exchange(client, sandbox, code, verifier=other_verifier), 400, "invalid_grant"
    )


def test_code_bound_to_redirect_uri(sandbox: Sandbox, client: Client) -> None:
    code = authorize(client, sandbox).location_query()["code"]
    reply = exchange(client, sandbox, code, redirect_uri="http://127.0.0.1:1/other")
    assert_oauth_error(reply, 400, "invalid_grant")


def test_code_bound_to_client(sandbox: Sandbox, client: Client) -> None:
    other_id, other_secret = sandbox.register_client("acme", DEFAULT_REDIRECT_URI + "2")
    code = authorize(client, sandbox).location_query()["code"]
    reply = client.request(
        "POST",
        ACME + TOKEN,
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": DEFAULT_REDIRECT_URI,
        },
        authorization=client_basic(other_id, other_secret),
    )
    assert_oauth_error(reply, 400, "invalid_grant")
    assert exchange(client, sandbox, code).status == 200


def test_client_credentials_in_body_are_invalid_client(sandbox: Sandbox, client: Client) -> None:
    info = sandbox.account("acme")
    code = authorize(client, sandbox).location_query()["code"]
    reply = client.request(
        "POST",
        ACME + TOKEN,
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": info.redirect_uri,
            "client_id": info.client_id,
            "client_secret": info.client_secret,
        },
    )
    assert_oauth_error(reply, 401, "invalid_client")
    assert reply.header("WWW-Authenticate") == 'Basic realm="Service"'


def test_wrong_or_missing_client_credentials(sandbox: Sandbox, client: Client) -> None:
    info = sandbox.account("acme")
    form = {"grant_type": "refresh_token", "refresh_token": "x"}
    reply = client.request(
        "POST", ACME + TOKEN, form=form, authorization=client_basic(info.client_id, "nope")
    )
    assert_oauth_error(reply, 401, "invalid_client")
    assert_oauth_error(client.request("POST", ACME + TOKEN, form=form), 401, "invalid_client")
    reply = client.request("GET", ACME + TOKEN)
    assert_oauth_error(reply, 405, "invalid_request")
    reply = client.request(
        "POST",
        ACME + TOKEN,
        form={"grant_type": "password"},
        authorization=client_basic(info.client_id, info.client_secret),
    )
    assert_oauth_error(reply, 400, "unsupported_grant_type")


def test_client_credentials_are_form_decoded(sandbox: Sandbox, client: Client) -> None:
    client_id, client_secret = sandbox.register_client(
        "acme", "https://app.example/cb", client_id="app:1", client_secret="s+e/c r%t:="
    )
    form = {"grant_type": "refresh_token", "refresh_token": "unknown"}
    raw = basic(client_id, client_secret)  # not form-encoded: '+' decodes to ' ', mismatch
    assert_oauth_error(
        client.request("POST", ACME + TOKEN, form=form, authorization=raw), 401, "invalid_client"
    )
    encoded = client_basic(client_id, client_secret)
    reply = client.request("POST", ACME + TOKEN, form=form, authorization=encoded)
    assert_oauth_error(reply, 400, "invalid_grant")  # authenticated; the token is unknown


def test_refresh_rotation(sandbox: Sandbox, client: Client) -> None:
    first = login(client, sandbox)
    reply = refresh(client, sandbox, first["refresh_token"])
    assert reply.status == 200
    second = reply.json()
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["expires_in"] == 14000
    body = assert_oauth_error(
        refresh(client, sandbox, first["refresh_token"]), 400, "invalid_grant"
    )
    assert body == {"error": "invalid_grant", "error_description": "Invalid refresh token"}
    assert_oauth_error(bearer_get(client, first["access_token"]), 401, "invalid_token")
    assert bearer_get(client, second["access_token"]).status == 200
    third = refresh(client, sandbox, second["refresh_token"])
    assert third.status == 200
    assert len(sandbox.token_requests("refresh_token")) == 3
    assert len(sandbox.token_requests("authorization_code")) == 1


def test_concurrent_refresh_with_one_token_only_one_wins(sandbox: Sandbox) -> None:
    tokens = sandbox.issue_tokens("acme")

    def attempt(_: int) -> int:
        c = Client(sandbox)
        try:
            return refresh(c, sandbox, tokens["refresh_token"]).status
        finally:
            c.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = sorted(pool.map(attempt, range(16)))
    assert statuses == [200] + [400] * 15
    assert len(sandbox.token_requests("refresh_token")) == 16


def test_access_token_expires(sandbox: Sandbox, client: Client) -> None:
    tokens = login(client, sandbox)
    sandbox.clock.advance(13999)
    assert bearer_get(client, tokens["access_token"]).status == 200
    sandbox.clock.advance(2)
    reply = bearer_get(client, tokens["access_token"])
    body = assert_oauth_error(reply, 401, "invalid_token")
    assert body["error_description"] == "The access token provided has expired"
    assert reply.header("WWW-Authenticate") == (
        'Bearer realm="Service", error="invalid_token", '
        'error_description="The access token provided has expired"'
    )
    assert refresh(client, sandbox, tokens["refresh_token"]).status == 200


def test_unknown_bearer_token(client: Client) -> None:
    reply = bearer_get(client, "0" * 40)
    body = assert_oauth_error(reply, 401, "invalid_token")
    assert body["error_description"] == "The access token provided is invalid"
    assert reply.header("WWW-Authenticate") == (
        'Bearer realm="Service", error="invalid_token", '
        'error_description="The access token provided is invalid"'
    )


def test_refresh_token_expires_after_14_days(sandbox: Sandbox, client: Client) -> None:
    tokens = login(client, sandbox)
    sandbox.clock.advance(14 * 24 * 3600 - 1)
    renewed = refresh(client, sandbox, tokens["refresh_token"])
    assert renewed.status == 200
    sandbox.clock.advance(14 * 24 * 3600)
    reply = refresh(client, sandbox, renewed.json()["refresh_token"])
    body = assert_oauth_error(reply, 400, "invalid_grant")
    assert body["error_description"] == "Refresh token has expired"


def test_revoke_access_token(sandbox: Sandbox, client: Client) -> None:
    tokens = login(client, sandbox)
    assert sandbox.revoke_access_token("acme") == 1
    assert_oauth_error(bearer_get(client, tokens["access_token"]), 401, "invalid_token")
    new = refresh(client, sandbox, tokens["refresh_token"]).json()
    assert bearer_get(client, new["access_token"]).status == 200
    sandbox.revoke_grants("acme")
    assert_oauth_error(refresh(client, sandbox, new["refresh_token"]), 400, "invalid_grant")


def test_issue_tokens_directly(sandbox: Sandbox, client: Client) -> None:
    tokens = sandbox.issue_tokens("acme")
    assert bearer_get(client, tokens["access_token"]).status == 200
    assert (
        bearer_get(client, tokens["access_token"], "https://beta.checkfront.com" + BOOKINGS).status
        == 401
    )


def test_token_in_query_accepted_but_redacted(sandbox: Sandbox, client: Client) -> None:
    tokens = sandbox.issue_tokens("acme")
    reply = client.request("GET", ACME + BOOKINGS + "?access_token=" + tokens["access_token"])
    assert reply.status == 200
    record = sandbox.requests[-1]
    assert record.credential == "token-param"
    assert record.param("access_token") == "[redacted]"


# ---------------------------------------------------------------------------
# The authorize endpoint for people
# ---------------------------------------------------------------------------


def test_consent_page_and_decision(sandbox: Sandbox, client: Client) -> None:
    sandbox.auto_consent = False
    _, challenge = pkce()
    page = authorize(client, sandbox, challenge=challenge, state="a<b")
    assert page.status == 200
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    text = page.body.decode()
    assert '<form method="post" action="/oauth/">' in text
    assert 'value="allow">Allow</button>' in text
    assert 'value="deny">Deny</button>' in text
    assert 'name="state" value="a&lt;b"' in text
    assert 'name="code_challenge" value="' + challenge in text
    info = sandbox.account("acme")
    form = {
        "client_id": info.client_id,
        "response_type": "code",
        "redirect_uri": info.redirect_uri,
        "state": "a<b",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    allowed = client.request("POST", ACME + "/oauth/", form={**form, "decision": "allow"})
    assert allowed.status == 302
    assert allowed.location_query()["state"] == "a<b"
    assert "code" in allowed.location_query()
    denied = client.request("POST", ACME + "/oauth/", form={**form, "decision": "deny"})
    assert denied.status == 302
    assert denied.location_query()["error"] == "access_denied"
    assert denied.location_query()["state"] == "a<b"


def test_deny_next(sandbox: Sandbox, client: Client) -> None:
    sandbox.deny_next = True
    query = authorize(client, sandbox, state="s9").location_query()
    assert query["error"] == "access_denied"
    assert query["error_description"]
    assert query["state"] == "s9"
    assert "code" not in query
    assert "code" in authorize(client, sandbox).location_query()


def test_authorize_never_redirects_to_unregistered_uri(sandbox: Sandbox, client: Client) -> None:
    reply = authorize(client, sandbox, redirect_uri="https://evil.example/cb")
    assert reply.status == 400
    assert reply.header("Location") is None
    reply = authorize(client, sandbox, client_id="nobody")
    assert reply.status == 400
    assert reply.header("Location") is None


def test_authorize_rejects_plain_pkce(sandbox: Sandbox, client: Client) -> None:
    info = sandbox.account("acme")
    params = {
        "client_id": info.client_id,
        "response_type": "code",
        "redirect_uri": info.redirect_uri,
        "state": "x",
        "code_challenge": "a" * 43,
        "code_challenge_method": "plain",
    }
    reply = client.request("GET", f"{ACME}/oauth/?{urlencode(params)}")
    assert reply.status == 302
    assert reply.location_query()["error"] == "invalid_request"


# ---------------------------------------------------------------------------
# Switches: failures, migration, redirects, evil.example
# ---------------------------------------------------------------------------


def test_fail_next_429_then_recovers(sandbox: Sandbox, client: Client) -> None:
    sandbox.fail_next(2, status=429, retry_after="3")
    auth = pair_auth(sandbox)
    for _ in range(2):
        reply = client.request("GET", ACME + BOOKINGS, authorization=auth)
        assert reply.status == 429
        assert reply.header("Retry-After") == "3"
    assert client.request("GET", ACME + BOOKINGS, authorization=auth).status == 200


def test_fail_next_500_only_on_token_path(sandbox: Sandbox, client: Client) -> None:
    tokens = login(client, sandbox)
    sandbox.fail_next(1, status=500, retry_after=None, path_prefix=TOKEN)
    assert bearer_get(client, tokens["access_token"]).status == 200
    reply = refresh(client, sandbox, tokens["refresh_token"])
    assert_oauth_error(reply, 500, "server_error")
    assert reply.header("Retry-After") is None
    assert refresh(client, sandbox, tokens["refresh_token"]).status == 200


def test_fail_next_503(sandbox: Sandbox, client: Client) -> None:
    sandbox.fail_next(1, status=503, retry_after="7")
    reply = client.request("GET", ACME + BOOKINGS, authorization=pair_auth(sandbox))
    assert_oauth_error(reply, 503, "temporarily_unavailable")
    assert reply.header("Retry-After") == "7"


def test_respond_next_canned_body(sandbox: Sandbox, client: Client) -> None:
    tokens = login(client, sandbox)
    sandbox.respond_next(1, 200, {"access_token": "", "expires_in": "soon"}, path_prefix=TOKEN)
    reply = refresh(client, sandbox, tokens["refresh_token"])
    assert reply.json() == {"access_token": "", "expires_in": "soon"}


def test_migration_301_get_and_post(sandbox: Sandbox, client: Client) -> None:
    auth = pair_auth(sandbox)
    sandbox.migrate("acme")
    assert sandbox.account("acme").origin == ACME_NA1
    reply = client.request("GET", ACME + BOOKINGS + "?status_id=PAID", authorization=auth)
    assert reply.status == 301
    assert reply.header("Location") == ACME_NA1 + BOOKINGS + "?status_id=PAID"
    reply = client.request(
        "POST", ACME + "/api/3.0/booking/create", form={"customer_name": "X"}, authorization=auth
    )
    assert reply.status == 301
    assert reply.header("Location") == ACME_NA1 + "/api/3.0/booking/create"
    assert sandbox.requests[-1].form_fields == ("customer_name",)
    reply = client.request("GET", ACME_NA1 + BOOKINGS + "?status_id=PAID", authorization=auth)
    assert reply.status == 200
    assert reply.json()["host_id"] == "acme.manage.na1.bookingplatform.app"
    created = client.request(
        "POST",
        ACME_NA1 + "/api/3.0/booking/create",
        form={"customer_name": "X"},
        authorization=auth,
    )
    assert created.json()["booking"]["customer_name"] == "X"


def test_migration_moves_oauth_too(sandbox: Sandbox, client: Client) -> None:
    tokens = login(client, sandbox)
    sandbox.migrate("acme")
    assert refresh(client, sandbox, tokens["refresh_token"]).status == 301
    reply = refresh(client, sandbox, tokens["refresh_token"], origin=ACME_NA1)
    assert reply.status == 200
    assert bearer_get(client, reply.json()["access_token"], ACME_NA1 + BOOKINGS).status == 200
    location = authorize(client, sandbox).header("Location") or ""
    assert location.startswith(ACME_NA1 + "/oauth/?client_id=")


def test_migration_bare_location(sandbox: Sandbox, client: Client) -> None:
    sandbox.migrate("acme", region="eu1", bare_location=True)
    reply = client.request("GET", ACME + BOOKINGS, authorization=pair_auth(sandbox))
    assert reply.status == 301
    assert reply.header("Location") == "https://acme.manage.eu1.bookingplatform.app"


def test_redirect_next_to_evil_and_evil_records(sandbox: Sandbox, client: Client) -> None:
    auth = pair_auth(sandbox)
    sandbox.redirect_next(1, "https://evil.example/steal", status=302)
    reply = client.request("GET", ACME + BOOKINGS, authorization=auth)
    assert reply.status == 302
    assert reply.header("Location") == "https://evil.example/steal"
    assert client.request("GET", ACME + BOOKINGS, authorization=auth).status == 200
    # a careful client follows without credentials
    evil = client.request("GET", "https://evil.example/steal")
    assert evil.status == 200
    assert evil.json() == {"evil": True}
    [record] = sandbox.evil_requests()
    assert record.host == EVIL_HOST
    assert record.credential == "none"
    assert "authorization" not in record.header_names
    # a careless one is caught
    client.request("GET", "https://evil.example/steal", authorization=auth)
    assert sandbox.evil_requests()[-1].credential == "basic-pair"


def test_requests_records_hold_no_secrets(sandbox: Sandbox, client: Client) -> None:
    info = sandbox.account("acme")
    verifier, challenge = pkce()
    code = authorize(client, sandbox, challenge=challenge).location_query()["code"]
    tokens = exchange(client, sandbox, code, verifier=verifier).json()
    second = refresh(client, sandbox, tokens["refresh_token"]).json()
    bearer_get(client, second["access_token"])
    client.request("GET", ACME + BOOKINGS, authorization=pair_auth(sandbox))
    client.request("GET", ACME + BOOKINGS + "?access_token=" + second["access_token"])
    client.request("GET", f"https://evil.example/x?code={code}&t={second['refresh_token']}")
    client.request(
        "POST", ACME + TOKEN, form={"client_secret": info.client_secret, "grant_type": "x"}
    )
    secret_values = [
        info.api_key,
        info.api_secret,
        info.client_secret,
        code,
        verifier,
        tokens["access_token"],
        tokens["refresh_token"],
        second["access_token"],
        second["refresh_token"],
    ]
    dumped = repr(sandbox.requests) + repr(info) + repr(sandbox)
    for value in secret_values:
        assert value not in dumped
    assert len(sandbox.requests) == 8
    grant_types = [r.grant_type for r in sandbox.token_requests()]
    assert grant_types == ["authorization_code", "refresh_token", "x"]


def test_records_snapshot_and_clear(sandbox: Sandbox, client: Client) -> None:
    client.request("GET", ACME + BOOKINGS)
    snapshot = sandbox.requests
    assert isinstance(snapshot[0], RequestRecord)
    assert snapshot[0].credential == "none"
    assert snapshot[0].status == 401
    assert snapshot[0].time == sandbox.clock.now()
    sandbox.clear_requests()
    assert sandbox.requests == []
    assert len(snapshot) == 1


# ---------------------------------------------------------------------------
# Clock, sans-IO use, plugin, command line
# ---------------------------------------------------------------------------


def test_injected_clock() -> None:
    clock = SandboxClock(start=1_000_000.0)
    app = SandboxApp(accounts=("acme",), clock=clock)
    assert app.clock is clock
    tokens = app.issue_tokens("acme")
    request = SandboxRequest(
        "GET",
        "acme.checkfront.com",
        BOOKINGS,
        (("Host", "acme.checkfront.com"), ("Authorization", f"Bearer {tokens['access_token']}")),
    )
    assert app.handle(request).status == 200
    clock.advance(14000)
    response = app.handle(request)
    assert response.status == 401
    assert response.json()["error"] == "invalid_token"
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    assert app.requests[0].time == 1_000_000.0


def test_sans_io_app_without_sockets() -> None:
    app = SandboxApp()
    info = app.account("acme")
    form = urlencode({"grant_type": "refresh_token", "refresh_token": "nope"}).encode()
    response = app.handle(
        SandboxRequest(
            "POST",
            "acme.checkfront.com",
            TOKEN,
            (
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", client_basic(info.client_id, info.client_secret)),
            ),
            form,
        )
    )
    assert response.status == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid refresh token",
    }
    tokens = app.issue_tokens("acme")
    request = SandboxRequest(
        "GET",
        "acme.checkfront.com",
        BOOKINGS,
        (("Authorization", f"Bearer {tokens['access_token']}"),),
    )
    assert tokens["access_token"] not in repr(request)
    ok = app.handle(request)
    assert ok.status == 200
    assert ok.header("content-type") == "application/json"


def test_account_names_are_validated() -> None:
    with pytest.raises(ValueError, match="DNS labels"):
        SandboxApp(accounts=("Bad_Name",))
    with pytest.raises(ValueError, match="DNS labels"):
        SandboxApp(accounts=("acme", "acme"))
    with pytest.raises(KeyError, match="no sandbox account"):
        SandboxApp().account("nobody")


def test_pytest_plugin_fixture(cfauth_sandbox: Sandbox) -> None:
    assert cfauth_sandbox.running
    assert cfauth_sandbox.accounts == ("acme",)
    c = Client(cfauth_sandbox)
    try:
        assert (
            c.request("GET", ACME + BOOKINGS, authorization=pair_auth(cfauth_sandbox)).status == 200
        )
    finally:
        c.close()


def test_plugin_as_users_enable_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["cfauth.sandbox.pytest_plugin", "pytester"]\n')
    pytester.makepyfile(
        """
        import pytest

        def test_default(cfauth_sandbox):
            assert cfauth_sandbox.accounts == ("acme",)
            assert cfauth_sandbox.port > 0

        @pytest.mark.cfauth_sandbox(accounts=("acme", "beta"), auto_consent=False)
        def test_marker(cfauth_sandbox):
            assert cfauth_sandbox.accounts == ("acme", "beta")
            assert cfauth_sandbox.auto_consent is False
        """
    )
    result = pytester.runpytest_inprocess("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_banner_lists_port_resolve_ca_and_credentials(sandbox: Sandbox) -> None:
    text = banner(sandbox)
    info = sandbox.account("acme")
    assert f"127.0.0.1:{sandbox.port}" in text
    assert sandbox.ca_file in text
    assert "acme.manage.na1.bookingplatform.app:443 -> 127.0.0.1:" in text
    assert info.api_key in text
    assert info.client_secret in text
