"""`fab rollback`: back to the previous good release, converged and verified, then made
current (records first, the symlink last).

`--restore-db` also takes the database back to the backup the current release's deploy made
before it migrated (redeploying an old image does not undo a migration). The database is
restored and swapped first, so the old apps start on the schema they were built for; if the
rollback then fails, the swap is undone and the current release serves on the database it
had: one known release, with its own data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fabric import Connection

from vedfin_ops.backups.records import Backup, list_backups
from vedfin_ops.backups.restore import DatabaseRestore
from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import Host
from vedfin_ops.run.env_run import EnvRun, as_env_host, engine_record, verify
from vedfin_ops.run.lock import Lock
from vedfin_ops.run.operation import Say, Show, describe
from vedfin_ops.run.polling import REAL, Clock


class Rollback(EnvRun):
    action = "rollback"

    def __init__(self, host: Any, config: Config, env: str, *,
                 verify_fn: Callable[..., list[str]] | None = None, restore_db: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(host, config, env, tag="", **kwargs)
        self.verify_fn = verify_fn or verify
        self.target = ""
        self.committing = False  # the make-current command was sent (it may have run)
        self.restore_db = restore_db
        self.restore: DatabaseRestore | None = None

    def body(self) -> str:
        self.inspect()
        self.refuse_unplaceable()
        target = self.state.previous_good()
        if target is None:
            raise CheckFailed(f"rollback: {self.env} has no good release before "
                              f"{self.state.current or 'the current one'}")
        self.target = self.release = target
        restored = ""
        if self.restore_db:
            self.restore = DatabaseRestore(self, self.pre_deploy_backup())
            self.restore.prepare()
        self.step(f"rollback: {self.env} {self.state.current} -> {target}")
        if self.restore is not None:
            with self.deferred():
                restored = self.restore.swap()
        with self.measured():
            self.views = self.redeploy(target)
            failures = self.verify_fn(self.config, self.env)
        if failures:
            raise CheckFailed(f"rollback verify failed: {'; '.join(failures)}")
        steps = [commands.write_text(f"{self.layout.release(target)}/engine.json",
                                     json.dumps(engine_record(self.views)))]
        if self.state.current:
            steps.append(commands.write_state(self.layout.release(self.state.current),
                                              "rolled-back"))
        steps.append(commands.swap_symlink(self.layout.release(target), self.layout.current))
        self.beat(force=True)  # the lock is still ours right before the records change
        with self.shielded():
            self.committing = True
            self.host.run(commands.all_of(*steps), what="make current")
            self.commit(target)
            detail = f"from {self.state.current}"
            self.audit_ok("ok", release=target,
                          detail=detail + (f"; database: {restored}" if restored else ""))
        if self.restore is not None:
            self.say(f"restore: {restored}")
            self.restore.keep_replaced()
        self.say(f"done: {self.env} back on {target}")
        return target

    def pre_deploy_backup(self) -> Backup:
        """The backup the current release's deploy took before it migrated."""
        current = self.state.current
        taken = str(self.state.meta.get("backup") or "")
        backups = list_backups(self.host, self.config, self.env).backups
        found = next((b for b in backups if b.id == taken), None)
        if found is None:
            why = (f"its deploy took none ({taken})" if taken and not taken[0].isdigit()
                   else f"backup {taken} is gone (fab db.backups --env {self.env})" if taken
                   else "its release record names no backup")
            raise CheckFailed(f"rollback --restore-db: no backup from before {current}: "
                              f"{why}; nothing changed")
        return found

    def needs_put_back(self) -> bool:
        return self.restore is not None and (self.restore.needs_put_back()
                                             or self.restore.swapped)

    def held_locks(self) -> list[Lock]:
        """The env's lock, and the shared lock once `--restore-db` took it."""
        return [*super().held_locks(), *(self.restore.locks() if self.restore else [])]

    def put_back(self) -> str:
        """Before redeploying the release that was live: if the make-current command may have
        run, `current` and its state say so again first (records and engine agree)."""
        live = self.state.current
        if self.committing and live:
            self.host.run(commands.all_of(
                commands.write_state(self.layout.release(live), "good"),
                commands.swap_symlink(self.layout.release(live), self.layout.current)),
                what="restore current")
        said = []
        if self.restore is not None:
            try:
                said.append(self.restore.undo())
            except Exception as exc:
                restore = self.restore
                said.append(f"the database could not be put back ({describe(exc)}): "
                            f"{restore.database} may still be the restored {restore.backup.id}"
                            f", the one it replaced is {restore.old}; check with psql before "
                            f"anything else")
        if self.engine_touched:
            said.append(super().put_back())
        return "; ".join(part for part in said if part)


def rollback(conn: Connection | Host, config: Config, env: str, *, say: Say = print,
             show: Show | None = None, clock: Clock = REAL,
             verify_fn: Callable[..., list[str]] | None = None, restore_db: bool = False) -> str:
    """Back to the previous good release: redeployed, converged, verified, made current;
    with `restore_db`, the database back to the backup taken before the current release."""
    config.require_env(env)
    host = as_env_host(conn, config, env)
    run = Rollback(host, config, env, say=say, show=show, clock=clock, verify_fn=verify_fn,
                   restore_db=restore_db)
    target: str = run.execute()
    return target
