"""The local VPS for the demo and the tests (repository only, never installed): see
`sandbox.lifecycle` for what `up`, `down` and `status` do.

The package itself loads nothing: `inv --list` in a checkout imports the sandbox's tasks, and
must not pay for the config model and the sandbox's servers to print a list. `sandbox.up` and
the other names load `lifecycle` on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    lifecycle = importlib.import_module("sandbox.lifecycle")
    if hasattr(lifecycle, name):
        return getattr(lifecycle, name)
    try:
        return importlib.import_module(f"sandbox.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}") from None
