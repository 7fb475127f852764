"""An API call's path pinned against a model of the rule, memo cold and warm.

``Account.api_path`` keeps the paths it has checked in a module-level memo;
each test here starts with it empty, so the checks themselves run (a memo
filled by earlier tests would answer in their place).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cfauth_core import Account, InvalidInput, RedirectKind, _account

ORIGIN = "https://acme.checkfront.com"


@pytest.fixture(autouse=True)
def cold_memo() -> Iterator[None]:
    _account._PATHS.clear()
    yield
    _account._PATHS.clear()


def model(path: str, base: str = "/api/3.0/") -> str | None:
    """The rule as the docs state it; ``None`` where the path is refused."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if any(c in "?#\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return None
    path = quote(path, safe="/~")
    if {".", ".."} & set(path.split("/")):
        return None
    path = path.lstrip("/")
    if path.startswith(base.lstrip("/")):
        path = path[len(base) - 1 :]
    return ORIGIN + base + path


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("booking/index", "/api/3.0/booking/index"),
        ("/booking/index", "/api/3.0/booking/index"),
        ("//booking/index", "/api/3.0/booking/index"),
        ("booking/index/", "/api/3.0/booking/index/"),
        ("api/3.0/booking/index", "/api/3.0/booking/index"),
        ("/api/3.0/booking/index/", "/api/3.0/booking/index/"),
        ("booking index", "/api/3.0/booking%20index"),
        ("booking/\u00e9/x", "/api/3.0/booking/%C3%A9/x"),
        ("X\u00e9/X", "/api/3.0/X%C3%A9/X"),
        ("a~b/c_d-e.f", "/api/3.0/a~b/c_d-e.f"),
        ("booking/%41", "/api/3.0/booking/%2541"),
        ("a+b&c=d;e", "/api/3.0/a%2Bb%26c%3Dd%3Be"),
        ("", "/api/3.0/"),
    ],
)
def test_a_path_maps_to_one_url_under_the_api_base(path: str, url: str) -> None:
    account = Account.parse("acme")
    assert account.api_url(path) == ORIGIN + url
    assert account.api_url(path) == ORIGIN + url  # warm memo: the same answer
    assert model(path) == ORIGIN + url


@pytest.mark.parametrize(
    "path",
    ["a?b", "a#b", "a\\b", "a\x00b", "a\x1fb", "a\x7fb", "a\nb", "\udc80", "a/../b", "./a", "a/."],
)
def test_a_path_with_a_query_control_or_dot_segment_is_refused(path: str) -> None:
    account = Account.parse("acme")
    for _ in range(2):  # a refused path is not memoised as accepted
        with pytest.raises(InvalidInput):
            account.api_url(path)
    assert model(path) is None


def test_a_custom_api_base_is_not_doubled_and_others_are_kept() -> None:
    account = Account.parse("acme", api_base="/api/4.0/")
    assert account.api_url("api/4.0/x") == ORIGIN + "/api/4.0/x"
    assert account.api_url("/api/4.0/x") == ORIGIN + "/api/4.0/x"
    assert account.api_url("api/3.0/x") == ORIGIN + "/api/4.0/api/3.0/x"
    # A base that starts with letters a strip of "/" would also take.
    xbase = Account.parse("acme", api_base="/XX/v1/")
    assert xbase.api_url("XX/v1/x") == ORIGIN + "/XX/v1/x"
    assert xbase.api_url("v1/x") == ORIGIN + "/XX/v1/v1/x"


paths = st.text(
    alphabet=st.sampled_from("ab/. ~%?#\\\x00\x1f\x7f\u00e9\u2028X-_+"), max_size=12
) | st.sampled_from(["api/3.0/x", "/api/3.0/", "api/3.0"])


@settings(max_examples=300, derandomize=True)
@given(paths)
@example("api/3.0")
def test_every_path_follows_the_model_memo_cold_and_warm(path: str) -> None:
    account = Account.parse("acme")
    expected = model(path)
    for _ in range(2):
        if expected is None:
            with pytest.raises(InvalidInput):
                account.api_url(path)
        else:
            assert account.api_url(path) == expected
    _account._PATHS.clear()


@pytest.mark.parametrize("loopback", [True, False])
def test_a_moved_account_keeps_its_settings_and_takes_the_new_origin(loopback: bool) -> None:
    start = "https://127.0.0.1:8443" if loopback else "acme"
    account = Account.parse(
        start, insecure_loopback=loopback, trusted_hosts=["x.example"], api_base="/api/9/"
    )
    moved = account.moved_to("https://ACME.manage.na1.bookingplatform.app")
    assert moved == Account(
        scheme="https",
        host="acme.manage.na1.bookingplatform.app",
        port=443,
        name="acme",
        trusted_hosts=frozenset({"x.example"}),
        api_base="/api/9/",
        insecure_loopback=loopback,
    )
    assert moved.insecure_loopback is loopback
    assert moved.origin == "https://acme.manage.na1.bookingplatform.app"
    other = Account.parse("acme").moved_to("https://x.example:8443")
    assert (other.host, other.port, other.name) == ("x.example", 8443, "acme")


# -- redirect trust, read through its public result ---------------------------------------

CURRENT = ORIGIN + "/api/3.0/booking/index?x=1"
NA1 = "https://acme.manage.na1.bookingplatform.app"
SAME, MOVE = RedirectKind.SAME_ORIGIN, RedirectKind.MIGRATION


@pytest.mark.parametrize(
    ("current", "location", "kind", "url", "origin"),
    [
        (CURRENT, "/api/3.0/other", SAME, ORIGIN + "/api/3.0/other", ORIGIN),
        (CURRENT, "https://ACME.checkfront.com:443/p?q=1", SAME, ORIGIN + "/p?q=1", ORIGIN),
        (CURRENT, ORIGIN, SAME, ORIGIN + "/", ORIGIN),  # the same host: its root
        (CURRENT, NA1, MOVE, NA1 + "/api/3.0/booking/index?x=1", NA1),  # origin only
        (CURRENT, NA1 + "/", MOVE, NA1 + "/api/3.0/booking/index?x=1", NA1),
        (CURRENT, NA1 + "/z?k=v", MOVE, NA1 + "/z?k=v", NA1),
        (CURRENT, "https://api.partner.example/y", MOVE, "https://api.partner.example/y",
         "https://api.partner.example"),
        (ORIGIN, NA1, MOVE, NA1 + "/", NA1),  # nothing to keep
        (NA1 + "/api/3.0/x", "/api/3.0/y", SAME, NA1 + "/api/3.0/y", NA1),  # sent before a move
        ("https://old.example:8443/a", "https://old.example:8443/b", SAME,
         "https://old.example:8443/b", "https://old.example:8443"),
    ],
)  # fmt: skip
def test_a_trusted_redirect_names_its_kind_target_and_origin(
    current: str, location: str, kind: RedirectKind, url: str, origin: str
) -> None:
    account = Account.parse("acme", trusted_hosts=["api.partner.example"])
    target = account.judge_redirect(current, location)
    assert target.kind is kind
    assert target.url == url
    assert target.origin == origin


def test_the_longest_host_name_and_the_lowest_port_are_taken() -> None:
    host = ".".join(["a" * 63] * 3 + ["a" * 61])  # 253 characters
    assert Account.parse("https://" + host).host == host
    assert Account.parse("https://acme.checkfront.com:1").port == 1
    assert Account.parse("https://acme.checkfront.com:65535").port == 65535


# -- what Account.parse refuses, and how it says so -----------------------------------------

_NOT_A_HOST = "is not a valid host name; pass e.g. 'https://acme.checkfront.com'"
_NOT_VISIBLE = (
    "account: only visible ASCII without spaces or backslashes is accepted; pass e.g. "
    "'https://acme.checkfront.com' (IDN hosts in their xn-- form)"
)
_ORIGIN_ONLY = (
    "account: pass only the origin ('https://acme.checkfront.com'); the API path goes in "
    "api_base and each call's path, parameters in its params"
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # The edges of visible ASCII: '!' and '~' are visible (refused later, as
        # host names); DEL and space are not.
        ("acme!", f"account: 'acme!' {_NOT_A_HOST}"),
        ("acme~", f"account: 'acme~' {_NOT_A_HOST}"),
        ("acme\x7f", _NOT_VISIBLE),
        ("acme\x20x", _NOT_VISIBLE),
        ("https://acme.checkfront.com\x7f", _NOT_VISIBLE),
        (
            "user@acme",
            "account 'user@acme': pass the account name ('acme') or its https origin "
            "('https://acme.checkfront.com') with no path",
        ),
        ("https://acme.checkfront.com?x", _ORIGIN_ONLY),
        ("https://acme.checkfront.com/?x", _ORIGIN_ONLY),
        ("https://acme.checkfront.com#x", _ORIGIN_ONLY),
    ],
)
def test_account_refusals_name_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Account.parse(value)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["ACME", "Acme", "acme"])
def test_an_account_name_in_any_case_is_the_lower_case_host(name: str) -> None:
    assert Account.parse(name).origin == "https://acme.checkfront.com"


@pytest.mark.parametrize("api_base", ["/api/./3.0/", "/./", "/api/../3.0/", "/api/3.0/."])
def test_an_api_base_with_dot_segments_is_refused(api_base: str) -> None:
    with pytest.raises(InvalidInput, match=r"no '\.' or '\.\.' segments"):
        Account.parse("acme", api_base=api_base)


@pytest.mark.parametrize("raw", [5, None, b"acme.example"])
def test_a_trusted_host_that_is_not_a_string_is_refused(raw: object) -> None:
    with pytest.raises(InvalidInput, match="is not a host name"):
        Account.parse("acme", trusted_hosts=[raw])  # type: ignore[list-item]
