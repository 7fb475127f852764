"""The blocking transports over real TLS on loopback.

A small threaded HTTPS server with a trustme CA records what arrives (method,
path, query, headers, body, which TCP connection, SNI) and misbehaves on
request (redirects, slow answers, dropped connections).  The behaviours both
transports share run here over both (``kind``); the urllib3-only ones live in
``test_urllib3_transport.py``, which reuses this server.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest
import trustme

from cfauth import OutcomeUnknown, Response, TransportFailure, _wire, stdlib
from cfauth._tls import parse_resolve
from cfauth.sync import Client
from cfauth_core import ApiKey, Request

HOST = "acme.checkfront.com"
MIGRATED = "acme.manage.na1.bookingplatform.app"
KEY, SECRET = "test-key", "test-secret-value"
BASIC = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
KINDS = ["stdlib", "urllib3"]


# -- the server ------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    conn: int


class Server(ThreadingHTTPServer):
    """Serves :class:`Handler` on 127.0.0.1, over TLS when given a context."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.context = context
        self.lock = threading.Lock()
        self.accepted = 0
        self.handshake_failures = 0
        self.sni: list[str | None] = []
        self.seen: list[Seen] = []
        self.release = threading.Event()  # lets /slow answer
        self.ended = threading.Semaphore(0)  # released whenever a connection ends
        self.arrived = threading.Semaphore(0)  # released whenever a request arrives
        self.local = threading.local()
        if context is not None:
            context.sni_callback = self._record_sni

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def resolve(self, host: str = HOST, port: int = 443) -> dict[str, str]:
        return {f"{host}:{port}": f"127.0.0.1:{self.port}"}

    def paths(self) -> list[str]:
        with self.lock:
            return [seen.path for seen in self.seen]

    def _record_sni(self, sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        with self.lock:
            self.sni.append(name)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.accepted += 1
            self.local.conn = self.accepted
        sock: socket.socket = request
        try:
            if self.context is not None:
                try:
                    sock = self.context.wrap_socket(request, server_side=True)
                except OSError:
                    with self.lock:
                        self.handshake_failures += 1
                    return
            Handler(sock, client_address, self)
        finally:
            with suppress(OSError):
                sock.close()
            self.ended.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client went away mid-exchange (timeouts, drops): expected here."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    timeout = 10
    server: Server

    def setup(self) -> None:
        super().setup()
        self.conn: int = self.server.local.conn
        self.count = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.count += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        seen = Seen(
            self.command, parts.path, parts.query, list(self.headers.items()), body, self.conn
        )
        with self.server.lock:
            self.server.seen.append(seen)
        self.server.arrived.release()
        path = parts.path
        if path == "/drop" or (path == "/drop-if-reused" and self.count > 1):
            self.close_connection = True  # hang up without a word
            return
        if path.startswith("/redirect/"):
            status = int(path.rsplit("/", 1)[1])
            self.reply(status, b"moved", [("Location", f"https://{HOST}/followed")])
            return
        if path == "/partial":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.close_connection = True
            return
        if path == "/slow":
            self.server.release.wait(10)
        if path == "/api/3.0/ping":
            if self.headers.get("Authorization") != BASIC:
                self.reply(401, b'{"error": "unauthorized"}', [])
                return
            self.reply(200, b'{"request": {"status": "OK"}, "pong": true}', [])
            return
        extra = {
            "/dup": [("X-A", "1"), ("X-B", "2"), ("X-A", "3")],
            "/close-header": [("Connection", "close")],
        }.get(path, [])
        if path == "/gzip":
            self.reply(200, gzip.compress(b'{"a": 1}'), [("Content-Encoding", "gzip")])
            return
        echo = {
            "method": self.command,
            "path": path,
            "query": parts.query,
            "body": body.decode("latin-1"),
            "conn": self.conn,
        }
        self.reply(200, json.dumps(echo).encode(), extra)
        if path == "/close-after":
            self.close_connection = True  # closes without saying "Connection: close"

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: str
    cert: trustme.LeafCert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca, str(ca_file), ca.issue_cert(HOST, MIGRATED))


def serve(context: ssl.SSLContext | None) -> Iterator[Server]:
    server = Server(context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def server(pki: Pki) -> Iterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.cert.configure_cert(context)
    yield from serve(context)


@pytest.fixture
def plain_server() -> Iterator[Server]:
    yield from serve(None)


# -- the transports ----------------------------------------------------------------


class AnyTransport(Protocol):
    def __call__(self, request: Request) -> Response: ...

    def close(self) -> None: ...


Make = Callable[..., AnyTransport]


def build(kind: str, *, pool: int | None = None, **options: Any) -> AnyTransport:
    if kind == "stdlib":
        if pool is not None:
            options["max_idle_per_origin"] = pool
        return stdlib.HttpClientTransport(**options)
    pytest.importorskip("urllib3")
    from cfauth.urllib3 import Urllib3Transport

    if pool is not None:
        options["pool_maxsize"] = pool
    return Urllib3Transport(**options)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str) -> Iterator[Make]:
    made: list[AnyTransport] = []

    def factory(**options: Any) -> AnyTransport:
        transport = build(kind, **options)
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        transport.close()


@pytest.fixture
def send(make: Make, server: Server, pki: Pki) -> AnyTransport:
    """A transport that trusts the test CA and reaches HOST at the server."""
    return make(ca_file=pki.ca_file, resolve=server.resolve())


def get(path: str, *headers: tuple[str, str], host: str = HOST) -> Request:
    return Request("GET", f"https://{host}{path}", tuple(headers))


# -- what is sent and received ------------------------------------------------------


def test_get_arrives_exactly_as_given(send: AnyTransport, server: Server) -> None:
    headers = (("Accept", "application/json"), ("User-Agent", "cfauth-test"), ("X-Custom", "a"))
    request = Request("GET", f"https://{HOST}/api/3.0/booking?limit=10&q=a%20b", headers)
    response = send(request)
    assert response.status == 200
    assert response.url == request.url
    assert response.json() == {
        "method": "GET",
        "path": "/api/3.0/booking",
        "query": "limit=10&q=a%20b",
        "body": "",
        "conn": 1,
    }
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in response.headers)
    assert response.header("content-type") == "application/json"
    [seen] = server.seen
    assert seen.headers == [("Host", HOST), *headers]
    assert seen.body == b""


@pytest.mark.parametrize(
    ("method", "body", "length"),
    [("POST", bytes(range(256)) * 3, "768"), ("PUT", b"", "0"), ("POST", None, "0")],
)
def test_body_arrives_intact(
    send: AnyTransport, server: Server, method: str, body: bytes | None, length: str
) -> None:
    headers = (("Content-Type", "application/octet-stream"), ("User-Agent", "cfauth-test"))
    response = send(Request(method, f"https://{HOST}/api/3.0/booking/create?x=1", headers, body))
    assert response.status == 200
    [seen] = server.seen
    assert (seen.method, seen.path, seen.query) == (method, "/api/3.0/booking/create", "x=1")
    assert seen.body == (body or b"")
    assert seen.headers == [("Host", HOST), *headers, ("Content-Length", length)]


def test_response_headers_keep_their_order(send: AnyTransport) -> None:
    response = send(get("/dup"))
    mine = [(n, v) for n, v in response.headers if n.startswith("X-")]
    assert mine == [("X-A", "1"), ("X-B", "2"), ("X-A", "3")]


def test_body_is_returned_as_received(send: AnyTransport) -> None:
    response = send(get("/gzip", ("Accept-Encoding", "gzip")))
    assert response.header("Content-Encoding") == "gzip"
    assert gzip.decompress(response.body) == b'{"a": 1}'


def test_host_header_and_sni_use_the_real_name(send: AnyTransport, server: Server) -> None:
    send(get("/"))
    assert server.sni == [HOST]
    assert dict(server.seen[0].headers)["Host"] == HOST


def test_non_default_port_is_in_the_host_header(make: Make, server: Server, pki: Pki) -> None:
    send = make(ca_file=pki.ca_file, resolve=server.resolve(port=8443))
    send(get("/", host=f"{HOST}:8443"))
    assert server.sni == [HOST]
    assert dict(server.seen[0].headers)["Host"] == f"{HOST}:8443"


def test_two_names_on_one_address_keep_their_own_connections(
    make: Make, server: Server, pki: Pki
) -> None:
    send = make(ca_file=pki.ca_file, resolve={**server.resolve(), **server.resolve(MIGRATED)})
    for _ in range(2):
        send(get("/"))
        send(get("/", host=MIGRATED))
    assert server.accepted == 2
    assert server.sni == [HOST, MIGRATED]
    hosts = [(dict(seen.headers)["Host"], seen.conn) for seen in server.seen]
    assert hosts == [(HOST, 1), (MIGRATED, 2), (HOST, 1), (MIGRATED, 2)]


def test_plain_http_only_for_http_urls(make: Make, plain_server: Server, pki: Pki) -> None:
    send = make(ca_file=pki.ca_file)
    origin = f"127.0.0.1:{plain_server.port}"
    response = send(Request("GET", f"http://{origin}/plain", ()))
    assert response.json()["path"] == "/plain"
    assert dict(plain_server.seen[0].headers)["Host"] == origin
    with pytest.raises(TransportFailure, match=r"127\.0\.0\.1"):
        send(Request("GET", f"https://{origin}/never-plain", ()))
    assert plain_server.paths() == ["/plain"]


# -- TLS ----------------------------------------------------------------------------


def test_certificate_for_another_name_is_refused(make: Make, server: Server, pki: Pki) -> None:
    evil = "evil.checkfront.com"
    send = make(ca_file=pki.ca_file, resolve=server.resolve(evil))
    with pytest.raises(TransportFailure, match="was not trusted") as failure:
        send(get("/", host=evil))
    assert evil in str(failure.value)
    assert server.sni == [evil]
    assert server.seen == []


def test_unknown_ca_is_refused(make: Make, server: Server) -> None:
    send = make(resolve=server.resolve())
    with pytest.raises(TransportFailure, match="was not trusted") as failure:
        send(get("/"))
    assert HOST in str(failure.value)
    assert server.seen == []


def test_ssl_context_is_used(make: Make, server: Server, pki: Pki) -> None:
    context = ssl.create_default_context()
    pki.ca.configure_trust(context)
    send = make(ssl_context=context, resolve=server.resolve())
    assert send(get("/")).status == 200
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_unverified_contexts_are_refused(kind: str, pki: Pki) -> None:
    lax = ssl.create_default_context()
    lax.check_hostname = False
    with pytest.raises(ValueError, match="does not check the host name"):
        build(kind, ssl_context=lax)
    with pytest.raises(ValueError, match="not both"):
        build(kind, ssl_context=ssl.create_default_context(), ca_file=pki.ca_file)
    with pytest.raises(ValueError, match="positive"):
        build(kind, read_timeout=0)


# -- no redirects, keep-alive, the one retry -----------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307])
def test_redirects_are_returned_not_followed(
    send: AnyTransport, server: Server, status: int
) -> None:
    response = send(Request("POST", f"https://{HOST}/redirect/{status}", (), b"x"))
    assert response.status == status
    assert response.header("Location") == f"https://{HOST}/followed"
    assert response.body == b"moved"
    assert server.paths() == [f"/redirect/{status}"]


def test_sequential_requests_share_one_connection(send: AnyTransport, server: Server) -> None:
    for i in range(20):
        assert send(get(f"/n/{i}")).json()["conn"] == 1
    assert server.accepted == 1
    assert [seen.conn for seen in server.seen] == [1] * 20


def test_idle_connection_closed_by_the_server_is_replaced(
    send: AnyTransport, server: Server
) -> None:
    assert send(get("/close-after")).json()["conn"] == 1
    assert server.ended.acquire(timeout=5)  # the server has hung up the idle connection
    assert send(get("/next")).json()["conn"] == 2
    assert server.paths() == ["/close-after", "/next"]


def test_connection_close_header_is_honoured(send: AnyTransport, server: Server) -> None:
    assert send(get("/close-header")).json()["conn"] == 1
    assert send(get("/next")).json()["conn"] == 2
    assert server.paths() == ["/close-header", "/next"]


def hold_idle(send: AnyTransport, server: Server, count: int) -> None:
    """Leave ``count`` idle connections in the transport's pool."""
    threads = [threading.Thread(target=send, args=(get("/slow"),)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):  # all are in the server at once, each on its own connection
        assert server.arrived.acquire(timeout=5)
    server.release.set()
    for thread in threads:
        thread.join(10)
    assert server.accepted == count


def test_stale_connection_is_retried_once_on_a_new_one(send: AnyTransport, server: Server) -> None:
    hold_idle(send, server, 2)
    # The first attempt takes an idle connection, which the server drops; the
    # retry must not take the other idle one (it would be dropped too).
    response = send(Request("PUT", f"https://{HOST}/drop-if-reused", (), b"body"))
    assert response.status == 200
    assert response.json()["conn"] == 3
    dropped, answered = server.seen[2:]
    assert (dropped.path, answered.path) == ("/drop-if-reused", "/drop-if-reused")
    assert dropped.conn in (1, 2)
    assert answered.conn == 3
    assert answered.body == b"body"


def test_stale_connection_retry_after_one_request(send: AnyTransport, server: Server) -> None:
    send(get("/"))
    keyed = (("Idempotency-Key", "k-1"),)  # a POST the caller marked replayable
    response = send(Request("POST", f"https://{HOST}/drop-if-reused", keyed, b"body"))
    assert response.status == 200
    assert response.json()["conn"] == 2
    assert [(seen.path, seen.conn) for seen in server.seen] == [
        ("/", 1),
        ("/drop-if-reused", 1),  # dropped unanswered, as a server closing it would
        ("/drop-if-reused", 2),
    ]


def test_stale_plain_http_connection_is_retried(make: Make, plain_server: Server) -> None:
    send = make()
    origin = f"http://127.0.0.1:{plain_server.port}"
    for _ in range(2):
        send(Request("GET", f"{origin}/", ()))
    response = send(Request("GET", f"{origin}/drop-if-reused", ()))
    assert response.json()["conn"] == 2
    assert [(seen.path, seen.conn) for seen in plain_server.seen][-2:] == [
        ("/drop-if-reused", 1),
        ("/drop-if-reused", 2),
    ]


def test_a_post_that_may_have_been_processed_is_never_sent_again(
    send: AnyTransport, server: Server
) -> None:
    send(get("/"))
    with pytest.raises(OutcomeUnknown, match="fully written") as caught:
        send(Request("POST", f"https://{HOST}/drop-if-reused", (), b"body"))
    assert caught.value.fully_written
    assert "check whether it took effect" in str(caught.value)
    assert "retried" not in str(caught.value)
    assert server.paths() == ["/", "/drop-if-reused"]


def test_dropped_new_connection_is_not_retried(send: AnyTransport, server: Server) -> None:
    with pytest.raises(TransportFailure, match=r"RemoteDisconnected|SSLEOFError"):
        send(get("/drop"))
    assert server.paths() == ["/drop"]


def test_failure_after_the_response_began_is_not_retried(
    send: AnyTransport, server: Server
) -> None:
    send(get("/"))
    with pytest.raises(TransportFailure, match=HOST):
        send(get("/partial"))
    assert server.paths() == ["/", "/partial"]


def test_read_timeout(make: Make, server: Server, pki: Pki) -> None:
    send = make(ca_file=pki.ca_file, resolve=server.resolve(), read_timeout=0.2)
    send(get("/"))  # a reused connection must not be retried after a timeout either
    started = time.monotonic()
    with pytest.raises(TransportFailure, match="timed out") as failure:
        send(get("/slow"))
    assert time.monotonic() - started < 3
    assert HOST in str(failure.value)
    assert server.paths() == ["/", "/slow"]


def test_connection_refused(make: Make, pki: Pki) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    send = make(ca_file=pki.ca_file, resolve={f"{HOST}:443": f"127.0.0.1:{port}"})
    with pytest.raises(TransportFailure, match="connect to") as failure:
        send(get("/"))
    assert f"{HOST}:443 (via 127.0.0.1:{port})" in str(failure.value)


def test_closed_transport_refuses_requests(send: AnyTransport) -> None:
    send(get("/"))
    send.close()
    with pytest.raises(TransportFailure, match="closed"):
        send(get("/"))


def test_threads_share_one_transport(make: Make, server: Server, pki: Pki) -> None:
    send = make(ca_file=pki.ca_file, resolve=server.resolve(), pool=16)
    start = threading.Barrier(16)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            start.wait(5)
            for i in range(10):
                tag = f"{t}-{i}"
                response = send(Request("POST", f"https://{HOST}/echo/{tag}", (), tag.encode()))
                echo = response.json()
                assert (echo["path"], echo["body"]) == (f"/echo/{tag}", tag)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert len(server.seen) == 160
    assert all(seen.body.decode() == seen.path.rsplit("/", 1)[1] for seen in server.seen)
    # at most one connection per thread: none was opened while one sat idle
    assert server.accepted <= 16


# -- secrets stay out of failures ------------------------------------------------------

SCENARIOS = ["refused", "timeout", "certificate", "dropped", "partial", "crlf"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_failures_never_show_the_authorization_header(
    make: Make, server: Server, pki: Pki, scenario: str
) -> None:
    secret = "c2VjcmV0LXRva2VuLXZhbHVl"
    auth = f"Bearer {secret}\r\nX-Injected: 1" if scenario == "crlf" else f"Bearer {secret}"
    resolve = server.resolve()
    if scenario == "refused":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            resolve = {f"{HOST}:443": f"127.0.0.1:{probe.getsockname()[1]}"}
    send = make(
        ca_file=None if scenario == "certificate" else pki.ca_file,
        resolve=resolve,
        read_timeout=0.2,
    )
    path = {"timeout": "/slow", "dropped": "/drop", "partial": "/partial"}.get(scenario, "/")
    body = b"refresh_token=" + secret.encode()
    with pytest.raises(TransportFailure) as failure:
        send(Request("POST", f"https://{HOST}{path}", (("Authorization", auth),), body))
    shown = [str(failure.value), repr(failure.value)]
    cause = failure.value.__cause__
    while cause is not None:
        shown.append(str(cause))
        cause = cause.__cause__
    assert not [text for text in shown if secret in text]
    if scenario == "crlf":
        assert "Authorization" in str(failure.value)
        assert server.accepted == 0


# -- client() ----------------------------------------------------------------------


def test_client_end_to_end(kind: str, server: Server, pki: Pki) -> None:
    make_client: Callable[..., Client]
    if kind == "stdlib":
        make_client = stdlib.client
    else:
        pytest.importorskip("urllib3")
        from cfauth.urllib3 import client as make_client
    with make_client(
        "acme",
        ApiKey(KEY, SECRET),
        ca_file=pki.ca_file,
        resolve=server.resolve(),
        on_behalf="42",
    ) as api:
        response = api.get("ping")
        assert response.json()["pong"] is True
        assert response.url == f"https://{HOST}/api/3.0/ping"
        transport = api.transport
        assert transport is not None
    [seen] = server.seen
    headers = dict(seen.headers)
    assert (headers["Host"], headers["Authorization"], headers["X-On-Behalf"]) == (
        HOST,
        BASIC,
        "42",
    )
    with pytest.raises(TransportFailure, match="closed"):  # closing the client closed it
        transport(get("/"))


# -- stdlib only ---------------------------------------------------------------------


def test_stdlib_module_imports_no_third_party_package() -> None:
    code = (
        "import sys; import cfauth.stdlib; "
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    allowed = set(sys.stdlib_module_names) | {"cfauth", "cfauth_core", "typing_extensions"}
    assert "cfauth" in loaded
    assert [name for name in loaded if name not in allowed and not name.startswith("_")] == []


def test_stdlib_max_idle_zero_closes_every_connection(server: Server, pki: Pki) -> None:
    with stdlib.HttpClientTransport(
        ca_file=pki.ca_file, resolve=server.resolve(), max_idle_per_origin=0
    ) as send:
        for _ in range(3):
            send(get("/"))
    assert server.accepted == 3


def test_stdlib_idle_connections_are_capped(server: Server, pki: Pki) -> None:
    with stdlib.HttpClientTransport(
        ca_file=pki.ca_file, resolve=server.resolve(), max_idle_per_origin=1
    ) as send:
        hold_idle(send, server, 3)
        assert "1 idle" in repr(send)
        send(get("/"))
    assert server.accepted == 3


def test_stdlib_idle_check_sees_a_closed_peer() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert not _wire._is_dropped(left)
        right.close()
        assert _wire._is_dropped(left)
    assert _wire._is_dropped(None)


def test_stdlib_repr_and_path_checks(pki: Pki) -> None:
    with stdlib.HttpClientTransport(ca_file=pki.ca_file) as send:
        with pytest.raises(TransportFailure, match="printable ASCII"):
            send(get("/a b"))
        with pytest.raises(TransportFailure, match="http"):
            send(Request("GET", "ftp://acme.checkfront.com/", ()))
        with pytest.raises(TransportFailure, match="not an HTTP method"):
            send(Request("GE T", f"https://{HOST}/", ()))
        assert "HttpClientTransport" in repr(send)


# -- the caches and the fast paths ---------------------------------------------------

PARITY_URLS = [
    f"https://{HOST}/api/3.0/booking",
    f"https://{HOST}/api/3.0/booking?limit=10&q=a%20b",
    f"https://{HOST}/a?",
    f"https://{HOST}/a#frag",
    f"https://{HOST}/a?x=1#frag?y",
    f"https://{HOST.upper()}:443/x",
    f"https://{HOST}:8443/x",
    f"http://{HOST}/x",
    f"https://{MIGRATED}/x",
    "https://[::1]:8443/x",
    f"https://{HOST}/a\tb",  # urlsplit drops tabs: the slow path keeps doing so
]


def test_prepare_matches_the_plain_functions() -> None:
    resolve = parse_resolve({f"{HOST}:443": "127.0.0.1:1", f"{HOST}:8443": "127.0.0.1:2"})
    prepare: _wire._Prepare[list[tuple[str, str]]] = _wire._Prepare(resolve, list)
    headers = (("Accept", "application/json"), ("User-Agent", "t"))
    for _ in range(2):  # cold, then from the caches
        for url in PARITY_URLS:
            for method, body in (("GET", None), ("POST", None), ("PUT", b"abc")):
                request = Request(method, url, headers, body)
                origin, target, head, length = prepare(request)
                assert target == _wire._target(request, resolve)
                assert origin.key == (target.scheme, target.host, target.port)
                expected = _wire._headers(request, target)
                added = [("Content-Length", length)] if length is not None else []
                assert head + added == expected


def test_cached_origin_is_not_reused_for_another_host() -> None:
    prepare: _wire._Prepare[list[tuple[str, str]]] = _wire._Prepare({}, list)
    first = prepare(get("/x"))
    other = prepare(get("/x", host=MIGRATED))
    plain = prepare(Request("GET", f"http://{HOST}/x", ()))
    ported = prepare(get("/x", host=f"{HOST}:8443"))
    assert [p[1].host for p in (first, other)] == [HOST, MIGRATED]
    assert (plain[1].scheme, plain[1].port, ported[1].port) == ("http", 80, 8443)
    assert [p[2][0] for p in (first, other, ported)] == [
        ("Host", HOST),
        ("Host", MIGRATED),
        ("Host", f"{HOST}:8443"),
    ]
    # a URL that merely starts like a cached origin is not that origin
    assert prepare(Request("GET", f"https://{HOST}x/y", ()))[1].host == f"{HOST}x"


def test_caches_are_bounded() -> None:
    prepare: _wire._Prepare[list[tuple[str, str]]] = _wire._Prepare({}, list)
    for i in range(_wire._MAX_ORIGINS * 2 + 3):
        assert prepare(get("/", host=f"h{i}.example"))[1].host == f"h{i}.example"
    assert len(prepare._origins) <= _wire._MAX_ORIGINS
    for i in range(_wire._MAX_HEADS * 2 + 3):
        origin, _, head, _ = prepare(get("/", ("X-N", str(i))))
        assert head[-1] == ("X-N", str(i))
    assert len(origin.heads) <= _wire._MAX_HEADS


def test_header_checks_hold_after_caching() -> None:
    prepare: _wire._Prepare[list[tuple[str, str]]] = _wire._Prepare({}, list)
    good = (("Authorization", "Bearer abc"), ("Accept", "application/json"))
    assert prepare(get("/", *good))[2][1:] == list(good)
    for bad in ("Bearer abc\r\nX-Injected: 1", "Bearer abc\n", "a\x00b", "caf\u00e9\u20ac"):
        with pytest.raises(TransportFailure, match="Authorization"):
            prepare(get("/", ("Authorization", bad), good[1]))
    with pytest.raises(TransportFailure, match="not a valid HTTP token"):
        prepare(get("/", ("Bad Name", "x"), *good))
    with pytest.raises(TransportFailure, match="not an HTTP method"):
        prepare(Request("GE T", f"https://{HOST}/", good))  # the origin is cached by now
    with pytest.raises(TransportFailure, match="printable ASCII"):
        prepare(get("/a b", *good))
    assert prepare(get("/", *good))[2][1:] == list(good)  # and the good ones still pass


def test_crlf_is_refused_on_the_wire_after_good_requests(
    send: AnyTransport, server: Server
) -> None:
    assert send(get("/", ("X-A", "1"))).status == 200
    with pytest.raises(TransportFailure, match="X-A"):
        send(get("/", ("X-A", "1\r\nX-Injected: 1")))
    assert send(get("/", ("X-A", "1"))).status == 200
    assert all("X-Injected" not in dict(seen.headers) for seen in server.seen)
    assert len(server.seen) == 2


def test_large_body_arrives_intact(send: AnyTransport, server: Server) -> None:
    body = bytes(range(256)) * 400  # more than is joined to the head
    assert len(body) > _wire._JOIN_BODY_UP_TO
    assert send(Request("POST", f"https://{HOST}/big", (), body)).status == 200
    assert server.seen[0].body == body


def test_repeated_request_header_names_all_go_out(send: AnyTransport, server: Server) -> None:
    send(get("/", ("X-A", "1"), ("x-a", "2"), ("X-B", "3")))
    sent = [(n.lower(), v) for n, v in server.seen[0].headers if n.lower().startswith("x-")]
    assert sent == [("x-a", "1"), ("x-a", "2"), ("x-b", "3")]  # urllib3 unifies the case


HEADER_BLOCKS = [
    b"Server: nginx\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
    b"X-Empty:\r\nX-Spaces:   \t v  \r\nX-Colon: a:b\r\n\r\n",
    b"X-Lf: 1\nX-Two: 2\n\n",
    b"X-Latin: caf\xe9\r\nX-Tab: a\tb\r\n\r\n",
    b"\r\n",
]


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_header_parse_matches_http_client(block: bytes) -> None:
    import http.client
    import io

    fast = _wire._parse_headers(io.BufferedReader(io.BytesIO(block)))
    slow = http.client.parse_headers(io.BufferedReader(io.BytesIO(block)))
    # the same pairs, with the optional whitespace around values removed (RFC 9112 5)
    assert list(fast.raw_items()) == [(n, v.strip(" \t")) for n, v in slow.raw_items()]
    for name in ("content-length", "x-a", "x-spaces", "connection"):
        assert fast.get(name) == (None if slow.get(name) is None else slow[name].strip(" \t"))


def test_obsolete_line_folding_is_joined_with_a_space() -> None:
    import io

    block = b"X-Fold: a\r\n  b\r\n\tc\r\nX-After: 1\r\n\r\n"
    parsed = _wire._parse_headers(io.BufferedReader(io.BytesIO(block)))
    assert list(parsed.raw_items()) == [("X-Fold", "a b c"), ("X-After", "1")]


MALFORMED_HEADER_BLOCKS = [
    b"X-Ok: 1\r\nno colon here\r\nX-Lost: 1\r\n\r\n",
    b"X-Nul: a\x00b\r\n\r\n",
    b"X-Cr: a\rb\r\n\r\n",
    b"X-Ctl: a\x0bb\r\n\r\n",
    b"Name With Space: 1\r\n\r\n",
    b":empty-name\r\n\r\n",
    b"X-Name : 1\r\n\r\n",
    b" X-Fold-First: 1\r\n\r\n",
    b"X-Eof: 1\r\n",
    b"X-Eof: 1\r\nContent-Ty",
    b"",
]


@pytest.mark.parametrize("block", MALFORMED_HEADER_BLOCKS)
def test_malformed_or_cut_header_blocks_fail_without_quoting(block: bytes) -> None:
    import io

    with pytest.raises(_wire.MalformedResponse) as caught:
        _wire._parse_headers(io.BufferedReader(io.BytesIO(block)))
    for line in block.split(b"\n"):
        if len(line) > 3:
            assert line.decode("latin-1").strip() not in str(caught.value)
