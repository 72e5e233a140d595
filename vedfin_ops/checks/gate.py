"""The capacity gate before a deploy: will the rolling update fit in what the host has now?

Limits are caps, not use: the runbook commits 7000 MiB of limits on a 4096 MiB VPS on purpose,
so over-committed limits never refuse a deploy. Its normal load is past RAM too (~4200 MiB used
of 4096, "using swap", as planned), so the RAM alert cannot be the line either: the alert means
RAM above 90% for 5 minutes, and a rollout's surge lasts only until the new replicas are
healthy. What would hurt is running out of memory altogether (the kernel then kills a
container, perhaps postgres), so the gate refuses only when the memory used now (RAM + swap)
plus what this deploy starts at once (one new replica per surging service, sized by what one
replica of it uses now, or by its limit when nothing is measured) does not fit in RAM + swap,
less an optional hard margin kept free. Past the alert threshold it passes, with a warning
that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from vedfin_ops.config.model import Config
from vedfin_ops.remote.probes.usage import Usage
from vedfin_ops.reports.capacity import lines, surge


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str  # starts with "warning: " when `warning`
    surge_mb: float
    projected_ram_mb: float
    warning: bool = False  # passes, but RAM goes past the alert threshold during the rollout


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def gate(config: Config, env: str, usage: Usage, *, hard_margin_mb: float = 0.0) -> GateResult:
    """`hard_margin_mb`: memory that must stay free even at the peak of the rollout."""
    peak = surge(config, env)
    by_name = {line.name: line for line in lines(config, env)}
    strategy = config.deployment_strategy
    surge_mb = 0.0
    sized = []
    for name in peak.services:
        app = next(a for a in config.apps(env) if a.name == name)
        line = by_name[name]
        found = usage.service_used(line.service)
        per = found[0] / found[1] if found else float(app.resources.memory)
        count = min(strategy.parallelism, app.replicas)
        surge_mb += per * count
        sized.append(f"{name} {per:.0f} MiB x{count}" + ("" if found else " (limit)"))
    used = usage.memory_used_mb + usage.swap_used_mb
    total = usage.memory_total_mb + usage.swap_total_mb
    room = total - hard_margin_mb
    projected_ram = usage.memory_used_mb + surge_mb
    alert = config.alerts.ram
    alert_mb = usage.memory_total_mb * alert.above / 100
    figures = (f"used {usage.memory_used_mb:.0f} MiB RAM + {usage.swap_used_mb:.0f} MiB swap, "
               f"surge {surge_mb:.0f} MiB ({', '.join(sized) or 'none'})")
    if used + surge_mb > room:
        margin = (f" minus the {hard_margin_mb:.0f} MiB hard margin ({room:.0f} MiB)"
                  if hard_margin_mb else "")
        return GateResult(False, f"{figures}: {used + surge_mb:.0f} MiB exceeds RAM + swap "
                                 f"({total:.0f} MiB){margin}", surge_mb, projected_ram)
    if projected_ram > alert_mb:
        ram = (f"RAM would reach {projected_ram:.0f} of {usage.memory_total_mb:.0f} MiB"
               if projected_ram <= usage.memory_total_mb else
               f"RAM would be full ({usage.memory_total_mb:.0f} MiB), the rest on swap,")
        lasting = f" (it fires after {_duration(alert.for_)} above)" if alert.for_ else ""
        less = f" less the {hard_margin_mb:.0f} MiB hard margin" if hard_margin_mb else ""
        return GateResult(True, f"warning: {figures}: fits ({used:.0f} + {surge_mb:.0f} = "
                                f"{used + surge_mb:.0f} of {room:.0f} MiB RAM + swap{less}), but "
                                f"{ram} during the rollout, past the {alert.above:g}% "
                                f"alert{lasting}", surge_mb, projected_ram, warning=True)
    return GateResult(True, f"{figures}: fits ({projected_ram:.0f} of "
                            f"{usage.memory_total_mb:.0f} MiB RAM)", surge_mb, projected_ram)


def node_gate(name: str, usage: Usage, surge_mb: float, surging: list[str], *,
              hard_margin_mb: float = 0.0) -> GateResult:
    """One node of a cluster: what it uses now plus the new tasks a deploy starts there (by
    their limits: the manager's stats do not see other nodes' tasks) must fit in its own RAM
    + swap. The cluster's total fitting says nothing about the node a task lands on."""
    used = usage.memory_used_mb + usage.swap_used_mb
    total = usage.memory_total_mb + usage.swap_total_mb
    room = total - hard_margin_mb
    figures = (f"{name}: used {usage.memory_used_mb:.0f} MiB RAM + {usage.swap_used_mb:.0f} "
               f"MiB swap, surge {surge_mb:.0f} MiB ({', '.join(surging) or 'none'})")
    if used + surge_mb > room:
        margin = f" minus the {hard_margin_mb:.0f} MiB hard margin" if hard_margin_mb else ""
        return GateResult(False, f"{figures}: {used + surge_mb:.0f} MiB exceeds its RAM + swap "
                                 f"({total:.0f} MiB){margin}", surge_mb, used + surge_mb)
    return GateResult(True, f"{figures}: fits ({used + surge_mb:.0f} of {room:.0f} MiB)",
                      surge_mb, usage.memory_used_mb + surge_mb)
