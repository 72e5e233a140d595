"""`fab report --env E --html F`: one self-contained page to look at (no script, no link
outside it): the verification report, releases, services and their health, the capacity
chart measured now, Netdata's alarms and the recent audit lines.

Every value on the page is outside text (release reasons, engine messages, app lines), so the
template is autoescaped; each section is read on its own and one the host cannot answer says
why in its place rather than costing the page.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from vedfin_ops.checks.receipt import summary_line
from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import Host
from vedfin_ops.rendering.files import TEMPLATES
from vedfin_ops.run.env_run import as_env_host
from vedfin_ops.run.layout import Layout
from vedfin_ops.run.operation import bare

AUDIT_SHOWN = 20


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2")


def page(data: dict[str, Any]) -> str:
    """The HTML for `data` (what `gather` returns): pure, tested without a host."""
    return _template().render(**data)


def _mark(item: Any) -> str:
    return "failed" if not item.ok else ("warn" if item.warning else "ok")


def gather(host: Host, config: Config, env: str, *,
           run_checklist: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Everything the page shows, each section read on its own."""
    from vedfin_ops.monitoring import netdata as monitoring
    from vedfin_ops.monitoring.checklist import checklist, healthy
    from vedfin_ops.remote.probes.usage import measure
    from vedfin_ops.reports.capacity import capacity_report
    from vedfin_ops.reports.chart import svg
    from vedfin_ops.reports.status import status
    from vedfin_ops.reports.tables import audit_entries

    host = as_env_host(host, config, config.require_env(env))
    data: dict[str, Any] = {
        "env": env, "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": getattr(host, "name", "host"), "config": Path(config.source).name,
        "current": None, "releases": [], "services": [], "capacity": None, "chart": "",
        "alarms": [], "raised": [], "verification": [], "verification_passed": False,
        "audit": [], "errors": {}}

    def section(name: str, read: Callable[[], None]) -> None:
        try:
            read()
        except Exception as exc:  # one section's trouble must not cost the page
            why = bare(str(exc)) if isinstance(exc, CheckFailed) else \
                f"{type(exc).__name__}: {exc}"
            data["errors"][name] = host.redact(why)

    def read_status() -> None:
        info = status(host, config, env)
        data["current"] = info["current"]
        data["releases"] = [{**r, "receipt_line": summary_line(r["receipt"])
                             if r.get("receipt") else ""} for r in info["releases"]]
        data["services"] = [{**s, "healthy": healthy(s["running"], s["replicas"],
                                                     s["update_state"])}
                            for s in info["services"]]

    def read_capacity() -> None:
        report = capacity_report(config, env, measure(host, config.remote.base_dir, cpu=True))
        data["capacity"], data["chart"] = report, svg(report)

    def read_alarms() -> None:
        if not config.monitoring.check:
            data["errors"]["alarms"] = "skipped: monitoring.check is false"
            return
        now = monitoring.loaded(host, config)
        data["alarms"] = [{"name": n, "ok": ok, "detail": d} for n, ok, d in now.items]
        data["raised"] = now.raised

    def read_verification() -> None:
        report = (run_checklist or checklist)(host, config, env)
        data["verification"] = [{"name": i.name, "detail": i.detail, "mark": _mark(i)}
                                for i in report.items]
        data["verification_passed"] = report.passed

    def read_audit() -> None:
        text = host.run(commands.tail(Layout.of(config, env).audit, 400), what="read audit")
        data["audit"] = [e for e in audit_entries(text)
                         if e.get("env") in (env, None)][-AUDIT_SHOWN:][::-1]

    for name, read in (("status", read_status), ("capacity", read_capacity),
                       ("alarms", read_alarms), ("verification", read_verification),
                       ("audit", read_audit)):
        section(name, read)
    return data


def write_page(path: str | Path, html: str) -> Path:
    """Atomically (temp file + rename): a reader never sees half a page. A path that cannot
    be written is bad input, named with the system's reason."""
    target = Path(path)
    if target.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"report --html: {target.name}: use a .html file")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # 0600, as mkstemp made it
            fh.write(html)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"report --html: {target}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)  # anything but a page written whole leaves nothing
    return target
