"""Nightly backups on the host: a script per env and a block in the deploy user's crontab.

The host runs them without this tool (the operator's machine may be off at 03:00), so each
script is rendered here (`rendering/templates/nightly-backup.sh.j2`), every value quoted, and
runs the very `pg_dump` command that
`db.backup` sends (`commands.backup_dump`, its id, time and container filled in at run time),
then the same retention (`backups.keep`). It skips a night when a deploy, restore or backup
holds the env's lock, and writes one line per run to `<base>/backups/nightly.log`. Off-host
copies are made by the tool (boto3 runs here, not on the host): the next `db.backup` or
deploy copies every backup the bucket lacks.

`fab db.schedule` and every good deploy install the block (replaced whole, between its
markers; the user's other cron lines are kept; `commands.install_block`), with the off-hours
lines (`offhours.py`); `backups.nightly: null` removes it. The block is named by the config's
stack prefix: another config on the same deploy user keeps its own (`crontab.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from vedfin_ops.backups.records import folder, root
from vedfin_ops.config.model import Config
from vedfin_ops.config.names import shared_stack_name
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.commands import NO_CRONTAB, TORN
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.remote.quoting import sh
from vedfin_ops.run.layout import Layout
from vedfin_ops.schedule import offhours
from vedfin_ops.schedule.crontab import (
    CONTAINER,
    CREATED,
    ID,
    LEGACY_BEGIN,
    LEGACY_END,
    TOKEN,
    begin,
    bin_dir,
    block_of,
    cron_user,
    end,
    locked_script,
    mark,
)


def script_path(config: Config, env: str) -> str:
    return f"{bin_dir(config)}/nightly-backup-{env}"


def log_path(config: Config) -> str:
    return f"{root(config)}/nightly.log"


def times(config: Config) -> dict[str, tuple[int, int]]:
    """(hour, minute) of each env's run: `backups.nightly`, then 10 minutes apart."""
    if config.backups.nightly is None:
        return {}
    hour, minute = (int(part) for part in config.backups.nightly.split(":"))
    start = hour * 60 + minute
    return {env: divmod((start + 10 * i) % (24 * 60), 60)
            for i, env in enumerate(config.environments)}


def script(config: Config, env: str) -> str:
    """The env's nightly backup as a POSIX shell script (`nightly-backup.sh.j2`; pure: tested
    without a host): the `pg_dump` of `db.backup`, under the env's lock, then retention."""
    from vedfin_ops.run.lock import BEAT_EVERY

    database = config.environments[env].database
    user, where = config.postgres.user, folder(config, database)
    record = {"id": ID, "database": database, "env": env, "created": CREATED,
              "by": cron_user(config), "reason": "nightly"}
    layout = Layout.of(config, env)
    dump = commands.with_heartbeat(
        commands.backup_dump(CONTAINER, user, database, where, ID,
                             json.dumps(record)[:-1] + ", "),
        layout.lock, TOKEN, int(BEAT_EVERY))
    return locked_script(
        "nightly-backup.sh.j2", config, env, title=f"the nightly backup of {env} ({database})",
        log=log_path(config), action=f"nightly backup {env}", database=database,
        find=commands.postgres_container(f"{shared_stack_name(config)}_postgres"),
        exists=commands.database_exists(CONTAINER, user, database), dump=dump,
        retention=commands.backup_retention(where, config.backups.keep,
                                            f"{layout.current}/release.json"))


def cron_block(config: Config) -> str:
    """Our block: the nightly backups, then the off-hours scaling (schedule/offhours.py)."""
    lines = [begin(config)]
    for env, (hour, minute) in times(config).items():
        lines.append(f"{minute} {hour} * * * {sh(script_path(config, env))}")
    lines += offhours.cron_lines(config)
    return "\n".join([*lines, end(config)]) + "\n"


def apply_command(config: Config) -> str:
    """One command (`commands.install_block`): the scripts written (0700), the crontab block
    replaced (or removed when neither backups nor off-hours are scheduled), the user's other
    cron lines kept. Prints NO_CRONTAB when the host has no cron."""
    wanted, scaled = times(config), offhours.envs(config)
    scripts: list[tuple[str, str | None]] = []
    for env in config.environments:
        scripts.append((script_path(config, env), script(config, env) if env in wanted
                        else None))
        scripts.append((offhours.script_path(config, env),
                        offhours.script(config, env) if env in scaled else None))
    block = cron_block(config) if wanted or scaled else ""
    return commands.install_block(block, mark=mark(config), end=end(config),
                                  legacy=(LEGACY_BEGIN, LEGACY_END), bin_dir=bin_dir(config),
                                  scripts=scripts)


def apply(host: RemoteHost, config: Config) -> dict[str, str]:
    """Install (or remove) the config's crontab block, the nightly backups and the off-hours
    lines, each checked against the crontab read back in the same command; env -> "HH:MM" of
    the nightly backups installed."""
    out = host.run(apply_command(config), what="schedule nightly backups", check=False)
    if NO_CRONTAB in out:
        raise CheckFailed("backups.nightly: the host has no cron (apt-get install cron), or "
                          "set backups.nightly: null")
    if TORN in out:
        raise CheckFailed(f"the deploy user's crontab has '{begin(config)}' without "
                          f"'{end(config)}' (edited "
                          f"by hand?): fix it with crontab -e; nothing was changed")
    installed = parse_block(out, config)
    wanted = {env: f"{h:02d}:{m:02d}" for env, (h, m) in times(config).items()}
    scaled = offhours.parse_lines(block_of(out, config))
    if scaled != offhours.wanted(config):
        raise CheckFailed(f"off-hours replicas: the crontab holds {scaled or 'none'}, not "
                          f"{offhours.wanted(config) or 'none'}")
    if installed != wanted:
        raise CheckFailed(f"nightly backups: the crontab holds {installed or 'none'}, not "
                          f"{wanted or 'none'} (crontab -l on the host: "
                          f"{' '.join(out.split())[-120:]})")
    return installed


def parse_block(crontab: str, config: Config) -> dict[str, str]:
    """env -> "HH:MM" of the nightly backups between this config's markers."""
    out: dict[str, str] = {}
    for line in block_of(crontab, config).splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0].isdigit() and fields[1].isdigit() and \
                "nightly-backup-" in fields[5]:
            env = fields[5].strip("'").rsplit("nightly-backup-", 1)[-1]
            out[env] = f"{int(fields[1]):02d}:{int(fields[0]):02d}"
    return out


@dataclass
class Nightly:
    scheduled: str | None  # "HH:MM" in the crontab, or None
    last_run: str  # the env's last line of nightly.log ("" when it never ran)


def state_command(config: Config) -> str:
    return commands.cron_state(log_path(config))


def parse_state(text: str, env: str, config: Config) -> Nightly:
    cron, _, log = text.partition("\nLOG\n")
    scheduled = parse_block(cron.removeprefix("CRON\n"), config).get(env)
    runs = [line for line in log.splitlines() if line.split(" ")[1:2] == [env]]
    return Nightly(scheduled, runs[-1] if runs else "")


def age(backup_id: str, now: datetime | None = None) -> float:
    """Seconds since a backup id's time."""
    stamp = datetime.strptime(backup_id.split(".")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - stamp).total_seconds()


def human_age(seconds: float) -> str:
    if seconds < -60:  # the id came from a clock ahead of this one
        return "in the future (the clocks of this machine and the host's differ)"
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes} min ago"
    hours = minutes // 60
    return f"{hours} h {minutes % 60} min ago" if hours < 48 else f"{hours // 24} days ago"

