"""The runbook's Netdata alarms as data: the health file is rendered from it, and what Netdata
loaded is compared against it (`monitoring/netdata.compare`: by `monitoring.apply` before it
keeps a new file, `monitoring.status` and verify's checklist), so the two can never disagree.

CPU > 85% for 5 min and RAM > 90% for 5 min are critical (Alerts Setup), RAM > 85% a warning
(mitigation 3: "alert at 85%"), disk > 85% critical, a container restart critical. Netdata
has no chart of container restarts (Debian's 1.37 has no docker collector), so the tool installs
a small external plugin of its own (`vedfin-restarts.plugin`) that charts them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from vedfin_ops.config.model import Config

LEGACY_HEALTH_FILE = "vedfin.conf"  # before files were named per config: taken over
PLUGIN_FILE = "vedfin-restarts.plugin"  # in <netdataConfig>/custom-plugins.d (one per host)
RESTARTS_CHART = "vedfin.container_restarts"


def health_file(config: Config) -> str:
    """The config's alarms in <netdataConfig>/health.d, named by its stack prefix: two
    configs on one host each keep their own (`vedfin-`: a user file named like one of
    Netdata's stock files, `redis.conf`, would replace the stock one)."""
    return f"vedfin-{config.remote.stack_prefix}.conf"


def role(config: Config) -> str:
    """The Netdata role the config's alarms are sent to (their `to:` line): the one
    health_alarm_notify.conf sources the config's own notification settings for it."""
    return f"vedfin-{config.remote.stack_prefix}"


def alarm_prefix(config: Config) -> str:
    """The config's alarm names begin with its stack prefix (`-` as `_`, which Netdata keeps
    in a name; a prefix has no `_`, so two prefixes never give one name)."""
    return config.remote.stack_prefix.replace("-", "_")


@dataclass(frozen=True)
class Alarm:
    kind: str  # alarm (one chart) | template (every chart of a context)
    name: str
    on: str
    value: str  # the lookup or calc line, after its keyword
    keyword: str  # lookup | calc
    info: str
    warn: str | None = None
    crit: str | None = None
    units: str = "%"
    to: str = "sysadmin"  # the role Netdata notifies: the config's own (see `role`)


def _num(value: float) -> str:
    return f"{value:g}"


def _window(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))}m"


def alarms(config: Config) -> list[Alarm]:
    """The alarms, each `info` ending in a digest of all of them and their evaluation period:
    Netdata's API shows the info it loaded, so a reload that has not happened yet (or failed)
    is told from one that did, even when only `every` or an info changed."""
    plain = _alarms(config)
    digest = hashlib.sha256(json.dumps([[*vars(a).values()] for a in plain] +
                                       [config.monitoring.alarm_every]).encode()).hexdigest()
    return [replace(a, info=f"{a.info} [vedfin {digest[:10]}]") for a in plain]


def _alarms(config: Config) -> list[Alarm]:
    a = config.alerts
    cpu, ram = _window(a.cpu.for_), _window(a.ram.for_)
    name = alarm_prefix(config)
    return [replace(alarm, to=role(config)) for alarm in [
        Alarm("alarm", f"{name}_cpu_usage", "system.cpu",
              f"average -{cpu} unaligned of user,system,softirq,irq,guest", "lookup",
              f"CPU above {_num(a.cpu.above)}% for {cpu}",
              crit=f"$this > {_num(a.cpu.above)}"),
        Alarm("alarm", f"{name}_ram_usage", "system.ram",
              f"average -{ram} unaligned percentage of used", "lookup",
              f"RAM above {_num(a.ram_warn)}% (warning) / {_num(a.ram.above)}% for {ram}",
              warn=f"$this > {_num(a.ram_warn)}", crit=f"$this > {_num(a.ram.above)}"),
        Alarm("template", f"{name}_disk_usage", "disk.space", "$used * 100 / ($avail + $used)",
              "calc", f"disk above {_num(a.disk.above)}%",
              crit=f"$this > {_num(a.disk.above)}"),
        Alarm("alarm", f"{name}_container_restarts", RESTARTS_CHART, "$restarts", "calc",
              f"task containers that died unasked in the last {_window(a.restarts.within)}: "
              f"more than {a.restarts.above}", crit=f"$this > {a.restarts.above}",
              units="containers"),
    ]]
