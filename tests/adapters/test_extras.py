"""A module whose extra is not installed says which extra to install, in one line.

Each case runs a fresh interpreter whose ``sitecustomize`` (on ``PYTHONPATH``)
puts a finder first on ``sys.meta_path`` that refuses the extra's packages,
exactly as if they were not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cfauth import MissingExtra
from cfauth_core import CfauthError

BLOCKER = textwrap.dedent(
    """
    import os
    import sys


    class _NotInstalled:
        \"\"\"Refuse the packages in CFAUTH_TEST_BLOCK, as if they were not installed.\"\"\"

        def find_spec(self, name, path=None, target=None):
            blocked = os.environ.get("CFAUTH_TEST_BLOCK", "").split(",")
            if name.partition(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, _NotInstalled())
    """
)


@pytest.fixture(scope="module")
def blocker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return folder


def run(blocker: Path, blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocker), env.get("PYTHONPATH")]))
    env["CFAUTH_TEST_BLOCK"] = blocked
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


PROBE = """
import sys
try:
    import {module}
except ImportError as error:
    from cfauth_core import CfauthError
    print(type(error).__name__, isinstance(error, CfauthError), error.name, sep="|")
    print(error)
    sys.exit(3)
print("imported")
"""

CASES = [
    ("cfauth.urllib3", "urllib3", "urllib3", "urllib3"),
    ("cfauth.trio", "trio", "trio", "trio"),
    ("cfauth.trio", "h11", "h11", "trio"),
    ("cfauth.trio", "trio,h11", "h11", "trio"),  # the first one imported is named
    ("cfauth.httpx", "httpx", "httpx", "httpx"),
    ("cfauth.httpx", "anyio", "anyio", "httpx"),
    ("cfauth.httpx", "httpx,anyio,httpcore", "httpx", "httpx"),
    ("cfauth.sandbox", "trustme", "trustme", "sandbox"),
    ("cfauth.sandbox.pytest_plugin", "trustme", "trustme", "sandbox"),
]


@pytest.mark.parametrize(("module", "blocked", "missing", "extra"), CASES)
def test_importing_without_the_extra_names_the_install_command(
    blocker: Path, module: str, blocked: str, missing: str, extra: str
) -> None:
    done = run(blocker, blocked, "-c", PROBE.format(module=module))
    assert done.returncode == 3, done.stdout + done.stderr
    kind, message = done.stdout.splitlines()
    assert kind == f"MissingExtra|True|{missing}"
    top = module.split(".")[:2]
    assert message == (
        f"{'.'.join(top)} needs {missing}, which is not installed: pip install 'cfauth[{extra}]'"
    )


@pytest.mark.parametrize(
    ("module", "blocked", "missing", "extra"), CASES[:1] + CASES[4:5] + CASES[7:8]
)
def test_an_uncaught_import_error_ends_on_that_one_line(
    blocker: Path, module: str, blocked: str, missing: str, extra: str
) -> None:
    done = run(blocker, blocked, "-c", f"import {module}")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(f"needs {missing}, which is not installed: pip install 'cfauth[{extra}]'")
    assert "During handling" not in done.stderr  # no chained ModuleNotFoundError
    assert "ModuleNotFoundError" not in done.stderr


@pytest.mark.parametrize("command", ["demo", "sandbox"])
def test_the_command_without_the_sandbox_extra_prints_one_line(blocker: Path, command: str) -> None:
    done = run(blocker, "trustme", "-m", "cfauth.cli", command)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"cfauth {command}: cfauth.sandbox needs trustme, which is not installed: "
        "pip install 'cfauth[sandbox]'\n"
    )


def test_the_core_and_the_stdlib_driver_need_no_extra(blocker: Path) -> None:
    done = run(
        blocker,
        "urllib3,trio,h11,httpx,httpcore,anyio,trustme,cryptography,idna,pytest",
        "-c",
        "import cfauth, cfauth.stdlib, cfauth.sync, cfauth.stores, cfauth.cli; print('ok')",
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_a_broken_package_is_not_reported_as_missing(blocker: Path) -> None:
    """Only the extra's own packages count: an ImportError from elsewhere
    inside them is re-raised as it is."""
    done = run(blocker, "sniffio", "-c", PROBE.format(module="cfauth.trio"))
    assert done.returncode == 3, done.stdout + done.stderr
    kind, message = done.stdout.splitlines()[:2]
    assert kind.startswith("ModuleNotFoundError|False|sniffio")
    assert "pip install" not in message


def test_missing_extra_is_an_import_error_and_a_cfauth_error() -> None:
    error = MissingExtra("cfauth.urllib3", "urllib3", "urllib3")
    assert isinstance(error, ImportError)
    assert isinstance(error, CfauthError)
    assert (error.name, error.extra, error.retryable) == ("urllib3", "urllib3", False)
    assert str(error) == (
        "cfauth.urllib3 needs urllib3, which is not installed: pip install 'cfauth[urllib3]'"
    )
