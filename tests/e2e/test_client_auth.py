"""Client credentials with special characters, against servers that read them differently.

RFC 6749 section 2.3.1 encodes the client id and secret before HTTP Basic, but
real servers disagree on decoding: some form-decode them, some only
percent-decode them, some compare them raw.  The sandbox's
``client_credentials`` switch plays each; every driver must log in and refresh
against all three with a secret holding ``+ : %``, a space and a non-ASCII
letter, and say clearly when the secret is simply wrong.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cfauth.sandbox import Sandbox
from cfauth_core import ClientCredentialsRejected, OAuth2App

from .harness import KINDS, Harness

SECRET = "p+s:w%rd ë/=="
CLIENT_ID = "special-client"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def special_client(kind: str, sandbox: Sandbox, secret: str = SECRET) -> Harness:
    redirect_uri = sandbox.account("acme").redirect_uri
    sandbox.register_client("acme", redirect_uri, client_id=CLIENT_ID, client_secret=SECRET)
    return Harness(kind, sandbox, OAuth2App(CLIENT_ID, secret, redirect_uri))


@pytest.mark.parametrize(
    ("server", "exchanges", "form"),
    [("form", 1, "rfc6749"), ("percent", 1, "rfc6749"), ("raw", 2, "raw")],
)
def test_special_secret_logs_in_and_refreshes(
    kind: str, sandbox: Sandbox, server: str, exchanges: int, form: str
) -> None:
    sandbox.client_credentials = server
    client = special_client(kind, sandbox)
    try:
        client.login()
        # A decoding server takes the encoded form at once; one that compares the
        # credentials raw refuses it (invalid_client), and the raw re-send succeeds.
        assert len(sandbox.token_requests("authorization_code")) == exchanges
        assert client.machine.client_auth == form
        assert client.request("GET", "item").status == 200
        # The form that worked is used straight away from then on.
        sandbox.clock.advance(14000 - 100)
        assert client.request("GET", "item").status == 200
        assert len(sandbox.token_requests("refresh_token")) == 1
        assert client.machine.client_auth == form
    finally:
        client.close()


@pytest.mark.parametrize("server", ["form", "percent", "raw"])
def test_wrong_special_secret_says_both_forms_were_tried(
    kind: str, sandbox: Sandbox, server: str
) -> None:
    sandbox.client_credentials = server
    client = special_client(kind, sandbox, secret=SECRET + "x")
    try:
        with pytest.raises(ClientCredentialsRejected) as info:
            client.login()
        message = info.value.message
        assert "both forms tried" in message
        assert "Manage > Developer" in message
        assert SECRET not in message
        assert len(sandbox.token_requests("authorization_code")) == 2
    finally:
        client.close()


def test_a_form_learnt_by_another_client_is_used_from_the_lease(
    kind: str, sandbox: Sandbox
) -> None:
    """Two clients share a grant; the one that logs in learns that the server
    compares the credentials raw.  The other, already running with the default
    form, takes that form with the tokens when it reloads them under the lease,
    and refreshes with one token request instead of two."""
    sandbox.client_credentials = "raw"
    first = special_client(kind, sandbox)
    try:
        first.login()
        assert first.machine.client_auth == "raw"
        record = first.store.load_record()
        assert record is not None
        assert record.client_auth == "raw"
    finally:
        first.close()
    credential = OAuth2App(CLIENT_ID, SECRET, sandbox.account("acme").redirect_uri)
    second = Harness(kind, sandbox, credential, tokens=record.tokens, store=first.store)
    try:
        assert second.machine.client_auth == "rfc6749"
        sandbox.clock.advance(14000 - 100)
        assert second.request("GET", "item").status == 200
        assert len(sandbox.token_requests("refresh_token")) == 1
        assert second.machine.client_auth == "raw"
    finally:
        second.close()
