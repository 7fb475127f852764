"""What the blocking transports (``cfauth.stdlib`` and ``cfauth.urllib3``) share:
checking and preparing a request for the wire (target, headers, cached
heads), describing failures without secrets, the bounded response-head
parser and :class:`_FirstByteResponse` (``http.client.HTTPResponse`` that
knows when the first byte of the answer arrived), and the counted send.

Standard library only, as ``cfauth.stdlib`` is.
"""

from __future__ import annotations

import http.client
import io
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import urlsplit

from cfauth_core import Request

from ._http import (
    DEFAULT_MAX_RESPONSE_SIZE,
    TransportFailure,
    shorten,
)

__all__ = [
    "MalformedResponse",
    "ResponseTooLarge",
    "TotalTimeout",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: RFC 9110 ``token``: what a method or a header name may contain.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Header values: visible Latin-1 and spaces/tabs; no CR, LF, NUL or other controls.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

#: Errors that mean "the peer closed the connection", when no response byte arrived.
_DROPPED: tuple[type[BaseException], ...] = (
    ConnectionResetError,  # includes http.client.RemoteDisconnected
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


_OriginKey = tuple[str, str, int]


class _Target(NamedTuple):
    """Where a request goes: the URL's origin and target, and the address to connect to."""

    scheme: str
    host: str
    port: int
    target: str
    address: tuple[str, int]

    @property
    def resolved(self) -> bool:
        return self.address != (self.host, self.port)

    def describe(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{shown}:{self.port}"
        if self.resolved:
            addr, port = self.address
            text += f" (via {f'[{addr}]' if ':' in addr else addr}:{port})"
        return text


def _target(request: Request, resolve: Mapping[tuple[str, int], tuple[str, int]]) -> _Target:
    """Split the request URL; refuse what cannot be sent (without showing the URL's query)."""
    try:
        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise TransportFailure("the request URL is not a valid URL") from None
    if scheme not in _DEFAULT_PORTS or not host:
        raise TransportFailure(
            f"the request URL must be an http(s) URL with a host, not {scheme or 'no'} scheme"
        )
    if parts.username is not None or parts.password is not None:
        raise TransportFailure(f"{host}: credentials in the URL are refused")
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if not target.startswith("/") or any(c <= " " or c >= "\x7f" for c in target):
        raise TransportFailure(
            f"{host}: the request path must be printable ASCII (percent-encode the rest)"
        )
    if not _TOKEN.fullmatch(request.method):
        raise TransportFailure(f"{host}: {request.method[:20]!r} is not an HTTP method")
    address = resolve.get((host, port), (host, port))
    return _Target(scheme, host, port, target, address)


def _checked_headers(request: Request, target: _Target) -> tuple[list[tuple[str, str]], bool]:
    """The request's headers, checked, with ``Host`` first if missing; and
    whether they frame the body themselves (``Content-Length`` or
    ``Transfer-Encoding``).

    A header that could not be sent as it is (a CR/LF, a control character,
    non-Latin-1 text) fails the request naming the header, never its value.
    """
    names = set()
    for name, value in request.headers:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise TransportFailure(
                f"{target.host}: a header name is not a valid HTTP token: {str(name)[:40]!r}"
            )
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise TransportFailure(
                f"{target.host}: the value of header {name!r} cannot be sent (control "
                "characters, CR/LF or non-Latin-1 text); the value is not shown"
            )
        names.add(name.lower())
    headers = list(request.headers)
    if "host" not in names:
        headers.insert(0, ("Host", _host_header(target.scheme, target.host, target.port)))
    return headers, "content-length" in names or "transfer-encoding" in names


def _content_length(request: Request, framed: bool) -> str | None:
    """The ``Content-Length`` to add: the body's length, ``0`` for a bodiless
    POST, PUT or PATCH, or ``None`` (none needed, or the headers frame the body)."""
    if framed:
        return None
    if request.body is not None:
        return str(len(request.body))
    if request.method.upper() in _METHODS_WITH_BODY:
        return "0"
    return None


def _headers(request: Request, target: _Target) -> list[tuple[str, str]]:
    """The request's headers, checked, plus ``Host`` and ``Content-Length`` if missing."""
    headers, framed = _checked_headers(request, target)
    length = _content_length(request, framed)
    if length is not None:
        headers.append(("Content-Length", length))
    return headers


def _host_header(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"


#: What a transport makes of a checked header tuple (encoded bytes, a dict...).
H = TypeVar("H")

#: Methods that need no check against ``_TOKEN``.
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: Bounds of the caches: when one is full it is emptied and filled again.
_MAX_ORIGINS = 64
_MAX_HEADS = 32


class _Origin(Generic[H]):
    """What every request to one URL origin shares, worked out once: where it
    goes, its ``Host`` header, and the headers tuples already checked for it."""

    __slots__ = ("address", "heads", "host", "host_header", "key", "port", "scheme")

    def __init__(self, target: _Target) -> None:
        self.scheme, self.host, self.port = target.scheme, target.host, target.port
        self.address = target.address
        self.key: _OriginKey = (target.scheme, target.host, target.port)
        self.host_header = _host_header(target.scheme, target.host, target.port)
        #: checked ``request.headers`` -> (the transport's form of them, framed)
        self.heads: dict[tuple[tuple[str, str], ...], tuple[H, bool]] = {}

    def target(self, path: str) -> _Target:
        return _Target(self.scheme, self.host, self.port, path, self.address)


class _Prepare(Generic[H]):
    """:func:`_target` and :func:`_checked_headers`, memoized for one transport.

    Origins (the URL up to its path, e.g. ``https://acme.checkfront.com``) are
    split and resolved once; a clean path and query (printable ASCII, no
    space) is then taken as it is, anything else goes the slow way, through
    :func:`_target`, which refuses it or cleans it exactly as before.  Header
    tuples made only of ``str`` are checked once per origin and kept in the
    transport's form (``build``); the caches are bounded.
    """

    def __init__(
        self,
        resolve: Mapping[tuple[str, int], tuple[str, int]],
        build: Callable[[list[tuple[str, str]]], H],
    ) -> None:
        self._resolve = resolve
        self._build = build
        self._origins: dict[str, _Origin[H]] = {}

    def clear(self) -> None:
        self._origins.clear()

    def __call__(self, request: Request) -> tuple[_Origin[H], _Target, H, str | None]:
        """The request's origin, target, headers (transport's form, with
        ``Host``) and the ``Content-Length`` to add, if any."""
        url = request.url
        scheme_end = url.find("://")
        path_start = url.find("/", scheme_end + 3) if scheme_end > 0 else -1
        origin = self._origins.get(url[:path_start]) if path_start > 0 else None
        rest = url[path_start:]
        if origin is not None and rest.isascii() and rest.isprintable() and " " not in rest:
            rest = rest.partition("#")[0]
            path, _, query = rest.partition("?")
            target = origin.target(f"{path}?{query}" if query else path)
            method = request.method
            if method not in _KNOWN_METHODS and not _TOKEN.fullmatch(method):
                raise TransportFailure(f"{origin.host}: {method[:20]!r} is not an HTTP method")
        else:
            target = _target(request, self._resolve)
            if origin is None:
                origin = self._origin(url, path_start, target)
        headers = request.headers
        try:
            head, framed = origin.heads[headers]
        except (KeyError, TypeError):
            head, framed = self._head(origin, target, request)
        if framed:
            return origin, target, head, None
        if request.body is not None:
            return origin, target, head, str(len(request.body))
        if request.method.upper() in _METHODS_WITH_BODY:
            return origin, target, head, "0"
        return origin, target, head, None

    def _origin(self, url: str, path_start: int, target: _Target) -> _Origin[H]:
        origin: _Origin[H] = _Origin(target)
        key = url[:path_start] if path_start > 0 else ""
        if key and key.isascii() and key.isprintable() and not any(c in key for c in " ?#"):
            if len(self._origins) >= _MAX_ORIGINS:
                self._origins.clear()
            self._origins[key] = origin
        return origin

    def _head(self, origin: _Origin[H], target: _Target, request: Request) -> tuple[H, bool]:
        headers, framed = _checked_headers(request, target)
        entry = (self._build(headers), framed)
        given = request.headers
        if type(given) is tuple and all(type(n) is str and type(v) is str for n, v in given):
            if len(origin.heads) >= _MAX_HEADS:
                origin.heads.clear()
            origin.heads[given] = entry
        return entry


def _describe(error: BaseException) -> str:
    """The error's type and, for errors whose text comes from the OS or TLS
    library (not from headers or bodies), its message."""
    name = type(error).__name__
    known = (
        OSError,
        http.client.RemoteDisconnected,
        http.client.IncompleteRead,
        MalformedResponse,  # these two never quote the response
        ResponseTooLarge,
    )
    if isinstance(error, known):
        text = str(error).strip()
        if text:
            return shorten(f"{name}: {text}", 300)
    return name


def _scrub(message: str, request: Request) -> str:
    """Defence in depth: hide any credential of the request that a message might quote."""
    for name, value in request.headers:
        if name.lower() in _SECRET_HEADERS and value:
            for secret in (value, *value.split()[1:]):
                if len(secret) >= 4:
                    message = message.replace(secret, "<hidden>")
    return message


def _detail(error: BaseException, timeout: float | None, name: str = "") -> str:
    """How a failure is shown: "timed out after N s" for a timeout when
    ``timeout`` is known, else :func:`_describe`."""
    if timeout is not None and isinstance(error, TimeoutError):
        return f"{type(error).__name__}: timed out after {timeout:g} s" + (
            f" ({name})" if name else ""
        )
    return _describe(error)


def _message(phase: str, target: _Target, detail: str, request: Request) -> str:
    """A failure's message: the method, the phase, the host and the detail."""
    return _scrub(f"{request.method} {phase} {target.describe()} failed: {detail}", request)


def _failure(phase: str, target: _Target, detail: str, request: Request) -> TransportFailure:
    """The failure to raise when nothing of the request was written."""
    return TransportFailure(_message(phase, target, detail, request), unsent=True)


class _NothingReceived(Exception):
    """The connection was found closed before any byte of the response arrived.

    Not an ``OSError`` on purpose: urllib3 lets it through unwrapped.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(_describe(error))
        self.error = error


#: http.client's limits on a header line and on the number of header lines.
_MAX_LINE = 65536
_MAX_HEADERS = 100
#: How many interim (1xx) responses may come before the final one.
_MAX_INTERIM = 32
#: A header field line (RFC 9112 5): a token, a colon and a value of visible
#: characters, spaces and tabs (no NUL, CR or other controls), then CRLF or LF.
_FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([^\x00-\x08\x0a-\x1f\x7f]*)\r?\n")
#: A status line: the version, a three-digit code (100 to 999), the reason.
_STATUS_LINE = re.compile(rb"(HTTP/[!-~]*) ([1-9][0-9][0-9])(?: ([^\r\n]*))?\r?\n")
#: The same, without groups (faster to test).
_PLAIN_FIELD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r?\n")
#: Pieces in which a body of unknown length is read (so the size cap holds).
_PIECE = 65536


class MalformedResponse(http.client.HTTPException):
    """The response broke HTTP/1.1 framing.  The message never quotes it."""


class ResponseTooLarge(http.client.HTTPException):
    """The response body is larger than the transport accepts."""


class TotalTimeout(TimeoutError):
    """The request's ``total_timeout`` ran out."""


def _has_input(sock: socket.socket, poller: select.poll | None) -> bool:
    """Whether a read on ``sock`` would not wait: bytes (or end-of-file) in the
    socket, or bytes already decrypted inside the TLS layer.  ``poller``, if
    given, is a poll object with ``sock`` registered for reading."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    if poller is not None:
        try:
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True
    return not _idle(sock)


def _idle(sock: socket.socket) -> bool:
    """Whether ``sock`` has nothing to read (no byte, no end-of-file) right now."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return not poller.poll(0)
        readable, _, _ = select.select([sock], [], [], 0)  # pragma: no cover - Windows
        return not readable  # pragma: no cover - Windows
    except (OSError, ValueError):
        return False


class _SocketReader(io.RawIOBase):
    """The socket under a response's buffered reader.

    Every read is bounded by the socket's timeout (``read_timeout``) and by
    the request's ``deadline`` (``total_timeout``, on ``time.monotonic``):
    when the deadline is nearer than the read timeout, the socket's timeout
    is shortened to it and :attr:`shortened` says so.  With :attr:`probing`
    set, a read that would wait returns ``None`` (and sets :attr:`nothing`)
    instead: how the response finds out, without waiting, whether anything
    follows it.
    """

    def __init__(
        self, sock: socket.socket, deadline: float | None, poller: select.poll | None = None
    ) -> None:
        super().__init__()
        self.sock = sock
        self.poller = poller
        # As socket.makefile() does: the socket stays open (however
        # http.client's connection closes it) until the response is closed.
        sock._io_refs += 1  # type: ignore[attr-defined]
        self.deadline = deadline
        self.timeout = timeout = sock.gettimeout()
        self.read_timeout = float("inf") if timeout is None else timeout
        self.probing = False
        self.nothing = False  # a probe found nothing to read
        self.shortened = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        sock = self.sock
        if self.probing:
            if not _has_input(sock, self.poller):
                self.nothing = True
                return None  # nothing to read now (the buffered reader's "would block")
            # Something is there, but maybe only part of a TLS record (or a
            # session ticket): look without waiting for the rest.
            sock.settimeout(0.0)
            try:
                return sock.recv_into(buffer)
            except (BlockingIOError, ssl.SSLWantReadError):
                self.nothing = True
                return None
            finally:
                sock.settimeout(self.timeout)
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left < self.read_timeout:
                if left <= 0:
                    raise TotalTimeout
                sock.settimeout(left)
                self.shortened = True
        try:
            return sock.recv_into(buffer)
        except TimeoutError:
            if self.shortened:
                raise TotalTimeout from None
            raise

    def close(self) -> None:
        if not self.closed:
            self.sock._decref_socketios()  # type: ignore[attr-defined]
        super().close()

    def restore(self) -> None:
        """Give the socket its read timeout back (for the next request)."""
        if self.shortened:
            self.shortened = False
            with suppress(OSError):
                self.sock.settimeout(self.timeout)


class _FileSource:
    """What ``http.client.HTTPResponse.__init__`` takes a file from."""

    __slots__ = ("fp",)

    def __init__(self, fp: io.BufferedReader) -> None:
        self.fp = fp

    def makefile(self, mode: str) -> io.BufferedReader:
        return self.fp


def _read_header_lines(fp: io.BufferedIOBase) -> list[bytes]:
    """The header lines up to and including the blank one (http.client's
    limits).  End-of-file before the blank line is a failure, never the end
    of the headers."""
    lines = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if not line.endswith(b"\n"):
            raise MalformedResponse("the connection ended inside the response headers")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n"):
            return lines


def _parse_headers(fp: io.BufferedIOBase) -> http.client.HTTPMessage:
    """:func:`_parse_fields`' message alone."""
    return _parse_fields(fp)[0]


def _parse_fields(
    fp: io.BufferedIOBase,
) -> tuple[http.client.HTTPMessage, list[str], list[str]]:
    """The header block as http.client's message (the same (name, value)
    pairs :func:`http.client.parse_headers` gives for well-formed lines).

    Each line must be a header field (RFC 9112 5) or continue the one before
    (obsolete line folding, joined with a space); anything else fails the
    response, as h11 does, without quoting the line.  Also the values of
    ``Content-Length`` and ``Transfer-Encoding``, picked up on the way.
    """
    lines = _read_header_lines(fp)
    del lines[-1]
    fields: list[tuple[str, str]] = []
    plain = _PLAIN_FIELD_LINE.fullmatch
    for line in lines:
        if plain(line) is None:
            fields = _fold(lines)  # folded lines, or a malformed one
            break
        name, _, value = line.decode("iso-8859-1").partition(":")
        fields.append((name, value.strip(" \t\r\n")))
    message = http.client.HTTPMessage()
    add = message.set_raw
    lengths: list[str] = []
    codings: list[str] = []
    for name, value in fields:
        add(name, value)
        if len(name) in (14, 17):  # len("content-length"), len("transfer-encoding")
            lower = name.lower()
            if lower == "content-length":
                lengths.append(value)
            elif lower == "transfer-encoding":
                codings.append(value)
    return message, lengths, codings


def _fold(lines: list[bytes]) -> list[tuple[str, str]]:
    """The fields of header lines some of which continue the one before
    (obsolete line folding); a line that is neither fails the response."""
    fields: list[tuple[str, str]] = []
    match = _FIELD_LINE.fullmatch
    for line in lines:
        found = match(line)
        if found is not None:
            name, value = found.groups()
            fields.append((name.decode("ascii"), value.decode("iso-8859-1").strip(" \t")))
        elif fields and line[:1] in (b" ", b"\t") and match(b"x:" + line):
            folded = line.decode("iso-8859-1").strip(" \t\r\n")
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {folded}".strip(" "))
        else:
            raise MalformedResponse("a response header line is malformed (not shown)")
    return fields


class _FirstByteResponse(http.client.HTTPResponse):
    """An ``HTTPResponse`` that tells "closed before the first byte" apart,
    reads strictly, and says whether its connection may be reused.

    ``begin`` first waits for one byte: if the connection was closed or reset
    before it, nothing of the response has arrived and :class:`_NothingReceived`
    says so; anything after that is reported as it is.  Interim (1xx)
    responses are skipped; end-of-file inside the status line or the headers,
    a malformed header line or ``Content-Length`` fail the response; a body
    larger than ``max_body`` fails it before it is buffered.  When the body has
    been read completely, anything already there after it (in the reader's
    buffer, the TLS layer or the socket) means the server sent more than was
    asked: :attr:`will_close` is then set, and ``owner`` (the connection) is
    closed, so the bytes can never be read as the next request's answer.

    ``begin`` replaces the stock one (it parses the head itself, more
    strictly) but keeps CPython's framing: it mirrors
    ``http.client.HTTPResponse.begin`` of CPython 3.10 to 3.13 and calls its
    ``_check_close``; ``test_framing_matches_the_stock_response_class`` compares
    the two on every framing case, so a change in a new CPython shows there.
    """

    _method: str | None

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: float | None = None,
        max_body: int = DEFAULT_MAX_RESPONSE_SIZE,
        owner: http.client.HTTPConnection | None = None,
        poller: select.poll | None = None,
    ) -> None:
        self._reader = _SocketReader(sock, deadline, poller)
        fp = io.BufferedReader(self._reader)
        super().__init__(_FileSource(fp), debuglevel, method, url)  # type: ignore[arg-type]
        self._max_body = max_body
        self._owner = owner
        self._body_size = 0
        self.surplus = False

    def begin(self) -> None:
        if self.headers is not None:
            return
        try:
            first = self.fp.peek(1)
        except _DROPPED as error:
            raise _NothingReceived(error) from error
        if not first:
            raise _NothingReceived(
                http.client.RemoteDisconnected("Remote end closed connection without response")
            )
        for _ in range(_MAX_INTERIM + 1):  # interim (1xx) responses are skipped
            version, status, reason = self._read_status()
            if not 100 <= status < 200:
                break
            _read_header_lines(self.fp)
        else:
            raise MalformedResponse(f"more than {_MAX_INTERIM} interim (1xx) responses")
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers, lengths, encodings = _parse_fields(self.fp)
        self.msg = self.headers
        self.chunked = False
        if encodings:
            if ",".join(encodings).replace(" ", "").lower() != "chunked":
                raise MalformedResponse("the response uses a transfer coding other than chunked")
            self.chunked = True
            self.chunk_left = None
        self.will_close = self._check_close() or bool(encodings and lengths)
        self.length = None
        if lengths and not self.chunked:
            length = lengths[0]
            if len(lengths) > 1 or not (length.isdigit() and length.isascii()):
                # repeated, or a list: the same number each time, or a failure
                values = {value.strip(" \t") for value in ",".join(lengths).split(",")}
                length = values.pop()
                if values or not (length.isdigit() and length.isascii()):
                    raise MalformedResponse("the response's Content-Length is not one number")
            self.length = int(length)
        if status in (204, 304) or self._method == "HEAD":
            self.length = 0
        if self.length is not None and self.length > self._max_body:
            raise ResponseTooLarge(
                f"the response body ({self.length} bytes) is larger than {self._max_body}"
            )
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def _read_status(self) -> tuple[str, int, str]:
        line = self.fp.readline(_MAX_LINE + 1)
        found = _STATUS_LINE.fullmatch(line)
        if found is not None:
            version, code, reason = found.groups()
            return version.decode("ascii"), int(code), (reason or b"").decode("iso-8859-1")
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("status line")
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        if not line.endswith(b"\n"):
            raise MalformedResponse("the connection ended inside the status line")
        raise MalformedResponse("the status line is not HTTP/1.x (not shown)")

    def _read_and_discard_trailer(self) -> None:
        # The trailer section ends with an empty line: end-of-file before it
        # means the body may not be what the server sent.
        _read_header_lines(self.fp)

    def read(self, amt: int | None = None) -> bytes:
        if amt is None and self.length is None and self.fp is not None:
            # chunked, or until the connection closes: in pieces, within the cap
            parts: list[bytes] = []
            while True:
                piece = self.read(_PIECE)
                if not piece:
                    return b"".join(parts)
                parts.append(piece)
        data = super().read(amt)
        self._body_size += len(data)
        if self._body_size > self._max_body:
            self.will_close = True
            raise ResponseTooLarge(f"the response body is larger than {self._max_body} bytes")
        return data

    def _close_conn(self) -> None:
        fp = self.fp
        if fp is None:
            return
        self.fp = None  # type: ignore[assignment]
        reader = self._reader
        reader.restore()
        if not self.will_close:
            # The body is complete: is anything else already there?
            reader.probing = True
            reader.nothing = False
            try:
                # bytes, or end-of-file: either way not reusable
                self.surplus = bool(fp.peek(1)) or not reader.nothing
            except (OSError, ValueError):
                self.surplus = True
            finally:
                reader.probing = False
            if self.surplus:
                self.will_close = True
                if self._owner is not None:
                    self._owner.close()
        fp.close()


def _is_dropped(sock: socket.socket | None) -> bool:
    """Whether an idle connection is unusable: closed, or readable (a server
    says nothing unasked on an idle HTTP/1.1 connection, except goodbye).
    (Bytes the TLS layer had already decrypted cannot be there: a response is
    given back only when nothing followed it, see :class:`_FirstByteResponse`.)"""
    if sock is None:
        return True
    return not _idle(sock)


#: Bodies up to this size go out in one write with the head.
_JOIN_BODY_UP_TO = 64 * 1024


def _encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """Checked headers as they go on the wire: ``Name: value\\r\\n`` each."""
    return b"".join(b"%s: %s\r\n" % (n.encode("ascii"), v.encode("latin-1")) for n, v in headers)


def _send_counted(
    sock: socket.socket,
    data: bytes | bytearray | memoryview,
    sent: list[int],
    deadline: float | None,
) -> None:
    """``sock.sendall(data)``, adding to ``sent[0]`` each byte the socket took
    (so a failure knows whether anything of the request went out); each wait
    is bounded by the socket's timeout and by ``deadline`` (``time.monotonic``),
    whose passing raises :class:`TotalTimeout`."""
    timeout = sock.gettimeout()
    shortened = False
    with memoryview(data) as view:
        total = len(view)
        done = 0
        try:
            while done < total:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TotalTimeout
                    if timeout is None or left < timeout:
                        sock.settimeout(left)
                        shortened = True
                taken = sock.send(view[done:])
                done += taken
                sent[0] += taken
        except TimeoutError:
            if shortened:
                raise TotalTimeout from None
            raise
        finally:
            if shortened:
                with suppress(OSError):
                    sock.settimeout(timeout)
