"""The task tree (`vedfin --list`, `inv --list`, `fab --list`): thin wrappers over functions.

Every task takes `--config F` (else $VEDFIN_CONFIG, else dokploy.yaml); a task on a host
(`@on_host`, under `-H HOST`) also `--accept-new-host-key` and `--host-key-fingerprint`. Those
shared options come from cli/target.py: a body states only its own and gets a `Target` (the
config and the host, each made on first use). Exit codes: 0 ok, 1 a check or deploy failed,
2 bad input.

Each task imports what it uses inside its body: listing the tasks, or running one, must not pay
for fabric, paramiko, pydantic, rich and requests when it does not use them (cold start).
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

from invoke.collection import Collection
from invoke.tasks import Task

from vedfin_ops.cli.output import err, say, warn
from vedfin_ops.cli.output import out as stdout
from vedfin_ops.cli.target import Target, local, on_host


@local(help={"env": "one env (default: all)", "out": "output folder",
             "tag": "image tag (default: the config's tag)"})
def render(on: Target, env: str | None = None, out: str = "build", tag: str | None = None) -> None:
    """Render stack files, env files, init-db.sql, edge and alert config into a folder."""
    from pathlib import Path

    from vedfin_ops.config import secret_store
    from vedfin_ops.rendering.files import render as _render
    from vedfin_ops.rendering.local_files import write_tree
    cfg = on.config
    if env:
        cfg.require_env(env)
    values = secret_store.resolve(cfg, env)
    rendered = _render(cfg, env, tag=tag, secrets=values)
    written = write_tree(rendered, Path(out))
    for path in written:
        mode = " (0600)" if rendered.is_secret(str(path.relative_to(out))) else ""
        stdout.print(f"{path}{mode}")
    if rendered.missing_secrets:
        warn(f"{len(rendered.missing_secrets)} secrets not set, placeholders written: "
             f"{', '.join(rendered.missing_secrets)} (inv secrets.generate --env E, or export "
             f"them)")



@local(help={"tag": "the tag to build, e.g. $(git rev-parse --short HEAD)",
             "push": "push to the config's registry (once all built) and print the digests",
             "env": "only this env's apps (default: every app with a build section)"})
def build(on: Target, tag: str | None = None, push: bool = False, env: str | None = None) -> None:
    """Build each app's image from its `build:` section here (docker build); --push ships it."""
    from vedfin_ops.config import secret_store
    from vedfin_ops.config.tags import check_tag
    from vedfin_ops.deploy.build import build_images
    from vedfin_ops.errors import UsageError
    if not tag:  # an option, not a positional: `build --help` must show the help
        raise UsageError("build: --tag is required (e.g. --tag $(git rev-parse "
                         "--short HEAD))")
    cfg = on.config
    if env:
        cfg.require_env(env)
    check_tag(tag)
    from vedfin_ops.run.interrupts import signals_as_interrupts
    # SIGTERM and SIGHUP as Ctrl-C: docker stopped and the registry login removed on the way
    with signals_as_interrupts(notice=say, busy="stopping docker"):
        built = build_images(cfg, tag, secret_store.resolve(cfg) if push else {}, push=push,
                             env=env, say=say)
    for item in built:
        stdout.print(f"{item.image}{'@' + item.digest if item.digest else ''} "
                     f"({item.seconds:g}s)")


@local(help={"ci": "the CI to write a workflow for: github (.github/workflows/deploy.yml)",
             "host": "the host the workflow deploys to, USER@HOST[:PORT] (default: "
                     "remote.user@vps.address)",
             "force": "overwrite an existing workflow file"})
def init(on: Target, ci: str | None = None, host: str | None = None,
         force: bool = False) -> None:
    """Write a CI workflow that, on a push to production's branch, builds, pushes and deploys
    production with this tool (`deploy.production --build`), one deploy at a time."""
    from vedfin_ops.rendering.ci import check_ci, workflow, write_workflow
    check_ci(ci)  # before the config is read
    assert ci is not None
    made = write_workflow(workflow(on.config, ci, host=host), force=force)
    stdout.print(f"init: {made} (store the secrets its header lists as secrets of the GitHub "
                 f"environment production)", markup=False)


@local()
def check_config(on: Target) -> None:
    """Validate the config and print a summary of what it deploys."""
    from vedfin_ops import extras
    from vedfin_ops.config import secret_store
    from vedfin_ops.config.roles import shared_owner
    from vedfin_ops.reports.capacity import capacity_report as _capacity_report
    from vedfin_ops.reports.tables import config_table
    cfg = on.config
    shared_owner(cfg)  # two envs that own the shared stack: bad input, as a deploy says
    extras.check(cfg)  # a feature whose extra is missing: bad input, as a deploy says
    present = set(secret_store.resolve(cfg))
    stdout.print(config_table(cfg, present))
    report = _capacity_report(cfg)
    stdout.print(f"{cfg.source}: valid; {len(cfg.applications)} apps in "
              f"{len(cfg.environments)} envs; capacity {report.status}")


@local(help={"env": "one env plus shared services (default: every env)",
             "json": "print the contract's JSON object",
             "chart": "also write a chart: .png (matplotlib), .svg or .html"})
def capacity_report(on: Target, env: str | None = None, json_: bool = False,
                    chart: str | None = None) -> None:
    """Committed resources vs the VPS (Task 2.3); under `fab -H HOST`, measured usage too."""
    from vedfin_ops.remote.probes.usage import measure
    from vedfin_ops.reports.capacity import capacity_report as _capacity_report
    from vedfin_ops.reports.chart import write_chart
    from vedfin_ops.reports.tables import (
        actual_usage,
        capacity_table,
        nodes_table,
        recommendations_table,
        status_line,
    )
    cfg = on.config
    if env:
        cfg.require_env(env)
    host = on.host if on.is_remote else None
    usage = measure(host, cfg.remote.base_dir, cpu=True) if host is not None else None
    node_usage = None
    if host is not None and usage is not None and cfg.multi_node:
        from vedfin_ops.cluster.nodes import measure_nodes

        node_usage = measure_nodes(host, cfg, usage)
    report = _capacity_report(cfg, env, usage, node_usage)
    if chart:
        err.print(f"chart: {write_chart(report, chart)}")
    if json_:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    stdout.print(capacity_table(report))
    if cfg.multi_node:
        stdout.print(nodes_table(report))
    if usage is not None:
        stdout.print(actual_usage(report))
    stdout.print(status_line(report))
    if report.recommendations:
        stdout.print(recommendations_table(report))


@local(help={"env": "environment", "json": "JSON output",
             "database_url": "also run the pgvector check through this URL "
                             "(default: $VEDFIN_SMOKE_DATABASE_URL)"})
def smoke_test(on: Target, env: str = "production", json_: bool = False,
               database_url: str | None = None) -> None:
    """HTTP, TLS and pgvector checks against the live env (the runbook's Step 6)."""
    from vedfin_ops.checks.smoke import Options as SmokeOptions
    from vedfin_ops.checks.smoke import smoke_test as _smoke_test
    from vedfin_ops.errors import CheckFailed
    from vedfin_ops.reports.tables import smoke_table
    cfg = on.config
    url = database_url or os.environ.get("VEDFIN_SMOKE_DATABASE_URL")
    report = _smoke_test(cfg, env, SmokeOptions(database_url=url))
    if json_:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        stdout.print(smoke_table(report))
    if not report.passed:
        failed = [c.name for c in report.checks if not c.ok]
        raise CheckFailed(f"smoke-test {env}: {len(failed)} of {len(report.checks)} "
                          f"checks failed: {', '.join(failed)}")


@on_host()
def db_init(on: Target) -> None:
    """Create missing databases and extensions, then verify with a vector query."""
    from vedfin_ops.deploy.db_init import run_db_init
    cfg = on.config
    host = on.host
    result = run_db_init(host, cfg, say=say)
    if result.changed:
        created = result.created_databases + result.created_extensions
        stdout.print(f"db-init: created {', '.join(created)}")
    else:
        stdout.print("db-init: nothing to do (every database and extension was there)")
    stdout.print(f"db-init: vector distance check = {result.vector_distance}")


@on_host(help={"env": "environment", "tag": "the NEW api image tag"})
def migrate(on: Target, env: str = "production", tag: str | None = None) -> None:
    """Run migrations in a one-off container of the new api image (env file of `current`)."""
    from vedfin_ops.deploy.migrate import require_tag, run_migrate
    cfg = on.config
    cfg.require_env(env)
    host = on.host
    if not run_migrate(host, cfg, env, require_tag(tag), say=say):
        stdout.print(f"migrate: no app of {env} has a migration command")


@on_host(help={"env": "environment",
               "restore_db": "also restore the database from the backup taken before the "
                             "current release's deploy (its migration undone)"})
def rollback(on: Target, env: str = "production", restore_db: bool = False) -> None:
    """Back to the previous good release: redeployed, converged, verified."""
    from vedfin_ops.cli.output import LiveLines
    from vedfin_ops.deploy.rollback import rollback as _rollback
    cfg = on.config
    with LiveLines() as show:
        target = _rollback(on.host, cfg, env, say=say, show=show, restore_db=restore_db)
    stdout.print(f"rollback: {env} runs {target}")


@on_host(help={"env": "environment", "json": "JSON output"})
def status(on: Target, env: str = "production", json_: bool = False) -> None:
    """Releases, services, replicas and update state on the host."""
    from vedfin_ops.reports.status import status as _status
    from vedfin_ops.reports.tables import status_tables
    info = _status(on.host, on.config, env)
    if json_:
        print(json.dumps(info, indent=2))
        return
    stdout.print(status_tables(info))


@on_host(name="status", help={"json": "JSON output"})
def cluster_status(on: Target, json_: bool = False) -> None:
    """The swarm's nodes (state, availability, labels, tasks) beside the config's; exit 1
    when a node is missing, down or unlabelled."""
    from vedfin_ops.cluster.membership import cluster_status as _cluster_status
    from vedfin_ops.errors import CheckFailed
    from vedfin_ops.reports.tables import cluster_table

    info = _cluster_status(on.host, on.config)
    if json_:
        print(json.dumps(info, indent=2))
    else:
        stdout.print(cluster_table(info))
    if info["problems"]:
        raise CheckFailed(f"cluster: {'; '.join(info['problems'])}")


@on_host(name="drain", help={"node": "the node: its name (nodes[].name, as docker node ls "
                                      "shows it) or its host"})
def cluster_drain(on: Target, node: str) -> None:
    """Move a node's tasks to the others (availability drain), converged, then each running
    env's smoke checks (as a deploy's verify); put back on any failure; audited as
    cluster-drain."""
    from vedfin_ops.cli.output import LiveLines
    from vedfin_ops.cluster.membership import drain
    from vedfin_ops.cluster.nodes import configured_node

    cfg = on.config
    found = configured_node(cfg, node)
    name = found.name if found else node
    with LiveLines() as show:
        result = drain(on.host, cfg, name, say=say, show=show)
    verified = ", ".join(result["verified"]) or "none"
    stdout.print(f"cluster.drain: {result['node']} drained ({result['moved']} task(s) moved; "
                 f"verified: {verified})")


@on_host(name="join", help={"node": "the configured node: its name or host (SSH reaches "
                                     "it as nodes[].host says)"})
def cluster_join(on: Target, node: str) -> None:
    """Join a configured node to the swarm (over its own SSH link, host key checked), with
    its role and labels; converged (a member gets only missing labels); audited."""
    from fabric import Connection

    from vedfin_ops.cluster.membership import join
    from vedfin_ops.cluster.nodes import configured_node
    from vedfin_ops.remote.host import Host

    cfg = on.config
    manager = on.host
    found = configured_node(cfg, node)
    target = found.host if found else node
    # the node's host key: its own known_hosts line (--host-key-fingerprint is the manager's)
    node_host = Host(Connection(target, config=on.c.config), on.accept_new_host_key, None)
    try:
        result = join(manager, node_host, cfg, node, say=say)
    finally:
        node_host.close()
    stdout.print(f"cluster.join: {result['node']} "
                 + ("joined" if result["joined"] else "already in the swarm")
                 + (f"; labels {', '.join(result['labels'])}" if result["labels"] else ""))


@on_host(help={"env": "environment", "app": "one app (default: every app of the env)",
               "since": "a duration (10m, 2h) or a date (2026-11-29T12:00:00Z)",
               "lines": "at most this many of each task's last lines",
               "follow": "keep printing new lines until Ctrl-C",
               "grep": "only lines matching this regular expression"})
def logs(on: Target, env: str = "production", app: str | None = None, since: str = "10m",
         lines: int = 200, follow: bool = False, grep: str | None = None) -> None:
    """The env's apps' logs through the engine: time, task, line; merged in time order."""
    from vedfin_ops.monitoring.logs import check_grep, check_since, services, show_logs
    from vedfin_ops.run.env_run import as_env_host
    cfg = on.config
    services(cfg, env, app)  # bad input: before any connection
    check_since(since)
    check_grep(grep)
    host = as_env_host(on.host, cfg, env)
    shown = show_logs(host, cfg, env, app=app, since=since, tail=lines, follow=follow,
                      grep=grep, out=lambda line: print(line, flush=True))  # literal
    if not shown and not follow:
        say(f"logs: no line from {env}{' ' + app if app else ''} since {since}"
            + (f" matching {grep!r}" if grep else ""))


@on_host(name="prepare", help={
    "plan": "only check: print what each step would change, and change nothing",
    "key": "the public key to authorize for the deploy user (default: the .pub beside this "
           "connection's identity, else ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub)"})
def host_prepare(on: Target, plan: bool = False, key: str | None = None) -> None:
    """A bare Debian 12 or Ubuntu 24.04 VPS (as root or a passwordless sudoer) to the
    runbook's prerequisites: docker.io and a swarm, the deploy user and its key, swap, ufw,
    Netdata and cron, the firewall check's sudoers line, Uptime Kuma; a second run changes
    nothing."""
    from vedfin_ops.config import secret_store
    from vedfin_ops.host.keys import public_key
    from vedfin_ops.host.prepare import Prepared, PrepareFailed, prepare
    cfg = on.config
    host = on.host
    found = public_key(host.conn, key)  # bad input before the host is reached
    values = secret_store.resolve(cfg) if cfg.monitoring.uptime_kuma is not None else {}
    host.secrets = [v for v in values.values() if v]

    def show(result: Prepared, lines: bool) -> None:
        for step in result.steps if lines else []:
            stdout.print(step.line(), markup=False)

    try:
        result = prepare(host, cfg, public_key=found, plan=plan, ssh_port=host.conn.port,
                         secrets=values, say=say)
    except PrepareFailed as exc:
        show(exc.result, True)
        raise
    show(result, plan)
    if plan:  # a plan with a step that cannot be done raised PrepareFailed (exit 1)
        stdout.print(result.plan_line())
    else:
        stdout.print(f"host.prepare: changed {', '.join(result.changed)}" if result.changed
                     else "host.prepare: nothing to change")


@on_host(help={"lines": "how many of the last lines",
               "json": "the raw JSON lines, as the log holds them"})
def audit(on: Target, lines: int = 30, json_: bool = False) -> None:
    """The host's audit log: who deployed what, when, and how it ended."""
    from vedfin_ops.remote import commands
    from vedfin_ops.run.layout import Layout
    cfg = on.config
    host = on.host
    path = Layout.of(cfg, next(iter(cfg.environments))).audit
    text = host.run(commands.tail(path, lines), what="audit")
    if json_:
        print(text, end="")
        return
    from vedfin_ops.reports.tables import audit_entries, audit_table
    entries = audit_entries(text)
    if entries:
        stdout.print(audit_table(entries))
    else:
        stdout.print(f"audit: no line in {path} (remote.baseDir, from {cfg.source})")


@on_host(help={"env": "environment", "json": "JSON output"})
def preflight(on: Target, env: str = "production", json_: bool = False) -> None:
    """The pre-deployment checklist: secrets, DNS, TLS, firewall, monitoring, capacity."""
    from vedfin_ops.checks.preflight import preflight as _preflight
    from vedfin_ops.errors import CheckFailed
    from vedfin_ops.reports.tables import smoke_table
    cfg = on.config
    report = _preflight(on.host, cfg, env)
    if json_:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        stdout.print(smoke_table(report, "preflight"))
    if not report.passed:
        failed = [ch.name for ch in report.checks if not ch.ok]
        raise CheckFailed(f"preflight {env}: failed: {', '.join(failed)}")


@on_host(help={"env": "environment",
               "force": "allow a protected env (production) below 1 replica"})
def pause(on: Target, env: str = "dev", force: bool = False) -> None:
    """Replicas of every app of the env to 0 (the runbook's "pause dev/staging")."""
    from vedfin_ops.cli.output import LiveLines
    from vedfin_ops.deploy.scale import scale as _scale
    with LiveLines() as show:
        _scale(on.host, on.config, env, 0, action="pause", force=force, say=say, show=show)


@on_host(help={"env": "environment"})
def resume(on: Target, env: str = "dev") -> None:
    """Every app of the env back to its configured replicas, converged and verified."""
    from vedfin_ops.cli.output import LiveLines
    from vedfin_ops.deploy.scale import scale as _scale
    with LiveLines() as show:
        _scale(on.host, on.config, env, None, action="resume", say=say, show=show)


@on_host(help={"env": "environment", "replicas": "replicas for every app",
               "force": "allow a protected env (production) below 1 replica"})
def scale(on: Target, env: str = "production", replicas: int = 1, force: bool = False) -> None:
    """Every app of the env to N replicas (the runbook's off-hours single replica)."""
    from vedfin_ops.cli.output import LiveLines
    from vedfin_ops.deploy.scale import scale as _scale
    with LiveLines() as show:
        _scale(on.host, on.config, env, replicas, action="scale", force=force, say=say,
               show=show)


@on_host(name="backup", help={"env": "environment"})
def db_backup(on: Target, env: str = "production") -> None:
    """pg_dump -Fc of the env's database to the host, size and sha256 recorded."""
    from vedfin_ops.backups.backup import run_backup
    from vedfin_ops.backups.records import folder
    cfg = on.config
    cfg.require_env(env)
    host = on.host
    backup = run_backup(host, cfg, env, say=say)
    database = cfg.environments[env].database
    if backup is None:
        stdout.print(f"db.backup: {database} does not exist yet: nothing to back up")
        return
    stdout.print(f"db.backup: {folder(cfg, database)}/{backup.id}.dump, {backup.size} bytes, "
                 f"sha256 {backup.sha256}")


@on_host(name="backups", help={"env": "one env (default: every env)",
                               "json": "JSON output",
                               "s3": "the copies in the backups.s3 bucket instead"})
def db_backups(on: Target, env: str | None = None, json_: bool = False, s3: bool = False) -> None:
    """The backups on the host (or their copies in the bucket), oldest first per database."""
    from vedfin_ops.backups.records import list_backups, root
    cfg = on.config
    if env is not None:
        cfg.require_env(env)
    if s3:
        _bucket_backups(cfg, env, json_)
        return
    listing = list_backups(on.host, cfg, env)
    if json_:
        print(json.dumps({"backups": [b.to_dict() for b in listing.backups],
                          "incomplete": listing.orphans, "unreadable": listing.unreadable,
                          "broken": listing.broken},
                         indent=2))
        return
    if not listing.backups and not listing.orphans and not listing.broken:
        stdout.print(f"db.backups: none in {root(cfg)}")
        return
    from vedfin_ops.reports.tables import backups_table
    stdout.print(backups_table(listing.backups, listing.orphans, root(cfg)))
    for path in listing.unreadable:
        warn(f"{root(cfg)}/{path} is not a backup record (edited by hand?): ignored")
    for what in listing.broken:  # `<path> (why)`: not restorable, not counted by retention
        warn(f"{root(cfg)}/{what}: not a backup; retention leaves it for you to remove")


@on_host(name="schedule")
def db_schedule(on: Target) -> None:
    """Install (or, with backups.nightly: null, remove) the nightly backups in cron."""
    from vedfin_ops.schedule import nightly
    cfg = on.config
    installed = nightly.apply(on.host, cfg)
    if not installed:
        stdout.print("db.schedule: no nightly backups (backups.nightly is null); removed")
        return
    for env, at in installed.items():
        stdout.print(f"db.schedule: {env} every night at {at} (host time): "
                     f"{nightly.script_path(cfg, env)}")


@on_host(help={"env": "environment",
               "app": "the app to restart (default: every app of the env)"})
def restart(on: Target, env: str = "production", app: str | None = None) -> None:
    """Rolling restart of an app (new tasks, start-first, verified): no failed request."""
    from vedfin_ops.cli.output import LiveLines
    from vedfin_ops.deploy.scale import restart as _restart
    with LiveLines() as show:
        _restart(on.host, on.config, env, app, say=say, show=show)


@on_host(help={"env": "environment", "json": "JSON output"})
def verify(on: Target, env: str = "production", json_: bool = False) -> None:
    """The runbook's Post-Deployment Verification, each box from real data (exit 1 if one
    fails)."""
    from vedfin_ops.monitoring.checklist import checklist
    report = checklist(on.host, on.config, env)
    if json_:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from vedfin_ops.reports.tables import smoke_table
        stdout.print(smoke_table(report, "verify (post-deployment checklist)"))
    if not report.passed:
        raise SystemExit(1)


@on_host(help={"env": "environment", "html": "the page to write (.html)"})
def report(on: Target, env: str = "production", html: str | None = None) -> None:
    """One HTML page: verification, releases, services, capacity chart, alarms, audit."""
    from vedfin_ops.errors import UsageError
    from vedfin_ops.reports.html import gather, page, write_page
    if not html:
        raise UsageError("report: --html FILE is required (the page to write)")
    cfg = on.config
    data = gather(on.host, cfg, env)
    target = write_page(html, page(data))
    for name, why in data["errors"].items():
        warn(f"report: {name}: {why}")
    stdout.print(f"report: {target} (verification "
                 f"{'passed' if data['verification_passed'] else 'FAILED'})", markup=False)
    if not data["verification_passed"]:
        raise SystemExit(1)


@on_host(name="apply", help={"json": "JSON output"})
def monitoring_apply(on: Target, json_: bool = False) -> None:
    """Install the runbook's Netdata alarms, the restarts plugin and the notification settings
    on the host, reload, and prove Netdata has them (exit 1 when an alarm is not loaded)."""
    from vedfin_ops.config import secret_store
    from vedfin_ops.monitoring import netdata as monitoring
    cfg = on.config
    values = secret_store.resolve(cfg)
    wanted = monitoring.files(cfg, values, say=lambda m: warn(m.removeprefix("warning: ")))
    host = on.host
    host.secrets = list(values.values())
    changed, now = monitoring.apply(host, cfg, wanted[0].text, extra=wanted[1:])
    kuma = _uptime(host, cfg, values, apply=True)
    _show_alarms(now, json_, changed, kuma)
    if not now.ok or (kuma is not None and not kuma.ok):
        raise SystemExit(1)


def _uptime(host: Any, cfg: Any, values: Any, *, apply: bool) -> Any:
    """Uptime Kuma's side of `monitoring.*` (None when the config has none)."""
    from vedfin_ops.monitoring import uptime_kuma as uptime
    if cfg.monitoring.uptime_kuma is None:  # the loader wants a port with it
        return None
    return (uptime.apply(host, cfg, values) if apply else uptime.status(host, cfg, values))


@on_host(name="status", help={"json": "JSON output"})
def monitoring_status(on: Target, json_: bool = False) -> None:
    """The vedfin alarms as Netdata has them and Uptime Kuma's monitors with their last check
    (exit 1 when an alarm is missing or differs, or a monitor is missing or not UP)."""
    from vedfin_ops.config import secret_store
    from vedfin_ops.monitoring import netdata as monitoring
    cfg = on.config
    values = secret_store.resolve(cfg)
    host = on.host
    host.secrets = list(values.values())
    now = monitoring.loaded(host, cfg)
    kuma = _uptime(host, cfg, values, apply=False)
    _show_alarms(now, json_, None, kuma)
    if not now.ok or (kuma is not None and not kuma.ok):
        raise SystemExit(1)


def _show_alarms(now: Any, json_: bool, changed: bool | None, kuma: Any = None) -> None:
    """`changed`: what apply did (None: only read)."""
    if json_:
        print(json.dumps({"changed": bool(changed), **now.to_dict(),
                          "uptimeKuma": kuma.to_dict() if kuma is not None else None},
                         indent=2))
        return
    if changed is not None:
        stdout.print(f"monitoring: alarms {'installed and reloaded' if changed else 'unchanged'}",
                     markup=False)
    for name, ok, detail in now.items:
        stdout.print(f"  {'ok' if ok else 'FAILED'}  {name}: {detail}", markup=False)
    for line in now.raised:
        stdout.print(f"  raised: {line}", markup=False)
    for line in now.errors:  # a file apply could not install: the exit 1's reason
        stdout.print(f"  FAILED  {line}", markup=False)
    if kuma is None:
        return
    for change in kuma.changes:
        stdout.print(f"uptime kuma: {change}", markup=False)
    for name, state, message in kuma.status:
        stdout.print(f"  {'ok' if state == 'UP' else 'FAILED'}  {name}: {state} {message}"
                     .rstrip(), markup=False)


def _bucket_backups(cfg: Any, env: str | None, json_: bool) -> None:
    from vedfin_ops.backups import offsite
    from vedfin_ops.config import secret_store
    envs = offsite.require_copied(cfg, env, "db.backups --s3")
    target = offsite.bucket(cfg, secret_store.resolve(cfg, env))
    assert target is not None
    databases = sorted({cfg.environments[e].database for e in envs})
    copies = [b for database in databases for b in offsite.list_copies(target, database)]
    if json_:
        print(json.dumps({"bucket": target.where, "backups": [b.to_dict() for b in copies]},
                         indent=2))
        return
    from vedfin_ops.reports.tables import backups_table
    stdout.print(backups_table(copies, [], target.where))


@on_host(name="restore", help={"env": "environment",
                               "from": "the backup's id (fab db.backups), or s3:ID for a copy "
                                       "in the bucket (fab db.backups --s3)",
                               "into": "restore into this new database and stop there",
                               "yes": "needed to replace a protected env's database "
                                      "(production's)"})
def db_restore(on: Target, env: str = "production", from_: str | None = None,
               into: str | None = None, yes: bool = False) -> None:
    """A backup back: checksum, restore into a new database, verify, swap in by rename."""
    from vedfin_ops.backups.restore import run_restore
    from vedfin_ops.errors import UsageError
    if not from_:
        raise UsageError("db.restore needs --from ID (fab db.backups lists them)")
    cfg = on.config
    cfg.require_env(env)
    host = on.host
    database = run_restore(host, cfg, env, from_, into=into, yes=yes, say=say)
    stdout.print(f"db.restore: {from_} is now {database}")


@on_host(name="drill", help={"env": "environment",
                             "from": "the backup's id (default: the newest), or s3:ID for a "
                                     "copy in the bucket"})
def db_drill(on: Target, env: str = "production", from_: str | None = None) -> None:
    """Prove a backup restores: into a scratch database, compared, queried, dropped."""
    from vedfin_ops.backups.drill import run_drill
    cfg = on.config
    cfg.require_env(env)
    detail = run_drill(on.host, cfg, env, from_, say=say)
    stdout.print(f"db.drill: {env}: restorable: {detail}")


DEPLOY_HELP = {"tag": "image tag to deploy (default: the config's)",
               "skip_preflight": "skip the checklist (recorded in the audit log)",
               "force": "deploy past the capacity gate (recorded)",
               "allow_shared": "let a deploy of an env that does not own the shared stack "
                               "(postgres, redis, edge) change it",
               "no_backup": "no database backup before the deploy (recorded in the audit log)",
               "full_replicas": "inside the off-hours window, keep the configured replicas",
               "require_zero_downtime": "fail (and put back) a deploy during whose rollout a "
                                        "request through the edge failed",
               "build": "first build and push the env's images from the config's git work "
                        "tree (tag: its commit, unless --tag)",
               "allow_dirty": "with --build: build uncommitted changes too (tagged "
                              "<commit>-dirty-<8 hex of the changes>)",
               "any_branch": "with --build: build whatever branch is checked out, not only "
                             "the env's apps' `branch`",
               "branch": "with --build: the branch a detached HEAD is on (default: "
                         "$GITHUB_REF_NAME)"}
SEED_ENVS = ("production", "staging", "dev")  # deploy.<env>: the seed's names, kept


def _deploy(on: Target, env: str, called: str, tag: str | None, build: bool = False,
            allow_dirty: bool = False, any_branch: bool = False, branch: str | None = None,
            **options: bool) -> None:
    from vedfin_ops.cli.output import LiveLines
    from vedfin_ops.deploy.build import BuildFirst
    from vedfin_ops.deploy.options import DeployOptions
    from vedfin_ops.deploy.pipeline import deploy
    from vedfin_ops.errors import UsageError
    if not build and (allow_dirty or any_branch or branch):
        raise UsageError(f"{called}: --allow-dirty, --any-branch and --branch go with --build")
    cfg = on.config
    cfg.require_env(env)  # an env the config does not name: bad input, before any host
    first = BuildFirst(allow_dirty, any_branch, branch) if build else None
    with LiveLines() as show:
        result = deploy(on.host, cfg, env, tag, DeployOptions(**options, build=first),
                        say=say, show=show)
    stdout.print(f"{called}: {result.result}: {result.detail}")


def deploy_env(on: Target, env: str | None = None, tag: str | None = None,
               skip_preflight: bool = False, force: bool = False, allow_shared: bool = False,
               no_backup: bool = False, full_replicas: bool = False, build: bool = False,
               allow_dirty: bool = False, any_branch: bool = False,
               branch: str | None = None, require_zero_downtime: bool = False) -> None:
    """The whole pipeline for any env the config names: `deploy --env E`."""
    from vedfin_ops.errors import UsageError
    if not env:
        cfg = on.config
        raise UsageError(f"deploy: --env is required: one of {', '.join(cfg.environments)} "
                         f"({cfg.source}: environments)")
    _deploy(on, env, f"deploy --env {env}", tag, build, allow_dirty, any_branch, branch,
            skip_preflight=skip_preflight, force=force, allow_shared=allow_shared,
            no_backup=no_backup, full_replicas=full_replicas,
            require_zero_downtime=require_zero_downtime)


def _seed_deploy(env: str) -> Task[Any]:
    """`deploy.<env>`: `deploy --env <env>` under the seed's name, the same flags but --env."""
    def deploy_seed(on: Target, tag: str | None = None, **flags: Any) -> None:
        _deploy(on, env, f"deploy.{env}", tag, **flags)

    params = inspect.signature(deploy_env).parameters
    deploy_seed.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p for name, p in params.items() if name != "env"])
    deploy_seed.__doc__ = (f"The whole pipeline for {env}, as `deploy --env {env}`: preflight, "
                           f"backup, push, shared stack and db-init, migrate, rollout, verify, "
                           f"promote, then the best-effort steps after live.")
    made: Task[Any] = on_host(name=env, help=DEPLOY_HELP)(deploy_seed)
    return made


@local(help={"env": "environment"})
def generate(on: Target, env: str = "production") -> None:
    """Fill missing generatable secrets into the git-ignored 0600 secrets file; names only."""
    from vedfin_ops.config import secret_store
    cfg = on.config
    result = secret_store.generate(cfg, env)
    err.print(f"secrets file: {result.path} (mode 0600)")
    for name in result.generated:
        stdout.print(f"generated  {name}")
    for name in result.kept:
        stdout.print(f"kept       {name}")
    optional = {n for n, source in cfg.secret_names(env).items() if source == "optional"}
    for name in result.to_fill_by_hand:
        stdout.print(f"fill by hand  {name}{'  (optional)' if name in optional else ''}")


@on_host(name="release", help={"env": "environment, or cluster (the lock of cluster.drain "
                                       "and cluster.join)",
                               "shared": "the shared stack's lock (postgres, redis, edge) "
                                         "instead"})
def lock_release(on: Target, env: str = "production", shared: bool = False) -> None:
    """Release a stale deploy lock on the host (recorded in the audit log)."""
    from vedfin_ops.reports.status import release_lock as _release_lock
    holder = _release_lock(on.host, on.config, env, shared=shared)
    which = "the shared stack lock" if shared else env
    stdout.print(f"lock.release: {which} released (was: {holder or 'not held'})")


ns = Collection(init, render, build, check_config, capacity_report, smoke_test, preflight, db_init,
                migrate, rollback, status, audit, logs, pause, resume, scale, verify, restart,
                report)
# `deploy --env E`: Invoke cannot hold a task and a collection both named `deploy`, so the
# any-env task is the collection's default (`deploy.env`, called as `deploy`)
_deploys = Collection("deploy", *(_seed_deploy(e) for e in SEED_ENVS))
_deploys.add_task(on_host(name="env", help={"env": "an env the config names under "
                                                   "environments:", **DEPLOY_HELP})(deploy_env),
                  default=True)
ns.add_collection(_deploys)
ns.add_collection(Collection("secrets", generate))
ns.add_collection(Collection("lock", lock_release))
ns.add_collection(Collection("db", db_backup, db_backups, db_restore, db_drill, db_schedule))
ns.add_collection(Collection("monitoring", monitoring_apply, monitoring_status))
ns.add_collection(Collection("cluster", cluster_status, cluster_drain, cluster_join))
ns.add_collection(Collection("host", host_prepare))
