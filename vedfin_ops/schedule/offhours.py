"""The runbook's off-hours single replica (mitigation 2), run by the host's cron.

`offHours: {start, end, replicas, envs}`: at `start` each app of the env goes to `replicas`,
at `end` back to its configured count, by a generated script per env (`<base>/bin/offhours-
<env> down|up`) that takes the env's lock as the tool does, scales the services that exist,
writes an audit line and a line of `<base>/offhours.log`. A paused env (an app at 0 replicas)
is left as it is at both ends. A run that could not scale (a deploy, restore or backup held
the lock; the engine failed) stays pending (`<base>/<env>/offhours-<mode>.pending`): a retry
line every 5 minutes runs it until it is done or its window closes (then gives up, in the
log); `status` shows a pending run. The lines live in the config's crontab block with the
nightly backups (`fab db.schedule`, every good deploy). A deploy inside the window keeps the
off-hours count: it rolls out at the configured one, then scales down again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vedfin_ops.config.model import Config
from vedfin_ops.config.names import stack_name
from vedfin_ops.remote import commands
from vedfin_ops.remote.quoting import sh
from vedfin_ops.run.layout import Layout

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


def _inside_sh(config: Config) -> str:
    """`inside`: is the host's clock in the window now (the test `inside()` makes)."""
    assert config.off_hours is not None
    start, end = _minutes(config.off_hours.start), _minutes(config.off_hours.end)
    test = (f'[ "$now" -ge {start} ] && [ "$now" -lt {end} ]' if start < end
            else f'[ "$now" -ge {start} ] || [ "$now" -lt {end} ]')
    # `date +%H:%M` as cron reads the clock (local time); `${h#0}`: 08 is not octal
    return ('inside() { now=$(date +%H:%M); h=${now%%:*}; m=${now#*:}; '
            f'now=$(( ${{h#0}} * 60 + ${{m#0}} )); {test}; }}\n')


def _before(config: Config, env: str) -> str:
    """Before the lock: which run this is. `down`/`up` (cron at the window's ends) mark
    themselves pending; `retry` (every few minutes) runs a pending one whose window is still
    open, drops one whose window closed (said in the log), and otherwise does nothing."""
    assert config.off_hours is not None
    start, end = config.off_hours.start, config.off_hours.end
    down, up = sh(pending_path(config, env, "down")), sh(pending_path(config, env, "up"))
    return _inside_sh(config) + f"""give_up() {{
  if [ -f {down} ] && ! inside; then
    rm -f -- {down}; say "gave up: down was not run before the window closed at {end}"
  fi
  if [ -f {up} ] && inside; then
    rm -f -- {up}; say "gave up: up was not run before the window opened again at {start}"
  fi
}}
mode=${{1:-}}
case "$mode" in
  down|up) give_up ;;
  retry) give_up
    if [ -f {down} ]; then mode=down; elif [ -f {up} ]; then mode=up; else exit 0; fi ;;
  *) echo "usage: $0 down|up|retry" >&2; exit 2 ;;
esac
case "$mode" in
  down) pending={down}; until={sh(end)} ;;
  *) pending={up}; until={sh(start)} ;;
esac
[ -f "$pending" ] || date -u +%Y-%m-%dT%H:%M:%SZ > "$pending"
"""


def _probe(name: str) -> str:
    """The service's replica count into `$n`; a service at 0 goes into `$paused`. Only the
    engine's own "no such service" ends the run as not deployed (nothing to scale: not
    retried); any other failure (dockerd restarting at 06:00 for an upgrade) keeps the run
    pending, retried until its window closes."""
    short = name.split("_", 1)[1]
    # `$( (` with its space: the builder is a subshell, and `$((` would be arithmetic
    return (f"    if ! n=$( {commands.service_replicas(name)} 2>&1); then\n"
            f'      say "failed: $(printf \'%s\' "$n" | tail -n 1); $mode is retried every '
            f'{RETRY_EVERY} min until $until"\n'
            f"      exit 1\n"
            f"    fi\n"
            f'    if [ "$n" = absent ]; then\n'
            f'      rm -f -- "$pending"; say {sh(f"skipped: {name} is not deployed")}; exit 0\n'
            f"    fi\n"
            f'    [ "$n" = 0 ] && paused="$paused, {short}=0"')


def script(config: Config, env: str) -> str:
    """The env's off-hours scaler as a POSIX shell script (pure: run on the scripted host by
    the tests): a paused env (an app at 0 replicas) is left paused; a run that could not
    scale (lock held, engine error) stays pending and the retry line tries it again until
    its window closes."""
    from vedfin_ops.schedule import nightly

    layout = Layout.of(config, env)
    cases = []
    for mode in MODES:
        wanted_counts = counts(config, env, mode)
        detail = ", ".join(f"{n.split('_', 1)[1]}={c}" for n, c in sorted(wanted_counts.items()))
        line = json.dumps({"time": nightly._CREATED, "who": f"{config.remote.user} (cron)",
                           "env": env, "action": f"offhours-{mode}", "release": "", "tag": "",
                           "result": "ok", "detail": detail})
        scale = " ".join(f"{sh(name)}={count}" for name, count in sorted(wanted_counts.items()))
        probes = "\n".join(_probe(name) for name in sorted(wanted_counts))
        cases.append(f"""  {mode})
    paused=
{probes}
    if [ -n "$paused" ]; then
      rm -f -- "$pending"
      say "skipped: {env} is paused (${{paused#, }}): left as it is (fab resume --env {env})"
      exit 0
    fi
    if out=$(docker service scale --detach {scale} 2>&1); then
      printf '%s\\n' {sh(line)} | sed "s/{nightly._CREATED}/$created/g" >> {sh(layout.audit)}
      rm -f -- "$pending"
      say "{mode}: {detail}"
    else
      say "failed: $(printf '%s' "$out" | tail -n 1); $mode is retried every {RETRY_EVERY} min \
until $until"
      exit 1
    fi ;;""")
    body = 'case "$mode" in\n' + "\n".join(cases) + "\nesac\n"
    return nightly.locked_script(
        config, env, title=f"the off-hours replicas of {env}", log=log_path(config),
        action=f"off-hours scale {env}", body=body, before=_before(config, env),
        held=f"skipped: another run holds the lock; $mode is retried every {RETRY_EVERY} min "
             f"until $until")


@dataclass
class OffHours:
    scheduled: dict[str, str] | None  # {"down": "HH:MM", "up": "HH:MM"} in the crontab
    pending: str | None  # "down" or "up": skipped or failed, retried until its window closes
    pending_since: str | None
    last_run: str  # the env's last line of offhours.log ("" when it never ran)


def state_command(config: Config, env: str) -> str:
    return (f"echo CRON; crontab -l 2>/dev/null; echo LOG; "
            f"tail -n 200 {sh(log_path(config))} 2>/dev/null; " +
            " ".join(f"echo PENDING {mode}; cat {sh(pending_path(config, env, mode))} "
                     f"2>/dev/null;" for mode in MODES) + " true")


def parse_state(text: str, env: str, config: Config) -> OffHours:
    cron, _, rest = text.partition("\nLOG\n")
    log, _, pending_text = rest.partition("PENDING ")
    from vedfin_ops.schedule.nightly import _block_of

    lines = parse_lines(_block_of(cron.removeprefix("CRON\n"), config)).get(env)
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
