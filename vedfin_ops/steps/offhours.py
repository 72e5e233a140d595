"""The runbook's off-hours single replica (mitigation 2), run by the host's cron.

`offHours: {start, end, replicas, envs}`: at `start` each app of the env goes to `replicas`,
at `end` back to its configured count, by a generated script per env (`<base>/bin/offhours-
<env> down|up`) that takes the env's lock as the tool does (a deploy, restore or backup in
progress skips that run), scales the services that exist, writes an audit line and a line of
`<base>/offhours.log`. The lines live in the deploy user's crontab block with the nightly
backups (`fab db.schedule`, every good deploy). A deploy inside the window keeps the off-hours
count: it rolls out at the configured one, then scales down again.
"""

from __future__ import annotations

import json

from vedfin_ops.config.model import Config
from vedfin_ops.config.names import stack_name
from vedfin_ops.remote.quoting import sh
from vedfin_ops.steps.releases import Layout

MODES = ("down", "up")


def script_path(config: Config, env: str) -> str:
    return f"{config.remote.base_dir.rstrip('/')}/bin/offhours-{env}"


def log_path(config: Config) -> str:
    return f"{config.remote.base_dir.rstrip('/')}/offhours.log"


def envs(config: Config) -> list[str]:
    return list(config.off_hours.envs) if config.off_hours else []


def counts(config: Config, env: str, mode: str) -> dict[str, int]:
    """service -> replicas for `mode` (down: the off-hours count, up: the configured one)."""
    assert config.off_hours is not None
    return {f"{stack_name(config, env)}_{app.name}":
            (config.off_hours.replicas if mode == "down" else app.replicas)
            for app in config.apps(env)}


def cron_lines(config: Config) -> list[str]:
    if config.off_hours is None:
        return []
    out = []
    for env in envs(config):
        for mode, at in (("down", config.off_hours.start), ("up", config.off_hours.end)):
            hour, minute = (int(part) for part in at.split(":"))
            out.append(f"{minute} {hour} * * * {sh(script_path(config, env))} {mode}")
    return out


def parse_lines(crontab: str) -> dict[str, dict[str, str]]:
    """env -> {"down": "HH:MM", "up": "HH:MM"} of the off-hours lines in a crontab."""
    out: dict[str, dict[str, str]] = {}
    for line in crontab.splitlines():
        fields = line.split()
        if len(fields) == 7 and "offhours-" in fields[5] and fields[6] in MODES and \
                fields[0].isdigit() and fields[1].isdigit():
            env = fields[5].strip("'").rsplit("offhours-", 1)[-1]
            out.setdefault(env, {})[fields[6]] = f"{int(fields[1]):02d}:{int(fields[0]):02d}"
    return out


def wanted(config: Config) -> dict[str, dict[str, str]]:
    if config.off_hours is None:
        return {}
    return {env: {"down": config.off_hours.start, "up": config.off_hours.end}
            for env in envs(config)}


def script(config: Config, env: str) -> str:
    """The env's off-hours scaler as a POSIX shell script (pure: tested without a host)."""
    from vedfin_ops.steps.nightly import _CREATED, locked_script

    layout = Layout.of(config, env)
    cases = []
    for mode in MODES:
        wanted_counts = counts(config, env, mode)
        detail = ", ".join(f"{n.split('_', 1)[1]}={c}" for n, c in sorted(wanted_counts.items()))
        line = json.dumps({"time": _CREATED, "who": f"{config.remote.user} (cron)", "env": env,
                           "action": f"offhours-{mode}", "release": "", "tag": "",
                           "result": "ok", "detail": detail})
        scale = " ".join(f"{sh(name)}={count}" for name, count in sorted(wanted_counts.items()))
        names = " ".join(sh(name) for name in sorted(wanted_counts))
        cases.append(f"""  {mode})
    for s in {names}; do
      docker service inspect "$s" >/dev/null 2>&1 ||
        {{ say "skipped: $s is not deployed"; exit 0; }}
    done
    if out=$(docker service scale --detach {scale} 2>&1); then
      printf '%s\\n' {sh(line)} | sed "s/{_CREATED}/$created/g" >> {sh(layout.audit)}
      say "{mode}: {detail}"
    else
      say "failed: $(printf '%s' "$out" | tail -n 1)"; exit 1
    fi ;;""")
    body = ('case "${1:-}" in\n' + "\n".join(cases) +
            '\n  *) echo "usage: $0 down|up" >&2; exit 2 ;;\nesac\n')
    return locked_script(config, env, title=f"the off-hours replicas of {env}",
                         log=log_path(config), action=f"off-hours scale {env}", body=body)


def inside(config: Config, now_hhmm: str) -> bool:
    """Is the host's `HH:MM` inside the window (which may wrap midnight)?"""
    if config.off_hours is None:
        return False
    start, end = config.off_hours.start, config.off_hours.end
    return start <= now_hhmm < end if start < end else (now_hhmm >= start or now_hhmm < end)
