"""The ``cfauth`` command run as a subprocess against a sandbox in its own
process (``cfauth sandbox --json``), login included: the test plays the
browser by following the printed authorize URL (the sandbox consents at once)."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cfauth.cli import EXIT_LOGIN, EXIT_NETWORK, EXIT_REMOTE, EXIT_USAGE, browse

CFAUTH = [sys.executable, "-m", "cfauth.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Box:
    """A sandbox process and what it printed."""

    def __init__(self, process: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.process = process
        self.info = info
        self.port: int = info["port"]
        self.acme: dict[str, str] = info["accounts"]["acme"]

    def options(self) -> list[str]:
        options = ["--cacert", self.info["ca_file"]]
        for host, target in self.info["resolve"].items():
            options += ["--resolve", f"{host}:{target}"]
        return options

    def ctl(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [
                *CFAUTH,
                "sandbox",
                "ctl",
                "--port",
                str(self.port),
                "--cacert",
                self.info["ca_file"],
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "CFAUTH_SANDBOX_TOKEN": self.info["control_token"]},
        )
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer


def start_box(port: int = 0, redirect: str | None = None) -> Box:
    command = [*CFAUTH, "sandbox", "--json", "--quiet", "--port", str(port)]
    if redirect:
        command += ["--redirect-uri", redirect]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, "the sandbox printed nothing"
    return Box(process, json.loads(line))


def stop_box(box: Box) -> None:
    box.process.terminate()
    box.process.wait(timeout=30)
    assert box.process.stdout is not None
    box.process.stdout.close()


@pytest.fixture
def box() -> Iterator[Box]:
    started = start_box(redirect=f"http://127.0.0.1:{free_port()}/callback")
    yield started
    stop_box(started)


@pytest.fixture
def env(tmp_path: Path, box: Box) -> dict[str, str]:
    folder = tmp_path / "store"
    folder.mkdir(mode=0o700)
    values = {key: value for key, value in os.environ.items() if not key.startswith("CFAUTH_")}
    values.update(
        CFAUTH_STORE=str(folder / "grants.sqlite3"),
        CFAUTH_ACCOUNT="acme",
        CFAUTH_CLIENT_ID=box.acme["client_id"],
        CFAUTH_CLIENT_SECRET=box.acme["client_secret"],
        CFAUTH_REDIRECT_URI=box.acme["redirect_uri"],
    )
    return values


def cfauth(box: Box, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CFAUTH, *box.options(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def login(box: Box, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """``cfauth login``, with this test as the browser."""
    process = subprocess.Popen(
        [*CFAUTH, *box.options(), "login", "--no-browser", "--timeout", "60", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if "--json" in extra:
        url = json.loads(url)["authorize_url"]
    assert url.startswith("https://acme.checkfront.com/oauth/?"), url
    context = ssl.create_default_context(cafile=box.info["ca_file"])
    callback = browse(url, port=box.port, context=context)
    seen: list[int] = []

    def follow() -> None:
        with urllib.request.urlopen(callback, timeout=30) as answer:  # noqa: S310 - loopback
            seen.append(answer.status)

    thread = threading.Thread(target=follow)
    thread.start()
    out, err = process.communicate(timeout=60)
    thread.join(timeout=30)
    assert seen == [200]
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def secrets_of(box: Box) -> list[str]:
    return [box.acme["client_secret"], box.acme["api_secret"]]


def test_login_status_call_refresh_logout(box: Box, env: dict[str, str]) -> None:
    # Before a login: status and call say "log in".
    before = cfauth(box, env, "status")
    assert before.returncode == EXIT_LOGIN
    assert "cfauth login" in before.stdout
    assert cfauth(box, env, "call", "GET", "item").returncode == EXIT_LOGIN

    done = login(box, env)
    assert done.returncode == 0, done.stderr
    assert "logged in" in done.stdout

    status = cfauth(box, env, "--json", "status")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout.splitlines()[0])
    assert row["account"] == "acme"
    assert row["logged_in"] is True
    assert row["refresh_due"] is False
    assert row["access_expires_in"] > 13000

    call = cfauth(box, env, "call", "GET", "booking/index", "status_id=PAID")
    assert call.returncode == 0, call.stderr
    assert "booking/index" in json.loads(call.stdout)
    posted = cfauth(box, env, "call", "POST", "customer", "customer_name=Ada")
    assert posted.returncode == 0, posted.stderr

    # The sandbox, driven from outside: 14000 s later the access token expired;
    # the call refreshes on its own.
    assert box.ctl("advance", "14000")["ok"] is True
    assert cfauth(box, env, "call", "GET", "item").returncode == 0
    refreshed = cfauth(box, env, "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert "refreshed" in refreshed.stdout

    # A migration: the stored origin follows it.
    box.ctl("migrate", "acme")
    assert cfauth(box, env, "call", "GET", "item").returncode == 0
    moved = json.loads(cfauth(box, env, "--json", "status").stdout)
    assert moved["origin"] == "https://acme.manage.na1.bookingplatform.app"

    # A remote error and its exit code; the body still printed.
    box.ctl("fail-next", "500")
    failed = cfauth(box, env, "call", "GET", "item")
    assert failed.returncode == EXIT_REMOTE, failed.stderr

    # The grant revoked on the server: a login is needed.
    box.ctl("revoke", "acme")
    box.ctl("advance", "14001")
    lost = cfauth(box, env, "call", "GET", "item")
    assert lost.returncode == EXIT_LOGIN, lost.stderr

    out = cfauth(box, env, "logout")
    assert out.returncode == 0
    assert "forgot acme/" in out.stdout
    assert cfauth(box, env, "status").returncode == EXIT_LOGIN

    for result in (before, done, status, call, refreshed, failed, lost):
        for secret in secrets_of(box):
            assert secret not in result.stdout + result.stderr


def test_login_json_and_verbose_logs_hold_no_secret(box: Box, env: dict[str, str]) -> None:
    result = login(box, env, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["logged_in"] is True
    verbose = cfauth(box, env, "-v", "call", "GET", "item")
    assert verbose.returncode == 0, verbose.stderr
    assert "DEBUG" in verbose.stderr
    for secret in secrets_of(box):
        assert secret not in verbose.stderr
    assert "Bearer " not in verbose.stderr


def test_token_pair_from_the_environment(box: Box, env: dict[str, str]) -> None:
    pair = {**env, "CFAUTH_API_KEY": box.acme["api_key"], "CFAUTH_API_SECRET": "wrong-secret"}
    rejected = cfauth(box, pair, "call", "GET", "item")
    assert rejected.returncode == EXIT_REMOTE
    assert "CredentialsRejected" in rejected.stderr
    pair["CFAUTH_API_SECRET"] = box.acme["api_secret"]
    ok = cfauth(box, pair, "--json", "call", "GET", "item")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == 200


def test_usage_and_network_exit_codes(box: Box, env: dict[str, str], tmp_path: Path) -> None:
    bare = subprocess.run(CFAUTH, capture_output=True, text=True, check=False, env=env)
    assert bare.returncode == EXIT_USAGE
    assert "login" in bare.stdout
    assert "exit codes" in bare.stdout
    version = subprocess.run(
        [*CFAUTH, "--version"], capture_output=True, text=True, check=False, env=env
    )
    assert version.stdout.startswith("cfauth ")
    # No plain --client-secret argument exists.
    plain = cfauth(box, env, "login", "--client-secret", "x")
    assert plain.returncode == EXIT_USAGE
    assert "unrecognized arguments: --client-secret" in plain.stderr
    no_secret = {k: v for k, v in env.items() if k != "CFAUTH_CLIENT_SECRET"}
    missing = cfauth(box, no_secret, "login")
    assert missing.returncode == EXIT_USAGE
    assert "--client-secret-file" in missing.stderr
    secret_file = tmp_path / "secret"
    secret_file.write_text(box.acme["client_secret"] + "\n")
    bad_param = cfauth(
        box, no_secret, "call", "GET", "item", "novalue", "--client-secret-file", str(secret_file)
    )
    assert bad_param.returncode == EXIT_USAGE
    assert "NAME=VALUE" in bad_param.stderr
    assert cfauth(box, env, "--resolve", "nonsense", "status").returncode == EXIT_USAGE
    # Nothing listens where the name is resolved to: a network error.
    unreachable = dict(env, CFAUTH_API_KEY="k" * 8, CFAUTH_API_SECRET="s" * 8)
    down = subprocess.run(
        [
            *CFAUTH,
            "--cacert",
            box.info["ca_file"],
            "--resolve",
            f"acme.checkfront.com:443:127.0.0.1:{free_port()}",
            "call",
            "GET",
            "item",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=unreachable,
    )
    assert down.returncode == EXIT_NETWORK, down.stderr


def test_sandbox_restarts_at_once_on_the_same_port() -> None:
    first = start_box()
    port = first.port
    # Leave a connection to it behind, then stop it and start again on the port.
    context = ssl.create_default_context(cafile=first.info["ca_file"])
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="acme.checkfront.com") as tls,
    ):
        tls.sendall(b"GET /api/3.0/item HTTP/1.1\r\nHost: acme.checkfront.com\r\n\r\n")
        tls.recv(100)
        stop_box(first)
        second = start_box(port)
        try:
            assert second.port == port
            assert second.ctl("ping")["ok"] is True
        finally:
            stop_box(second)


def test_verbose_logs_redact_the_secrets_given() -> None:
    import logging

    from cfauth.cli import _Redact

    record = logging.LogRecord("cfauth", logging.DEBUG, "x", 1, "sent %s", ("s3cr3t-value",), None)
    assert _Redact(["s3cr3t-value", "ab"]).filter(record)
    assert record.getMessage() == "sent <hidden>"


def test_control_path_needs_the_token(box: Box) -> None:
    from cfauth.sandbox.__main__ import control

    refused = control(box.port, box.info["ca_file"], "not-the-token", "advance", {"seconds": "1"})
    assert refused["error"] == "forbidden"
    unknown = control(box.port, box.info["ca_file"], box.info["control_token"], "explode", {})
    assert "no control action" in str(unknown["error_description"])
    missing = control(box.port, box.info["ca_file"], box.info["control_token"], "migrate", {})
    assert "account" in str(missing["error_description"])
    bad = control(
        box.port, box.info["ca_file"], box.info["control_token"], "advance", {"seconds": "x"}
    )
    assert bad["error"] == "invalid_request"
    assert box.ctl("revoke-access", "acme")["ok"] is True
    assert box.ctl("fail-next", "503", "-n", "2", "--retry-after", "1")["ok"] is True


def test_exit_codes_by_error_family() -> None:
    from cfauth.cli import EXIT_FAILED, _exit_code
    from cfauth.login import LoginTimedOut
    from cfauth.stores import StoreError
    from cfauth_core import (
        InvalidInput,
        NetworkError,
        OAuthError,
        RateLimited,
        ReauthorizationRequired,
        RefreshFailed,
        RemoteProtocolError,
    )

    network = NetworkError("connection refused")
    cases = [
        (ReauthorizationRequired("log in"), EXIT_LOGIN),
        (LoginTimedOut("late"), EXIT_LOGIN),
        (network, EXIT_NETWORK),
        (RefreshFailed("down", cause=network), EXIT_NETWORK),
        (RefreshFailed("proxy", cause=RemoteProtocolError("html")), EXIT_REMOTE),
        (RateLimited("slow down", retry_after=5.0, status=429), EXIT_REMOTE),
        (OAuthError("invalid_request", "bad", status=400), EXIT_REMOTE),
        (InvalidInput("bad value"), EXIT_USAGE),
        (StoreError("broken", store="x"), EXIT_FAILED),
    ]
    for error, code in cases:
        assert _exit_code(error) == code, error
