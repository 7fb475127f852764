"""OAuth inputs a login must refuse: a reused pending state, a callback at
another place than the redirect URI, and an issuer (RFC 9207 ``iss``) that is
not the account's origin."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfauth_core import (
    Account,
    AuthorizationFailed,
    AuthorizationRequested,
    CallbackReceived,
    InvalidInput,
    Machine,
    OAuth2App,
    OAuthStateMismatch,
    RemoteProtocolError,
    Send,
    State,
)

NOW = 1_700_000_000.0
STATE = "Yx3p_Q8-vLr2mT0kWc9hZa"
OTHER_STATE = "Hq7_nB2-xPe5rU1sKd8jVb4"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
ORIGIN = "https://acme.checkfront.com"
QUERY = f"code=the-code&state={STATE}"


def pending(redirect_uri: str = "https://app.example/cb") -> Machine:
    m = Machine(Account.parse("acme"), OAuth2App("client", "secret-0001", redirect_uri))
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    return m


def callback(m: Machine, url: str) -> list[object]:
    return list(m.handle(CallbackReceived(now=NOW, url=url)))


# -- state reuse ---------------------------------------------------------------------


def test_a_new_login_may_not_reuse_the_pending_state() -> None:
    m = pending()
    with pytest.raises(InvalidInput, match="pending login's state"):
        m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    # Nothing changed: the pending login still completes.
    assert m.state is State.AUTHORIZING
    assert any(isinstance(a, Send) for a in callback(m, QUERY))


def test_a_new_login_with_a_fresh_state_replaces_the_pending_one() -> None:
    m = pending()
    m.handle(AuthorizationRequested(now=NOW, state=OTHER_STATE, code_verifier=VERIFIER))
    with pytest.raises(OAuthStateMismatch):
        callback(m, QUERY)
    with pytest.raises(InvalidInput, match="used before"):
        m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))


# -- the callback's place ------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "http://app.example/cb",
        "https://evil.example/cb",
        "https://app.example.evil.example/cb",
        "https://app.example:8443/cb",
        "https://app.example/cb/",
        "https://app.example/CB",
        "https://app.example/other",
        "https://app.example",
        "https://user@app.example/cb",
        "https://app.example:99999/cb",
        "//evil.example/cb",
        "/other",
        "/cb/",
        "javascript:/cb",
    ],
)
def test_a_callback_elsewhere_than_the_redirect_uri_is_ignored(where: str) -> None:
    m = pending()
    with pytest.raises(OAuthStateMismatch, match="not at the redirect URI"):
        callback(m, f"{where}?{QUERY}")
    # The machine is unchanged: the real callback still completes the login.
    assert m.state is State.AUTHORIZING
    assert any(isinstance(a, Send) for a in callback(m, f"https://app.example/cb?{QUERY}"))


@pytest.mark.parametrize(
    "url",
    [
        f"https://app.example/cb?{QUERY}",
        f"HTTPS://APP.EXAMPLE/cb?{QUERY}",
        f"https://app.example:443/cb?{QUERY}",
        f"https://app.example/cb?{QUERY}#frag",
        f"/cb?{QUERY}",
        f"?{QUERY}",
        QUERY,
    ],
)
def test_a_callback_at_the_redirect_uri_or_a_bare_query_is_accepted(url: str) -> None:
    assert any(isinstance(a, Send) for a in callback(pending(), url))


def test_a_loopback_callback_must_come_back_to_the_same_port() -> None:
    m = pending("http://127.0.0.1:8765/callback")
    with pytest.raises(OAuthStateMismatch):
        callback(m, f"http://127.0.0.1:8766/callback?{QUERY}")
    with pytest.raises(OAuthStateMismatch):
        callback(m, f"http://localhost:8765/callback?{QUERY}")
    assert any(isinstance(a, Send) for a in callback(m, f"http://127.0.0.1:8765/callback?{QUERY}"))


@given(
    host=st.from_regex(r"[a-z]{1,8}\.(example|test)", fullmatch=True),
    path=st.from_regex(r"/[a-z/]{0,8}", fullmatch=True),
)
def test_only_the_exact_host_and_path_pass(host: str, path: str) -> None:
    m = pending()
    url = f"https://{host}{path}?{QUERY}"
    if (host, path) == ("app.example", "/cb"):
        assert any(isinstance(a, Send) for a in callback(m, url))
    else:
        with pytest.raises(OAuthStateMismatch):
            callback(m, url)
        assert m.state is State.AUTHORIZING


# -- the issuer (RFC 9207) -----------------------------------------------------------


def test_an_iss_equal_to_the_account_origin_is_accepted() -> None:
    actions = callback(pending(), f"{QUERY}&iss={quote(ORIGIN, safe='')}")
    assert any(isinstance(a, Send) for a in actions)


@pytest.mark.parametrize(
    "iss",
    [
        ["https://evil.example"],
        ["https://acme.checkfront.com/"],
        ["http://acme.checkfront.com"],
        ["https://ACME.checkfront.com"],
        ["https://acme.manage.na1.bookingplatform.app"],
        [""],
        [ORIGIN, ORIGIN],
        ["\x1b[31mhttps://evil.example\r\n"],
    ],
)
def test_another_issuer_fails_the_login_and_consumes_the_state(iss: list[str]) -> None:
    m = pending()
    query = QUERY + "".join(f"&iss={quote(i, safe='')}" for i in iss)
    actions = callback(m, f"https://app.example/cb?{query}")
    assert not any(isinstance(a, Send) for a in actions)
    failed = [a for a in actions if isinstance(a, AuthorizationFailed)]
    assert len(failed) == 1
    error = failed[0].error
    assert isinstance(error, RemoteProtocolError)
    assert "RFC 9207" in str(error)
    assert str(error).isprintable()
    assert m.state is State.UNAUTHORIZED
    with pytest.raises(Exception, match="no login is pending"):
        callback(m, f"https://app.example/cb?{query}")


def test_an_error_callback_from_another_issuer_is_a_mix_up_not_a_denial() -> None:
    m = pending()
    actions = callback(m, f"error=access_denied&state={STATE}&iss=https%3A%2F%2Fevil.example")
    failed = [a for a in actions if isinstance(a, AuthorizationFailed)]
    assert len(failed) == 1
    assert type(failed[0].error) is RemoteProtocolError


@pytest.mark.parametrize("url", ["https://app.example/cb", "/cb"])
def test_a_callback_at_the_redirect_uri_without_a_query_has_no_state(url: str) -> None:
    m = pending()
    with pytest.raises(OAuthStateMismatch, match="no single state"):
        callback(m, url)
    assert m.state is State.AUTHORIZING


@pytest.mark.parametrize("url", ["https://evil.example/cb", "/other"])
def test_a_callback_elsewhere_without_a_query_is_ignored(url: str) -> None:
    with pytest.raises(OAuthStateMismatch, match="not at the redirect URI"):
        callback(pending(), url)
