"""The databases of an adopted data volume (`postgres.volume: {name, external: true}`: the
volume Dokploy's postgres used), backed up before the shared stack moves onto it.

`db.backup` dumps through the shared postgres, which does not run on that data yet (or does
not exist yet), so without this the first deploy onto Dokploy's data would back up nothing
(or the old volume's databases, which the new release never runs on). The volume is judged
first (`deploy/volumes.py`): no other container uses it, and its data is of the image's major
version. Then a postgres of the config's image is started on it alone, with no network (so
nothing can write to the data while it is dumped), every env's database in it is dumped by the
very `pg_dump -Fc` command of `db.backup` into the host's backup folder, as a backup of that
env with its record (`db.restore --from ID` restores it like any other), and that postgres is
stopped cleanly and removed before anything else happens. Roles are not in a dump (as with
every backup): they stay in the volume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from vedfin_ops.backups.backup import take_backup
from vedfin_ops.backups.records import Backup
from vedfin_ops.config.model import Config
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteHost


def container_name(config: Config) -> str:
    """The dumping postgres's name: the config's own, so a leftover of an interrupted run is
    recognised (and stopped) by the next one."""
    return f"{config.remote.stack_prefix}-adopt-backup"


def back_up_adopted(host: RemoteHost, config: Config, reason: str, *,
                    wrap: Callable[[str], str] = lambda command: command,
                    say: Callable[[str], None] = print) -> dict[str, Backup | None]:
    """Every env's database in the adopted volume, dumped as a backup of its env (None where
    the volume holds no such database). Raises CheckFailed/RemoteError when the postgres does
    not start or a dump fails; the dumping postgres is stopped and removed whatever happens
    (best effort: the volume's judge before the move stops a leftover too)."""
    volume, image = config.postgres.volume.name, config.postgres.image
    name = container_name(config)
    say(f"backup: a postgres of {image} on {volume} alone (no network), to dump its databases")
    taken: dict[str, Backup | None] = {}
    try:
        host.run(wrap(commands.adoption_server(name, volume, image, config.postgres.user)),
                 what="start postgres on adopted volume", timeout=None)
        for env, settings in config.environments.items():
            backup = take_backup(host, config, env, reason, wrap=wrap, container=name)
            taken[env] = backup
            say(f"backup: {settings.database} " + (
                f"{backup.id} ({backup.size} bytes)" if backup is not None else
                f"is not in {volume}: nothing to back up"))
    finally:
        with contextlib.suppress(Exception):
            host.run(commands.stop_container(name), what="stop postgres on adopted volume",
                     check=False)
    return taken
