"""Whether an optional package can be imported, without importing it (toolchains are optional)."""
from __future__ import annotations

import importlib.util


def has_module(name: str) -> bool:
    """True if ``import name`` would find the module (False also where it is blocked in sys.modules)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
