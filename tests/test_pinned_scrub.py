"""Scrubbing pinned as properties: what ``hide`` and ``scrub`` guarantee for any
text and any secrets, the forms a secret is written in, and where a long text
is cut.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfauth_core import (
    Account,
    ApiKey,
    AuthorizationRequested,
    CallbackReceived,
    Machine,
    OAuth2App,
    ResponseReceived,
    Send,
)
from cfauth_core._tokens import hide, scrub, secret_forms

# No character of "<hidden>" or "...": a secret cannot be rebuilt from the marks.
SECRET_CHARS = "0123456789+/=%' \"\\\u00e9QZ"
secrets = st.lists(st.text(alphabet=SECRET_CHARS, max_size=10), max_size=3)
texts = st.text(alphabet=SECRET_CHARS + "ab \x00\x1b\x7f\u2028\u202e", max_size=60)


def expected_forms(secret: str) -> set[str]:
    escaped = repr(secret + "'\"")[1:-4]
    forms = {
        secret,
        quote_plus(secret, safe="", errors="surrogatepass"),
        quote(secret, safe="", errors="surrogatepass"),
        escaped,
        escaped.replace("\\'", "'"),
    }
    lowered = {re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), form) for form in forms}
    return forms | lowered


@pytest.mark.parametrize(
    "secret", ["abcd", "s3 cr+t/v=\u00e9'\"x", "a\\b'c", "100%", "%41%4a", "x" * 40, "ab\udc80cd"]
)
def test_a_secret_is_hidden_in_every_form_it_is_written(secret: str) -> None:
    assert set(secret_forms(secret)) == expected_forms(secret)
    for form in expected_forms(secret):
        for text in (form, f"a{form}b", f"{form}{form}", f"Basic{form}"):
            shown = hide(text, [secret])
            assert form not in shown
            assert "<hidden>" in shown


@settings(max_examples=300, derandomize=True)
@given(texts, secrets, st.integers(min_value=1, max_value=80))
def test_scrub_hides_every_form_drops_controls_and_bounds_the_length(
    text: str, hidden: list[str], limit: int
) -> None:
    out = scrub(text, hidden, limit)
    assert out.isprintable()
    assert len(out) <= limit + 3
    if len(out) > limit:
        assert out.endswith("...")
    for secret in hidden:
        if len(secret) >= 4:
            for form in secret_forms(secret):
                assert form not in out
    if all(len(s) < 4 for s in hidden) and text.isprintable() and len(text) <= limit:
        assert out == text
    if all(len(s) < 4 for s in hidden):
        printable = "".join(c if c.isprintable() else " " for c in text)
        assert out.removesuffix("...").rstrip() in printable


@settings(max_examples=200, derandomize=True)
@given(texts, secrets)
def test_hide_changes_only_the_secrets(text: str, hidden: list[str]) -> None:
    out = hide(text, hidden)
    if all(len(s) < 4 for s in hidden):
        assert out == text  # short secrets guard nothing and blank out words
    else:
        assert out.replace("<hidden>", "") in text or "<hidden>" not in out


@pytest.mark.parametrize(
    ("text", "secrets_", "shown"),
    [
        ("xxabcdefghxx", ["abcd", "abcdefgh"], "xx<hidden>xx"),
        ("xxabcdefghxx", ["abcdefgh", "abcd"], "xx<hidden>xx"),
        ("abcdabcd", ["abcd"], "<hidden><hidden>"),
        ("abc", ["abc"], "abc"),
        ("abcd", [], "abcd"),
        ("a%2Fbcd", ["a/bcd"], "<hidden>"),
        ("a%2fbcd", ["a/bcd"], "<hidden>"),
        ("a+b+cd", ["a b cd"], "<hidden>"),
    ],
)
def test_hide_examples(text: str, secrets_: list[str], shown: str) -> None:
    assert hide(text, secrets_) == shown


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        ("aaa bbb ccc", 11, "aaa bbb ccc"),
        ("aaa bbb ccc", 10, "aaa bbb..."),
        ("aaa bbb ccc", 8, "aaa bbb..."),
        ("aaa bbb ccc", 7, "aaa bbb..."),  # a space follows the cut: the word is whole
        ("aaa bbb ccc", 5, "aaa..."),
        ("aaaaaaaa", 5, "aaaaa..."),  # no space to cut at
        (" aaaaaa", 5, " aaaa..."),  # only a leading space: not a word boundary
        ("aa  bbbb", 5, "aa..."),
        ("a bbbbbb", 5, "a..."),  # a space at index 1 still ends a word
        ("a\x00b\x1bc", 10, "a b c"),
    ],
)
def test_a_long_text_is_cut_after_a_whole_word(text: str, limit: int, shown: str) -> None:
    assert scrub(text, [], limit) == shown


def test_scrub_bounds_text_at_300_characters_by_default() -> None:
    assert scrub("x" * 300, []) == "x" * 300
    assert scrub("x" * 301, []) == "x" * 300 + "..."


def test_machine_scrub_uses_its_secrets_and_the_limit_given() -> None:
    key = ApiKey("key-0123456789", "apikey-secret-value")
    m = Machine(Account.parse("acme"), key)
    assert m.scrub("x" * 300) == "x" * 300
    assert m.scrub("x" * 301) == "x" * 300 + "..."
    assert m.scrub("x" * 20, limit=10) == "x" * 10 + "..."
    assert m.scrub("say apikey-secret-value", limit=12) == "say <hidden>"


# -- every secret the machine knows, at each point of a login and a refresh ------------

ODD_APP = OAuth2App("client+0123/x", "s3cr+t/value=x", "https://app.example/callback")
VERIFIER = "v" * 20 + "VERIFIER" + "w" * 15
STATE = "Yx3p_Q8-vLr2mT0kWc9hZa"
CODE = "CODE-12345-abcdef"
NOW = 1_700_000_000.0


def client_forms(app: OAuth2App) -> list[str]:
    return [
        app.client_secret,
        app.token_authorization_in("rfc6749").split(" ", 1)[1],
        app.token_authorization_in("raw").split(" ", 1)[1],
    ]


def assert_hidden(m: Machine, secrets_: list[str]) -> None:
    for secret in secrets_:
        for form in secret_forms(secret):
            shown = m.scrub(f"x{form}y {form}")
            assert shown == "x<hidden>y <hidden>", (secret, form, shown)


def test_an_api_key_machine_hides_its_secret_and_its_basic_value() -> None:
    key = ApiKey("key-0123456789", "apikey-secret-value")
    m = Machine(Account.parse("acme"), key)
    assert_hidden(m, [key.secret, key.authorization.split(" ", 1)[1]])


def test_an_oauth_machine_hides_what_it_knows_at_each_step_of_a_login() -> None:
    m = Machine(Account.parse("acme"), ODD_APP)
    assert_hidden(m, client_forms(ODD_APP))
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    assert_hidden(m, [*client_forms(ODD_APP), VERIFIER])
    (send,) = m.handle(
        CallbackReceived(now=NOW, url=f"{ODD_APP.redirect_uri}?code={CODE}&state={STATE}")
    )
    assert isinstance(send, Send)
    assert_hidden(m, [*client_forms(ODD_APP), VERIFIER, CODE])  # the exchange is in flight
    body = json.dumps(
        {"access_token": "access-token-AAA", "refresh_token": "refresh-token-BBB"}
    ).encode()
    m.handle(
        ResponseReceived(now=NOW, request_id=send.request_id, status=200, headers=[], body=body)
    )
    assert_hidden(m, [*client_forms(ODD_APP), "access-token-AAA", "refresh-token-BBB"])
