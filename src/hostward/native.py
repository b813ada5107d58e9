"""The optional C accelerators (``src/native/``, built by ``setup.py``).

``load`` returns the built module, or None when it was not built (no compiler or headers at install
time) or when ``HOSTWARD_NO_NATIVE`` is set to a true value — then callers use their pure-Python twin,
which gives the same results, only slower. Tests compare the two paths; CI requires the modules.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

MODULES = ("hostward.agent.detectors._logscan", "hostward.agent.fim._fimscan")


def disabled() -> bool:
    """True when ``HOSTWARD_NO_NATIVE`` asks for the pure-Python paths."""
    return os.environ.get("HOSTWARD_NO_NATIVE", "").strip().lower() not in ("", "0", "false", "no")


def load(name: str) -> ModuleType | None:
    """The native module ``name`` (one of ``MODULES``), or None when disabled or not built."""
    if name not in MODULES:
        raise ValueError(f"unknown native module {name!r}")
    if disabled():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
