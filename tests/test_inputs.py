"""Odd text and odd values are ``InvalidInput``, never a bare Python error.

* A lone surrogate (what ``os.environ`` holds for a byte that is not UTF-8)
  in an API path, a parameter, a form field, an ``ApiKey`` or ``OAuth2App``
  credential: ``InvalidInput`` whose text, arguments and context hold no
  part of the value (a bare ``UnicodeEncodeError`` would hold the whole
  ``key:secret``).
* Parameter values that are ``None``, booleans, dicts, nested lists, bytes:
  refused with a message naming the parameter, instead of ``q=None`` or a
  filter silently dropped.
* ``OAuth2App`` redirect URIs with spaces or an invalid port.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfauth_core import (
    Account,
    ApiKey,
    CallRequested,
    InvalidInput,
    Machine,
    OAuth2App,
    Send,
)

NOW = 1_700_000_000.0
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=4, max_size=20)


def with_surrogate() -> st.SearchStrategy[str]:
    """Valid text with one lone surrogate somewhere in it."""
    return st.tuples(TEXT, SURROGATES, st.integers(0, 20)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    )


def shows(error: BaseException, value: str) -> bool:
    """Whether any rendering of ``error`` (or its chain) holds ``value``."""
    text = "".join(traceback.TracebackException.from_exception(error).format())
    text += repr(error.args)
    return value in text or value.encode("utf-8", "surrogatepass").decode("latin-1") in text


def machine() -> Machine:
    return Machine(Account.parse("acme"), ApiKey("key-0001", "secret-0001"))


def call(**kwargs: Any) -> Send:
    kwargs.setdefault("method", "GET")
    kwargs.setdefault("path", "booking/index")
    actions = machine().handle(CallRequested(now=NOW, **kwargs))
    (send,) = actions
    assert isinstance(send, Send)
    return send


# -- lone surrogates ---------------------------------------------------------------


@given(secret=with_surrogate())
def test_an_api_key_secret_with_a_surrogate_is_invalid_input_without_the_value(
    secret: str,
) -> None:
    with pytest.raises(InvalidInput, match="ApiKey secret") as caught:
        ApiKey("key-0001", secret)
    assert not shows(caught.value, secret)
    assert caught.value.__context__ is None


@given(key=with_surrogate().filter(lambda k: ":" not in k))
def test_an_api_key_with_a_surrogate_is_invalid_input(key: str) -> None:
    with pytest.raises(InvalidInput, match="ApiKey key") as caught:
        ApiKey(key, "secret-0001")
    assert not shows(caught.value, key)


@given(value=with_surrogate())
def test_oauth2_credentials_with_a_surrogate_are_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput, match="client_secret") as caught:
        OAuth2App("client", value, "https://app.example/cb")
    assert not shows(caught.value, value)
    with pytest.raises(InvalidInput, match="client_id"):
        OAuth2App(value, "secret-0001", "https://app.example/cb")


@given(path=with_surrogate())
def test_a_path_with_a_surrogate_is_invalid_input(path: str) -> None:
    with pytest.raises(InvalidInput, match="path") as caught:
        call(path=path)
    assert not shows(caught.value, path)


@given(value=with_surrogate())
def test_params_and_data_with_a_surrogate_are_invalid_input(value: str) -> None:
    for kwargs in (
        {"params": {"q": value}},
        {"params": {"q": ["ok", value]}},
        {"params": [("q", value)]},
        {"params": {value: "x"}},
        {"method": "POST", "data": {"note": value}},
        {"method": "POST", "data": [(value, "x")]},
    ):
        with pytest.raises(InvalidInput) as caught:
            call(**kwargs)
        assert not shows(caught.value, value), kwargs


# -- parameter values ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, True, False, {"status": "PAID"}, [["a"]], [{"a": 1}], b"x", object(), [None]],
    ids=repr,
)
@pytest.mark.parametrize("where", ["params", "data"])
def test_values_that_have_no_query_form_are_refused(value: object, where: str) -> None:
    method = "GET" if where == "params" else "POST"
    with pytest.raises(InvalidInput, match=f"{where}: 'filter'"):
        call(method=method, **{where: {"filter": value}})


@pytest.mark.parametrize(
    "params",
    [
        "status=PAID",
        b"status=PAID",
        42,
        [("a", "1", "2")],
        ["ab"],
        [(1, "x")],
        {"": "x"},
        [("a", ["1", "2"])],
    ],
    ids=repr,
)
def test_malformed_parameter_containers_are_refused(params: Any) -> None:
    with pytest.raises(InvalidInput, match="params"):
        call(params=params)


def test_valid_params_are_encoded_as_before() -> None:
    send = call(
        params={"status_id": "PAID", "item_id[]": [1, 2], "price": 9.5, "q": "a b&c"},
    )
    assert send.request.url.endswith(
        "/api/3.0/booking/index?status_id=PAID&item_id%5B%5D=1&item_id%5B%5D=2&price=9.5&q=a+b%26c"
    )
    send = call(params=[("a", "1"), ("a", 2)], method="POST", data=[("x", "y")])
    assert send.request.url.endswith("?a=1&a=2")
    assert send.request.body == b"x=y"


# -- redirect URIs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://app .example/cb",
        "https://app.example/c b",
        "https://app.example/cb?x=a b",
        "https://app.example:99999/cb",
        "https://app.example:65536/cb",
        "https://app.example:0/cb",
        "https://app.example:x/cb",
        "https://app.example:-1/cb",
        "https://app.example:/cb",
        "http://127.0.0.1:0/cb",
        "https://app.example/caf\u00e9",
        "https://app.example/\u00a0",
    ],
)
def test_a_redirect_uri_with_a_space_or_a_bad_port_is_invalid_input(uri: str) -> None:
    with pytest.raises(InvalidInput, match="redirect_uri"):
        OAuth2App("client", "secret", uri)


@pytest.mark.parametrize(
    "uri",
    ["https://app.example/cb", "https://app.example:8443/cb?x=1", "http://127.0.0.1:65535/cb"],
)
def test_good_redirect_uris_are_still_accepted(uri: str) -> None:
    assert OAuth2App("client", "secret", uri).redirect_uri == uri
