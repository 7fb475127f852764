"""A TLS server on 127.0.0.1 that records the exact bytes of every request.

The sandbox parses requests with ``http.server``, which would hide how a
hostile value was framed on the wire; this server keeps each request's head
and body as bytes, with the TLS server name the client sent, and answers from
a queue of scripted responses (by default a Checkfront ``OK`` envelope).
Certificates for every host name come from one trustme CA, so clients reach
it through the ``resolve`` override with SNI and certificate checks intact.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass

import trustme

OK_BODY = json.dumps({"request": {"status": "OK"}, "items": {}}).encode()


@dataclass(frozen=True)
class Seen:
    """One request as it arrived: the TLS server name, the head (request
    line and header lines, CRLF-separated, without the blank line) and the body."""

    sni: str | None
    head: bytes
    body: bytes

    @property
    def lines(self) -> list[bytes]:
        return self.head.split(b"\r\n")

    @property
    def request_line(self) -> bytes:
        return self.lines[0]

    def header(self, name: str) -> list[bytes]:
        wanted = name.lower().encode()
        return [
            line.split(b":", 1)[1].strip()
            for line in self.lines[1:]
            if line.split(b":", 1)[0].strip().lower() == wanted
        ]

    @property
    def raw(self) -> bytes:
        return self.head + b"\r\n\r\n" + self.body


def response(status: int, body: bytes = OK_BODY, *headers: tuple[str, str]) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers]
    if not any(name.lower() == "content-type" for name, _ in headers):
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class RawServer:
    """Serve ``hosts`` over TLS on an ephemeral loopback port, recording requests."""

    def __init__(self, hosts: tuple[str, ...]) -> None:
        self.hosts = hosts
        self.ca = trustme.CA()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*hosts).configure_cert(self._context)
        self._context.sni_callback = self._on_sni
        self.seen: list[Seen] = []
        self.answers: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def resolve(self) -> dict[str, str]:
        return {f"{host}:443": f"127.0.0.1:{self.port}" for host in self.hosts}

    def client_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ca.configure_trust(context)
        return context

    def answer(self, *responses: bytes) -> None:
        """Queue responses for the next requests (then the default ``OK``)."""
        with self._lock:
            self.answers.extend(responses)

    def close(self) -> None:
        self._closing = True
        self._accepting.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    # -- serving ----------------------------------------------------------------------

    def _on_sni(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
        self._local.sni = name

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # so close() is noticed promptly
        while not self._closing:
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        self._local.sni = None
        try:
            with self._context.wrap_socket(raw, server_side=True) as tls:
                sni = self._local.sni
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = tls.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value.strip())
                    while len(buffer) < length:
                        chunk = tls.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    body, buffer = buffer[:length], buffer[length:]
                    with self._lock:
                        self.seen.append(Seen(sni, head, body))
                        reply = self.answers.popleft() if self.answers else response(200)
                    tls.sendall(reply)
        except (OSError, ssl.SSLError, ValueError):
            with contextlib.suppress(OSError):
                raw.close()
