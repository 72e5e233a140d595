"""vedfin-ops: the Epic 2 runbook as code. Every task is also a function here."""

from __future__ import annotations

from vedfin_ops.config.loader import load_config
from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed, ConfigError, UsageError, VedfinError
from vedfin_ops.render.files import Rendered, render
from vedfin_ops.reports.capacity import CapacityReport, capacity_report

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
