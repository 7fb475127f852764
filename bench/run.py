#!/usr/bin/env python3
"""cfauth benchmarks: the core and every driver, side by side with the peers, in one run.

    python3 bench/run.py [--quick] [--json bench/results/latest.json]
    python3 bench/run.py --smoke            # CI: cfauth paths only, a few hundred requests
    python3 bench/run.py --profile urllib3  # cProfile of cfauth's side of one figure

Without ``--smoke`` the harness sets up its own environment first: it creates
``bench/.venv`` (cfauth[all] editable plus the peers: authlib, oauthlib,
requests, requests-oauthlib, httpx, trustme) and re-runs itself there, and
installs nginx with apt when it is missing.  The server is nginx on 127.0.0.1
over HTTPS (a trustme certificate for ``acme.checkfront.com``), serving fixed
JSON; if nginx cannot be had, the in-process sandbox is used instead, with a
loud warning.  See bench/README.md for what each figure measures.
"""

# The peers and cfauth are imported inside functions on purpose: the harness
# starts under any python3 and re-executes itself in bench/.venv.
# ruff: noqa: PLC0415, S105, S603, S606, S607

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import itertools
import json
import os
import platform
import pstats
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
PEERS = ("authlib", "oauthlib", "requests", "requests-oauthlib", "httpx", "trustme")
DEFAULT_JSON = BENCH / "results" / "latest.json"

HOST = "acme.checkfront.com"
API_PATH = "/api/3.0/booking"
API_BODY = b'{"version":"3.0","request":{"status":"OK"}}'
ACCESS_TOKEN = "bench-access-token-0123456789abcdef0123456789abcdef"
REFRESH_TOKEN = "bench-refresh-token-0123456789abcdef0123456789abcde"
CLIENT_ID = "bench-client-id"
CLIENT_SECRET = "bench-client-secret-0123456789"  # throwaway values, like the tokens
REDIRECT_URI = "https://app.example/callback"
TOKEN_BODY = json.dumps(
    {
        "access_token": ACCESS_TOKEN,
        "refresh_token": REFRESH_TOKEN,
        "expires_in": 14000,
        "token_type": "bearer",
    },
    separators=(",", ":"),
)
POOL_SIZE = 10  # cfauth's default per-origin pool; the peers get the same limit
CONCURRENCY = 64
STAMPEDE_TASKS = 500
STAMPEDE_THREADS = 32
TARGET_REPEAT_S = 0.6


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- environment: the venv and nginx ------------------------------------------------------


def in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv() -> Path:
    """Create (or refresh) bench/.venv with cfauth[all] and the peers; return its python."""
    python = VENV / "bin" / "python"
    marker = VENV / ".bench-requirements"
    wanted = "\n".join([f"-e {ROOT}[all]", *PEERS]) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log(f"setting up {VENV} (cfauth[all] and the peers: {', '.join(PEERS)}) ...")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[all]", *PEERS], check=True)
    marker.write_text(wanted)
    return python


def find_nginx() -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which("nginx", path=path)


def ensure_nginx(install: bool) -> str | None:
    """The nginx binary; installed with apt (as root) when missing and ``install``."""
    found = find_nginx()
    if found or not install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log("nginx is missing and cannot be installed here (needs root and apt-get)")
        return None
    log("installing nginx with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)  # type: ignore[call-overload]
    for package in ("nginx-light", "nginx"):
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", package],
            check=False,
            **quiet,  # type: ignore[call-overload]
        )
        if done.returncode == 0 and find_nginx():
            break
    return find_nginx()


# -- the servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """What the benchmarks need of a server: where it is, which CA to trust, a
    grant that works on it, and how many token requests it has answered."""

    kind = "?"
    port = 0
    ca_file = ""
    client_id = CLIENT_ID
    client_secret = CLIENT_SECRET

    @property
    def resolve(self) -> dict[str, str]:
        return {f"{HOST}:443": f"127.0.0.1:{self.port}"}

    @property
    def url(self) -> str:
        """What the peers connect to (SNI and ``Host`` are set to HOST separately)."""
        return f"https://127.0.0.1:{self.port}{API_PATH}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def grant(self) -> tuple[str, str]:
        """An access token and a refresh token valid on this server."""
        return ACCESS_TOKEN, REFRESH_TOKEN

    def token_requests(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class NginxServer(Server):
    kind = "nginx"

    def __init__(self, binary: str) -> None:
        import trustme

        self.dir = Path(tempfile.mkdtemp(prefix="cfauth-bench-nginx-"))
        self.dir.chmod(0o755)
        ca = trustme.CA()
        leaf = ca.issue_cert(HOST, "127.0.0.1")
        self.ca_file = str(self.dir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        leaf.private_key_pem.write_to_path(str(self.dir / "key.pem"))
        with (self.dir / "cert.pem").open("wb") as chain:
            for pem in leaf.cert_chain_pems:
                chain.write(pem.bytes())
        self.token_log = self.dir / "token.log"
        self.token_log.touch()
        self.version = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, check=False
        ).stderr.strip()
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(self._config())
        daemon = ("-g", "daemon off;")
        self.process = subprocess.Popen(
            [
                binary,
                "-p",
                str(self.dir),
                "-c",
                str(conf),
                "-e",
                str(self.dir / "error.log"),
                *daemon,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"nginx exited at start: {error.strip()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("nginx did not start listening within 15 s") from None
                time.sleep(0.05)

    def _config(self) -> str:
        d = self.dir
        token = TOKEN_BODY.replace("'", "\\'")
        api = API_BODY.decode()
        return f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {HOST} 127.0.0.1;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location /api/3.0/ {{
            default_type application/json;
            return 200 '{api}';
        }}
        location = /oauth/token/ {{
            access_log {d}/token.log;
            default_type application/json;
            return 200 '{token}';
        }}
        location / {{ return 404; }}
    }}
}}
"""

    def token_requests(self) -> int:
        with self.token_log.open("rb") as lines:
            return sum(1 for _ in lines)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish, close, exit
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class SandboxServer(Server):
    kind = "sandbox"

    def __init__(self) -> None:
        from cfauth.sandbox import Sandbox

        self.sandbox = Sandbox(accounts=("acme",)).start()
        self.port = self.sandbox.port
        self.ca_file = self.sandbox.ca_file
        account = self.sandbox.account("acme")
        self.client_id, self.client_secret = account.client_id, account.client_secret
        self.version = "cfauth.sandbox (in-process)"
        self._access, _ = self.grant()

    def grant(self) -> tuple[str, str]:
        issued = self.sandbox.issue_tokens("acme")
        return str(issued["access_token"]), str(issued["refresh_token"])

    def token_requests(self) -> int:
        return len(self.sandbox.token_requests())

    def close(self) -> None:
        self.sandbox.stop()


SANDBOX_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: nginx is not available: the figures below were measured against the in-process !!
!! cfauth sandbox.  It shares this process's GIL and is far slower than nginx, so it is the !!
!! bottleneck: the request rates and ratios are NOT representative.  Install nginx and     !!
!! run again (the harness installs it with apt when it runs as root).                      !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


# -- measuring -------------------------------------------------------------------------------


Run = Callable[[int], int]  # n operations -> elapsed ns
ARun = Callable[[int], Awaitable[int]]


@dataclass
class Side:
    label: str
    run: Run


@dataclass
class ASide:
    label: str
    run: ARun


@dataclass
class Settings:
    repeats: int = 5
    quick: bool = False
    smoke: bool = False
    quick_n: int = 300  # operations per repeat for network figures in --quick/--smoke
    quick_core_n: int = 20_000

    def fixed_n(self, core: bool) -> int | None:
        if self.quick or self.smoke:
            return self.quick_core_n if core else self.quick_n
        return None


def calibrate(run: Run, target_s: float = TARGET_REPEAT_S) -> int:
    """Operations per repeat so that one repeat takes about ``target_s``."""
    n = 8
    while True:
        elapsed = run(n)
        if elapsed >= 0.12e9 or n >= 50_000_000:
            return max(5, round(n * target_s * 1e9 / max(elapsed, 1)))
        n *= 4


async def acalibrate(run: ARun, target_s: float = TARGET_REPEAT_S) -> int:
    n = 8
    while True:
        elapsed = await run(n)
        if elapsed >= 0.12e9 or n >= 50_000_000:
            return max(5, round(n * target_s * 1e9 / max(elapsed, 1)))
        n *= 4


@dataclass
class Series:
    """One side of a comparison: ns per operation, one figure per repeat."""

    label: str
    n: int
    ns_per_op: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.ns_per_op)


def interleave(sides: Sequence[Side], settings: Settings, core: bool = False) -> list[Series]:
    """Run every side ``repeats`` times, in turn (ABAB...), after a warm-up."""
    fixed = settings.fixed_n(core)
    series = []
    for side in sides:
        side.run(max(1, (fixed or 50) // 10))  # warm-up: connections, caches
        series.append(Series(side.label, fixed if fixed is not None else calibrate(side.run)))
    for _ in range(settings.repeats):
        for side, result in zip(sides, series, strict=True):
            result.ns_per_op.append(side.run(result.n) / result.n)
    return series


async def ainterleave(sides: Sequence[ASide], settings: Settings) -> list[Series]:
    fixed = settings.fixed_n(core=False)
    series = []
    for side in sides:
        await side.run(max(1, (fixed or 50) // 10))
        n = fixed if fixed is not None else await acalibrate(side.run)
        series.append(Series(side.label, n))
    for _ in range(settings.repeats):
        for side, result in zip(sides, series, strict=True):
            result.ns_per_op.append(await side.run(result.n) / result.n)
    return series


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- the report ------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    what: str
    cfauth: str
    peer: str
    ratio: str
    target: str
    met: bool | None  # None: no target


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)  # profile names of missed targets
    judge: bool = True  # smoke runs (one short repeat) show the ratios but judge no target
    failures: list[str] = field(default_factory=list)

    def compare(
        self,
        figure: str,
        what: str,
        series: list[Series],
        *,
        unit: str,
        targets: dict[str, float] | None = None,
        profile: str | None = None,
    ) -> None:
        """Rows comparing series[0] (cfauth) with each other series.

        The ratio is cfauth's speed over the peer's: the median, over the repeats,
        of (peer ns/op) / (cfauth ns/op) measured back to back in the same round.
        """
        targets = targets or {}
        mine = series[0]
        record: dict[str, Any] = {
            "what": what,
            "unit": unit,
            "sides": {
                s.label: {"n_per_repeat": s.n, "ns_per_op": s.ns_per_op, "median_ns": s.median}
                for s in series
            },
            "ratios": {},
        }
        for peer in series[1:]:
            rounds = [p / m for p, m in zip(peer.ns_per_op, mine.ns_per_op, strict=True)]
            ratio = statistics.median(rounds)
            target = targets.get(peer.label) if self.judge else None
            met = None if target is None else ratio >= target
            record["ratios"][peer.label] = {
                "per_round": rounds,
                "median": ratio,
                "target": target,
                "met": met,
            }
            self.rows.append(
                Row(
                    figure,
                    f"{what} vs {peer.label}",
                    _fmt(mine.median, unit),
                    _fmt(peer.median, unit),
                    f"{ratio:.2f}x",
                    "-" if target is None else f">= {target:g}x",
                    met,
                )
            )
            if met is False and profile is not None and profile not in self.missed:
                self.missed.append(profile)
        self.data[figure] = record

    def table(self) -> str:
        header = ("fig", "what", "cfauth", "peer", "ratio", "target", "")
        cells = [header] + [
            (
                r.figure,
                r.what,
                r.cfauth,
                r.peer,
                r.ratio,
                r.target,
                "" if r.met is None else ("met" if r.met else "MISSED"),
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = []
        for index, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _fmt(ns_per_op: float, unit: str) -> str:
    if unit == "req/s":
        return f"{1e9 / ns_per_op:,.0f} req/s"
    return f"{ns_per_op:,.0f} ns"


# -- cfauth building blocks -------------------------------------------------------------------


def fresh_tokens(server: Server, *, expired: bool = False) -> Any:
    from cfauth_core import TokenSet

    access, refresh = server.grant()
    now = time.time()
    expires = now - 10 if expired else now + 14000
    return TokenSet(access, refresh, expires, now + 14 * 86400, now - 14000)


def oauth_app(server: Server) -> Any:
    from cfauth_core import OAuth2App

    return OAuth2App(server.client_id, server.client_secret, REDIRECT_URI)


def static_headers(access: str) -> list[tuple[str, str]]:
    """Exactly what cfauth sends on an API call (bar Host), for the raw baselines."""
    from cfauth_core import Account, CallRequested, Machine, Send, TokenSet

    tokens = TokenSet(access, "r" * 20, 1e12, 1e12, 0.0)
    machine = Machine(Account.parse("acme"), oauth_app(Server()), tokens)
    send = machine.handle(CallRequested(now=1.0, method="GET", path="booking"))[0]
    assert isinstance(send, Send)
    return list(send.request.headers)


def peer_token(access: str, refresh: str) -> dict[str, Any]:
    now = time.time()
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": 14000,
        "expires_at": int(now + 14000),
    }


def _check(status: int, what: str) -> None:
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status} (expected 200)")


def loop(call: Callable[[], int], what: str) -> Run:
    """A timed loop of ``call`` (returns an HTTP status) for ``n`` operations."""

    def run(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            status = call()
            if status != 200:
                _check(status, what)
        return time.perf_counter_ns() - start

    return run


def aloop(call: Callable[[], Awaitable[int]], what: str) -> ARun:
    async def run(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            status = await call()
            if status != 200:
                _check(status, what)
        return time.perf_counter_ns() - start

    return run


def aconcurrent(call: Callable[[], Awaitable[int]], what: str, tasks: int) -> ARun:
    """``n`` operations spread over ``tasks`` concurrent trio tasks."""
    import trio

    async def run(n: int) -> int:
        per_task = [n // tasks + (1 if i < n % tasks else 0) for i in range(tasks)]

        async def worker(count: int) -> None:
            for _ in range(count):
                status = await call()
                if status != 200:
                    _check(status, what)

        start = time.perf_counter_ns()
        async with trio.open_nursery() as nursery:
            for count in per_task:
                nursery.start_soon(worker, count)
        return time.perf_counter_ns() - start

    return run


# -- figure 1: the core cycle -----------------------------------------------------------------


def core_sides(peers: bool) -> list[Side]:
    from cfauth_core import Account, CallRequested, Machine, ResponseReceived, TokenSet

    tokens = TokenSet(ACCESS_TOKEN, REFRESH_TOKEN, 1e12, 1e12, 0.0)
    machine = Machine(Account.parse("acme"), oauth_app(Server()), tokens)
    headers = [("Content-Type", "application/json")]
    handle = machine.handle

    def cfauth_cycle(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            send = handle(CallRequested(now=1000.0, method="GET", path="booking"))[0]
            handle(
                ResponseReceived(
                    now=1000.0,
                    request_id=send.request_id,  # type: ignore[attr-defined]
                    status=200,
                    headers=headers,
                    body=API_BODY,
                )
            )
        return time.perf_counter_ns() - start

    sides = [Side("cfauth core", cfauth_cycle)]
    if not peers:
        return sides

    import httpx
    from oauthlib.oauth2 import WebApplicationClient

    oauth_client = WebApplicationClient(CLIENT_ID, token=peer_token(ACCESS_TOKEN, REFRESH_TOKEN))
    add_token = oauth_client.add_token
    uri = f"https://{HOST}{API_PATH}"

    def oauthlib_cycle(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            add_token(uri, "GET", None, {"Accept": "application/json"})
        return time.perf_counter_ns() - start

    auth = httpx.BasicAuth(CLIENT_ID, CLIENT_SECRET)
    request = httpx.Request("GET", uri, headers={"Accept": "application/json"})
    response = httpx.Response(200, content=API_BODY, request=request)
    flow_of = auth.sync_auth_flow

    def httpx_cycle(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            flow = flow_of(request)
            next(flow)
            with contextlib.suppress(StopIteration):
                flow.send(response)
        return time.perf_counter_ns() - start

    sides.append(Side("oauthlib add_token", oauthlib_cycle))
    sides.append(Side("httpx BasicAuth flow", httpx_cycle))
    return sides


def figure_core(report: Report, settings: Settings, peers: bool) -> None:
    series = interleave(core_sides(peers), settings, core=True)
    if len(series) == 1:
        report.data["1"] = {"cfauth core ns/cycle": series[0].ns_per_op}
        report.rows.append(Row("1", "core cycle", _fmt(series[0].median, "ns"), "", "", "", None))
        return
    report.compare(
        "1",
        "core cycle (bearer)",
        series,
        unit="ns",
        targets={"oauthlib add_token": 3.0, "httpx BasicAuth flow": 2.0},
        profile="core",
    )


# -- figures 2 and 3: the blocking drivers ---------------------------------------------------


def urllib3_sides(server: Server, stack: contextlib.ExitStack, peers: bool) -> list[Side]:
    import urllib3

    from cfauth import urllib3 as cf_urllib3

    access, refresh = server.grant()
    api = cf_urllib3.client(
        "acme",
        oauth_app(server),
        tokens=fresh_tokens(server),
        ssl_context=server.ssl_context(),
        resolve=server.resolve,
        pool_maxsize=POOL_SIZE,
    )
    stack.callback(api.close)
    request = api.request
    sides = [
        Side("cfauth urllib3", loop(lambda: request("GET", "booking", check=False).status, ""))
    ]

    # Raw urllib3: the PoolManager settings and TLS context cfauth.urllib3 uses,
    # the connection to 127.0.0.1 with SNI/certificate check for HOST, as cfauth's.
    manager = urllib3.PoolManager(
        maxsize=POOL_SIZE,
        block=False,
        retries=False,
        timeout=urllib3.Timeout(connect=10.0, read=30.0),
        cert_reqs="CERT_REQUIRED",
        ssl_context=server.ssl_context(),
        server_hostname=HOST,
    )
    stack.callback(manager.clear)
    headers = {"Host": HOST, **dict(static_headers(access))}
    url = server.url

    def raw() -> int:
        response = manager.request(
            "GET", url, headers=headers, redirect=False, preload_content=True, decode_content=False
        )
        response.data  # noqa: B018 - read like the others do
        status: int = response.status
        return status

    sides.append(Side("raw urllib3", loop(raw, "raw urllib3")))
    if not peers:
        return sides

    import requests
    import requests.adapters
    from authlib.integrations.httpx_client import OAuth2Client
    from requests_oauthlib import OAuth2Session

    class SNIAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["server_hostname"] = HOST
            super().init_poolmanager(*args, **kwargs)

    session = OAuth2Session(server.client_id, token=peer_token(access, refresh))
    session.mount("https://", SNIAdapter(pool_maxsize=POOL_SIZE))
    stack.callback(session.close)
    peer_headers = {"Host": HOST, "Accept": "application/json"}
    ca = server.ca_file  # per request: REQUESTS_CA_BUNDLE would override the session's

    def with_requests() -> int:
        status: int = session.get(
            url, headers=peer_headers, allow_redirects=False, verify=ca
        ).status_code
        return status

    client = OAuth2Client(
        server.client_id,
        server.client_secret,
        token=peer_token(access, refresh),
        verify=server.ssl_context(),
        follow_redirects=False,
    )
    stack.callback(client.close)
    sni = {"sni_hostname": HOST}

    def with_httpx() -> int:
        status: int = client.get(url, headers=peer_headers, extensions=sni).status_code
        return status

    sides.append(Side("requests-oauthlib", loop(with_requests, "requests")))
    sides.append(Side("httpx+authlib", loop(with_httpx, "httpx")))
    return sides


def stdlib_sides(server: Server, stack: contextlib.ExitStack) -> list[Side]:
    import http.client

    from cfauth import stdlib as cf_stdlib

    access, _ = server.grant()
    api = cf_stdlib.client(
        "acme",
        oauth_app(server),
        tokens=fresh_tokens(server),
        ssl_context=server.ssl_context(),
        resolve=server.resolve,
    )
    stack.callback(api.close)
    request = api.request
    sides = [Side("cfauth stdlib", loop(lambda: request("GET", "booking", check=False).status, ""))]

    port, context = server.port, server.ssl_context()

    class Connection(http.client.HTTPSConnection):
        """Connects to 127.0.0.1:PORT; SNI and the certificate check are for HOST."""

        def connect(self) -> None:
            sock = socket.create_connection(("127.0.0.1", port), self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = context.wrap_socket(sock, server_hostname=HOST)

    connection = Connection(HOST, 443, timeout=30.0, context=context)
    stack.callback(connection.close)
    headers = dict(static_headers(access))

    def raw() -> int:
        connection.request("GET", API_PATH, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    sides.append(Side("raw http.client", loop(raw, "raw http.client")))
    return sides


def figure_blocking(report: Report, settings: Settings, server: Server, peers: bool) -> None:
    with contextlib.ExitStack() as stack:
        series = interleave(urllib3_sides(server, stack, peers), settings)
    report.compare(
        "2",
        "urllib3 driver, sequential GETs",
        series,
        unit="req/s",
        targets={"raw urllib3": 0.95},
        profile="urllib3",
    )
    with contextlib.ExitStack() as stack:
        series = interleave(stdlib_sides(server, stack), settings)
    report.compare(
        "3",
        "stdlib driver, sequential GETs",
        series,
        unit="req/s",
        targets={"raw http.client": 0.95},
        profile="stdlib",
    )


# -- figures 4 and 5: the trio driver ---------------------------------------------------------


async def trio_sides(
    server: Server, stack: contextlib.AsyncExitStack, peers: bool, tasks: int
) -> list[ASide]:
    """cfauth's trio client, a hand-written trio + h11 loop (sequential only),
    and httpx's AsyncClient with authlib; over ``tasks`` concurrent tasks if > 1."""
    import h11
    import trio

    from cfauth import trio as cf_trio

    access, refresh = server.grant()
    api = cf_trio.client(
        "acme",
        oauth_app(server),
        tokens=fresh_tokens(server),
        ssl_context=server.ssl_context(),
        resolve=server.resolve,
        max_connections_per_origin=POOL_SIZE,
    )
    stack.push_async_callback(api.aclose)
    request = api.request

    async def with_cfauth() -> int:
        return (await request("GET", "booking", check=False)).status

    def spread(call: Callable[[], Awaitable[int]], what: str) -> ARun:
        return aloop(call, what) if tasks == 1 else aconcurrent(call, what, tasks)

    sides = [ASide("cfauth trio", spread(with_cfauth, "cfauth trio"))]

    if tasks == 1:
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        tls = trio.SSLStream(stream, server.ssl_context(), server_hostname=HOST)
        await tls.do_handshake()
        stack.push_async_callback(tls.aclose)
        connection = h11.Connection(our_role=h11.CLIENT)
        message = h11.Request(
            method="GET", target=API_PATH, headers=[("Host", HOST), *static_headers(access)]
        )
        end = h11.EndOfMessage()

        async def raw() -> int:
            await tls.send_all(connection.send(message) + connection.send(end))
            status = 0
            body = []
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(bytes(await tls.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            connection.start_next_cycle()
            return status

        sides.append(ASide("raw trio+h11", aloop(raw, "raw trio+h11")))

    if peers:
        import httpx
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        client = AsyncOAuth2Client(
            server.client_id,
            server.client_secret,
            token=peer_token(access, refresh),
            verify=server.ssl_context(),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
        )
        stack.push_async_callback(client.aclose)
        headers = {"Host": HOST, "Accept": "application/json"}
        sni = {"sni_hostname": HOST}

        async def with_httpx() -> int:
            status: int = (
                await client.get(server.url, headers=headers, extensions=sni)
            ).status_code
            return status

        sides.append(ASide("httpx+authlib (trio)", spread(with_httpx, "httpx")))
    return sides


def figure_trio(report: Report, settings: Settings, server: Server, peers: bool) -> None:
    import trio

    async def measure(tasks: int) -> list[Series]:
        async with contextlib.AsyncExitStack() as stack:
            return await ainterleave(await trio_sides(server, stack, peers, tasks), settings)

    report.compare(
        "4",
        "trio driver, sequential GETs",
        trio.run(measure, 1),
        unit="req/s",
        targets={"raw trio+h11": 0.85, "httpx+authlib (trio)": 2.4},
        profile="trio",
    )
    series = trio.run(measure, CONCURRENCY)
    if len(series) == 1:
        report.data["5"] = {"cfauth trio ns/op": series[0].ns_per_op}
        what = f"trio driver, {CONCURRENCY} tasks"
        report.rows.append(Row("5", what, _fmt(series[0].median, "req/s"), "", "", "", None))
        return
    report.compare(
        "5",
        f"trio driver, {CONCURRENCY} tasks, pool {POOL_SIZE}",
        series,
        unit="req/s",
        profile="trio64",
    )


# -- figure 6: the refresh stampede -----------------------------------------------------------


@dataclass
class Stampede:
    token_requests: int
    latencies_ns: list[int]


def _api_request(server: Server, access: str) -> Any:
    from cfauth_core import Request

    headers = (("Authorization", f"Bearer {access}"), ("Accept", "application/json"))
    return Request("GET", f"https://{HOST}{API_PATH}", headers)


def _refresh_request(server: Server, refresh: str) -> Any:
    import base64

    from cfauth_core import Request

    basic = base64.b64encode(f"{server.client_id}:{server.client_secret}".encode()).decode()
    body = f"grant_type=refresh_token&refresh_token={refresh}".encode()
    headers = (
        ("Authorization", f"Basic {basic}"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Accept", "application/json"),
    )
    return Request("POST", f"https://{HOST}/oauth/token/", headers, body)


def trio_stampede(server: Server, tasks: int, expired: bool) -> Stampede:
    """``tasks`` trio tasks released at once on one client whose token is
    expired (or fresh, for the baseline); the pool is warmed first."""
    import trio
    import trio.testing

    from cfauth import trio as cf_trio
    from cfauth.stores import MemoryGrant
    from cfauth_core import Account, Machine

    async def main() -> Stampede:
        transport = cf_trio.H11Transport(
            ssl_context=server.ssl_context(),
            resolve=server.resolve,
            max_connections_per_origin=POOL_SIZE,
        )
        async with transport:
            warm = _api_request(server, server.grant()[0])
            async with trio.open_nursery() as nursery:
                for _ in range(POOL_SIZE):
                    nursery.start_soon(transport, warm)
            tokens = fresh_tokens(server, expired=expired)
            store = MemoryGrant(tokens)
            machine = Machine(Account.parse("acme"), oauth_app(server), tokens)
            client = cf_trio.Client(cf_trio.Driver(machine, transport, store=store))
            go = trio.Event()
            latencies: list[int] = []
            started = [0]

            async def one() -> None:
                await go.wait()
                response = await client.request("GET", "booking", check=False)
                latencies.append(time.perf_counter_ns() - started[0])
                _check(response.status, "stampede (trio)")

            before = server.token_requests()
            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(one)
                await trio.testing.wait_all_tasks_blocked()
                started[0] = time.perf_counter_ns()
                go.set()
            return Stampede(server.token_requests() - before, latencies)

    return trio.run(main)


def thread_stampede(server: Server, threads: int, expired: bool) -> Stampede:
    """``threads`` threads released at once (a barrier) on one blocking client."""
    from cfauth import urllib3 as cf_urllib3
    from cfauth.stores import MemoryGrant
    from cfauth.sync import Client, Driver
    from cfauth_core import Account, Machine

    transport = cf_urllib3.Urllib3Transport(
        ssl_context=server.ssl_context(), resolve=server.resolve, pool_maxsize=threads
    )
    try:
        warm = _api_request(server, server.grant()[0])
        gate = threading.Barrier(threads)

        def warm_one() -> None:
            gate.wait()
            transport(warm)

        workers = [threading.Thread(target=warm_one) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

        tokens = fresh_tokens(server, expired=expired)
        machine = Machine(Account.parse("acme"), oauth_app(server), tokens)
        client = Client(Driver(machine, transport, store=MemoryGrant(tokens)))
        barrier = threading.Barrier(threads)
        latencies: list[int] = []
        errors: list[BaseException] = []

        def one() -> None:
            barrier.wait()
            start = time.perf_counter_ns()
            try:
                response = client.request("GET", "booking", check=False)
                _check(response.status, "stampede (threads)")
            except BaseException as error:
                errors.append(error)
                raise
            latencies.append(time.perf_counter_ns() - start)

        before = server.token_requests()
        workers = [threading.Thread(target=one) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if errors:
            raise errors[0]
        return Stampede(server.token_requests() - before, latencies)
    finally:
        transport.close()


def refresh_rtt_ns(server: Server, repeats: int = 21) -> dict[str, float]:
    """The median time of one refresh round trip (POST /oauth/token/ on a warm
    connection), through cfauth's trio and urllib3 transports."""
    import trio

    from cfauth import trio as cf_trio
    from cfauth import urllib3 as cf_urllib3

    def refresh_request() -> Any:  # a new grant each time: the sandbox rotates refresh tokens
        return _refresh_request(server, server.grant()[1])

    async def with_trio() -> float:
        async with cf_trio.H11Transport(
            ssl_context=server.ssl_context(), resolve=server.resolve
        ) as transport:
            await transport(_api_request(server, server.grant()[0]))
            times = []
            for _ in range(repeats):
                request = refresh_request()
                start = time.perf_counter_ns()
                _check((await transport(request)).status, "refresh round trip")
                times.append(time.perf_counter_ns() - start)
            return statistics.median(times)

    def with_urllib3() -> float:
        with cf_urllib3.Urllib3Transport(
            ssl_context=server.ssl_context(), resolve=server.resolve
        ) as transport:
            transport(_api_request(server, server.grant()[0]))
            times = []
            for _ in range(repeats):
                request = refresh_request()
                start = time.perf_counter_ns()
                _check(transport(request).status, "refresh round trip")
                times.append(time.perf_counter_ns() - start)
            return statistics.median(times)

    return {"trio": trio.run(with_trio), "urllib3": with_urllib3()}


def figure_stampede(report: Report, settings: Settings, server: Server) -> None:
    rtt = refresh_rtt_ns(server)
    runs = (
        ("6a", "trio", f"{STAMPEDE_TASKS} trio tasks", rtt["trio"], STAMPEDE_TASKS),
        (
            "6b",
            "threads",
            f"{STAMPEDE_THREADS} threads (urllib3)",
            rtt["urllib3"],
            STAMPEDE_THREADS,
        ),
    )
    repeats = 1 if settings.smoke else settings.repeats
    for figure, kind, what, one_rtt, count in runs:
        expired_runs: list[Stampede] = []
        fresh_runs: list[Stampede] = []
        for _ in range(repeats):
            run = trio_stampede if kind == "trio" else thread_stampede
            expired_runs.append(run(server, count, True))
            fresh_runs.append(run(server, count, False))
        tokens = [s.token_requests for s in expired_runs]
        fresh_tokens_made = [s.token_requests for s in fresh_runs]
        p50 = [percentile(s.latencies_ns, 50) for s in expired_runs]
        p99 = [percentile(s.latencies_ns, 99) for s in expired_runs]
        base50 = [percentile(s.latencies_ns, 50) for s in fresh_runs]
        base99 = [percentile(s.latencies_ns, 99) for s in fresh_runs]
        added50 = statistics.median(a - b for a, b in zip(p50, base50, strict=True))
        added99 = statistics.median(a - b for a, b in zip(p99, base99, strict=True))
        ok = all(t == 1 for t in tokens) and all(t == 0 for t in fresh_tokens_made)
        report.data[figure] = {
            "what": f"refresh stampede, {what}, expired token vs fresh token",
            "token_requests_per_repeat": tokens,
            "token_requests_fresh_baseline": fresh_tokens_made,
            "refresh_round_trip_ns": one_rtt,
            "expired_p50_ns": p50,
            "expired_p99_ns": p99,
            "fresh_p50_ns": base50,
            "fresh_p99_ns": base99,
            "added_p50_ns_median": added50,
            "added_p99_ns_median": added99,
            "latencies_ns": [s.latencies_ns for s in expired_runs],
        }
        report.rows.append(
            Row(
                figure,
                f"stampede, {what}: token requests",
                ", ".join(map(str, tokens)),
                "",
                "",
                "= 1 each",
                ok,
            )
        )
        report.rows.append(
            Row(
                figure,
                f"stampede, {what}: added p50 / p99 vs fresh token",
                f"{added50 / 1e6:+.2f} / {added99 / 1e6:+.2f} ms",
                f"1 refresh RTT {one_rtt / 1e6:.2f} ms",
                f"{added50 / one_rtt:.1f} / {added99 / one_rtt:.1f} RTT",
                "",
                None,
            )
        )
        report.rows.append(
            Row(
                figure,
                f"stampede, {what}: p50 / p99 expired (fresh)",
                f"{statistics.median(p50) / 1e6:.2f} / {statistics.median(p99) / 1e6:.2f} ms",
                f"({statistics.median(base50) / 1e6:.2f} / "
                f"{statistics.median(base99) / 1e6:.2f} ms)",
                "",
                "",
                None,
            )
        )
        if not ok:
            report.failures.append(f"{figure}: token requests {tokens} (must be 1 each)")


# -- figure 9: httpx with CheckfrontAuth ------------------------------------------------------


def httpx_transports(server: Server, limit: int) -> tuple[Any, Any]:
    """An httpx transport and an async one (anyio: asyncio or trio) whose
    connections go to 127.0.0.1:PORT for HOST, with SNI, the certificate check
    and ``Host`` for HOST (httpx has no resolve option: an httpcore backend
    maps the address)."""
    import httpcore
    import httpx

    target = ("127.0.0.1", server.port)

    class Resolving(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self.backend = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
            return self.backend.connect_tcp(*target, *args, **kwargs)

    class AsyncResolving(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.backend = httpcore.AnyIOBackend()

        async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
            return await self.backend.connect_tcp(*target, *args, **kwargs)

        async def sleep(self, seconds: float) -> None:
            await self.backend.sleep(seconds)

    context = server.ssl_context()
    sync = httpx.HTTPTransport(verify=context)
    sync._pool = httpcore.ConnectionPool(
        ssl_context=context, network_backend=Resolving(), max_connections=limit
    )
    asynchronous = httpx.AsyncHTTPTransport(verify=context)
    asynchronous._pool = httpcore.AsyncConnectionPool(
        ssl_context=context, network_backend=AsyncResolving(), max_connections=limit
    )
    return sync, asynchronous


def in_memory_transport() -> Any:
    """An httpx transport that answers every request with a prebuilt 200 (no
    network: what is left is httpx's and the auth's own work)."""
    import httpx

    body = API_BODY

    class InMemory(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, headers={"Content-Type": "application/json"}, content=body)

    return InMemory()


def httpx_clients(
    server: Server, peers: bool, asynchronous: bool, in_memory: bool = False
) -> list[tuple[str, Any]]:
    """(label, client) for each side: CheckfrontAuth, a static Authorization
    header (the floor: no auth flow at all), and authlib's OAuth2Client; every
    client on the same kind of transport, with the same pool limit."""
    import httpx

    from cfauth.httpx import CheckfrontAuth

    access, refresh = server.grant()
    base = f"https://{HOST}/api/3.0/"
    clients: list[tuple[str, Any]] = []

    def transport() -> Any:
        if in_memory:
            return in_memory_transport()
        return httpx_transports(server, POOL_SIZE)[1 if asynchronous else 0]

    kind = httpx.AsyncClient if asynchronous else httpx.Client
    auth = CheckfrontAuth("acme", oauth_app(server), tokens=fresh_tokens(server))
    clients.append(("cfauth httpx", kind(base_url=base, auth=auth, transport=transport())))
    static = {"Authorization": f"Bearer {access}", "Accept": "application/json"}
    clients.append(
        ("httpx static header", kind(base_url=base, headers=static, transport=transport()))
    )
    if peers:
        from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client

        peer = AsyncOAuth2Client if asynchronous else OAuth2Client
        clients.append(
            (
                "httpx+authlib",
                peer(
                    server.client_id,
                    server.client_secret,
                    token=peer_token(access, refresh),
                    base_url=base,
                    transport=transport(),
                ),
            )
        )
    return clients


def asyncio_concurrent(call: Callable[[], Awaitable[int]], what: str, tasks: int) -> ARun:
    """``n`` operations spread over ``tasks`` concurrent asyncio tasks."""
    import asyncio

    async def run(n: int) -> int:
        per_task = [n // tasks + (1 if i < n % tasks else 0) for i in range(tasks)]

        async def worker(count: int) -> None:
            for _ in range(count):
                status = await call()
                if status != 200:
                    _check(status, what)

        start = time.perf_counter_ns()
        await asyncio.gather(*(worker(count) for count in per_task))
        return time.perf_counter_ns() - start

    return run


def figure_httpx(report: Report, settings: Settings, server: Server, peers: bool) -> None:
    import asyncio

    clients = httpx_clients(server, peers, asynchronous=False)
    sides = [
        Side(label, loop(lambda c=client: c.get("booking").status_code, label))
        for label, client in clients
    ]
    try:
        series = interleave(sides, settings)
    finally:
        for _, client in clients:
            client.close()
    floor = {"httpx static header": 0.95, "httpx+authlib": 1.0}
    report.compare(
        "9",
        "httpx.Client + CheckfrontAuth, sequential GETs",
        series,
        unit="req/s",
        targets=floor,
        profile="httpx",
    )

    clients = httpx_clients(server, peers, asynchronous=False, in_memory=True)
    sides = [
        Side(label, loop(lambda c=client: c.get("booking").status_code, label))
        for label, client in clients
    ]
    try:
        series = interleave(sides, settings)
    finally:
        for _, client in clients:
            client.close()
    report.compare(
        "9c",
        "httpx.Client + CheckfrontAuth, in-memory transport (no network)",
        series,
        unit="req/s",
    )

    async def measure() -> list[Series]:
        aclients = httpx_clients(server, peers, asynchronous=True)
        try:
            asides = [
                ASide(
                    label,
                    asyncio_concurrent(
                        lambda c=client: _status(c.get("booking")), label, CONCURRENCY
                    ),
                )
                for label, client in aclients
            ]
            return await ainterleave(asides, settings)
        finally:
            for _, client in aclients:
                await client.aclose()

    report.compare(
        "9b",
        f"httpx.AsyncClient + CheckfrontAuth, {CONCURRENCY} asyncio tasks, pool {POOL_SIZE}",
        asyncio.run(measure()),
        unit="req/s",
        targets=floor,
        profile="httpx64",
    )


async def _status(response: Awaitable[Any]) -> int:
    status: int = (await response).status_code
    return status


# -- figure 7: import time -------------------------------------------------------------------


def _import_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _import_lines(module: str, env: dict[str, str]) -> list[tuple[int, int, str]]:
    """(level, cumulative us, name) for every module ``import module`` imported."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-W", "ignore", "-c", f"import {module}"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stderr
    lines = []
    for line in out.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        name = name[1:]
        level = (len(name) - len(name.lstrip(" "))) // 2
        lines.append((level, int(cumulative), name.strip()))
    return lines


def import_us(module: str, env: dict[str, str], startup: set[str]) -> int:
    """Cumulative import time of ``module`` and what it pulls in (us): the sum of
    the top-level entries that a bare interpreter start does not import."""
    return sum(
        cumulative
        for level, cumulative, name in _import_lines(module, env)
        if level == 0 and name not in startup
    )


def figure_imports(report: Report, settings: Settings, peers: bool) -> None:
    env = _import_env()
    modules = ["cfauth_core"]
    if peers:
        modules += ["oauthlib.oauth2", "authlib.oauth2", "authlib.integrations.httpx_client"]
    for module in modules:  # warm the bytecode cache (PYTHONDONTWRITEBYTECODE is unset)
        for _ in range(2):
            subprocess.run(
                [sys.executable, "-W", "ignore", "-c", f"import {module}"],
                env=env,
                check=True,
                capture_output=True,
            )
    startup = {name for level, _, name in _import_lines("sys", env) if level == 0}
    repeats = max(settings.repeats, 5) if not settings.smoke else 1
    figures: dict[str, list[int]] = {m: [] for m in modules}
    for _ in range(repeats):
        for module in modules:
            figures[module].append(import_us(module, env, startup))
    record: dict[str, Any] = {"what": "cumulative -X importtime, bytecode cached", "us": figures}
    mine = statistics.median(figures["cfauth_core"])
    record["ratios"] = {}
    if len(modules) == 1:
        report.rows.append(
            Row("7", "import cfauth_core", f"{mine / 1000:.1f} ms", "", "", "", None)
        )
    for module in modules[1:]:
        rounds = [p / m for p, m in zip(figures[module], figures["cfauth_core"], strict=True)]
        ratio = statistics.median(rounds)
        record["ratios"][module] = {"per_round": rounds, "median": ratio}
        report.rows.append(
            Row(
                "7",
                f"import cfauth_core vs import {module}",
                f"{mine / 1000:.1f} ms",
                f"{statistics.median(figures[module]) / 1000:.1f} ms",
                f"{ratio:.2f}x",
                "",
                None,
            )
        )
    report.data["7"] = record


# -- figure 8: memory ------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(calls: int, blocks: int, warmup: int) -> dict[str, Any]:
    """RSS growth over ``blocks`` blocks of ``calls`` calls through the sync
    driver and client, over an in-memory transport (a prebuilt 200 response)."""
    from cfauth import Response
    from cfauth.sync import Client, Driver
    from cfauth_core import Account, Machine, TokenSet

    now = time.time()
    tokens = TokenSet(ACCESS_TOKEN, REFRESH_TOKEN, now + 14000, now + 14 * 86400, now)
    response = Response(200, [("Content-Type", "application/json")], API_BODY, "")

    def send(request: Any) -> Response:
        return response

    machine = Machine(Account.parse("acme"), oauth_app(Server()), tokens)
    client = Client(Driver(machine, send))
    get = client.get
    for _ in range(warmup):
        get("booking")
    gc.collect()
    rss = [rss_bytes()]
    times = []
    for _ in range(blocks):
        start = time.perf_counter_ns()
        for _ in range(calls):
            get("booking")
        times.append((time.perf_counter_ns() - start) / calls)
        gc.collect()
        rss.append(rss_bytes())
    return {"rss_bytes": rss, "ns_per_call": times, "calls_per_block": calls, "warmup": warmup}


def figure_memory(report: Report, settings: Settings) -> None:
    calls = 5_000 if settings.smoke else 100_000
    blocks = 1 if settings.smoke else settings.repeats
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(calls), str(blocks)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out)
    rss = result["rss_bytes"]
    growth = [(b - a) / 2**20 for a, b in itertools.pairwise(rss)]
    worst = max(growth)
    result["growth_mb_per_block"] = growth
    result["what"] = (
        f"RSS growth per {calls:,} calls through cfauth.sync.Client over an in-memory transport"
    )
    report.data["8"] = result
    report.rows.append(
        Row(
            "8",
            f"RSS growth per {calls // 1000}k sync calls (in-memory transport)",
            f"max {worst:+.2f} MB (median {statistics.median(growth):+.2f})",
            f"{statistics.median(result['ns_per_call']):,.0f} ns/call",
            "",
            "< 5 MB",
            worst < 5,
        )
    )
    if worst >= 5:
        report.missed.append("memory")


# -- profiles --------------------------------------------------------------------------------

PROFILES = ("core", "urllib3", "stdlib", "trio", "trio64", "httpx", "httpx64", "memory")


def profile(name: str, server: Server | None, operations: int, top: int = 25) -> str:
    """cProfile of cfauth's side of figure ``name``: the top functions by own time."""
    import trio

    profiler = cProfile.Profile()
    if name == "core":
        run = core_sides(peers=False)[0].run
        run(1000)
        profiler.runcall(run, operations * 20)
    elif name in ("urllib3", "stdlib"):
        assert server is not None
        with contextlib.ExitStack() as stack:
            sides = (
                urllib3_sides(server, stack, False)
                if name == "urllib3"
                else stdlib_sides(server, stack)
            )
            sides[0].run(100)
            profiler.runcall(sides[0].run, operations)
    elif name in ("trio", "trio64"):
        assert server is not None

        async def measure() -> None:
            async with contextlib.AsyncExitStack() as stack:
                tasks = 1 if name == "trio" else CONCURRENCY
                side = (await trio_sides(server, stack, False, tasks))[0]
                await side.run(100)
                profiler.enable()
                await side.run(operations)
                profiler.disable()

        trio.run(measure)
    elif name == "httpx":
        assert server is not None
        label, client = httpx_clients(server, False, asynchronous=False)[0]
        run = loop(lambda: client.get("booking").status_code, label)
        run(100)
        profiler.runcall(run, operations)
        client.close()
    elif name == "httpx64":
        assert server is not None
        import asyncio

        async def measure_httpx() -> None:
            label, client = httpx_clients(server, False, asynchronous=True)[0]
            run = asyncio_concurrent(lambda: _status(client.get("booking")), label, CONCURRENCY)
            await run(100)
            profiler.enable()
            await run(operations)
            profiler.disable()
            await client.aclose()

        asyncio.run(measure_httpx())
    elif name == "memory":
        profiler.runcall(memory_child, operations, 1, 100)
    else:
        raise SystemExit(f"--profile: one of {', '.join(PROFILES)}")
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


# -- main ------------------------------------------------------------------------------------


def metadata(server: Server, settings: Settings, peers: bool) -> dict[str, Any]:
    from importlib import metadata as md

    versions: dict[str, str | None] = {}
    for name in ("cfauth", "urllib3", "trio", "h11", *PEERS):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "server": server.kind,
        "server_version": getattr(server, "version", ""),
        "repeats": settings.repeats,
        "quick": settings.quick,
        "smoke": settings.smoke,
        "peers": peers,
        "pool_size": POOL_SIZE,
        "versions": versions,
    }


def start_server(smoke: bool, kind: str = "auto") -> Server:
    binary = ensure_nginx(install=not smoke) if kind != "sandbox" else None
    if binary is not None:
        try:
            return NginxServer(binary)
        except (OSError, RuntimeError) as error:
            log(f"nginx could not be started: {error}")
    if kind == "nginx":
        raise SystemExit("--server nginx: nginx is not available")
    log(SANDBOX_WARNING)
    return SandboxServer()


def peers_installed() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None
        for m in ("authlib", "oauthlib", "requests", "requests_oauthlib", "httpx")
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="cfauth benchmarks against the peers (see bench/README.md)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny N, still 5 repeats")
    mode.add_argument(
        "--smoke", action="store_true", help="CI: cfauth paths only, no setup, exit 0/1"
    )
    mode.add_argument("--profile", choices=PROFILES, help="cProfile cfauth's side of a figure")
    parser.add_argument("--json", type=Path, help=f"write every figure here ({DEFAULT_JSON})")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per figure (>= 5)")
    parser.add_argument(
        "--only", default="", help="comma-separated figures to run: 1,2,3,4,5,6,7,8,9"
    )
    parser.add_argument("--no-setup", action="store_true", help="use this interpreter as it is")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not profile the missed targets"
    )
    parser.add_argument(
        "--server",
        choices=("auto", "nginx", "sandbox"),
        default="auto",
        help="nginx (auto: the sandbox only if nginx cannot be had)",
    )
    parser.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.memory_child:
        calls, blocks = args.memory_child
        print(json.dumps(memory_child(calls, blocks, warmup=max(calls // 5, 1000))))
        return 0
    if not (args.smoke or args.no_setup or in_bench_venv()):
        python = ensure_venv()
        os.execv(python, [str(python), __file__, *argv])
    if args.repeats < 5 and not args.smoke:
        raise SystemExit("--repeats: at least 5 (each figure is a median of >= 5 repeats)")
    settings = Settings(repeats=args.repeats, quick=args.quick, smoke=args.smoke)
    if args.smoke:
        settings.repeats, settings.quick_n, settings.quick_core_n = 1, 200, 5_000
    peers = not args.smoke and peers_installed()
    if peers:
        import authlib.deprecate  # noqa: F401 - it turns its own warnings back on when imported

    warnings.simplefilter("ignore")  # authlib's notice that httpx is deprecated for httpx2
    if not args.smoke and not peers:
        log("the peers are not installed: only cfauth's figures will be measured")

    if args.profile:
        server = None if args.profile in ("core", "memory") else start_server(False, args.server)
        try:
            n = 300 if args.quick else 5000
            print(profile(args.profile, server, n))
        finally:
            if server is not None:
                server.close()
        return 0

    only = {f.strip() for f in args.only.split(",") if f.strip()}

    def wanted(figure: str) -> bool:
        return not only or figure in only

    report = Report(judge=not args.smoke)
    started = time.monotonic()
    server = start_server(args.smoke, args.server)
    log(f"server: {server.kind} on 127.0.0.1:{server.port} ({getattr(server, 'version', '')})")
    try:
        report.data["meta"] = metadata(server, settings, peers)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("1", lambda: figure_core(report, settings, peers)),
            ("2", lambda: figure_blocking(report, settings, server, peers)),
            ("4", lambda: figure_trio(report, settings, server, peers)),
            ("6", lambda: figure_stampede(report, settings, server)),
            ("9", lambda: figure_httpx(report, settings, server, peers)),
            ("7", lambda: figure_imports(report, settings, peers)),
            ("8", lambda: figure_memory(report, settings)),
        ]
        aliases = {"2": {"2", "3"}, "4": {"4", "5"}, "9": {"9", "9b", "9c"}}
        for figure, step in steps:
            if not any(wanted(f) for f in aliases.get(figure, {figure})):
                continue
            log(f"figure {figure} ... ({time.monotonic() - started:.0f} s)")
            try:
                step()
            except Exception as error:
                if not args.smoke:
                    raise
                report.failures.append(f"figure {figure}: {type(error).__name__}: {error}")
        if not args.smoke and not args.no_profile and report.missed:
            profiles = {}
            for name in report.missed:
                log(f"profiling the cfauth side of {name} (a target was missed) ...")
                profiles[name] = profile(name, server, 300 if args.quick else 5000)
            report.data["profiles"] = profiles
    finally:
        server.close()

    print()
    if server.kind == "sandbox":
        print(SANDBOX_WARNING)
    meta = report.data.get("meta", {})
    print(
        f"cfauth benchmarks: server {server.kind}, python {meta.get('python')}, "
        f"{meta.get('cpus')} CPUs, median of {settings.repeats} repeats"
        + (" (quick)" if settings.quick else " (smoke)" if settings.smoke else "")
    )
    print("ratio = cfauth's speed / the peer's (higher is better for cfauth)\n")
    print(report.table())
    for name, text in report.data.get("profiles", {}).items():
        print(f"\n== profile of the cfauth side of {name} (missed target) ==")
        print("\n".join(text.splitlines()[:40]))
    for failure in report.failures:
        print(f"FAILED: {failure}")
    path = args.json if args.json is not None else (None if args.smoke else DEFAULT_JSON)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.data, indent=1, default=str) + "\n")
        print(f"\nevery figure: {path}")
    print(f"({time.monotonic() - started:.0f} s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
