"""The documentation's code runs: every example the user guide includes (and
the README's Python blocks) is executed against the sandbox, and what it
prints is checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"

#: What each example must print (one fragment per line it shows).
EXPECTED = {
    "quickstart.py": ["200 "],
    "token_pairs.py": [
        "stdlib  200",
        "urllib3 200",
        "trio    200",
        "refused: CredentialsRejected",
        "ApiError 404",
    ],
    "cli_login.py": ["logged in: True", "200", "still logged in: True", "after logout: False"],
    "web_app.py": ["302 /login", "302 https://acme.checkfront.com/oauth/", "302 /bookings", "200 "],
    "workers.py": [
        "grants in one store: ['acme', 'beta']",
        "statuses: [200, 200, 200, 200]",
        "refresh requests: 1",
        "beta https://beta.checkfront.com 200",
    ],
    "migration.py": [
        "moved: https://acme.checkfront.com -> https://acme.manage.na1.bookingplatform.app",
        "next run starts at https://acme.manage.na1.bookingplatform.app",
        "refused: https://evil.example/steal",
        "requests that reached evil.example: 0",
    ],
    "httpx_app.py": [
        "login redirects to https://acme.checkfront.com/oauth/",
        "callback goes to /bookings",
        "logged in: True",
        "statuses: [200]",
        "refresh requests: 1",
    ],
    "errors.py": [
        "ReauthorizationRequired -> log in",
        "ApiError 404",
        "RateLimited, retry after 1.0 s",
        "NetworkError, retryable: True",
    ],
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the project's own files
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )


def test_every_example_is_checked() -> None:
    scripts = {
        path.name
        for path in EXAMPLES.glob("*.py")
        if not path.name.startswith("test_") and path.name != "blocking_adapter.py"
    }
    assert scripts == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    done = run(str(EXAMPLES / name))
    assert done.returncode == 0, done.stderr
    for fragment in EXPECTED[name]:
        assert fragment in done.stdout, (fragment, done.stdout)


def test_the_testing_example_passes_under_pytest() -> None:
    done = run(
        "-m",
        "pytest",
        "-p",
        "cfauth.sandbox.pytest_plugin",
        "-p",
        "no:cacheprovider",
        "--no-cov",
        "-q",
        str(EXAMPLES / "test_my_integration.py"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_the_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        done = run("-c", block)
        assert done.returncode == 0, (block, done.stderr)
        assert "200" in done.stdout, (block, done.stdout)
