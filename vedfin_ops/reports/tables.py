"""Terminal views (rich) of reports; the JSON forms live with the reports themselves."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from vedfin_ops.config.model import Config
from vedfin_ops.reports.capacity import CapacityReport

_SERVICE = {"api": "API", "web": "Web", "postgres": "PostgreSQL", "redis": "Redis"}
_STATUS_STYLE = {"ok": "green", "warn": "yellow", "critical": "bold red"}


def _service_label(name: str, env: str) -> str:
    kind = name.removesuffix(f"-{env}")
    return _SERVICE.get(kind, kind.replace("-", " ").title())


def capacity_table(report: CapacityReport) -> Table:
    """The runbook's "Resource Comparison" table, plus overhead, totals and the VPS."""
    live = report.host is not None
    table = Table(title=f"Resource comparison ({report.scope})", title_justify="left")
    columns = ["Service", "Environment", "Memory", "CPU", "Replicas", "Total RAM"]
    for column in [*columns, *(["Used now"] if live else [])]:
        table.add_column(column, justify="right" if column not in ("Service", "Environment")
                         else "left")
    for line in report.lines:
        used = ([f"{line.used_mb:.0f}m ({line.used_percent:.0f}%)" if line.used_mb is not None
                 and line.used_percent is not None else "-"] if live else [])
        table.add_row(_service_label(line.name, line.env), line.env.title(),
                      f"{line.memory_mb}m", f"{line.cpus:g}", str(line.replicas),
                      f"{line.total_memory_mb}m", *used)
    table.add_section()
    table.add_row("Services only", "", "", f"{report.services_cpus:g}", "",
                  f"{report.services_memory_mb}m")
    table.add_row("TOTAL COMMITTED", "", "", f"{report.committed_cpus:g}", "",
                  f"{report.committed_memory_mb}m")
    table.add_row("Rolling-deploy peak", report.surge.env or "", "", "", "",
                  f"{report.surge_peak_memory_mb}m")
    table.add_row("VPS (physical)", "", "", f"{report.vps_cpus:g}", "",
                  f"{report.vps_memory_mb}m + {report.vps_swap_mb}m swap")
    return table


def actual_usage(report: CapacityReport) -> Text:
    """The runbook's "ACTUAL USAGE" block, measured."""
    host = report.host or {}
    measured = [ln for ln in report.lines if ln.used_mb is not None]
    text = Text("ACTUAL USAGE (measured now):\n")
    for line in measured:
        text.append(f"  {line.name} (x{line.running}): ~{line.used_mb:.0f}m "
                    f"({line.used_percent:.0f}% of its limits)\n")
    text.append(f"  host RAM: {host.get('memory_used_mb', 0):.0f}m of "
                f"{host.get('memory_total_mb', 0):.0f}m ({host.get('memory_used_percent', 0)}%)"
                f", swap {host.get('swap_used_mb', 0):.0f}m of {host.get('swap_total_mb', 0):.0f}m"
                f", load {host.get('cpu_load', 0)} on {host.get('cpus', 0)} CPUs")
    return text


def status_line(report: CapacityReport) -> Text:
    text = Text("status: ")
    text.append(report.status, style=_STATUS_STYLE[report.status])
    for reason in report.reasons:
        text.append(f"\n  - {reason}")
    return text


def recommendations_table(report: CapacityReport) -> Table:
    table = Table(title="Mitigations (runbook options)", title_justify="left")
    for column in ("Option", "Frees RAM", "Frees CPU", "Detail"):
        table.add_column(column)
    for rec in report.recommendations:
        table.add_row(rec.action, f"{rec.frees_memory_mb}m", f"{rec.frees_cpus:g}", rec.detail)
    return table


def config_table(config: Config, present: set[str]) -> Table:
    """check-config's summary: apps per env with what they commit and which secrets are set."""
    table = Table(title=f"{config.source}", title_justify="left")
    for column in ("Env", "App", "Replicas", "Memory", "CPU", "Domains", "Secrets"):
        table.add_column(column)
    for env in config.environments:
        names = config.secret_names(env)
        have = sum(1 for n in names if n in present)
        secrets = f"{have}/{len(names)} set"
        for app in config.apps(env):
            table.add_row(env, app.name, str(app.replicas), f"{app.resources.memory}m",
                          f"{app.resources.cpus:g}", ", ".join(app.domains) or "-", secrets)
    return table


def status_tables(info: dict[str, Any]) -> Group:
    releases = Table(title=f"{info['env']}: releases", title_justify="left")
    for column in ("Release", "State", ""):
        releases.add_column(column)
    for rel in info["releases"]:
        releases.add_row(rel["id"], rel["state"], "current" if rel["current"] else "")
    services = Table(title="services", title_justify="left")
    for column in ("Service", "Image", "Running", "Update"):
        services.add_column(column)
    for svc in info["services"]:
        services.add_row(Text(svc["name"]), Text(svc["image"]),
                         f"{svc['running']}/{svc['replicas']}", Text(svc["update_state"]))
    lock = info.get("lock")
    note = Text(f"lock: held by {lock.get('who')} since {lock.get('since')} "
                f"({lock.get('action')})" if lock else "lock: free")
    drift = info.get("drift") or []
    notes: list[Text] = [note]
    if drift:
        notes.append(Text.assemble(("drift: ", "bold yellow"), "the engine does not run "
                                   f"{info.get('current')} as recorded: " + "; ".join(drift)))
    for problem in info.get("problems") or []:
        notes.append(Text.assemble(("warning: ", "yellow"), problem))
    return Group(releases, services, *notes)


def smoke_table(report: Any, what: str = "smoke-test") -> Table:
    table = Table(title=f"{what} {report.env}: "
                        f"{'passed' if report.passed else 'FAILED'}", title_justify="left")
    for column in ("", "Check", "Detail", "Seconds"):
        table.add_column(column)
    for check in report.checks:
        mark = Text("ok", style="green") if check.ok and not check.warning else (
            Text("warn", style="yellow") if check.ok else Text("FAIL", style="bold red"))
        # details are other servers' words: Text, so `[...]` in them is never markup
        table.add_row(mark, Text(check.name), Text(check.detail), f"{check.seconds:.2f}")
    return table
