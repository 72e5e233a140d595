"""`fab status` and `fab lock.release`: what the host runs and records, and the way out of
a stale lock."""

from __future__ import annotations

import json
from typing import Any

from fabric import Connection

from vedfin_ops.config.model import Config
from vedfin_ops.config.names import shared_stack_name, stack_name
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import Host
from vedfin_ops.run.env_run import (
    as_host,
    configured_replicas,
    drift,
    poller,
    shared_drift,
)
from vedfin_ops.run.layout import Layout, parse_listing, parse_records
from vedfin_ops.run.operation import audit


def status(conn: Connection | Host, config: Config, env: str) -> dict[str, Any]:
    config.require_env(env)
    host = as_host(conn)
    layout = Layout.of(config, env)
    text = host.run(commands.status_state(layout.releases, layout.current, layout.shared_hash,
                                          env, layout.base), what="list releases")
    state, records = parse_listing(text), parse_records(text)
    views = poller(host, [shared_stack_name(config), stack_name(config, env)], config)()
    env_views = {n: v for n, v in views.items() if n.startswith(stack_name(config, env) + "_")}
    lock = host.run(commands.read_file(f"{layout.lock}/holder"), what="read lock").strip()
    try:
        holder = json.loads(lock) if lock else None
    except ValueError:
        holder = {"who": f"unreadable holder file ({lock[:40]!r})", "since": "?", "action": "?"}
    found = drift(state.engine, state.meta.get("images", {}), env_views,
                  configured_replicas(config, env)) if state.current else []
    found += shared_drift(host.run(commands.read_file(layout.shared_engine),
                                   what="read shared record"), views, shared_stack_name(config))
    return {
        **backups_state(host, config, env),
        **offhours_state(host, config, env),
        "env": env,
        "current": state.current,
        "releases": [{"id": r.id, "state": r.state, "current": r.id == state.current,
                      "tag": r.text("tag"), "created": r.text("created"), "by": r.text("by"),
                      "reason": r.reason or None,
                      # what the release's rollout measured through the edge (its receipt)
                      "receipt": r.meta.get("receipt") if isinstance(r.meta.get("receipt"),
                                                                     dict) else None}
                     for r in records.releases],
        "lock": holder if isinstance(holder, dict) else None,
        "drift": found,
        "problems": state.problems + [f"{r.id}/release.json is not a JSON object"
                                      for r in records.releases
                                      if not r.readable and r.id != state.current],
        "services": [{"name": v.name, "image": v.image,
                      "digest": v.image.partition("@")[2] or None, "running": v.running,
                      "replicas": v.replicas, "update_state": v.update_state or "-",
                      "message": v.update_message} for v in views.values()],
        # where the releases were looked for: a wrong --config shows here, not as silence
        "base": layout.base,
        "base_exists": records.base_exists,
        "releases_dir": layout.releases,
        "config": config.source,
    }


def backups_state(host: Host, config: Config, env: str) -> dict[str, Any]:
    """The env's last backup and its age, and whether the nightly one is scheduled."""
    from vedfin_ops.backups.records import list_backups
    from vedfin_ops.schedule import nightly

    found = list_backups(host, config, env).backups
    night = nightly.parse_state(host.run(nightly.state_command(config),
                                         what="nightly backups"), env, config)
    last = found[-1] if found else None
    from vedfin_ops.backups.drill import read_records

    last_drill, proven = read_records(host, config, env)
    return {"backups": {
        "count": len(found),
        # the last restore drill, and the last that passed: the last proven restorable backup
        "last_drill": last_drill,
        "last_proven": proven,
        "last": last.id if last else None,
        "last_reason": last.reason if last else None,
        "age_seconds": round(nightly.age(last.id)) if last else None,
        "nightly_configured": config.backups.nightly,
        "nightly_scheduled": night.scheduled,
        "last_nightly_run": night.last_run or None,
    }}


def offhours_state(host: Host, config: Config, env: str) -> dict[str, Any]:
    """The env's off-hours lines in the crontab, a run that is pending (skipped or failed,
    retried by cron until its window closes) and the last line of its log; None when the
    config scales no env off-hours."""
    from vedfin_ops.schedule import offhours

    if env not in offhours.envs(config):
        return {"offhours": None}
    now = offhours.parse_state(host.run(offhours.state_command(config, env),
                                        what="off-hours state"), env, config)
    return {"offhours": {
        "configured": {"down": config.off_hours.start, "up": config.off_hours.end,
                       "replicas": config.off_hours.replicas} if config.off_hours else None,
        "scheduled": now.scheduled,
        "pending": now.pending,
        "pending_since": now.pending_since,
        "last_run": now.last_run or None,
    }}


def release_lock(conn: Connection | Host, config: Config, env: str, *,
                 shared: bool = False) -> str:
    """Remove a lock whatever holds it (the user checked it is stale): the env's deploy lock,
    or with `shared` the shared stack's; env `cluster` is the lock of cluster.drain and
    cluster.join (a reserved name, never an env's), as their refusal prints. Audited with who
    held it."""
    from vedfin_ops.cluster.membership import CLUSTER

    if env != CLUSTER:
        config.require_env(env)
    host = as_host(conn)
    layout = Layout.of(config, env)
    path = layout.shared_lock if shared else layout.lock
    holder = host.run(commands.read_file(f"{path}/holder"), what="read lock").strip()
    host.run(commands.lock_release(path), what="release lock")
    audit(host, layout, "lock.release", "ok",
          detail=f"{'shared lock ' if shared else ''}was {holder or 'not held'}")
    return holder
