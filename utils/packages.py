"""Whether an optional package can be imported, without importing it (toolchains are optional)."""
from __future__ import annotations

import importlib.util

from utils.errors import missing_package


def has_module(name: str) -> bool:
    """True if ``import name`` would find the module (False also where it is blocked in sys.modules)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_reason(who: str, packages: dict[str, str], requirements: str = "requirements/base.txt") -> str | None:
    """The line for the first of ``packages`` (import name -> pip name) that is not installed, or None."""
    for module, package in packages.items():
        if not has_module(module):
            return str(missing_package(who, package, requirements))
    return None
