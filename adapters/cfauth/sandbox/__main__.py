"""``python -m cfauth.sandbox``: serve the sandbox in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from ._model import RequestRecord
from ._sandbox import Sandbox

__all__ = ["banner", "main"]


def banner(sandbox: Sandbox, account: str | None = None) -> str:
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
    parser.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    args = parser.parse_args(argv)
    accounts = tuple(args.accounts or ("acme",))
    sandbox = Sandbox(accounts, port=args.port, on_request=None if args.quiet else _log)
    sandbox.auto_consent = not args.consent_page
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        with sandbox:
            print(banner(sandbox), flush=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            print("stopping", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
