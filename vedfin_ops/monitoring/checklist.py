"""`fab verify`: the runbook's Post-Deployment Verification as one report, each box ok or
failed from real data, never assumed.

API and web answer, www redirect, certificates, db-health, CORS (smoke, through the edge);
the live release and its migration record, the migration status command in the live image;
pgvector with a real distance query; every service healthy at its configured replicas (the
runbook's 2 for api and web); Netdata's alarms loaded and Uptime Kuma's monitors UP; no error
lines in the running tasks' logs; the last deploy audited ok and live, made by a start-first
rolling update.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fabric import Connection

from vedfin_ops.checks.receipt import summary_line
from vedfin_ops.checks.runner import Check, Failed, run_check
from vedfin_ops.checks.smoke import Options as SmokeOptions
from vedfin_ops.checks.smoke import SmokeReport, smoke_test
from vedfin_ops.config.model import Config
from vedfin_ops.config.names import stack_name
from vedfin_ops.deploy.db_init import find_postgres, inventory_sql, parse_inventory
from vedfin_ops.deploy.migrate import StatusFailed, migrate_status
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import Host, RemoteError, RemoteHost
from vedfin_ops.run.env_run import as_env_host, configured_replicas, poller
from vedfin_ops.run.layout import Layout, parse_listing
from vedfin_ops.run.operation import bare

MIGRATE_RECORD = "migrate.json"
STATUS_LABEL = "vedfin.migrate-status"
AUDIT_LINES = 2000  # every env writes there: production's last deploy must stay in view


class Checklist(SmokeReport):
    """A report of checks like smoke's and preflight's; its boxes are `items` (the JSON's
    key too)."""

    @property
    def items(self) -> list[Check]:
        return self.checks

    def failed(self) -> list[str]:
        return [f"{item.name}: {item.detail}" for item in self.items if not item.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "passed": self.passed,
                "items": [item.to_dict() for item in self.items]}


@dataclass
class Facts:
    """What the host says, asked once: the release listing, the engine, the audit tail."""

    current: str | None
    state: str
    migration: dict[str, Any] | None
    services: dict[str, Any]
    audit: list[dict[str, Any]]
    receipt: dict[str, Any] | None = None  # what the live release's rollout measured


def gather(host: RemoteHost, config: Config, env: str) -> Facts:
    layout = Layout.of(config, env)
    text = host.run(commands.status_state(layout.releases, layout.current, layout.shared_hash,
                                          env, layout.base), what="verify: list releases")
    listing = parse_listing(text)
    migration = None
    if listing.current:
        raw = host.run(commands.read_file(f"{layout.release(listing.current)}/{MIGRATE_RECORD}"),
                       what="read migrate record").strip()
        try:
            migration = json.loads(raw) if raw else None
        except ValueError:
            migration = {"unreadable": raw[:80]}
    # the live release's release.json came with the listing (status_state's `meta`)
    receipt = listing.meta.get("receipt")
    views = poller(host, [stack_name(config, env)], config)()
    from vedfin_ops.reports.tables import audit_entries

    tail = host.run(commands.tail(layout.audit, AUDIT_LINES), what="read audit")
    audit = [e for e in audit_entries(tail) if e.get("env") == env]
    return Facts(listing.current, (listing.state(listing.current) or "") if listing.current else "",
                 migration, views, audit, receipt if isinstance(receipt, dict) else None)


def _release(facts: Facts) -> str:
    if facts.current is None:
        raise Failed("no live release (never deployed?)")
    if facts.state != "good":
        raise Failed(f"live release {facts.current} is {facts.state or 'unmarked'}, not good")
    return f"{facts.current} good"


def healthy(running: int, replicas: int, update_state: str) -> bool:
    """Every replica running healthy and no update under way (or failed)."""
    return running >= replicas and update_state in ("", "-", "completed")


def _services(config: Config, env: str, facts: Facts) -> str:
    wanted = configured_replicas(config, env)
    problems, fine = [], []
    for name, replicas in sorted(wanted.items()):
        view = facts.services.get(name)
        if view is None:
            problems.append(f"{name} missing")
            continue
        if not healthy(view.running, replicas, view.update_state):
            problems.append(f"{name} {view.running}/{replicas} healthy (update "
                            f"{view.update_state or '-'})")
        else:
            fine.append(f"{name.removeprefix(stack_name(config, env) + '_')} "
                        f"{view.running}/{replicas}")
    if problems:
        raise Failed("; ".join(problems))
    return "healthy: " + ", ".join(fine)


def _replicas(config: Config, env: str, facts: Facts) -> str:
    """The runbook's "2 replicas running for API and Web": what the config asks, running."""
    out = []
    for app in config.apps(env):
        if app.app not in ("api", "web"):
            continue
        view = facts.services.get(f"{stack_name(config, env)}_{app.name}")
        running = view.running if view else 0
        if running < app.replicas:
            raise Failed(f"{app.name}: {running} of {app.replicas} replicas running")
        out.append(f"{app.name} {running}")
    if not out:
        return "skipped: no api or web app in this env"
    low = [a.name for a in config.apps(env) if a.app in ("api", "web") and a.replicas < 2]
    detail = ", ".join(out)
    return f"warning: {detail} (the runbook runs 2 of each: {', '.join(low)})" if low else detail


def _migrations(host: RemoteHost, config: Config, env: str, facts: Facts,
                status: bool = True) -> str:
    record = facts.migration
    if record is None:
        said = "no migration record in the live release (deployed before records were kept)"
    elif "unreadable" in record:
        raise Failed(f"the live release's {MIGRATE_RECORD} is not JSON")
    elif record.get("ran"):
        last = (record.get("last_lines") or ["-"])[-1]
        said = f"applied by the deploy of {record.get('tag')} ({str(last).strip()})"
    else:
        said = "nothing to migrate in the deploy of " + str(record.get("tag"))
    app = next((a for a in config.apps(env) if a.migrate_status_command), None)
    if app is None or facts.current is None or not status:
        return ("warning: " if record is None else "") + said
    view = facts.services.get(f"{stack_name(config, env)}_{app.name}")
    if view is None:
        raise Failed(f"{said}; {app.name} is not running, so its status command cannot run")
    layout = Layout.of(config, env)
    try:
        said_now = migrate_status(host, config, env, app, view.image,
                                  f"{layout.release(facts.current)}/env/{app.name}.env",
                                  name=f"{app.name}-migrate-status-{secrets.token_hex(3)}",
                                  label=STATUS_LABEL, what="migrate status")
    except StatusFailed as exc:
        raise Failed(f"{said}; `{app.migrate_status_command}` says: {exc.why}") from None
    return f"{said}; status: {said_now}"


def _pgvector(host: RemoteHost, config: Config, env: str) -> str:
    if "vector" not in config.postgres.extensions:
        return "skipped: vector is not in postgres.extensions"
    database = config.environments[env].database
    container = find_postgres(host, config, timeout=10)
    answer = parse_inventory(host.run(commands.db_inventory(container, config.postgres.user),
                                      what="pgvector query",
                                      stdin=inventory_sql([database], True), check=False))
    if "vector" not in answer.extensions.get(database, set()):
        raise Failed(f"{database} lacks the vector extension")
    if database not in answer.distances:
        raise Failed(f"a vector distance query in {database} returned nothing")
    return f"{database}: vector distance query ok ({answer.distances[database]:g})"


def _monitoring(host: RemoteHost, config: Config) -> str:
    if not config.monitoring.check:
        return "skipped: monitoring.check is false"
    from vedfin_ops.monitoring import netdata as monitoring

    loaded = monitoring.loaded(host, config)
    try:  # both halves are asked: a Netdata problem must not hide an Uptime Kuma one
        kuma, kuma_failed = _uptime(host, config), ""
    except (Failed, CheckFailed) as exc:
        kuma, kuma_failed = "", str(exc)
    if not loaded.ok or kuma_failed:
        said = ([f"Netdata's alarms: {'; '.join(loaded.problems())}"] if not loaded.ok
                else []) + ([kuma_failed] if kuma_failed else [])
        raise Failed("; ".join(said))
    raised = f"; raised: {', '.join(loaded.raised)}" if loaded.raised else ""
    return f"{len(loaded.items)} Netdata alarms loaded as configured{raised}{kuma}"


def _uptime(host: RemoteHost, config: Config) -> str:
    """Uptime Kuma's monitors, when the config has them: each there and UP."""
    if config.monitoring.uptime_kuma is None:  # the loader wants a port with it
        return ""
    from vedfin_ops.config import secret_store
    from vedfin_ops.monitoring import uptime_kuma as uptime

    now = uptime.status(host, config, secret_store.resolve(config))
    bad = [f"{name}: {state} {message}".rstrip() for name, state, message in now.status
           if state != "UP"]
    if bad:
        raise Failed("Uptime Kuma: " + "; ".join(bad))
    return f"; {len(now.status)} Uptime Kuma monitors UP"


def _logs(host: RemoteHost, config: Config, env: str) -> str:
    from vedfin_ops.monitoring.logs import log_errors

    if not config.verify.log_errors:
        return "skipped: verify.logErrors is empty"
    found = log_errors(host, config, env)
    if not found:
        return "no error lines in the running tasks' logs"
    head = f"{len(found)} error line(s), first: {found[0][:200]}"
    if config.verify.log_errors_fail:
        raise Failed(head)
    return f"warning: {head}"


def _zero_downtime(config: Config, env: str, facts: Facts) -> str:
    """The last deploy of the env: audited ok, the release it made is the live one, and its
    services replace tasks start-first (the new one healthy before an old one stops)."""
    # a no-op deploy changed nothing: the one before it made the live release
    deploys = [e for e in facts.audit if e.get("action") == "deploy" and
               e.get("result") != "noop"]
    if not deploys:
        raise Failed("no deploy of this env in the audit log's last lines")
    last = deploys[-1]
    if last.get("result") != "ok":
        raise Failed(f"the last deploy ({last.get('tag')}, {last.get('time')}) ended "
                     f"{last.get('result')}: {last.get('detail') or '-'}")
    if last.get("release") != facts.current:
        raise Failed(f"the last deploy made {last.get('release')}, but {facts.current} is live "
                     f"(a rollback since?)")
    said = f"the last deploy ({last.get('tag')}, {last.get('time')}) ok and live"
    if facts.receipt is not None:  # measured through the edge while it rolled out
        if facts.receipt.get("failed"):
            raise Failed(f"{said}, but {summary_line(facts.receipt)}")
        if not facts.receipt.get("error"):
            return f"{said}: {summary_line(facts.receipt)}"
    if config.deployment_strategy.order != "start-first":
        return (f"warning: the last deploy ({last.get('tag')}) ok, but deploymentStrategy."
                f"maxSurge is 0: stop-first updates (a gap while each task is replaced)")
    return f"{said}, start-first rolling updates (no receipt measured)"


def _drill(host: RemoteHost, config: Config, env: str) -> str:
    """A backup of the env restored by a drill within a week (backups/drill.py)."""
    from datetime import UTC, datetime

    from vedfin_ops.backups.drill import judge, read_records

    passed, detail = judge(*read_records(host, config, env), datetime.now(UTC))
    if not passed:
        raise Failed(detail)
    return detail


def checklist(conn: Connection | Host, config: Config, env: str, *,
              smoke: SmokeOptions | None = None, after_deploy: bool = False,
              run_smoke: Callable[..., Any] = smoke_test) -> Checklist:
    """Every item, in the runbook's order; an item that cannot be answered is failed.

    `after_deploy`: the end of a deploy, which has just passed smoke, read its tasks' logs and
    migrated: those items are not asked again (the migration's record still is, its status
    command not). Nor is monitoring: the deploy of the env that owns the shared stack has
    just applied the alarms and monitors, and another env's deploy leaves them to `fab
    verify`. Nor the restore drill, which no deploy changes."""
    host = as_env_host(conn, config, config.require_env(env))
    report = Checklist(env)
    if not after_deploy:
        checks = run_smoke(config, env, smoke).checks
        report.checks += [Check(f"smoke: {c.name}", c.ok, c.detail, c.seconds, c.warning)
                          for c in checks]
    facts: Facts | None = None

    def known() -> Facts:
        nonlocal facts
        if facts is None:
            facts = gather(host, config, env)
        return facts

    items: list[tuple[str, Callable[[], str]]] = [
        ("live release", lambda: _release(known())),
        ("migrations applied", lambda: _migrations(host, config, env, known(),
                                                   status=not after_deploy)),
        ("pgvector works", lambda: _pgvector(host, config, env)),
        ("services healthy", lambda: _services(config, env, known())),
        ("replicas of api and web", lambda: _replicas(config, env, known())),
        ("monitoring configured", lambda: _monitoring(host, config)),
        ("no errors in logs", lambda: _logs(host, config, env)),
        ("zero-downtime deploy", lambda: _zero_downtime(config, env, known())),
        ("backup restore proven", lambda: _drill(host, config, env)),
    ]
    if after_deploy:
        items = [(n, f) for n, f in items if n not in ("monitoring configured",
                                                       "no errors in logs",
                                                       "backup restore proven")]
    report.checks += [run_check(name, _answered(fn)) for name, fn in items]
    return report


def _answered(fn: Callable[[], str]) -> Callable[[], str]:
    """A host that does not answer fails the item with its one-line reason (not a crash)."""
    def run() -> str:
        try:
            return fn()
        except (RemoteError, CheckFailed) as exc:
            raise Failed(bare(str(exc))) from None
    return run
