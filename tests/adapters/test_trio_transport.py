"""H11Transport over real TLS against a small threaded HTTPS server on 127.0.0.1.

The server (``http.server`` wrapped in ``ssl``, certificate from a ``trustme``
CA for the real-looking host ``acme.checkfront.com``) records every request
with the connection it came on and the SNI name, so the tests can see reuse,
pooling, cancellation and retries from the server's side.  The client reaches
it through the ``resolve`` override, as users' tests would.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trio
import trustme

from cfauth import TransportFailure
from cfauth.trio import H11Transport, client
from cfauth_core import ApiKey, Request

HOST = "acme.checkfront.com"
ORIGIN = f"https://{HOST}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_GET

    def dispatch(self) -> None:
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        record = {
            "connection": server.local.connection,
            "sni": server.local.sni,
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "authorization": self.headers.get("Authorization"),
            "content_length": self.headers.get("Content-Length"),
            "body": body.decode("latin-1"),
        }
        with server.changed:
            server.requests.append(record)
            server.changed.notify_all()
        if self.path.startswith("/hold"):
            with server.changed:
                server.active += 1
                server.max_active = max(server.max_active, server.active)
                server.changed.notify_all()
            server.gate.wait(10)
            with server.changed:
                server.active -= 1
        if self.path == "/slow":
            server.release.wait(10)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "https://elsewhere.example/target")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/partial":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        payload = json.dumps(record).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if self.path == "/close-after":
            # Close without saying so: the client keeps the connection as idle.
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.context = context  # None: plain http
        if context is not None:
            context.sni_callback = self._sni
        self.local = threading.local()
        self.changed = threading.Condition()
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.closed = 0
        self.handshake_failures = 0
        self.active = 0
        self.max_active = 0
        self.gate = threading.Event()  # releases /hold requests
        self.release = threading.Event()  # releases /slow requests

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def _sni(self, _sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.local.sni = name

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.local.sni = None
        try:
            tls = (
                request
                if self.context is None
                else self.context.wrap_socket(request, server_side=True)
            )
        except OSError:
            with self.changed:
                self.handshake_failures += 1
                self.changed.notify_all()
            return
        with self.changed:
            self.connections += 1
            self.local.connection = self.connections
        try:
            Handler(tls, client_address, self)
        finally:
            tls.close()
            with self.changed:
                self.closed += 1
                self.changed.notify_all()

    def shutdown_request(self, request: Any) -> None:
        request.close()  # wrapped (detached) or refused: nothing to shut down

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that vanish mid-response are part of the tests

    def wait_for(self, predicate: Any) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(predicate, timeout=5))

    def seen(self) -> list[tuple[int, str, str]]:
        with self.changed:
            return [(r["connection"], r["method"], r["path"]) for r in self.requests]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA) -> Iterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(context)
    yield from serve(context)


@pytest.fixture
def plain_server() -> Iterator[Server]:
    yield from serve(None)


def serve(context: ssl.SSLContext | None) -> Iterator[Server]:
    httpd = Server(context)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.gate.set()
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def transport(ca: trustme.CA, server: Server, **options: Any) -> H11Transport:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    options.setdefault("ssl_context", context)
    return H11Transport(resolve={f"{HOST}:443": f"127.0.0.1:{server.port}"}, **options)


def get(path: str, *headers: tuple[str, str]) -> Request:
    return Request("GET", ORIGIN + path, headers)


def run(main: Any) -> None:
    async def guarded() -> None:
        with trio.fail_after(10):
            await main()

    trio.run(guarded)


def test_get_and_post_arrive_intact_with_the_real_host(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        auth = ("Authorization", "Bearer secret-token")
        with ca.cert_pem.tempfile() as ca_file:
            http = H11Transport(
                ca_file=ca_file,
                resolve={
                    f"{HOST}:443": f"127.0.0.1:{server.port}",
                    f"{HOST}:8443": f"127.0.0.1:{server.port}",
                },
            )
        async with http:
            response = await http(get("/api/3.0/item?start=2024-01-01&x=%20y", auth))
            posted = await http(
                Request(
                    "POST",
                    ORIGIN + "/api/3.0/booking/create",
                    (auth, ("Content-Type", "application/x-www-form-urlencoded")),
                    b"a=1&b=%C3%A9",
                )
            )
            other_port = await http(get_on(8443, "/api/3.0/ping"))
        assert response.status == 200
        assert response.url == ORIGIN + "/api/3.0/item?start=2024-01-01&x=%20y"
        assert response.header("content-type") == "application/json"
        echoed = response.json()
        assert echoed["path"] == "/api/3.0/item?start=2024-01-01&x=%20y"
        assert echoed["host"] == HOST
        assert echoed["sni"] == HOST
        assert echoed["authorization"] == "Bearer secret-token"
        assert echoed["body"] == ""
        sent = posted.json()
        assert (sent["method"], sent["body"], sent["content_length"]) == (
            "POST",
            "a=1&b=%C3%A9",
            "12",
        )
        assert sent["host"] == HOST
        assert other_port.json()["host"] == f"{HOST}:8443"
        assert other_port.json()["sni"] == HOST
        assert server.seen() == [
            (1, "GET", "/api/3.0/item?start=2024-01-01&x=%20y"),
            (1, "POST", "/api/3.0/booking/create"),
            (2, "GET", "/api/3.0/ping"),
        ]

    run(main)


def get_on(port: int, path: str) -> Request:
    return Request("GET", f"{ORIGIN}:{port}{path}", ())


def test_an_unknown_ca_is_refused(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        other = ssl.create_default_context()
        trustme.CA().configure_trust(other)
        async with transport(ca, server, ssl_context=other) as http:
            with pytest.raises(TransportFailure, match="was not trusted"):
                await http(get("/echo"))
        async with H11Transport(resolve={f"{HOST}:443": f"127.0.0.1:{server.port}"}) as http:
            with pytest.raises(TransportFailure, match="was not trusted"):
                await http(get("/echo"))
        assert server.wait_for(lambda: server.handshake_failures == 2)
        assert server.requests == []

    run(main)


def test_keep_alive_reuses_one_connection(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        async with transport(ca, server) as http:
            for i in range(20):
                response = await http(get(f"/echo/{i}"))
                assert response.json()["path"] == f"/echo/{i}"
        assert [c for c, _, _ in server.seen()] == [1] * 20
        assert server.connections == 1

    run(main)


def test_the_pool_cap_bounds_concurrent_connections(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        statuses: list[int] = []
        async with transport(ca, server, max_connections_per_origin=2) as http:

            async def one(i: int) -> None:
                statuses.append((await http(get(f"/hold/{i}"))).status)

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(one, i)
                assert await trio.to_thread.run_sync(server.wait_for, lambda: server.active == 2)
                server.gate.set()
        assert statuses == [200] * 10
        assert server.max_active == 2
        assert server.connections == 2
        assert sorted({c for c, _, _ in server.seen()}) == [1, 2]

    run(main)


def test_a_cancelled_request_connection_is_not_reused(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        async with transport(ca, server) as http:
            await http(get("/echo/warm"))  # connection 1, now idle in the pool
            with trio.CancelScope() as scope:

                async def cancel_once_held() -> None:
                    assert await trio.to_thread.run_sync(
                        server.wait_for, lambda: server.active == 1
                    )
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_once_held)
                    await http(Request("POST", ORIGIN + "/hold/cancelled", (), b"x" * 1000))
            assert scope.cancelled_caught
            response = await http(get("/echo/after"))
            assert response.json()["connection"] == 2
            server.gate.set()
            assert server.wait_for(lambda: server.closed == 1)  # connection 1 ended
        held = server.requests[1]
        assert (held["method"], held["body"]) == ("POST", "x" * 1000)
        assert server.seen() == [
            (1, "GET", "/echo/warm"),
            (1, "POST", "/hold/cancelled"),
            (2, "GET", "/echo/after"),
        ]

    run(main)


def test_a_stale_kept_alive_connection_is_retried_once(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        async with transport(ca, server) as http:
            await http(get("/close-after"))  # the server closes connection 1 afterwards
            assert server.wait_for(lambda: server.closed == 1)
            body = b"payload"
            response = await http(Request("POST", ORIGIN + "/echo/retried", (), body))
        assert response.json()["connection"] == 2
        assert response.json()["body"] == "payload"
        assert server.seen() == [(1, "GET", "/close-after"), (2, "POST", "/echo/retried")]

    run(main)


def test_a_failure_after_response_bytes_is_not_retried(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        async with transport(ca, server) as http:
            await http(get("/echo/warm"))
            with pytest.raises(TransportFailure, match="connection to https://acme"):
                await http(get("/partial"))
            # The broken connection is gone: the next request opens another one.
            assert (await http(get("/echo/next"))).json()["connection"] == 2
        assert server.seen() == [
            (1, "GET", "/echo/warm"),
            (1, "GET", "/partial"),
            (2, "GET", "/echo/next"),
        ]

    run(main)


def test_read_timeout(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        async with transport(ca, server, read_timeout=0.3) as http:
            with pytest.raises(TransportFailure, match=r"within 0\.3 s"):
                await http(get("/slow"))
            server.release.set()
            assert (await http(get("/echo"))).json()["connection"] == 2
        assert [p for _, _, p in server.seen()] == ["/slow", "/echo"]

    run(main)


def test_connect_timeout_and_refused_connections() -> None:
    async def main() -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        async with H11Transport(resolve={f"{HOST}:443": f"127.0.0.1:{port}"}) as http:
            with pytest.raises(TransportFailure, match=f"could not connect to {HOST}:443"):
                await http(get("/echo"))
        with pytest.raises(TransportFailure, match="only http"):
            await H11Transport()(Request("GET", "ftp://acme.checkfront.com/", ()))

    run(main)


def test_redirects_are_returned_not_followed(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        async with transport(ca, server) as http:
            response = await http(get("/redirect"))
        assert response.status == 302
        assert response.header("Location") == "https://elsewhere.example/target"
        assert server.seen() == [(1, "GET", "/redirect")]

    run(main)


def test_aclose_closes_idle_connections(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        http = transport(ca, server)
        await http(get("/echo"))
        assert server.closed == 0
        await http.aclose()
        assert await trio.to_thread.run_sync(server.wait_for, lambda: server.closed == 1)
        with pytest.raises(TransportFailure, match="closed"):
            await http(get("/echo"))

    run(main)


def test_client_factory_end_to_end(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with client(
            "acme",
            ApiKey("api-key", "api-secret-value"),
            ssl_context=context,
            resolve={f"{HOST}:443": f"127.0.0.1:{server.port}"},
            on_behalf="7",
        ) as api:
            response = await api.get("item", params={"a": "b"})
        echoed = response.json()
        assert echoed["path"] == "/api/3.0/item?a=b"
        assert echoed["authorization"].startswith("Basic ")
        assert echoed["host"] == HOST
        assert server.wait_for(lambda: server.closed == 1)  # the client closed its transport

    run(main)


def test_plain_http_for_loopback_tests(plain_server: Server) -> None:
    async def main() -> None:
        async with H11Transport() as http:
            url = f"http://127.0.0.1:{plain_server.port}/echo"
            first = await http(Request("GET", url, ()))
            second = await http(Request("GET", url, ()))
        assert first.json()["host"] == f"127.0.0.1:{plain_server.port}"
        assert second.json()["connection"] == 1

    run(main)


def test_an_invalid_header_is_refused_without_showing_it(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        async with transport(ca, server) as http:
            with pytest.raises(TransportFailure) as caught:
                await http(get("/echo", ("Authorization", "Bearer secret\r\nX-Evil: 1")))
        assert "secret" not in str(caught.value)
        assert "not shown" in str(caught.value)
        assert server.requests == []

    run(main)


def test_cached_request_heads_follow_each_request(ca: trustme.CA, server: Server) -> None:
    async def main() -> None:
        async with transport(ca, server) as http:
            for token in ("one", "two", "one"):
                response = await http(get("/echo/same", ("Authorization", f"Bearer {token}")))
                assert response.json()["authorization"] == f"Bearer {token}"
            posted = await http(Request("POST", ORIGIN + "/echo/same", (), b"abc"))
            assert posted.json()["content_length"] == "3"
            # What urlsplit would drop (a fragment, a bare "?") is dropped on
            # URLs of a cached origin too.
            assert (await http(get("/echo/frag?a=1#part"))).json()["path"] == "/echo/frag?a=1"
            assert (await http(get("/echo/bare?"))).json()["path"] == "/echo/bare"
            # A header with CR/LF is refused on a URL whose head is cached.
            with pytest.raises(TransportFailure, match="not shown"):
                await http(get("/echo/same", ("Authorization", "Bearer x\r\nX-Evil: 1")))
        assert [p for _, _, p in server.seen()] == [
            "/echo/same",
            "/echo/same",
            "/echo/same",
            "/echo/same",
            "/echo/frag?a=1",
            "/echo/bare",
        ]

    run(main)


@pytest.mark.parametrize("tls", [True, False])
def test_a_request_is_a_checkpoint(
    ca: trustme.CA, server: Server, plain_server: Server, tls: bool
) -> None:
    async def main() -> None:
        if tls:
            http, request = transport(ca, server), get("/echo")
        else:
            http = H11Transport()
            request = Request("GET", f"http://127.0.0.1:{plain_server.port}/echo", ())
        async with http:
            assert (await http(request)).status == 200  # a kept-alive connection
            with trio.CancelScope() as scope:
                scope.cancel()
                await http(request)
            assert scope.cancelled_caught
            assert (await http(request)).status == 200
        seen = (server if tls else plain_server).seen()
        assert [c for c, _, _ in seen] == [1, 2]  # not sent when cancelled, then not reused

    run(main)
