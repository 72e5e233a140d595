"""The runbook's off-hours single replica (mitigation 2), run by the host's cron.

`offHours: {start, end, replicas, envs}`: at `start` each app of the env goes to `replicas`,
at `end` back to its configured count, by a script per env (`<base>/bin/offhours-<env>
down|up`, rendered from `rendering/templates/offhours.sh.j2`) that takes the env's lock as the
tool does, scales the services that exist, writes an audit line (`layout.audit_line`, as
every run's) and a line of `<base>/offhours.log`. A paused env (an app at 0 replicas)
is left as it is at both ends. A run that could not scale (a deploy, restore or backup held
the lock; the engine failed) stays pending (`<base>/<env>/offhours-<mode>.pending`): a retry
line every 5 minutes runs it until it is done or its window closes (then gives up, in the
log); `status` shows a pending run. The lines live in the config's crontab block with the
nightly backups (`fab db.schedule`, every good deploy). A deploy inside the window keeps the
off-hours count: it rolls out at the configured one, then scales down again.
"""

from __future__ import annotations

from dataclasses import dataclass

from vedfin_ops.config.model import Config
from vedfin_ops.config.names import stack_name
from vedfin_ops.remote import commands
from vedfin_ops.remote.quoting import sh
from vedfin_ops.run.layout import Layout, audit_line
from vedfin_ops.schedule.crontab import CREATED, bin_dir, block_of, cron_user, locked_script

MODES = ("down", "up")


def script_path(config: Config, env: str) -> str:
    return f"{bin_dir(config)}/offhours-{env}"


def log_path(config: Config) -> str:
    return Layout.of_host(config).offhours_log


def envs(config: Config) -> list[str]:
    return list(config.off_hours.envs) if config.off_hours else []


def counts(config: Config, env: str, mode: str) -> dict[str, int]:
    """service -> replicas for `mode` (down: the off-hours count, up: the configured one)."""
    assert config.off_hours is not None
    return {f"{stack_name(config, env)}_{app.name}":
            (config.off_hours.replicas if mode == "down" else app.replicas)
            for app in config.apps(env)}


RETRY_EVERY = 5  # minutes between the retries of a run that was skipped or failed


def pending_path(config: Config, env: str, mode: str) -> str:
    """A run that is due and not yet done (its lock was held, the engine failed): the retry
    line runs it until it is done or its window closes."""
    return f"{Layout.of(config, env).env_dir}/offhours-{mode}.pending"


def cron_lines(config: Config) -> list[str]:
    if config.off_hours is None:
        return []
    out = []
    for env in envs(config):
        for mode, at in (("down", config.off_hours.start), ("up", config.off_hours.end)):
            hour, minute = (int(part) for part in at.split(":"))
            out.append(f"{minute} {hour} * * * {sh(script_path(config, env))} {mode}")
        out.append(f"*/{RETRY_EVERY} * * * * {sh(script_path(config, env))} retry")
    return out


def parse_lines(crontab: str) -> dict[str, dict[str, str]]:
    """env -> {"down": "HH:MM", "up": "HH:MM", "retry": "*/5"} of the off-hours lines in a
    crontab."""
    out: dict[str, dict[str, str]] = {}
    for line in crontab.splitlines():
        fields = line.split()
        if len(fields) != 7 or "offhours-" not in fields[5]:
            continue
        env = fields[5].strip("'").rsplit("offhours-", 1)[-1]
        if fields[6] in MODES and fields[0].isdigit() and fields[1].isdigit():
            out.setdefault(env, {})[fields[6]] = f"{int(fields[1]):02d}:{int(fields[0]):02d}"
        elif fields[6] == "retry" and fields[1:5] == ["*"] * 4:
            out.setdefault(env, {})["retry"] = fields[0]
    return out


def wanted(config: Config) -> dict[str, dict[str, str]]:
    if config.off_hours is None:
        return {}
    return {env: {"down": config.off_hours.start, "up": config.off_hours.end,
                  "retry": f"*/{RETRY_EVERY}"} for env in envs(config)}


def _minutes(hhmm: str) -> int:
    hour, minute = (int(part) for part in hhmm.split(":"))
    return hour * 60 + minute


def script(config: Config, env: str) -> str:
    """The env's off-hours scaler as a POSIX shell script (`offhours.sh.j2`; pure: run on the
    scripted host by the tests): a paused env (an app at 0 replicas) is left paused; a run
    that could not scale (lock held, engine error) stays pending and the retry line tries it
    again until its window closes. Its audit line is `layout.audit_line`'s, as every run's."""
    assert config.off_hours is not None
    layout = Layout.of(config, env)
    runs = []
    for mode in MODES:
        wanted_counts = counts(config, env, mode)
        detail = ", ".join(f"{n.split('_', 1)[1]}={c}" for n, c in sorted(wanted_counts.items()))
        runs.append({
            "mode": mode, "detail": detail,
            "audit": audit_line(CREATED, cron_user(config), env, f"offhours-{mode}", "ok",
                                detail=detail),
            "scale": commands.scale_services(wanted_counts),
            "probes": [{"service": name, "app": name.split("_", 1)[1],
                        "replicas": commands.service_replicas(name)}
                       for name in sorted(wanted_counts)]})
    start, end = config.off_hours.start, config.off_hours.end
    return locked_script(
        "offhours.sh.j2", config, env, title=f"the off-hours replicas of {env}",
        log=log_path(config), action=f"off-hours scale {env}", runs=runs,
        start=_minutes(start), end=_minutes(end), retry_every=RETRY_EVERY,
        until={"down": end, "up": start}, audit_log=layout.audit,
        pending={mode: pending_path(config, env, mode) for mode in MODES})


@dataclass
class OffHours:
    scheduled: dict[str, str] | None  # {"down": "HH:MM", "up": "HH:MM"} in the crontab
    pending: str | None  # "down" or "up": skipped or failed, retried until its window closes
    pending_since: str | None
    last_run: str  # the env's last line of offhours.log ("" when it never ran)


def state_command(config: Config, env: str) -> str:
    return commands.cron_state(log_path(config),
                               [(mode, pending_path(config, env, mode)) for mode in MODES])


def parse_state(text: str, env: str, config: Config) -> OffHours:
    cron, _, rest = text.partition("\nLOG\n")
    log, _, pending_text = rest.partition("PENDING ")
    lines = parse_lines(block_of(cron.removeprefix("CRON\n"), config)).get(env)
    scheduled = {m: lines[m] for m in MODES if m in lines} if lines else None
    pending = since = None
    for part in ("PENDING " + pending_text).split("PENDING ")[1:]:
        mode, _, stamp = part.partition("\n")
        if mode in MODES and stamp.strip():
            pending, since = mode, stamp.strip()
    runs = [line for line in log.splitlines() if line.split(" ")[1:2] == [env]]
    return OffHours(scheduled, pending, since, runs[-1] if runs else "")


def inside(config: Config, now_hhmm: str) -> bool:
    """Is the host's `HH:MM` inside the window (which may wrap midnight)?"""
    if config.off_hours is None:
        return False
    start, end = config.off_hours.start, config.off_hours.end
    return start <= now_hhmm < end if start < end else (now_hhmm >= start or now_hhmm < end)
