"""What the nightly backups and the off-hours scaling share on the host: the config's block
in the deploy user's crontab (its markers, found and left out), and the locked cron script
both run (`rendering/templates/cron-locked.sh.j2`): the env's lock taken with the holder's
format of every run's (`layout.holder_line`), placeholders filled in at run time."""

from __future__ import annotations

from typing import Any

from vedfin_ops.config.model import Config
from vedfin_ops.remote import commands
from vedfin_ops.rendering.files import host_script
from vedfin_ops.run.layout import Layout, holder_line

# the block before blocks were named per config: taken over by the config whose scripts it runs
LEGACY_BEGIN = "# BEGIN vedfin-ops nightly backups (fab db.schedule; edits here are replaced)"
LEGACY_END = "# END vedfin-ops nightly backups"
ANY_BEGIN, ANY_END = "# BEGIN vedfin-ops ", "# END vedfin-ops "  # any config's block
# placeholders filled in by the script at run time: `@` is in no path, database or env name
ID, CREATED, CONTAINER, TOKEN = "@ID@", "@CREATED@", "@CONTAINER@", "@TOKEN@"


def mark(config: Config) -> str:
    """How this config's block begins: named by its stack prefix, so two configs on one host
    (one deploy user) each replace only their own block (`:` ends the prefix: `shop` is not
    `shop-2`)."""
    return f"# BEGIN vedfin-ops {config.remote.stack_prefix}: "


def begin(config: Config) -> str:
    return (f"{mark(config)}nightly backups and off-hours (fab db.schedule; edits here are "
            f"replaced)")


def end(config: Config) -> str:
    return f"# END vedfin-ops {config.remote.stack_prefix}"


def bin_dir(config: Config) -> str:
    """Where the scripts the block's lines run are."""
    return Layout.of_host(config).bin


def cron_user(config: Config) -> str:
    """Who a cron run is, in its lock, its audit line and its backups' records."""
    return f"{config.remote.user} (cron)"


def block_of(crontab: str, config: Config) -> str:
    """The lines between this config's markers."""
    out, inside = [], False
    for line in crontab.splitlines():
        if line.startswith(mark(config)):
            inside = True
        elif line == end(config):
            inside = False
        elif inside:
            out.append(line)
    return "\n".join(out)


def without_block(crontab: str) -> str:
    """The crontab less every block of the tool's (any config's, the legacy one too): the
    user's own lines, as they were (the sandbox's teardown)."""
    out, inside = [], False
    for line in crontab.splitlines(keepends=True):
        if line.startswith(ANY_BEGIN):
            inside = True
        elif inside and line.startswith(ANY_END):
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out)


def locked_script(template: str, config: Config, env: str, *, title: str, log: str,
                  action: str, **values: Any) -> str:
    """`template` (which extends `cron-locked.sh.j2`) for `env`: its body runs holding the
    env's lock as the tool takes it (the same take, holder and token; released on exit), so
    no deploy, restore or backup runs beside it; `log` gets one line per run."""
    layout = Layout.of(config, env)
    holder = holder_line(cron_user(config), "the host itself", 0, CREATED, action)
    return host_script(template, title=title, log=log, env=env, env_dir=layout.env_dir,
                       take=commands.lock_acquire(layout.lock, holder, TOKEN),
                       release=commands.lock_release(layout.lock, TOKEN), ID=ID,
                       CREATED=CREATED, CONTAINER=CONTAINER, TOKEN=TOKEN, **values)
