"""Account parsing, derived URLs, API paths, and credential validation.

Everything here is pure: ``Account.parse``, ``Account.api_url`` / ``api_path``,
``Account.moved_to``, ``ApiKey`` and ``OAuth2App`` take plain values and either
return a value or raise an error whose message says what to pass instead.
"""

from __future__ import annotations

from base64 import b64decode
from collections.abc import Sequence
from typing import Any, cast

import pytest

from cfauth_core import (
    Account,
    ApiKey,
    InsecureTransport,
    InvalidInput,
    LocalProtocolError,
    OAuth2App,
    Params,
)


def _basic(header: str) -> str:
    """The decoded ``user:password`` of a ``Basic`` header."""
    scheme, _, encoded = header.partition(" ")
    assert scheme == "Basic"
    return b64decode(encoded, validate=True).decode("utf-8")


# -- Account.parse: accepted forms ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "acme",
        "ACME",
        "acme.checkfront.com",
        "https://acme.checkfront.com",
        "https://acme.checkfront.com/",
        "https://ACME.CheckFront.com.",
        "https://acme.checkfront.com:443",
        "HTTPS://ACME.CheckFront.com.:443/",
    ],
    ids=[
        "name",
        "name-upper",
        "host",
        "origin",
        "origin-slash",
        "upper-trailing-dot",
        "default-port",
        "upper-scheme-dot-port",
    ],
)
def test_parse_checkfront_forms(value: str) -> None:
    account = Account.parse(value)
    assert account.origin == "https://acme.checkfront.com"
    assert account.scheme == "https"
    assert account.host == "acme.checkfront.com"
    assert account.port == 443
    assert account.name == "acme"
    assert account.api_base == "/api/3.0/"
    assert account.trusted_hosts == frozenset()
    assert account.insecure_loopback is False


@pytest.mark.parametrize(
    "value",
    [
        "https://acme.manage.na1.bookingplatform.app",
        "acme.manage.na1.bookingplatform.app",
        "https://ACME.Manage.NA1.BookingPlatform.app./",
    ],
    ids=["origin", "host", "upper-trailing-dot"],
)
def test_parse_platform_host(value: str) -> None:
    account = Account.parse(value)
    assert account.origin == "https://acme.manage.na1.bookingplatform.app"
    assert account.name == "acme"


def test_parse_other_region_keeps_name() -> None:
    account = Account.parse("https://shop-1.manage.eu1.bookingplatform.app")
    assert account.name == "shop-1"
    assert account.origin == "https://shop-1.manage.eu1.bookingplatform.app"


def test_parse_other_host_has_no_name() -> None:
    account = Account.parse("https://bookings.example.com")
    assert account.name is None
    assert account.origin == "https://bookings.example.com"


def test_parse_non_default_port_kept_in_origin() -> None:
    account = Account.parse("https://acme.checkfront.com:8443")
    assert account.port == 8443
    assert account.origin == "https://acme.checkfront.com:8443"
    assert account.token_url == "https://acme.checkfront.com:8443/oauth/token/"


@pytest.mark.parametrize(
    ("value", "origin", "port"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", 8080),
        ("http://[::1]:8080", "http://[::1]:8080", 8080),
        ("http://localhost", "http://localhost", 80),
        ("http://LOCALHOST.:9000/", "http://localhost:9000", 9000),
        ("https://127.0.0.1", "https://127.0.0.1", 443),
    ],
    ids=["ipv4", "ipv6", "localhost-default-port", "localhost-upper-dot", "https-loopback"],
)
def test_parse_loopback_with_switch(value: str, origin: str, port: int) -> None:
    account = Account.parse(value, insecure_loopback=True)
    assert account.origin == origin
    assert account.port == port
    assert account.insecure_loopback is True
    assert account.token_url == origin + "/oauth/token/"


# -- derived URLs --------------------------------------------------------------------------


def test_derived_urls() -> None:
    account = Account.parse("acme")
    assert account.authorize_url == "https://acme.checkfront.com/oauth/"
    assert account.token_url == "https://acme.checkfront.com/oauth/token/"
    assert account.api_url("booking/index") == "https://acme.checkfront.com/api/3.0/booking/index"
    assert account.api_url("/booking/index") == "https://acme.checkfront.com/api/3.0/booking/index"
    assert account.api_path("booking/index") == "/api/3.0/booking/index"


def test_derived_urls_follow_platform_origin() -> None:
    account = Account.parse("https://acme.manage.eu1.bookingplatform.app")
    assert account.authorize_url == "https://acme.manage.eu1.bookingplatform.app/oauth/"
    assert account.token_url == "https://acme.manage.eu1.bookingplatform.app/oauth/token/"
    assert account.api_url("item") == "https://acme.manage.eu1.bookingplatform.app/api/3.0/item"


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ({"status_id": "PAID", "q": "a b&c"}, "status_id=PAID&q=a+b%26c"),
        ({"item_id[]": [1, 2]}, "item_id%5B%5D=1&item_id%5B%5D=2"),
        ({"ids": ("a", "b"), "n": 3}, "ids=a&ids=b&n=3"),
        ([("a", "1"), ("a", "2"), ("b", "x=y")], "a=1&a=2&b=x%3Dy"),
        ({"name": "ü/?#"}, "name=%C3%BC%2F%3F%23"),
        ({"price": 1.5}, "price=1.5"),
    ],
    ids=["mapping", "list-repeats-key", "tuple-and-int", "pairs", "reserved-chars", "float"],
)
def test_api_url_encodes_params(params: Params, query: str) -> None:
    account = Account.parse("acme")
    assert (
        account.api_url("booking/index", params)
        == "https://acme.checkfront.com/api/3.0/booking/index?" + query
    )


def test_api_url_empty_params_add_no_query() -> None:
    account = Account.parse("acme")
    assert account.api_url("booking/index", {}) == (
        "https://acme.checkfront.com/api/3.0/booking/index"
    )


@pytest.mark.parametrize(
    ("api_base", "stored"),
    [("/api/4.0/", "/api/4.0/"), ("/api/4.0", "/api/4.0/"), ("/v~x/a_b-c.d", "/v~x/a_b-c.d/")],
    ids=["v4", "v4-no-slash", "unreserved"],
)
def test_api_base(api_base: str, stored: str) -> None:
    account = Account.parse("acme", api_base=api_base)
    assert account.api_base == stored
    assert account.api_url("booking/index") == f"https://acme.checkfront.com{stored}booking/index"
    # The OAuth endpoints do not move with the API base.
    assert account.token_url == "https://acme.checkfront.com/oauth/token/"


# -- api_path: refusals and quoting --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "hint"),
    [
        ("booking/index?status_id=PAID", "params"),
        ("booking/index#top", "params"),
        ("booking\\index", "params"),
        ("booking/\nindex", "params"),
        ("booking/\rindex", "params"),
        ("booking/\x00", "params"),
        ("booking/\x7f", "params"),
        ("booking/\tindex", "params"),
        ("../oauth/token/", "'..'"),
        ("booking/../../oauth/token/", "'..'"),
        ("booking/..", "'..'"),
        ("./booking", "'.'"),
        ("booking/./index", "'.'"),
        ("booking/ü/../x", "'..'"),
    ],
    ids=[
        "query",
        "fragment",
        "backslash",
        "lf",
        "cr",
        "nul",
        "del",
        "tab",
        "dotdot-leading",
        "dotdot-middle",
        "dotdot-trailing",
        "dot-leading",
        "dot-middle",
        "dotdot-after-quoting",
    ],
)
def test_api_path_refuses(path: str, hint: str) -> None:
    account = Account.parse("acme")
    with pytest.raises(InvalidInput) as info:
        account.api_path(path)
    assert hint in str(info.value)
    # The same check guards api_url.
    with pytest.raises(InvalidInput):
        account.api_url(path)


def test_api_path_refuses_non_string() -> None:
    account = Account.parse("acme")
    with pytest.raises(InvalidInput, match="as a string"):
        account.api_path(cast(Any, b"booking/index"))


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("booking/ü", "booking/%C3%BC"),
        ("booking/a;b", "booking/a%3Bb"),
        ("booking/a%2Fb", "booking/a%252Fb"),
        ("booking/%2e%2e/x", "booking/%252e%252e/x"),
        ("booking/x@y:z", "booking/x%40y%3Az"),
        ("booking/'\"<>", "booking/%27%22%3C%3E"),
        ("booking/.../x", "booking/.../x"),
        ("booking/a-b_c.d~e", "booking/a-b_c.d~e"),
    ],
    ids=[
        "non-ascii",
        "semicolon",
        "percent",
        "encoded-dots-stay-encoded",
        "at-colon",
        "quotes-angles",
        "three-dots-plain",
        "unreserved-untouched",
    ],
)
def test_api_path_quotes_odd_characters(path: str, quoted: str) -> None:
    account = Account.parse("acme")
    assert account.api_path(path) == "/api/3.0/" + quoted


# -- Account.parse: refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "switch", "hint"),
    [
        ("http://acme.checkfront.com", False, "use https://acme.checkfront.com"),
        ("HTTP://acme.checkfront.com/", False, "use https://acme.checkfront.com"),
        ("http://acme.checkfront.com", True, "use https://"),
        ("http://bookings.example.com:8080", True, "insecure_loopback"),
        ("http://127.0.0.2:8080", True, "https://"),
    ],
    ids=["http", "http-upper", "http-with-switch", "http-other-host-switch", "127.0.0.2"],
)
def test_parse_refuses_plain_http(value: str, switch: bool, hint: str) -> None:
    with pytest.raises((InsecureTransport, InvalidInput)) as info:
        Account.parse(value, insecure_loopback=switch)
    assert hint in str(info.value)


def test_parse_refuses_plain_http_as_insecure_transport() -> None:
    with pytest.raises(InsecureTransport, match="plain http is refused"):
        Account.parse("http://acme.checkfront.com")


@pytest.mark.parametrize(
    "value",
    ["http://127.0.0.1:8080", "http://[::1]:8080", "http://localhost", "https://localhost"],
    ids=["ipv4", "ipv6", "localhost-http", "localhost-https"],
)
def test_parse_refuses_loopback_without_switch(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Account.parse(value)
    assert "insecure_loopback=True" in str(info.value)


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("https://user@acme.checkfront.com", "ApiKey(...)"),
        ("https://key:secret@acme.checkfront.com", "pass the bare origin"),
        ("https://:@acme.checkfront.com", "pass the bare origin"),
        ("https://acme.checkfront.com@evil.example", "pass the bare origin"),
        ("user@acme.checkfront.com", "https://acme.checkfront.com"),
        ("acme/", "with no path"),
        ("acme?x=1", "with no path"),
        ("acme#x", "with no path"),
        ("https://acme.checkfront.com/api/3.0/", "api_base"),
        ("https://acme.checkfront.com//", "pass only the origin"),
        ("https://acme.checkfront.com/oauth/", "pass only the origin"),
        ("https://acme.checkfront.com?x=1", "parameters in its params"),
        ("https://acme.checkfront.com/?", "pass only the origin"),
        ("https://acme.checkfront.com/#top", "pass only the origin"),
        ("https://acme.checkfront.com:0", "between 1 and 65535"),
        ("https://acme.checkfront.com:65536", "between 1 and 65535"),
        ("https://acme.checkfront.com:99999999999", "between 1 and 65535"),
        ("https://acme.checkfront.com:abc", "port must be a number"),
        ("https://acme.checkfront.com:", "port must be a number"),
        ("https://acme.checkfront.com:-1", "port must be a number"),
        ("https://acme.checkfront.com:+443", "port must be a number"),
        ("https://[::1", "pass e.g. 'https://acme.checkfront.com'"),
        ("https://[::1]x", "port must be a number"),
        ("https://acmé.checkfront.com", "xn--"),
        ("acmé", "xn--"),
        ("https://acme.checkfront.com\u3002", "xn--"),
        ("acme checkfront", "without spaces"),
        ("https://acme .checkfront.com", "without spaces"),
        ("https://acme.checkfront.com\\", "backslashes"),
        ("https:\\\\acme.checkfront.com", "backslashes"),
        ("https://acme\t.checkfront.com", "without spaces"),
        ("https://10.0.0.1", "'https://acme.checkfront.com'"),
        ("https://192.168.0.1:443", "not a valid host name"),
        ("https://127.1", "not a valid host name"),
        ("https://2130706433", "not a valid host name"),
        ("https://0x7f.0.0.1", "not a valid host name"),
        ("https://[2001:db8::1]", "not a valid host name"),
        ("https://-acme.checkfront.com", "not a valid host name"),
        ("https://acme-.checkfront.com", "not a valid host name"),
        ("https://acme..checkfront.com", "not a valid host name"),
        ("https://acme_x.checkfront.com", "not a valid host name"),
        ("https://" + "a" * 64 + ".checkfront.com", "not a valid host name"),
        ("https://acme.checkfront.com..", "not a valid host name"),
        ("https://", "not a valid host name"),
        ("ftp://acme.checkfront.com", "pass an https:// origin"),
        ("javascript://alert(1)", "pass an https:// origin"),
        ("javascript:alert(1)", "port must be a number"),
        ("", "pass the account name ('acme')"),
        ("   ", "pass the account name ('acme')"),
    ],
    ids=[
        "userinfo-user",
        "userinfo-user-password",
        "userinfo-empty",
        "userinfo-host-as-user",
        "userinfo-no-scheme",
        "name-with-slash",
        "name-with-query",
        "name-with-fragment",
        "api-path",
        "double-slash",
        "oauth-path",
        "query",
        "empty-query",
        "fragment",
        "port-0",
        "port-65536",
        "port-huge",
        "port-letters",
        "port-empty",
        "port-negative",
        "port-plus",
        "ipv6-unbalanced",
        "ipv6-junk-after",
        "non-ascii-host",
        "non-ascii-name",
        "ideographic-full-stop",
        "space-in-name",
        "space-in-host",
        "trailing-backslash",
        "backslash-slashes",
        "tab",
        "ipv4-private",
        "ipv4-with-port",
        "ipv4-short",
        "ipv4-integer",
        "ipv4-hex",
        "ipv6-global",
        "label-leading-hyphen",
        "label-trailing-hyphen",
        "empty-label",
        "underscore",
        "label-too-long",
        "two-trailing-dots",
        "empty-host",
        "ftp",
        "javascript",
        "javascript-no-slashes",
        "empty",
        "blank",
    ],
)
def test_parse_refuses(value: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Account.parse(value)
    assert hint in str(info.value)
    assert isinstance(info.value, LocalProtocolError)
    assert isinstance(info.value, ValueError)


def test_parse_refuses_non_string() -> None:
    with pytest.raises(InvalidInput, match="account name"):
        Account.parse(cast(Any, None))


def test_parse_refuses_empty_fragment() -> None:
    with pytest.raises(InvalidInput, match="pass only the origin"):
        Account.parse("https://acme.checkfront.com#")


# -- trusted_hosts and api_base ------------------------------------------------------------


def test_trusted_hosts_are_normalised() -> None:
    account = Account.parse(
        "acme", trusted_hosts=["Bookings.Example.COM.", "acme.manage.eu1.bookingplatform.app"]
    )
    assert account.trusted_hosts == frozenset(
        {"bookings.example.com", "acme.manage.eu1.bookingplatform.app"}
    )


@pytest.mark.parametrize(
    ("hosts", "hint"),
    [
        ("bookings.example.com", "not one string"),
        (["https://bookings.example.com"], "no scheme, port or path"),
        (["bookings.example.com:443"], "no scheme, port or path"),
        (["bookings.example.com/api"], "no scheme, port or path"),
        (["10.0.0.1"], "no scheme, port or path"),
        (["[::1]"], "no scheme, port or path"),
        ([""], "no scheme, port or path"),
        (["bad host.example"], "no scheme, port or path"),
        (["bücher.example"], "no scheme, port or path"),
        (["user@bookings.example.com"], "no scheme, port or path"),
        ([None], "no scheme, port or path"),
    ],
    ids=[
        "one-string",
        "scheme",
        "port",
        "path",
        "ipv4",
        "ipv6",
        "empty",
        "space",
        "non-ascii",
        "userinfo",
        "not-a-string",
    ],
)
def test_bad_trusted_hosts(hosts: object, hint: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Account.parse("acme", trusted_hosts=cast(Sequence[str], hosts))
    assert hint in str(info.value)


@pytest.mark.parametrize(
    "api_base",
    [
        "",
        "/",
        "api/3.0/",
        "/api/3.0/?x=1",
        "/api/3.0/#x",
        "/api 3.0/",
        "//evil.example/api/",
        "https://acme.checkfront.com/api/3.0/",
        "/api\\3.0/",
        "/api/ü/",
        "/api//3.0/",
        "/api/3.0/\n",
    ],
    ids=[
        "empty",
        "root",
        "relative",
        "query",
        "fragment",
        "space",
        "protocol-relative",
        "absolute-url",
        "backslash",
        "non-ascii",
        "double-slash",
        "newline",
    ],
)
def test_bad_api_base(api_base: str) -> None:
    with pytest.raises(InvalidInput, match=r"pass an absolute path such as '/api/3\.0/'"):
        Account.parse("acme", api_base=api_base)


def test_bad_api_base_not_a_string() -> None:
    with pytest.raises(InvalidInput, match="api_base"):
        Account.parse("acme", api_base=cast(Any, 4))


def test_api_base_refuses_dot_segments() -> None:
    with pytest.raises(InvalidInput):
        Account.parse("acme", api_base="/api/../oauth/token/")


# -- moved_to ------------------------------------------------------------------------------


def test_moved_to_platform() -> None:
    account = Account.parse("acme", trusted_hosts=["bookings.example.com"], api_base="/api/4.0/")
    moved = account.moved_to("https://acme.manage.na1.bookingplatform.app")
    assert moved.origin == "https://acme.manage.na1.bookingplatform.app"
    assert moved.host == "acme.manage.na1.bookingplatform.app"
    assert moved.port == 443
    assert moved.name == "acme"
    assert moved.token_url == "https://acme.manage.na1.bookingplatform.app/oauth/token/"
    assert moved.authorize_url == "https://acme.manage.na1.bookingplatform.app/oauth/"
    assert (
        moved.api_url("booking/index")
        == "https://acme.manage.na1.bookingplatform.app/api/4.0/booking/index"
    )
    # Options carry over; the original is untouched (frozen).
    assert moved.trusted_hosts == frozenset({"bookings.example.com"})
    assert moved.api_base == "/api/4.0/"
    assert account.origin == "https://acme.checkfront.com"


def test_moved_to_trusted_host_keeps_name() -> None:
    account = Account.parse("acme", trusted_hosts=["bookings.example.com"])
    moved = account.moved_to("https://bookings.example.com")
    assert moved.origin == "https://bookings.example.com"
    assert moved.name == "acme"


def test_moved_to_normalises_host() -> None:
    moved = Account.parse("acme").moved_to("https://ACME.manage.EU1.bookingplatform.app.")
    assert moved.origin == "https://acme.manage.eu1.bookingplatform.app"


# -- ApiKey --------------------------------------------------------------------------------


def test_api_key_authorization_is_plain_basic() -> None:
    key = ApiKey("my key+/", "s+e:c%r e/tü")
    # RFC 7617: the raw UTF-8 user:password, not form-encoded.
    assert _basic(key.authorization) == "my key+/:s+e:c%r e/tü"
    assert key.authorization == "Basic bXkga2V5Ky86cytlOmMlciBlL3TDvA=="


def test_api_key_repr_hides_secret() -> None:
    key = ApiKey("0123456789abcdef", "very-secret-value")
    text = repr(key)
    assert "very-secret-value" not in text
    assert "0123456789abcdef" not in text
    assert "<hidden>" in text


@pytest.mark.parametrize(
    ("key", "secret", "hint"),
    [
        ("", "hunter2", "pass a non-empty string"),
        ("key", "", "pass a non-empty string"),
        ("key\n", "hunter2", "control characters"),
        ("key", "hun\r\nter2", "control characters"),
        ("key", "hunter2\x00", "control characters"),
        ("key", "hunter2\x7f", "control characters"),
        ("ke:y", "hunter2", "cannot contain ':'"),
    ],
    ids=["empty-key", "empty-secret", "lf-key", "crlf-secret", "nul", "del", "colon-in-key"],
)
def test_api_key_refuses(key: str, secret: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as info:
        ApiKey(key, secret)
    assert hint in str(info.value)
    assert "hunter2" not in str(info.value)
    assert "hun" not in str(info.value)


def test_api_key_refuses_non_string() -> None:
    with pytest.raises(InvalidInput, match="non-empty string"):
        ApiKey(cast(Any, 123), "secret")


def test_api_key_allows_colon_in_secret() -> None:
    assert _basic(ApiKey("key", "a:b").authorization) == "key:a:b"


# -- OAuth2App -----------------------------------------------------------------------------


def test_token_authorization_form_encodes_id_and_secret() -> None:
    app = OAuth2App("my client", "s+e:c%r e/tü", "https://app.example/callback")
    decoded = _basic(app.token_authorization)
    # RFC 6749 section 2.3.1: each part encoded before Basic, every byte outside the
    # unreserved set percent-encoded and the space as %20 (which form decoders read
    # back as a space too, and plain percent-decoders as well).
    assert decoded == "my%20client:s%2Be%3Ac%25r%20e%2Ft%C3%BC"
    user, _, password = decoded.partition(":")
    assert user == "my%20client"
    assert password == "s%2Be%3Ac%25r%20e%2Ft%C3%BC"
    # The encoded form is pure ASCII: exactly one ':' separates the two parts.
    assert decoded.isascii()
    assert decoded.count(":") == 1


def test_token_authorization_plain_values_unchanged() -> None:
    app = OAuth2App("client-1", "abcDEF123", "https://app.example/callback")
    assert _basic(app.token_authorization) == "client-1:abcDEF123"


def test_oauth_app_repr_hides_secret() -> None:
    app = OAuth2App("client-identifier", "the-client-secret", "https://app.example/callback")
    assert "the-client-secret" not in repr(app)
    assert "<hidden>" in repr(app)


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example/callback",
        "https://app.example:8443/cb?x=1",
        "http://127.0.0.1:8765/callback",
        "http://[::1]:8765/callback",
        "http://localhost:8765/callback",
        "http://localhost/callback",
    ],
    ids=["https", "https-port-query", "loopback-v4", "loopback-v6", "localhost", "localhost-80"],
)
def test_oauth_app_accepts_redirect_uri(redirect_uri: str) -> None:
    app = OAuth2App("client", "secret", redirect_uri)
    assert app.redirect_uri == redirect_uri


@pytest.mark.parametrize(
    ("client_id", "secret", "redirect_uri", "hint"),
    [
        ("", "secret", "https://app.example/cb", "non-empty string"),
        ("client", "", "https://app.example/cb", "non-empty string"),
        ("client", "secret", "", "non-empty string"),
        ("cli\nent", "secret", "https://app.example/cb", "control characters"),
        ("client", "sec\rret", "https://app.example/cb", "control characters"),
        ("client", "secret", "https://app.example/cb\r\nX: y", "control characters"),
        ("client", "secret", "http://app.example/cb", "use https"),
        ("client", "secret", "http://127.0.0.1.evil.example/cb", "use https"),
        ("client", "secret", "http://localhost@evil.example/cb", "use https"),
        ("client", "secret", "http://127.0.0.1:80@evil.example/cb", "use https"),
        ("client", "secret", "https://app.example/cb#frag", "fragment"),
        ("client", "secret", "https://app.example/cb#", "fragment"),
        ("client", "secret", "https://user@app.example/cb", "user information"),
        ("client", "secret", "https://user:pw@app.example/cb", "user information"),
        ("client", "secret", "/callback", "absolute https URL"),
        ("client", "secret", "ftp://app.example/cb", "absolute https URL"),
        ("client", "secret", "app.example/cb", "absolute https URL"),
        ("client", "secret", "https://[::1/cb", "not a valid URL"),
    ],
    ids=[
        "empty-id",
        "empty-secret",
        "empty-redirect",
        "lf-id",
        "cr-secret",
        "crlf-redirect",
        "http-non-loopback",
        "http-loopback-prefix",
        "http-userinfo-localhost",
        "http-userinfo-loopback-port",
        "fragment",
        "empty-fragment",
        "userinfo",
        "userinfo-password",
        "relative",
        "ftp",
        "no-scheme",
        "bad-ipv6",
    ],
)
def test_oauth_app_refuses(client_id: str, secret: str, redirect_uri: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as info:
        OAuth2App(client_id, secret, redirect_uri)
    assert hint in str(info.value)
