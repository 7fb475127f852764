"""``python -m cfauth.sandbox``: serve the sandbox in the foreground until Ctrl-C;
``python -m cfauth.sandbox ctl ...``: drive a running one through its control path."""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import threading
from collections.abc import Sequence

from ._app import DEFAULT_REDIRECT_URI
from ._model import RequestRecord
from ._sandbox import Sandbox

__all__ = ["banner", "ctl_main", "info", "main"]


def info(sandbox: Sandbox, control_token: str | None = None) -> dict[str, object]:
    """The ``--json`` line: port, CA file, resolve map, control token, and each
    account's throwaway credentials."""
    accounts = {}
    for name in sandbox.accounts:
        account = sandbox.account(name)
        accounts[name] = {
            "origin": sandbox.origin(name),
            "api_key": account.api_key,
            "api_secret": account.api_secret,
            "client_id": account.client_id,
            "client_secret": account.client_secret,
            "redirect_uri": account.redirect_uri,
        }
    return {
        "port": sandbox.port,
        "ca_file": sandbox.ca_file,
        "resolve": sandbox.resolve,
        "control_token": control_token,
        "accounts": accounts,
    }


def banner(sandbox: Sandbox, account: str | None = None, control_token: str | None = None) -> str:
    """What ``python -m cfauth.sandbox`` prints: where it listens and how to reach it.

    This includes the demo account's credentials: they are throwaway sandbox values, made
    up at start and gone at exit, so printing them on the operator's terminal is fine.
    """
    name = account or sandbox.accounts[0]
    info = sandbox.account(name)
    port = sandbox.port
    lines = [
        f"cfauth sandbox listening on https://127.0.0.1:{port} (Ctrl-C to stop)",
        "",
        "resolve (host:443 -> address):",
        *(f"  {host} -> {target}" for host, target in sandbox.resolve.items()),
        "",
        f"CA certificate: {sandbox.ca_file}",
        "",
        f"account {info.name!r} ({sandbox.origin(name)}), throwaway credentials:",
        f"  api_key       = {info.api_key}",
        f"  api_secret    = {info.api_secret}",
        f"  client_id     = {info.client_id}",
        f"  client_secret = {info.client_secret}",
        f"  redirect_uri  = {info.redirect_uri}",
        "",
        *(
            [
                f"control token: {control_token}",
                f"  cfauth sandbox ctl --port {port} --cacert {sandbox.ca_file} "
                "--token TOKEN advance 3600",
                "",
            ]
            if control_token
            else []
        ),
        "try:",
        f"  curl --cacert {sandbox.ca_file} "
        f"--connect-to {name}.checkfront.com:443:127.0.0.1:{port} "
        f"-u {info.api_key}:{info.api_secret} "
        f"https://{name}.checkfront.com/api/3.0/booking/index",
    ]
    return "\n".join(lines)


def _log(record: RequestRecord) -> None:
    print(
        f"{record.host} {record.method} {record.path} [{record.credential}] -> {record.status}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ctl"]:
        return ctl_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m cfauth.sandbox",
        description="Serve a local Checkfront-compatible HTTPS sandbox on 127.0.0.1.",
    )
    parser.add_argument(
        "--account",
        action="append",
        dest="accounts",
        metavar="NAME",
        help="account name (repeatable; default: acme)",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument(
        "--consent-page",
        action="store_true",
        help="show an Allow/Deny page on /oauth/ instead of consenting automatically",
    )
    parser.add_argument(
        "--redirect-uri",
        default=DEFAULT_REDIRECT_URI,
        help=f"the redirect URI of each account's OAuth2 client ({DEFAULT_REDIRECT_URI})",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line (port, ca_file, resolve, control_token, accounts) "
        "instead of the banner",
    )
    args = parser.parse_args(argv)
    accounts = tuple(args.accounts or ("acme",))
    sandbox = Sandbox(
        accounts,
        port=args.port,
        on_request=None if args.quiet else _log,
        redirect_uri=args.redirect_uri,
    )
    sandbox.auto_consent = not args.consent_page
    token = sandbox.enable_control()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        with sandbox:
            if args.json:
                print(json.dumps(info(sandbox, token), sort_keys=True), flush=True)
            else:
                print(banner(sandbox, control_token=token), flush=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            print("stopping", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def ctl_main(argv: Sequence[str]) -> int:
    """``ctl``: POST one action to a running sandbox's control path."""
    parser = argparse.ArgumentParser(
        prog="cfauth sandbox ctl",
        description="Drive a running sandbox: advance its clock, migrate an account, revoke "
        "grants, or answer the next requests with an error status.",
    )
    parser.add_argument("--port", type=int, required=True, help="the sandbox's port")
    parser.add_argument(
        "--cacert", required=True, metavar="FILE", help="the sandbox's CA file (ca_file)"
    )
    parser.add_argument(
        "--token", help="the control token printed at start; or $CFAUTH_SANDBOX_TOKEN"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("ping", help="check the sandbox answers")
    advance = actions.add_parser("advance", help="advance the sandbox clock")
    advance.add_argument("seconds", type=float)
    migrate = actions.add_parser("migrate", help="move an account to bookingplatform.app")
    migrate.add_argument("account")
    migrate.add_argument("--region", default="na1")
    for name, text in (
        ("revoke", "revoke every grant of an account"),
        ("revoke-access", "revoke an account's access tokens (refresh tokens stay)"),
    ):
        actions.add_parser(name, help=text).add_argument("account")
    fail = actions.add_parser("fail-next", help="answer the next requests with a status")
    fail.add_argument("status", type=int)
    fail.add_argument("-n", type=int, default=1, help="how many requests (1)")
    fail.add_argument("--retry-after", help="a Retry-After value")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get("CFAUTH_SANDBOX_TOKEN")
    if not token:
        parser.error("pass --token or set CFAUTH_SANDBOX_TOKEN (printed when the sandbox starts)")
    fields = {
        key: str(value)
        for key, value in vars(args).items()
        if key in ("seconds", "account", "region", "status", "n", "retry_after")
        and value is not None
    }
    answer = control(args.port, args.cacert, token, args.action, fields)
    print(json.dumps(answer, sort_keys=True))
    return 0 if answer.get("ok") else 1


def control(
    port: int, ca_file: str, token: str, action: str, fields: dict[str, str] | None = None
) -> dict[str, object]:
    """POST ``action`` to the sandbox on 127.0.0.1:``port``; return its JSON answer."""
    import http.client  # noqa: PLC0415
    from urllib.parse import urlencode  # noqa: PLC0415

    context = ssl.create_default_context(cafile=ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request(
            "POST",
            f"/_sandbox/{action}",
            body=urlencode(fields or {}),
            headers={
                "X-Sandbox-Control": token,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        response = conn.getresponse()
        payload = json.loads(response.read() or b"{}")
    finally:
        conn.close()
    return payload if isinstance(payload, dict) else {"answer": payload}


if __name__ == "__main__":
    raise SystemExit(main())
