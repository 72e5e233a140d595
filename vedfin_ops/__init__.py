"""vedfin-ops: the Epic 2 runbook as code. Every task is also a function here.

The public names load on first use (PEP 562): `import vedfin_ops` and the CLI's cold start do
not pay for pydantic, jinja2 and the capacity model until something asks for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vedfin_ops.errors import CheckFailed, ConfigError, UsageError, VedfinError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from vedfin_ops.config.loader import load_config
    from vedfin_ops.config.model import Config
    from vedfin_ops.rendering.files import Rendered, render
    from vedfin_ops.reports.capacity import CapacityReport, capacity_report

_LAZY = {
    "CapacityReport": "vedfin_ops.reports.capacity",
    "capacity_report": "vedfin_ops.reports.capacity",
    "Config": "vedfin_ops.config.model",
    "load_config": "vedfin_ops.config.loader",
    "Rendered": "vedfin_ops.rendering.files",
    "render": "vedfin_ops.rendering.files",
}

__all__ = [
    "CapacityReport",
    "CheckFailed",
    "Config",
    "ConfigError",
    "Rendered",
    "UsageError",
    "VedfinError",
    "capacity_report",
    "load_config",
    "render",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vedfin_ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
