"""vedfin-ops: the Epic 2 runbook as code. Every task is also a function here."""

from __future__ import annotations

from .capacity import CapacityReport, capacity_report
from .config import Config
from .errors import CheckFailed, ConfigError, UsageError, VedfinError
from .loader import load_config
from .render import Rendered, render

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
