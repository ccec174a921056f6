"""One exception type for everything a user can get wrong.

The CLIs turn a :class:`SuiteError` into a single line on stderr and exit code 2, so bad input
never ends in a traceback wall. Library code raises it with a message that says what to fix.
"""
from __future__ import annotations

USAGE_EXIT_CODE = 2


class SuiteError(Exception):
    """A user-facing error: bad input, a missing package, a toolchain that cannot run here."""


class ToolchainUnavailable(SuiteError):
    """A toolchain or runtime cannot run on this machine (package or device missing)."""


def missing_package(who: str, package: str, requirements: str = "requirements/base.txt") -> ToolchainUnavailable:
    """The one message for an optional package that is not installed, naming the requirements file that
    installs it, so a user never has to guess the pip line. ``who`` names what needs it ("toolchain ort",
    "runtime openvino", "MiniLM"); ``str()`` of the result is the line a ``unavailable_reason()`` returns."""
    return ToolchainUnavailable(f"{who} needs package {package} (pip install -r {requirements})")
