"""Token responses (``parse_token_response``) and the stored record (``TokenSet``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfauth_core import InvalidTokenRecord, OAuthError, RemoteProtocolError, TokenSet
from cfauth_core._tokens import parse_token_response
from tests.helpers import case_id

NOW = 1_700_000_000.0
DAY = 24 * 3600
FOURTEEN_DAYS = 14 * DAY
YEAR = 365 * DAY
MAX_BODY = 64 * 1024

ACCESS = "AT-0123456789abcdef"
REFRESH = "RT-fedcba9876543210"


def valid(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_in": 14000,
        "token_type": "bearer",
    }
    fields.update(overrides)
    return fields


def parse(
    payload: bytes | Mapping[str, object],
    *,
    status: int = 200,
    now: float = NOW,
    previous: TokenSet | None = None,
    secrets: tuple[str, ...] = (),
) -> TokenSet:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_token_response(status, raw, now=now, previous=previous, secrets=secrets)


def previous_set() -> TokenSet:
    return TokenSet(
        access_token="AT-old",
        refresh_token="RT-old",
        expires_at=NOW - 10,
        refresh_expires_at=NOW + 5 * DAY,
        updated_at=NOW - 14000,
        scope=None,
    )


# -- valid responses ----------------------------------------------------------


def test_valid_response_sets_every_timestamp() -> None:
    tokens = parse(valid(expires_in=3600, scope="bookings customers"))
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == REFRESH
    assert tokens.expires_at == NOW + 3600
    assert tokens.refresh_expires_at == NOW + FOURTEEN_DAYS
    assert tokens.updated_at == NOW
    assert tokens.scope == "bookings customers"


def test_missing_expires_in_means_14000_seconds() -> None:
    fields = valid()
    del fields["expires_in"]
    assert parse(fields).expires_at == NOW + 14000


def test_missing_token_type_and_scope_are_fine() -> None:
    fields = valid()
    del fields["token_type"]
    tokens = parse(fields)
    assert tokens.access_token == ACCESS
    assert tokens.scope is None


@pytest.mark.parametrize("token_type", ["bearer", "Bearer", "BEARER"])
def test_token_type_bearer_any_case(token_type: str) -> None:
    assert parse(valid(token_type=token_type)).access_token == ACCESS


def test_refresh_with_new_refresh_token_restarts_its_14_days() -> None:
    tokens = parse(valid(refresh_token="RT-new"), previous=previous_set())
    assert tokens.refresh_token == "RT-new"
    assert tokens.refresh_expires_at == NOW + FOURTEEN_DAYS


def test_refresh_without_refresh_token_keeps_the_previous_one() -> None:
    # RFC 6749 section 6: the client keeps its refresh token when none is issued.
    fields = valid()
    del fields["refresh_token"]
    old = previous_set()
    tokens = parse(fields, previous=old)
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == old.refresh_token
    assert tokens.refresh_expires_at == old.refresh_expires_at
    assert tokens.expires_at == NOW + 14000
    assert tokens.updated_at == NOW


def test_exchange_without_refresh_token_is_refused() -> None:
    fields = valid()
    del fields["refresh_token"]
    with pytest.raises(RemoteProtocolError):
        parse(fields, previous=None)


def test_largest_accepted_body_and_expires_in() -> None:
    fields = valid(expires_in=YEAR)
    raw = json.dumps(fields).encode()
    padded = raw[:-1] + b" " * (MAX_BODY - len(raw)) + b"}"
    assert len(padded) == MAX_BODY
    assert parse(padded).expires_at == NOW + YEAR


# -- rejected responses ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"<html>502 Bad Gateway</html>", b"{", b"\xff\xfe", b"[" * 100_000],
    ids=["empty", "text", "html", "truncated", "not-utf8", "deeply-nested"],
)
def test_body_that_is_not_json_is_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse(raw)


@pytest.mark.parametrize("raw", [b"[]", b'["access_token"]', b'"token"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse(raw)


@pytest.mark.parametrize("field", ["access_token", "refresh_token"])
@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        42,
        ["AT"],
        {"t": "AT"},
        True,
        "AT\r",
        "AT\nX",
        "AT X",
        "AT\tX",
        "AT\x00X",
        "AT\x7fX",
        "AT-\u00e9",
        "AT-\u2028",
    ],
    ids=case_id,
)
def test_unusable_token_is_refused(field: str, value: object) -> None:
    with pytest.raises(RemoteProtocolError):
        parse(valid(**{field: value}))


def test_missing_access_token_is_refused() -> None:
    fields = valid()
    del fields["access_token"]
    with pytest.raises(RemoteProtocolError):
        parse(fields)


@pytest.mark.parametrize(
    "expires_in",
    ["14000", 14000.0, 14000.5, True, False, 0, -1, -14000, YEAR + 1, 10**30, None, [14000]],
    ids=repr,
)
def test_bad_expires_in_is_refused(expires_in: object) -> None:
    with pytest.raises(RemoteProtocolError):
        parse(valid(expires_in=expires_in))


def test_body_over_64_kib_is_refused() -> None:
    raw = json.dumps(valid()).encode()
    padded = raw[:-1] + b" " * (MAX_BODY + 1 - len(raw)) + b"}"
    assert len(padded) == MAX_BODY + 1
    with pytest.raises(RemoteProtocolError):
        parse(padded)


@pytest.mark.parametrize("status", [201, 204, 302, 400, 401, 403, 500, 503])
def test_non_200_without_oauth_error_is_refused(status: int) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse(valid(), status=status)
    assert caught.value.status == status
    assert ACCESS not in str(caught.value)


@pytest.mark.parametrize("token_type", ["mac", "basic", "", "bearer2", 1, None])
def test_token_type_other_than_bearer_is_refused(token_type: object) -> None:
    with pytest.raises(RemoteProtocolError):
        parse(valid(token_type=token_type))


def test_rejection_messages_do_not_quote_tokens() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse(valid(access_token=ACCESS + "\n", refresh_token=REFRESH))
    assert ACCESS not in str(caught.value)
    assert ACCESS not in repr(caught.value)
    with pytest.raises(RemoteProtocolError) as caught:
        parse(valid(refresh_token=REFRESH + " x"))
    assert REFRESH not in str(caught.value)


# -- OAuth error bodies --------------------------------------------------------


@pytest.mark.parametrize("status", [200, 400, 401])
def test_oauth_error_body_raises_oauth_error(status: int) -> None:
    payload = {"error": "invalid_grant", "error_description": "The refresh token is invalid."}
    with pytest.raises(OAuthError) as caught:
        parse(payload, status=status)
    error = caught.value
    assert error.error == "invalid_grant"
    assert error.description == "The refresh token is invalid."
    assert error.status == status


def test_oauth_error_without_description() -> None:
    with pytest.raises(OAuthError) as caught:
        parse({"error": "invalid_request"}, status=400)
    assert caught.value.error == "invalid_request"
    assert caught.value.description is None


def test_oauth_error_description_is_scrubbed_of_known_secrets() -> None:
    payload = {
        "error": "invalid_grant",
        "error_description": f"refresh token {REFRESH} was revoked",
    }
    with pytest.raises(OAuthError) as caught:
        parse(payload, status=400, secrets=(REFRESH, "client-secret"))
    error = caught.value
    assert error.description is not None
    assert REFRESH not in error.description
    assert "was revoked" in error.description
    assert REFRESH not in str(error)
    assert REFRESH not in repr(error)


# -- the stored record ---------------------------------------------------------


def stored() -> TokenSet:
    return TokenSet(
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=NOW + 14000,
        refresh_expires_at=NOW + FOURTEEN_DAYS,
        updated_at=NOW,
        scope="bookings",
    )


def test_to_dict_is_versioned_and_complete() -> None:
    record = stored().to_dict()
    assert record == {
        "version": 1,
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_at": NOW + 14000,
        "refresh_expires_at": NOW + FOURTEEN_DAYS,
        "updated_at": NOW,
        "scope": "bookings",
    }


def test_round_trip_through_json() -> None:
    tokens = stored()
    assert TokenSet.from_dict(json.loads(json.dumps(tokens.to_dict()))) == tokens


def test_repr_hides_tokens() -> None:
    text = repr(stored())
    assert ACCESS not in text
    assert REFRESH not in text


def _without(key: str) -> dict[str, Any]:
    record = stored().to_dict()
    del record[key]
    return record


def _with(**changes: object) -> dict[str, Any]:
    record = stored().to_dict()
    record.update(changes)
    return record


GARBAGE: list[tuple[str, object]] = [
    ("list", [ACCESS, REFRESH]),
    ("string", json.dumps(stored().to_dict())),
    ("none", None),
    ("number", 1),
    ("version-missing", _without("version")),
    ("version-0", _with(version=0)),
    ("version-2", _with(version=2)),
    ("version-string", _with(version="1")),
    ("version-none", _with(version=None)),
    ("access-missing", _without("access_token")),
    ("refresh-missing", _without("refresh_token")),
    ("expires-missing", _without("expires_at")),
    ("refresh-expires-missing", _without("refresh_expires_at")),
    ("updated-missing", _without("updated_at")),
    ("access-empty", _with(access_token="")),
    ("access-int", _with(access_token=123)),
    ("refresh-none", _with(refresh_token=None)),
    ("access-cr", _with(access_token=ACCESS + "\r")),
    ("access-lf", _with(access_token=ACCESS + "\nSet-Cookie: x")),
    ("refresh-crlf", _with(refresh_token=REFRESH + "\r\n")),
    ("access-space", _with(access_token=ACCESS + " x")),
    ("access-non-ascii", _with(access_token=ACCESS + "\u00e9")),
    ("expires-string", _with(expires_at="1700014000")),
    ("expires-bool", _with(expires_at=True)),
    ("expires-nan", _with(expires_at=math.nan)),
    ("expires-inf", _with(expires_at=math.inf)),
    ("refresh-expires-neg-inf", _with(refresh_expires_at=-math.inf)),
    ("updated-negative", _with(updated_at=-1.0)),
    ("expires-none", _with(expires_at=None)),
    ("scope-int", _with(scope=5)),
    ("scope-list", _with(scope=["bookings"])),
    ("unknown-field", _with(id_token="x")),
    ("unknown-field-token", _with(token_type="bearer")),
]


@pytest.mark.parametrize(("name", "record"), GARBAGE, ids=[name for name, _ in GARBAGE])
def test_garbage_record_raises_invalid_token_record(name: str, record: object) -> None:
    with pytest.raises(InvalidTokenRecord) as caught:
        TokenSet.from_dict(record)  # type: ignore[arg-type]
    text = str(caught.value) + repr(caught.value)
    assert ACCESS not in text
    assert REFRESH not in text


def test_garbage_record_error_is_a_value_error() -> None:
    # Stores catch ValueError from json and from_dict alike.
    with pytest.raises(ValueError, match="token record"):
        TokenSet.from_dict(_with(version=2))


def test_boolean_version_is_refused() -> None:
    with pytest.raises(InvalidTokenRecord):
        TokenSet.from_dict(_with(version=True))


def test_record_with_integer_times_and_null_scope_is_read() -> None:
    record = _with(expires_at=1_700_014_000, refresh_expires_at=0, updated_at=1, scope=None)
    tokens = TokenSet.from_dict(record)
    assert tokens.expires_at == 1_700_014_000
    assert tokens.refresh_expires_at == 0
    assert tokens.scope is None


# -- properties ------------------------------------------------------------------

visible_ascii = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
times = st.one_of(
    st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=10**12),
)
token_sets = st.builds(
    TokenSet,
    access_token=visible_ascii,
    refresh_token=visible_ascii,
    expires_at=times,
    refresh_expires_at=times,
    updated_at=times,
    scope=st.one_of(st.none(), st.text(max_size=40)),
)


@given(token_sets)
def test_property_round_trip(tokens: TokenSet) -> None:
    record = tokens.to_dict()
    assert record["version"] == 1
    assert TokenSet.from_dict(record) == tokens
    assert TokenSet.from_dict(json.loads(json.dumps(record))) == tokens


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    visible_ascii,
    st.text(max_size=20),
    st.integers(min_value=-(10**9), max_value=10**12),
    st.floats(),
    st.booleans(),
    st.none(),
    json_values,
)
near_valid = st.dictionaries(
    st.sampled_from(
        [
            "access_token",
            "refresh_token",
            "expires_in",
            "token_type",
            "scope",
            "error",
            "error_description",
        ]
    ),
    field_values,
)
statuses = st.one_of(st.just(200), st.integers(min_value=100, max_value=599))
previous = st.one_of(st.none(), token_sets)


def _encode(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@given(
    raw=st.one_of(st.binary(max_size=200), json_values.map(_encode), near_valid.map(_encode)),
    status=statuses,
    old=previous,
    now=st.floats(min_value=0, max_value=1e11),
)
def test_property_parse_only_returns_tokens_or_raises_remote_errors(
    raw: bytes, status: int, old: TokenSet | None, now: float
) -> None:
    try:
        tokens = parse_token_response(status, raw, now=now, previous=old, secrets=("s3cr+t",))
    except (RemoteProtocolError, OAuthError):
        return
    # Whatever was accepted is usable as-is.
    assert status == 200
    assert isinstance(tokens, TokenSet)
    for token in (tokens.access_token, tokens.refresh_token):
        assert token
        assert token.isascii()
        assert token.isprintable()
        assert " " not in token
    assert now < tokens.expires_at <= now + YEAR
    assert tokens.updated_at == now
    assert tokens.scope is None or isinstance(tokens.scope, str)
    assert TokenSet.from_dict(tokens.to_dict()) == tokens


# -- TokenSet validates on construction, not only in from_dict -----------------------

_GOOD = {
    "access_token": "AT-1",
    "refresh_token": "RT-1",
    "expires_at": 1_700_014_000.0,
    "refresh_expires_at": 1_701_209_600.0,
    "updated_at": 1_700_000_000.0,
}
_BAD_TOKENS: list[object] = [
    "",
    "a\r\nX-Evil: 1",
    "a\nb",
    "a\rb",
    "a\x01b",
    "a\x00b",
    "a b",
    "a\tb",
    "caf\u00e9",
    "a\x7fb",
    "a" * 8193,
    1,
    1.5,
    None,
    True,
    b"AT-1",
    ["AT-1"],
]


@pytest.mark.parametrize("field", ["access_token", "refresh_token"])
@pytest.mark.parametrize("value", _BAD_TOKENS, ids=case_id)
def test_tokenset_refuses_a_token_that_could_not_be_sent(field: str, value: object) -> None:
    with pytest.raises(InvalidTokenRecord, match=f"TokenSet {field}") as caught:
        TokenSet(**{**_GOOD, field: value})  # type: ignore[arg-type]
    if isinstance(value, str) and len(value) > 2:
        assert value not in str(caught.value)


@given(
    token=st.text(min_size=1, max_size=40).filter(
        lambda t: not (t.isascii() and t.isprintable() and " " not in t)
    )
)
def test_tokenset_refuses_any_token_outside_visible_ascii(token: str) -> None:
    with pytest.raises(InvalidTokenRecord):
        TokenSet(**{**_GOOD, "access_token": token})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["expires_at", "refresh_expires_at", "updated_at"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, "1", True, None], ids=repr)
def test_tokenset_refuses_a_time_that_is_not_a_time(field: str, value: object) -> None:
    with pytest.raises(InvalidTokenRecord, match=f"TokenSet {field}"):
        TokenSet(**{**_GOOD, field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("scope", [1, b"read", ["read"]], ids=repr)
def test_tokenset_refuses_a_scope_that_is_not_text(scope: object) -> None:
    with pytest.raises(InvalidTokenRecord, match="TokenSet scope"):
        TokenSet(**{**_GOOD, "scope": scope})  # type: ignore[arg-type]


def test_tokenset_accepts_what_token_responses_accept() -> None:
    tokens = TokenSet(**_GOOD, scope="read write")  # type: ignore[arg-type]
    assert TokenSet.from_dict(tokens.to_dict()) == tokens
