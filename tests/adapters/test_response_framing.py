"""Properties of the response reader the stdlib and urllib3 transports share.

Over a real socket pair: any response cut short fails (a complete one is
read whole); any number of interim responses is skipped; bytes after a
complete response make the connection not reusable; a malformed header line
fails without its text in the message.  (h11 gives the trio transport the
same properties; the hostile-server matrix checks all three end to end.)
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfauth import _wire
from cfauth.stdlib import HttpClientTransport

FAILURES = (http.client.HTTPException, OSError)


@contextmanager
def served(data: bytes) -> Iterator[_wire._FirstByteResponse]:
    """A response reader on a socket that holds ``data``, then end-of-file."""
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(data)
        theirs.close()
        ours.settimeout(5)
        reader = _wire._FirstByteResponse(ours, method="GET")
        try:
            yield reader
        finally:
            reader.close()
    finally:
        ours.close()


def read(data: bytes) -> tuple[int, bytes, bool]:
    with served(data) as response:
        response.begin()
        body = response.read()
        reusable = not response.will_close
        response.close()
        return response.status, body, reusable


def response(body: bytes, chunked: bool, headers: tuple[str, ...] = ()) -> bytes:
    head = ["HTTP/1.1 200 OK", *headers]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
            for i in range(0, len(body), 7)
        )
        payload += b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


bodies = st.binary(min_size=0, max_size=300)


@settings(max_examples=150, deadline=None)
@given(body=bodies, chunked=st.booleans(), data=st.data())
def test_a_response_cut_anywhere_fails(body: bytes, chunked: bool, data: st.DataObject) -> None:
    whole = response(body, chunked, ("Content-Type: application/json",))
    cut = data.draw(st.integers(min_value=1, max_value=len(whole) - 1))
    with pytest.raises(FAILURES):
        read(whole[:cut])
    assert read(whole)[:2] == (200, body)


interim = st.sampled_from(
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 199 Whatever\r\nX-A: 1\r\n\r\n",
    ]
)


@settings(max_examples=50, deadline=None)
@given(before=st.lists(interim, max_size=6), body=bodies, chunked=st.booleans())
def test_interim_responses_are_skipped(before: list[bytes], body: bytes, chunked: bool) -> None:
    assert read(b"".join(before) + response(body, chunked))[:2] == (200, body)


@settings(max_examples=50, deadline=None)
@given(body=bodies, chunked=st.booleans(), surplus=st.binary(min_size=1, max_size=50))
def test_bytes_after_a_response_make_its_connection_unusable(
    body: bytes, chunked: bool, surplus: bytes
) -> None:
    whole = response(body, chunked)
    # followed by end-of-file only, the connection cannot be reused either
    assert read(whole)[2] is False
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(whole + surplus)
        ours.settimeout(5)
        reader = _wire._FirstByteResponse(ours, method="GET")
        reader.begin()
        assert reader.read() == body
        assert reader.will_close
        assert reader.surplus
        reader.close()
    finally:
        ours.close()
        theirs.close()


def test_a_clean_response_on_an_open_connection_is_reusable() -> None:
    ours, theirs = socket.socketpair()
    try:
        ours.settimeout(5)
        for chunked in (False, True):
            theirs.sendall(response(b"hello", chunked))
            reader = _wire._FirstByteResponse(ours, method="GET")
            reader.begin()
            assert reader.read() == b"hello"
            assert not reader.will_close
            assert not reader.surplus
            reader.close()
    finally:
        ours.close()
        theirs.close()


secret = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=12, max_size=20)


@settings(max_examples=50, deadline=None)
@given(
    value=secret, shape=st.sampled_from(["Set-Cookie {v}", "Bad Name: {v}", "X-C: {v}\x01", "{v}"])
)
def test_malformed_header_lines_fail_without_their_text(value: str, shape: str) -> None:
    line = shape.format(v=value).encode("latin-1")
    data = b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(_wire.MalformedResponse) as caught:
        read(data)
    assert value not in str(caught.value)


@pytest.mark.parametrize("length", ["1, 2", "abc", "-1", "+5", "5 5"])
def test_a_content_length_that_is_not_one_number_fails(length: str) -> None:
    data = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nhello".encode()
    with pytest.raises(_wire.MalformedResponse, match="Content-Length"):
        read(data)


def test_repeated_equal_content_lengths_are_one_number() -> None:
    assert (
        read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")[1]
        == b"hello"
    )


def test_other_transfer_codings_fail() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    with pytest.raises(_wire.MalformedResponse, match="transfer coding"):
        read(data)


def test_endless_interim_responses_fail() -> None:
    with pytest.raises(_wire.MalformedResponse, match="interim"):
        read(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 40 + response(b"", False))


@pytest.mark.parametrize("status", [b"HTTP/1.1 099 Low", b"HTTP/1.1 2000 Long", b"HTTX/1.1 200 OK"])
def test_a_bad_status_line_fails(status: bytes) -> None:
    with pytest.raises(_wire.MalformedResponse, match="status line"):
        read(status + b"\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"total_timeout": 0}, "total_timeout"),
        ({"total_timeout": -1.0}, "total_timeout"),
        ({"max_response_size": 0}, "max_response_size"),
        ({"max_response_size": 1.5}, "max_response_size"),
    ],
)
def test_limits_are_checked(options: dict[str, float], message: str) -> None:
    pytest.importorskip("urllib3")
    pytest.importorskip("trio")
    from cfauth.trio import H11Transport
    from cfauth.urllib3 import Urllib3Transport

    for transport in (HttpClientTransport, Urllib3Transport, H11Transport):
        with pytest.raises(ValueError, match=message):
            transport(**options)  # type: ignore[arg-type]


def test_total_timeout_none_disables_it() -> None:
    with HttpClientTransport(total_timeout=None) as transport:
        assert transport._total_timeout is None


# -- framing, against the stock class ------------------------------------------
#
# ``_FirstByteResponse.begin`` replaces ``http.client.HTTPResponse.begin`` (it
# is stricter and parses the head itself) and calls ``_check_close``.  It
# mirrors CPython 3.10 to 3.13's framing rules: if a CPython release changes
# them, these cases show where the two part, before a reused connection could
# mix up responses.

#: (name, method, bytes the server sends, whether it then closes the connection)
FRAMING_CASES = [
    ("keep-alive", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False),
    (
        "chunked",
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
        False,
    ),
    ("http10-no-length", "GET", b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", True),
    (
        "http10-keep-alive",
        "GET",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
        False,
    ),
    ("http11-no-length", "GET", b"HTTP/1.1 200 OK\r\n\r\nhello", True),
    ("204", "GET", b"HTTP/1.1 204 No Content\r\n\r\n", False),
    ("304", "GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", False),
    ("head", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", False),
    (
        "100-continue",
        "POST",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        False,
    ),
    (
        "connection-close",
        "GET",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        True,
    ),
    (
        "connection-close-list",
        "GET",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
        True,
    ),
]


def framing(reader: http.client.HTTPResponse) -> tuple[object, ...]:
    reader.begin()
    head = (reader.status, reader.version, reader.chunked, reader.length, reader.will_close)
    return (*head, reader.read())


@pytest.mark.parametrize(
    ("method", "data", "closes"),
    [case[1:] for case in FRAMING_CASES],
    ids=[case[0] for case in FRAMING_CASES],
)
def test_framing_matches_the_stock_response_class(method: str, data: bytes, closes: bool) -> None:
    results = []
    makers: list[type[http.client.HTTPResponse]] = [
        _wire._FirstByteResponse,
        http.client.HTTPResponse,
    ]
    for make in makers:
        ours, theirs = socket.socketpair()
        try:
            ours.settimeout(5)
            theirs.sendall(data)
            if closes:
                theirs.shutdown(socket.SHUT_WR)
            reader = make(ours, method=method)
            try:
                results.append(framing(reader))
            finally:
                reader.close()
        finally:
            ours.close()
            theirs.close()
    assert results[0] == results[1]
