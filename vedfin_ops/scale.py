"""The runbook's mitigations as tasks: pause / resume an env, scale it (off-hours replicas).

Each is converged and verified like a deploy and recorded in the audit log. The next deploy
of the env sets the configured replicas again (a stack deploy carries them).
"""

from __future__ import annotations

from fabric import Connection

from . import commands
from .config import Config
from .deploy import Say, Show, as_host, audit, locked, poller, verify
from .errors import CheckFailed, UsageError
from .host import Host
from .releases import Layout
from .render import stack_name
from .rollout import before_of, watch


def scale(conn: Connection | Host, config: Config, env: str, replicas: int | None, *,
          action: str, force: bool = False, say: Say = print,
          show: Show | None = None) -> dict[str, int]:
    """Set every app of `env` to `replicas` (None: each back to its configured count)."""
    config.require_env(env)
    if replicas is not None and replicas < 0:
        raise UsageError(f"error: --replicas: {replicas} is negative")
    if env == "production" and replicas is not None and replicas < 1 and not force:
        raise UsageError("error: refusing to take production below 1 replica "
                         "(--force if you mean it; the runbook never does)")
    host = as_host(conn)
    layout = Layout.of(config, env)
    stack = stack_name(config, env)
    wanted = {f"{stack}_{a.name}": (a.replicas if replicas is None else replicas)
              for a in config.apps(env)}
    with locked(host, layout, action, f"{action} {env}"):
        poll = poller(host, [stack])
        views = poll()
        missing = [name for name in wanted if name not in views]
        if missing:
            raise CheckFailed(f"error: {action}: {env} is not deployed ({', '.join(missing)} "
                              f"not found)")
        host.run(commands.scale_services(wanted), what=f"{action} {env}")
        expected = {name: views[name].image for name in wanted}
        try:
            watch(poll, before_of(views), expected, set(wanted), config.remote.rollout_timeout,
                  show or (lambda lines: None))
            if any(wanted.values()):
                failures = verify(config, env)
                if failures:
                    raise CheckFailed(f"error: {action}: verify failed: {'; '.join(failures)}")
        except CheckFailed as exc:
            audit(host, layout, action, "failed", detail=str(exc))
            raise
        detail = ", ".join(f"{n.split('_', 1)[1]}={c}" for n, c in sorted(wanted.items()))
        audit(host, layout, action, "forced" if force else "ok", detail=detail)
        say(f"{action}: {env}: {detail}")
    return {name.split("_", 1)[1]: count for name, count in wanted.items()}
