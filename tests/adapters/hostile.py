"""A misbehaving HTTPS server on loopback, and the three transports driven alike.

:class:`Hostile` is a raw TLS server (a trustme certificate for ``HOST``; one
thread per connection) that parses each request itself and answers it the way
the test's ``plan`` says: any bytes, cut at any point, closed with or without
TLS ``close_notify`` or reset, dripped, stalled, preceded or followed by bytes
nobody asked for.  Every request carries an ``X-Request-Id``; the server
counts how many times each id arrived (``seen``), which is what tells a
request processed twice, and its default answer echoes the id, which is what
tells a caller handed another request's answer.

:class:`Caller` sends through one transport (``stdlib``, ``urllib3`` or
``trio``, the last on an event loop in a background thread) and returns the
response or the transport's failure.
"""

from __future__ import annotations

import fcntl
import json
import socket
import ssl
import struct
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Union

import trustme

from cfauth import Response, TransportFailure
from cfauth_core import Request

HOST = "acme.checkfront.com"
KINDS = ["stdlib", "urllib3", "trio"]


@dataclass
class Received:
    """A request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    conn: int  # the connection's number, from 1
    index: int  # its position on that connection, from 0

    @property
    def rid(self) -> str:
        return self.headers.get("x-request-id", "")


# What a plan tells the server to do, in order.
@dataclass
class Send:
    data: bytes


@dataclass
class Drip:
    data: bytes
    interval: float


@dataclass
class Sleep:
    seconds: float


@dataclass
class Signal:
    event: threading.Event


@dataclass
class Close:
    how: str = "notify"  # "notify" (TLS close_notify), "eof" (FIN, no close_notify), "reset"


Step = Union[Send, Drip, Sleep, Signal, Close]
Plan = Callable[[Received], Sequence[Step]]


def answer(
    rid: str,
    *,
    status: int = 200,
    pad: int = 0,
    headers: Sequence[tuple[str, str]] = (),
    framing: str = "length",
) -> bytes:
    """A complete response echoing ``rid``: ``framing`` is ``length``
    (Content-Length), ``chunked`` or ``close`` (no length: ends at close)."""
    body = json.dumps({"id": rid, "pad": "x" * pad, "end": True}).encode()
    head = [f"HTTP/1.1 {status} Whatever", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in headers]
    if framing == "length":
        head.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        half = len(body) // 2
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])
        )
        payload += b"0\r\n\r\n"
    else:
        head.append("Connection: close")
        payload = body
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def ok(request: Received) -> list[Step]:
    """The plan of a well-behaved server."""
    return [Send(answer(request.rid))]


class Hostile:
    """The server: ``plan`` answers each request; ``greet`` (if set) says what
    to do on a new connection before reading anything."""

    def __init__(self, ca: trustme.CA) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST).configure_cert(self.context)
        self.plan: Plan = ok
        self.greet: Callable[[int], Sequence[Step]] | None = None
        self.handshake = True  # False: accept TCP but never answer the TLS handshake
        self.seen: Counter[str] = Counter()
        self.log: list[Received] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._closed = False
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def resolve(self) -> dict[str, str]:
        return {f"{HOST}:443": f"127.0.0.1:{self.port}"}

    def processed(self, rid: str) -> int:
        with self.lock:
            return self.seen[rid]

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        with suppress(OSError):
            self.listener.close()
        with self.lock:
            socks = list(self._socks)
        for sock in socks:
            with suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # wakes recv()
        self._acceptor.join(5)
        for thread in list(self._threads):
            thread.join(5)

    # -- the server side ---------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
                self._socks.append(raw)
            thread = threading.Thread(target=self._serve, args=(raw, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket, number: int) -> None:
        sock: socket.socket = raw
        try:
            raw.settimeout(10)
            if not self.handshake:
                raw.recv(65536)  # the ClientHello, never answered
                self._stop.wait(10)
                return
            sock = self.context.wrap_socket(raw, server_side=True)
            with self.lock:
                self._socks.append(sock)
            if self.greet is not None and self._run(sock, self.greet(number)):
                return
            buffer = b""
            index = 0
            while True:
                request, buffer = _read_request(sock, buffer, number, index)
                if request is None:
                    return
                with self.lock:
                    self.seen[request.rid] += 1
                    self.log.append(request)
                index += 1
                if self._run(sock, self.plan(request)):
                    return
        except (OSError, ValueError):
            pass
        finally:
            with suppress(OSError):
                sock.close()

    def _run(self, sock: socket.socket, steps: Sequence[Step]) -> bool:
        """Perform ``steps``; ``True`` when the connection was closed."""
        for number, step in enumerate(steps):
            if isinstance(step, Send):
                sock.sendall(step.data)
            elif isinstance(step, Drip):
                for i in range(len(step.data)):
                    sock.sendall(step.data[i : i + 1])
                    time.sleep(step.interval)
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            elif isinstance(step, Signal):
                _delivered(sock)
                step.event.set()
            else:
                _close(sock, step.how)
                for later in steps[number + 1 :]:
                    if isinstance(later, Signal):
                        later.event.set()
                return True
        return False


def _delivered(sock: socket.socket) -> None:
    """Wait until the client's kernel has taken every byte sent (nothing left
    unacknowledged in the send queue), so a test can rely on their arrival."""
    for _ in range(2000):
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        if struct.unpack("i", queued)[0] == 0:
            return
        time.sleep(0.001)


def _close(sock: socket.socket, how: str) -> None:
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "notify" and isinstance(sock, ssl.SSLSocket):
        sock.setblocking(False)  # send close_notify, do not wait for the peer's
        with suppress(OSError, ValueError):
            sock.unwrap()
    sock.close()


def _read_request(
    sock: socket.socket, buffer: bytes, conn: int, index: int
) -> tuple[Received | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buffer += data
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buffer += data
    body, buffer = buffer[:length], buffer[length:]
    return Received(method, path, headers, body, conn, index), buffer


@contextmanager
def hostile_server(ca: trustme.CA) -> Iterator[Hostile]:
    server = Hostile(ca)
    try:
        yield server
    finally:
        server.close()


# -- the client side ----------------------------------------------------------------

Outcome = Union[Response, TransportFailure]


@dataclass
class Caller:
    """One transport of ``kind``, sending to the hostile server."""

    kind: str
    server: Hostile
    ca_file: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        options: dict[str, Any] = {
            "ca_file": self.ca_file,
            "resolve": self.server.resolve(),
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
        }
        options.update(self.options)
        self._trio: _TrioThread | None = None
        if self.kind == "stdlib":
            from cfauth.stdlib import HttpClientTransport

            self._send: Callable[[Request], Response] = HttpClientTransport(**options)
        elif self.kind == "urllib3":
            from cfauth.urllib3 import Urllib3Transport

            self._send = Urllib3Transport(**options)
        else:
            self._trio = _TrioThread(options)
            self._send = self._trio.send

    def request(
        self,
        method: str,
        rid: str,
        *,
        path: str = "/api/3.0/booking",
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Request:
        return Request(method, f"https://{HOST}{path}", (("X-Request-Id", rid), *headers), body)

    def call(self, method: str, rid: str, **kwargs: Any) -> Outcome:
        """Send one request; its response, or the transport's failure."""
        try:
            return self._send(self.request(method, rid, **kwargs))
        except TransportFailure as failure:
            return failure

    def send(self, request: Request) -> Outcome:
        try:
            return self._send(request)
        except TransportFailure as failure:
            return failure

    def close(self) -> None:
        if self._trio is not None:
            self._trio.close()
        else:
            self._send.close()  # type: ignore[attr-defined]


class _TrioThread:
    """An :class:`~cfauth.trio.H11Transport` on a trio loop in its own thread."""

    def __init__(self, options: dict[str, Any]) -> None:
        import trio

        self._trio = trio
        self._options = options
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        trio = self._trio
        from cfauth.trio import H11Transport

        async def main() -> None:
            async with H11Transport(**self._options) as transport:
                self.transport = transport
                self.token = trio.lowlevel.current_trio_token()
                self.stop = trio.Event()
                self._ready.set()
                await self.stop.wait()

        try:
            trio.run(main)
        except BaseException as error:  # pragma: no cover - reported by close()
            self._error = error
            self._ready.set()

    def send(self, request: Request) -> Response:
        result: Response = self._trio.from_thread.run(
            self.transport, request, trio_token=self.token
        )
        return result

    def send_many(self, requests: Sequence[Request]) -> list[Outcome]:
        """Send all of ``requests`` at once, one task each."""
        trio = self._trio
        outcomes: list[Outcome | None] = [None] * len(requests)

        async def one(i: int, request: Request) -> None:
            try:
                outcomes[i] = await self.transport(request)
            except TransportFailure as failure:
                outcomes[i] = failure

        async def all_of_them() -> None:
            async with trio.open_nursery() as nursery:
                for i, request in enumerate(requests):
                    nursery.start_soon(one, i, request)

        trio.from_thread.run(all_of_them, trio_token=self.token)
        return [o for o in outcomes if o is not None]

    def close(self) -> None:
        with suppress(Exception):
            self._trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
        self._thread.join(10)
        assert self._error is None, self._error


def body_id(outcome: Outcome) -> str | None:
    """The request id a response echoes (``None`` for a failure or a body
    that is not a complete echo)."""
    if not isinstance(outcome, Response):
        return None
    try:
        payload = json.loads(outcome.body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("end") is not True:
        return None
    rid = payload.get("id")
    return rid if isinstance(rid, str) else None
