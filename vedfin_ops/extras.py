"""The optional dependencies: each serves one feature, so a config that does not use the
feature never installs or imports it (boto3 alone takes longer to import than the CLI's
whole cold start).

A config that names a feature whose extra is missing is bad input for what uses the
feature: `deploy` (whose after-live steps copy off-site and apply Uptime Kuma) and
`check-config` refuse it with one line naming the file, the key and the extra, before anything
reaches a host; the tasks that only read the config (render, capacity-report, status) do not
need the extra; a task that reaches the feature itself (`db.backups --s3`,
`monitoring.apply`) names the extra where it would import it.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

from vedfin_ops.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from vedfin_ops.config.model import Config

#: import name -> the extra that installs it (setup.cfg's extras_require)
EXTRAS = {"boto3": "s3", "psycopg": "postgres", "uptime_kuma_api": "uptime-kuma",
          "matplotlib": "chart"}


def installed(module: str) -> bool:
    """Without importing it: a module set to None in sys.modules counts as missing, as
    `import` itself would."""
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def hint(module: str) -> str:
    return f"the {EXTRAS[module]!r} extra: pip install 'vedfin-ops[{EXTRAS[module]}]'"


def require(module: str, what: str) -> None:
    """For a feature asked for on the command line (not in the config)."""
    if not installed(module):
        raise UsageError(f"{what} needs {hint(module)}")


def _features(config: Config) -> list[tuple[str, str]]:
    """(key, module) of each feature the config uses that needs an extra."""
    wanted = [("backups.s3", config.backups.s3 is not None, "boto3"),
              ("monitoring.uptimeKuma", config.monitoring.uptime_kuma is not None,
               "uptime_kuma_api")]
    return [(key, module) for key, used, module in wanted if used]


def check(config: Config) -> None:
    """The config's features against what is installed."""
    for key, module in _features(config):
        if not installed(module):
            raise ConfigError(config.source, key, f"needs {hint(module)}")


def needed(config: Config) -> list[str]:
    """The extras a deploy of this config needs (a CI job installs them)."""
    return [EXTRAS[module] for _, module in _features(config)]
