"""Terminal views (rich) of reports; the JSON forms live with the reports themselves."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from vedfin_ops.checks.receipt import summary_line
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
    for column in [*columns, *(["Used now", "CPU now"] if live else [])]:
        table.add_column(column, justify="right" if column not in ("Service", "Environment")
                         else "left")
    for line in report.lines:
        used = ([f"{line.used_mb:.0f}m ({line.used_percent:.0f}%)" if line.used_mb is not None
                 and line.used_percent is not None else "-",
                 f"{line.used_cpu_percent:g}%" if line.used_cpu_percent is not None else "-"]
                if live else [])
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
                f", load {host.get('cpu_load', 0)} on {host.get('cpus', 0)} CPUs"
                + (f", CPU {host['cpu_percent']:g}% (over 1 s)" if host.get("cpu_percent")
                   is not None else ""))
    if "disk_total_mb" in host:
        text.append(f"\n  disk: {host['disk_used_mb']:.0f}m of {host['disk_total_mb']:.0f}m "
                    f"({host['disk_used_percent']}%), backups {host['backups_mb']:.0f}m, "
                    f"{host['disk_free_mb']:.0f}m free")
    return text


def status_line(report: CapacityReport) -> Text:
    text = Text("status: ")
    text.append(report.status, style=_STATUS_STYLE[report.status])
    for reason in report.reasons:
        text.append(f"\n  - {reason}")
    return text


def nodes_table(report: CapacityReport) -> Table:
    """A cluster's capacity node by node: the plan (limits, and the peak of a rolling
    deploy) against each node's RAM + swap, and what it uses now when measured."""
    table = Table(title="Per node", title_justify="left")
    for column in ("Node", "Role", "RAM + swap", "Committed", "Surge peak", "Used now",
                   "Status"):
        table.add_column(column, justify="left" if column in ("Node", "Role", "Status")
                         else "right")
    for node in report.nodes:
        live = node.live
        used = (f"{live['memory_used_mb']:.0f} of {live['memory_total_mb']:.0f} MiB"
                if live else "-")
        table.add_row(Text(node.name), node.role, f"{node.memory_mb} + {node.swap_mb} MiB",
                      f"{node.committed_memory_mb} MiB", f"{node.peak_memory_mb} MiB", used,
                      Text(node.status, style=_STATUS_STYLE[node.status]))
    return table


def recommendations_table(report: CapacityReport) -> Table:
    table = Table(title="Mitigations (runbook options)", title_justify="left")
    for column in ("Option", "Frees RAM", "Frees CPU", "Detail"):
        table.add_column(column)
    for rec in report.recommendations:
        table.add_row(rec.action, f"{rec.frees_memory_mb}m", f"{rec.frees_cpus:g}", rec.detail)
    return table


def config_table(config: Config, present: set[str]) -> Group:
    """check-config's summary: apps per env with what they commit, and which secrets are set.
    Fits 80 columns: the env heads its rows, domains one per line, long names fold."""
    table = Table(title=f"{config.source}", title_justify="left")
    table.add_column("Env / app", overflow="fold")
    for column in ("Replicas", "Memory", "CPU"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("Domains", overflow="fold")
    secrets: list[str] = []
    for env in config.environments:
        names = config.secret_names(env)
        secrets.append(f"{env} {sum(1 for n in names if n in present)}/{len(names)}")
        table.add_row(Text(env, style="bold"), "", "", "", "")
        for app in config.apps(env):
            table.add_row(Text(f"  {app.name}"), str(app.replicas), f"{app.resources.memory}m",
                          f"{app.resources.cpus:g}", Text("\n".join(app.domains) or "-"))
        table.add_section()
    return Group(table, _note(Text("secrets set: " + ", ".join(secrets))))


def _note(text: Text) -> Text:
    """A line under a table that wraps at the terminal's width (the consoles soft-wrap)."""
    text.no_wrap, text.overflow = False, "fold"
    return text


class _ByWidth:
    """`wide` when the terminal has `need` columns, else `narrow` (the same facts stacked)."""

    def __init__(self, need: int, wide: Table, narrow: Table) -> None:
        self.need, self.wide, self.narrow = need, wide, narrow

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.wide if options.max_width >= self.need else self.narrow


def _when(moment: str | None) -> str:
    """`2026-11-28 10:15` (UTC) from an ISO time; anything else as it is."""
    if not moment:
        return "-"
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return moment
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M")


_STATE_STYLE = {"good": "green", "failed": "bold red", "interrupted": "yellow",
                "ok": "green"}


def _ending(rel: dict[str, Any]) -> Text:
    """How a release ended: its state, `current`, and the reason of a failed one."""
    text = Text(str(rel.get("state") or "unknown"),
                style=_STATE_STYLE.get(str(rel.get("state")), ""))
    if rel.get("current"):
        text.append(", current", style="bold")
    if rel.get("reason"):
        text.append(f": {rel['reason']}")
    return text


def _width(rows: list[dict[str, Any]], key: str, header: str) -> int:
    return max([len(header), *(len(str(r.get(key) or "-")) for r in rows)])


def _releases(info: dict[str, Any]) -> RenderableType:
    rows: list[dict[str, Any]] = info["releases"]
    title = f"{info['env']}: releases"
    if not rows:
        return _note(_no_release(info))
    wide = Table(title=title, title_justify="left")
    wide.add_column("Release", no_wrap=True)
    wide.add_column("Tag", overflow="fold")
    wide.add_column("Created (UTC)", no_wrap=True)
    wide.add_column("By", overflow="fold")
    wide.add_column("State", overflow="fold")
    narrow = Table(title=title, title_justify="left", show_lines=True)
    # a fixed width: the id never folds (rich would shrink it with the others, then let a
    # min_width push the table past the terminal)
    narrow.add_column("Release / tag", overflow="fold", width=_width(rows, "id", ""))
    narrow.add_column("Created (UTC) / by", overflow="fold")
    narrow.add_column("State", overflow="fold", ratio=1)
    for rel in rows:
        tag, by, when = str(rel.get("tag") or "-"), str(rel.get("by") or "-"), \
            _when(rel.get("created"))
        wide.add_row(Text(rel["id"]), Text(tag), when, Text(by), _ending(rel))
        narrow.add_row(Text(f"{rel['id']}\n{tag}"), Text(f"{when}\n{by}"), _ending(rel))
    # 5 columns: 6 rules and 10 spaces of padding; the state gets at least 24
    need = 16 + _width(rows, "id", "Release") + _width(rows, "tag", "Tag") + 16 + \
        _width(rows, "by", "By") + 24
    return _ByWidth(need, wide, narrow)


def _no_release(info: dict[str, Any]) -> Text:
    """An empty listing names where it looked: a wrong --config is not silent."""
    text = Text(f"{info['env']}: no release", style="bold yellow")
    base, config = info.get("base"), info.get("config")
    if base is None:
        return text.append(" recorded on the host", style="")
    source = f", from {config}" if config else ""
    if info.get("base_exists", True):
        text.append(f" in {info.get('releases_dir') or base} (remote.baseDir {base}{source})",
                    style="")
    else:
        text.append(f": {base} does not exist on the host (remote.baseDir{source})", style="")
    text.append("; is that the config you meant? --config FILE", style="")
    return text


def _image_cell(image: str) -> str:
    """`repo:tag@sha256:<64>` as `repo:tag` over `@sha256:<64>`: the tag for people, the
    whole digest (what tells a re-pushed tag) on a line of its own rather than folded."""
    ref, at, digest = image.partition("@")
    return f"{ref}\n@{digest}" if at else ref


def _services(rows: list[dict[str, Any]]) -> RenderableType:
    wide = Table(title="services", title_justify="left")
    wide.add_column("Service", overflow="fold")
    wide.add_column("Image", overflow="fold")
    wide.add_column("Running", justify="right", no_wrap=True)
    wide.add_column("Update", overflow="fold")
    narrow = Table(title="services", title_justify="left", show_lines=True)
    narrow.add_column("Service / image", overflow="fold", ratio=1)
    narrow.add_column("Running", justify="right", no_wrap=True)
    narrow.add_column("Update", overflow="fold")
    for svc in rows:
        running = f"{svc['running']}/{svc['replicas']}"
        image = _image_cell(svc["image"])
        wide.add_row(Text(svc["name"]), Text(image), running, Text(svc["update_state"]))
        narrow.add_row(Text(f"{svc['name']}\n{image}"), running, Text(svc["update_state"]))
    # 4 columns: 5 rules and 8 spaces of padding
    image_width = max([5, *(len(line) for r in rows
                            for line in _image_cell(r["image"]).splitlines())])
    need = 13 + image_width + sum(_width(rows, k, h) for k, h in (
        ("name", "Service"), ("update_state", "Update"))) + 7
    return _ByWidth(need, wide, narrow)


def status_tables(info: dict[str, Any]) -> Group:
    """Releases (tag, when, by whom, how each ended), services, lock, drift; 80 columns."""
    services = _services(info["services"])
    lock = info.get("lock")
    note = Text(f"lock: held by {lock.get('who')} since {lock.get('since')} "
                f"({lock.get('action')})" if lock else "lock: free")
    drift = info.get("drift") or []
    notes: list[Text] = [note]
    live = next((r for r in info.get("releases") or [] if r.get("current")), None)
    if live and live.get("receipt"):
        notes.append(Text(f"receipt of {live['id']}'s rollout: "
                          f"{summary_line(live['receipt'])}"))
    if drift:
        notes.append(Text.assemble(("drift: ", "bold yellow"), "the engine does not run "
                                   f"{info.get('current')} as recorded: " + "; ".join(drift)))
    for problem in info.get("problems") or []:
        notes.append(Text.assemble(("warning: ", "yellow"), problem))
    notes += _backup_notes(info.get("backups") or {})
    notes += _offhours_notes(info.get("offhours") or {})
    return Group(_releases(info), services, *(_note(n) for n in notes))


STALE_BACKUP = 26 * 3600  # a nightly backup missed: more than a day and its run's slack


def _backup_notes(backups: dict[str, Any]) -> list[Text]:
    """The last backup's age, the nightly schedule, and a warning for each gap."""
    from vedfin_ops.schedule.nightly import human_age

    if not backups:
        return []
    if backups.get("last"):
        line = Text(f"backups: last {backups['last']} ({human_age(backups['age_seconds'])}, "
                    f"{backups.get('last_reason')}), {backups['count']} on the host")
    else:
        line = Text("backups: none on the host")
    scheduled, wanted = backups.get("nightly_scheduled"), backups.get("nightly_configured")
    line.append(f"; nightly at {scheduled} (cron)" if scheduled else "; no nightly backup")
    notes = [line]
    if wanted and not scheduled:
        notes.append(Text.assemble(("warning: ", "yellow"), f"backups.nightly is {wanted} but "
                                   "the host's crontab has no entry for this env (fab "
                                   "db.schedule)"))
    age = backups.get("age_seconds")
    if scheduled and age is not None and age > STALE_BACKUP:
        notes.append(Text.assemble(("warning: ", "yellow"), f"the last backup is "
                                   f"{human_age(age)}; last nightly run: "
                                   f"{backups.get('last_nightly_run') or 'never'}"))
    elif backups.get("last_nightly_run", "") and " failed: " in backups["last_nightly_run"]:
        notes.append(Text.assemble(("warning: ", "yellow"), "last nightly run: ",
                                   backups["last_nightly_run"]))
    notes += _drill_notes(backups.get("last_drill"), backups.get("last_proven"))
    return notes


def _drill_notes(last: dict[str, Any] | None, proven: dict[str, Any] | None) -> list[Text]:
    """The last proven restorable backup (RPO, RTO), and the last drill when it failed."""
    from vedfin_ops.backups.drill import duration_text

    notes = []
    if proven:
        notes.append(Text(f"restore proven: {proven.get('backup')} on {proven.get('time')} "
                          f"(data {duration_text(proven.get('rpoSeconds'))} old, restored in "
                          f"{duration_text(proven.get('rtoSeconds'))})"))
    if last and last.get("result") != "ok":
        notes.append(Text.assemble(("warning: ", "yellow"), f"the last restore drill "
                                   f"({last.get('backup')}, {last.get('time')}) "
                                   f"{last.get('result')}: {last.get('detail') or '-'}"))
    elif not proven:
        notes.append(Text("restore proven: never (fab db.drill)"))
    return notes


def _offhours_notes(offhours: dict[str, Any]) -> list[Text]:
    """The off-hours schedule, and a warning for a run that is pending (skipped or failed:
    cron retries it until its window closes) or missing from the crontab."""
    if not offhours:
        return []
    wanted, scheduled = offhours.get("configured") or {}, offhours.get("scheduled")
    line = Text(f"off-hours: {wanted.get('replicas')} replica(s) per app from "
                f"{scheduled['down']} to {scheduled['up']} (cron)" if scheduled and
                "down" in scheduled and "up" in scheduled else "off-hours: not scheduled")
    notes = [line]
    if not scheduled:
        notes.append(Text.assemble(("warning: ", "yellow"), "offHours lists this env but the "
                                   "host's crontab has no line for it (fab db.schedule)"))
    if offhours.get("pending"):
        notes.append(Text.assemble(("warning: ", "yellow"), f"off-hours {offhours['pending']} "
                                   f"due since {offhours.get('pending_since')} has not run "
                                   "(retried by cron until its window closes); last run: ",
                                   offhours.get("last_run") or "never"))
    elif offhours.get("last_run") and " failed: " in offhours["last_run"]:
        notes.append(Text.assemble(("warning: ", "yellow"), "last off-hours run: ",
                                   offhours["last_run"]))
    return notes


def audit_entries(text: str) -> list[dict[str, Any]]:
    """The audit log's lines as entries; a line that is not a JSON object (torn, edited by
    hand) is kept whole as the detail of an `(unreadable)` entry: shown, never fatal."""
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        entries.append(entry if isinstance(entry, dict) else {"action": "(unreadable)",
                                                           "detail": line})
    return entries


_AUDIT = ("time", "who", "env", "action", "release", "tag", "result", "detail")


def audit_table(entries: list[dict[str, Any]]) -> RenderableType:
    """The last lines of the audit log: when, who, what, on which release, how it ended."""
    def cell(entry: dict[str, Any], key: str) -> str:
        value = entry.get(key)
        return "" if value is None else str(value)

    wide = Table(title="audit log", title_justify="left")
    for key in _AUDIT:
        wide.add_column("Time (UTC)" if key == "time" else key.title(),
                        no_wrap=key in ("time", "release"),
                        overflow="fold")
    narrow = Table(title="audit log", title_justify="left", show_lines=True)
    for header in ("Time (UTC) / who", "Env / action", "Release / tag", "Result / detail"):
        narrow.add_column(header, overflow="fold", ratio=1 if header.startswith("Result")
                          else None)
    for entry in entries:
        when = _when(cell(entry, "time")) if "time" in entry else ""
        result = Text(cell(entry, "result"), style=_STATE_STYLE.get(cell(entry, "result"), ""))
        wide.add_row(when, *(Text(cell(entry, k)) for k in _AUDIT[1:6]), result,
                     Text(cell(entry, "detail")))
        narrow.add_row(Text(f"{when}\n{cell(entry, 'who')}".strip("\n")),
                       Text(f"{cell(entry, 'env')}\n{cell(entry, 'action')}".strip("\n")),
                       Text(f"{cell(entry, 'release')}\n{cell(entry, 'tag')}".strip("\n")),
                       Text.assemble(result, "\n" if entry.get("result") and
                                     entry.get("detail") else "", cell(entry, "detail")))
    need = 25 + 16 + 24 + sum(max([len(k), *(len(cell(e, k)) for e in entries)])
                              for k in _AUDIT[1:7])
    return _ByWidth(need, wide, narrow)


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


def backups_table(backups: list[Any], orphans: list[str], where: str) -> RenderableType:
    """The backups on the host, oldest first per database: id, env, size, who, why."""
    table = Table(title=f"backups in {where}", title_justify="left")
    for header in ("Database", "Id (UTC)", "Env", "Size", "By", "Reason"):
        table.add_column(header, overflow="fold", no_wrap=header == "Id (UTC)")
    for backup in backups:
        table.add_row(Text(backup.database), Text(backup.id), Text(backup.env),
                      Text(_size(backup.size)), Text(backup.by), Text(backup.reason))
    for orphan in orphans:
        table.add_row(Text(orphan.split("/")[0]), Text(orphan.split("/")[-1]), Text(""),
                      Text(""), Text(""), Text("no record: not a backup (removed by the next "
                                               "backup of the database)", style="yellow"))
    return table


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size = size / 1024  # type: ignore[assignment]
    return f"{size} B"


def cluster_table(info: dict[str, Any]) -> Group:
    """`fab cluster.status`: a node per row; what the engine says is shown as text, never
    as markup (a hostname or label is data)."""
    table = Table(title="nodes", title_justify="left")
    for column in ("Node", "Role", "State", "Availability", "Tasks", "Labels"):
        table.add_column(column, overflow="fold",
                         justify="right" if column == "Tasks" else "left")
    for node in info["nodes"]:
        role = node["role"] + (" (leader)" if node.get("leader") else "")
        name = node["name"] + ("" if node.get("configured", True) else " (not in the config)")
        labels = ", ".join(f"{k}={v}" for k, v in sorted(node["labels"].items()))
        table.add_row(Text(name), Text(role), Text(node["state"]), Text(node["availability"]),
                      str(node["tasks"]), Text(labels))
    notes = [Text.assemble(("problem: ", "bold red"), p) for p in info.get("problems") or []]
    return Group(table, *notes)
