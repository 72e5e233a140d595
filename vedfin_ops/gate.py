"""The capacity gate before a deploy: will the rolling update fit in what the host has now?

Limits are caps, not use: the runbook commits 7000 MiB of limits on a 4096 MiB VPS on purpose,
so over-committed limits never refuse a deploy. What refuses is the measurement: the memory
used now plus what this deploy starts at once (one new replica per surging service, sized by
what one replica of it uses now, or by its limit when nothing is measured) must fit in RAM +
swap, and must not push RAM past the critical alert threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from .capacity import lines, surge
from .config import Config
from .usage import Usage


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str
    surge_mb: float
    projected_ram_mb: float


def gate(config: Config, env: str, usage: Usage) -> GateResult:
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
    room = usage.memory_total_mb + usage.swap_total_mb
    projected_ram = usage.memory_used_mb + surge_mb
    critical = usage.memory_total_mb * config.alerts.ram.above / 100
    figures = (f"used {usage.memory_used_mb:.0f} MiB RAM + {usage.swap_used_mb:.0f} MiB swap, "
               f"surge {surge_mb:.0f} MiB ({', '.join(sized) or 'none'})")
    if used + surge_mb > room:
        return GateResult(False, f"{figures}: {used + surge_mb:.0f} MiB exceeds RAM + swap "
                                 f"({room:.0f} MiB)", surge_mb, projected_ram)
    if projected_ram > critical:
        return GateResult(False, f"{figures}: RAM would reach {projected_ram:.0f} of "
                                 f"{usage.memory_total_mb:.0f} MiB, past the "
                                 f"{config.alerts.ram.above:g}% alert", surge_mb, projected_ram)
    return GateResult(True, f"{figures}: fits ({projected_ram:.0f} of "
                            f"{usage.memory_total_mb:.0f} MiB RAM)", surge_mb, projected_ram)
