"""The optional dependencies: which extra installs what, and the error a
module raises when its extra is missing."""

from __future__ import annotations

from cfauth_core import CfauthError

__all__ = ["EXTRAS", "MissingExtra", "missing_extra"]

#: The third-party modules each extra installs (top-level import names).
EXTRAS: dict[str, frozenset[str]] = {
    "urllib3": frozenset({"urllib3"}),
    "trio": frozenset({"trio", "h11"}),
    "httpx": frozenset({"httpx", "httpcore", "anyio", "h11", "certifi", "idna", "sniffio"}),
    "sandbox": frozenset({"trustme", "cryptography", "idna"}),
}


class MissingExtra(CfauthError, ImportError):
    """A cfauth module needs a package its extra installs, and it is missing.

    An :exc:`ImportError` (so ``except ImportError`` still works) whose
    message is one line: the module, the missing package and the command
    that installs it.  ``name`` is the missing package; ``extra`` the extra.
    """

    def __init__(self, module: str, extra: str, missing: str) -> None:
        super().__init__(
            f"{module} needs {missing}, which is not installed: pip install 'cfauth[{extra}]'"
        )
        self.name = missing
        self.extra = extra


def missing_extra(module: str, extra: str, error: ImportError) -> ImportError:
    """What to raise for ``error``, met while ``module`` imported its extra's
    packages: a :class:`MissingExtra` when one of them is missing, else
    ``error`` itself (a broken package is not a missing one)."""
    missing = (error.name or "").partition(".")[0]
    if missing in EXTRAS[extra]:
        return MissingExtra(module, extra, missing)
    return error
