"""The runbook's mitigations as tasks: pause / resume an env, scale it (off-hours replicas),
restart an app ("restart the high-memory container").

Each is converged like a deploy, verified through the edge when it leaves anything running (a
pause has nothing to verify) and recorded in the audit log. A failed pause, resume or scale
puts every service back on the replica counts it had; a restart changes no spec, so it has
nothing to put back: the engine rolls back a restart whose new task fails
(`Restart.put_back`). The next deploy of the env sets the configured replicas again (a stack
deploy carries them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fabric import Connection

from vedfin_ops.config.model import Config
from vedfin_ops.config.roles import protected
from vedfin_ops.deploy.rollout import before_of
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import Host, RemoteHost
from vedfin_ops.run.env_run import EnvRun, as_env_host, verify
from vedfin_ops.run.operation import Say, Show
from vedfin_ops.run.polling import REAL, Clock


class Scale(EnvRun):
    def __init__(self, host: RemoteHost, config: Config, env: str, wanted: dict[str, int], *,
                 action: str, force: bool = False,
                 verify_fn: Callable[..., list[str]] | None = None, **kwargs: Any) -> None:
        self.action = action
        super().__init__(host, config, env, tag="", **kwargs)
        self.wanted, self.force = wanted, force
        self.verify_fn = verify_fn or verify
        self.previous: dict[str, int] = {}

    def body(self) -> dict[str, int]:
        self.views = self.poll()
        missing = [name for name in self.wanted if name not in self.views]
        if missing:
            raise CheckFailed(f"{self.action}: {self.env} is not deployed "
                              f"({', '.join(missing)} not found)")
        self.previous = {name: self.views[name].replicas for name in self.wanted}
        # a receipt where every app served before and after (a pause stops serving on
        # purpose; a resume from zero had nothing to drop)
        with self.measured(serving=all(self.previous.values()) and all(self.wanted.values())):
            self.set_replicas(self.wanted)
            failures = self.verify_fn(self.config, self.env) if any(self.wanted.values()) \
                else []
        if failures:
            raise CheckFailed(f"{self.action}: verify failed: {'; '.join(failures)}")
        detail = ", ".join(f"{n.split('_', 1)[1]}={c}" for n, c in sorted(self.wanted.items()))
        result = {name.split("_", 1)[1]: count for name, count in self.wanted.items()}
        with self.shielded():
            self.commit(result)
            self.audit_ok("forced" if self.force else "ok", detail=detail)
        self.say(f"{self.action}: {self.env}: {detail}")
        return result

    def set_replicas(self, wanted: dict[str, int]) -> None:
        views = self.poll()
        expected = {name: views[name].image for name in wanted if name in views}
        self.beat(force=True)  # the lock is still ours right before the engine moves
        self.engine_touched = True
        self.host.run(commands.scale_services(wanted), what=f"{self.action} {self.env}")
        self.converge(self.poll, before_of(views), expected)

    def put_back(self) -> str:
        if not self.previous:
            return ""
        self.say(f"putting {self.env} back on its replica counts "
                 f"({', '.join(f'{n}={c}' for n, c in sorted(self.previous.items()))})")
        self.set_replicas(self.previous)
        return f"{self.env} back on its previous replica counts"


def scale(conn: Connection | Host, config: Config, env: str, replicas: int | None, *,
          action: str, force: bool = False, say: Say = print, show: Show | None = None,
          clock: Clock = REAL, verify_fn: Callable[..., list[str]] | None = None
          ) -> dict[str, int]:
    """Set every app of `env` to `replicas` (None: each back to its configured count)."""
    config.require_env(env)
    if replicas is not None and replicas < 0:
        raise UsageError(f"--replicas: {replicas} is negative")
    if protected(config, env) and replicas is not None and replicas < 1 and not force:
        raise UsageError(f"refusing to take {env} below 1 replica "
                         f"(--force if you mean it; the runbook never does)")
    host = as_env_host(conn, config, env)
    run = Scale(host, config, env, {}, action=action, force=force, say=say, show=show,
                clock=clock, verify_fn=verify_fn)
    run.wanted = {f"{run.stack}_{a.name}": (a.replicas if replicas is None else replicas)
                  for a in config.apps(env)}
    result: dict[str, int] = run.execute()
    return result


class Restart(EnvRun):
    """New tasks for the same spec, one at a time, start-first: the runbook's "restart the
    high-memory container" without a failed request. The engine rolls back a restart whose
    new task fails; the tool watches it like a deploy and verifies through the edge."""

    action = "restart"

    def __init__(self, host: RemoteHost, config: Config, env: str, names: list[str], *,
                 verify_fn: Callable[..., list[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(host, config, env, tag="", **kwargs)
        self.names = names
        self.verify_fn = verify_fn or verify

    def body(self) -> list[str]:
        views = self.poll()
        missing = [name for name in self.names if name not in views]
        if missing:
            raise CheckFailed(f"restart: {self.env} is not deployed ({', '.join(missing)} "
                              f"not found)")
        self.views = views  # what served before (the receipt's apps)
        expected = {name: views[name].image for name in self.names}
        self.beat(force=True)
        self.engine_touched = True
        with self.measured():
            self.host.run(commands.restart_services(self.names), what=f"restart {self.env}")
            self.converge(self.poll, before_of(views), expected)
            failures = self.verify_fn(self.config, self.env)
        if failures:
            raise CheckFailed(f"restart: verify failed: {'; '.join(failures)}")
        apps = [name.split("_", 1)[1] for name in self.names]
        with self.shielded():
            self.commit(apps)
            self.audit_ok("ok", detail=", ".join(apps))
        self.say(f"restart: {self.env}: {', '.join(apps)} on new tasks")
        return apps

    def put_back(self) -> str:
        """Nothing to undo: the spec is unchanged, and a failed restart is rolled back by the
        engine (its update_config) before the watch reports it. A restart stopped mid-watch
        goes on in the engine: the user is told where to look."""
        return "the engine goes on replacing the tasks it started on (fab status)"


def restart(conn: Connection | Host, config: Config, env: str, app: str | None = None, *,
            say: Say = print, show: Show | None = None, clock: Clock = REAL,
            verify_fn: Callable[..., list[str]] | None = None) -> list[str]:
    """Restart one app of `env` (or every app), rolling, verified; audited as `restart`."""
    from vedfin_ops.monitoring.logs import services

    names = services(config, config.require_env(env), app, option="restart --app")
    host = as_env_host(conn, config, env)
    result: list[str] = Restart(host, config, env, names, say=say, show=show, clock=clock,
                                verify_fn=verify_fn).execute()
    return result
