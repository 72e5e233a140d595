"""`fab rollback`: back to the previous good release, converged and verified, then made
current (records first, the symlink last)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fabric import Connection

from vedfin_ops.config import secret_store
from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import Host
from vedfin_ops.steps.env_run import EnvRun, as_host, engine_record, verify
from vedfin_ops.steps.operation import Say, Show
from vedfin_ops.steps.polling import REAL, Clock


class Rollback(EnvRun):
    action = "rollback"

    def __init__(self, host: Any, config: Config, env: str, *,
                 verify_fn: Callable[..., list[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(host, config, env, tag="", **kwargs)
        self.verify_fn = verify_fn or verify
        self.target = ""
        self.committing = False  # the make-current command was sent (it may have run)

    def body(self) -> str:
        self.inspect()
        target = self.state.previous_good()
        if target is None:
            raise CheckFailed(f"rollback: {self.env} has no good release before "
                              f"{self.state.current or 'the current one'}")
        self.target = self.release = target
        self.step(f"rollback: {self.env} {self.state.current} -> {target}")
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
            self.host.run(" && ".join(steps), what="make current")
            self.commit(target)
            self.audit_ok("ok", release=target, detail=f"from {self.state.current}")
        self.say(f"done: {self.env} back on {target}")
        return target

    def put_back(self) -> str:
        """Before redeploying the release that was live: if the make-current command may have
        run, `current` and its state say so again first (records and engine agree)."""
        live = self.state.current
        if self.committing and live:
            self.host.run(" && ".join([
                commands.write_state(self.layout.release(live), "good"),
                commands.swap_symlink(self.layout.release(live), self.layout.current)]),
                what="restore current")
        return super().put_back()


def rollback(conn: Connection | Host, config: Config, env: str, *, say: Say = print,
             show: Show | None = None, clock: Clock = REAL,
             verify_fn: Callable[..., list[str]] | None = None) -> str:
    """Back to the previous good release: redeployed, converged, verified, made current."""
    config.require_env(env)
    host = as_host(conn)
    host.secrets = list(secret_store.resolve(config, env).values())
    run = Rollback(host, config, env, say=say, show=show, clock=clock, verify_fn=verify_fn)
    target: str = run.execute()
    return target
