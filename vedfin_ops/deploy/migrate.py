"""migrate: the env's migration command (the first app with one: the api's Prisma by
default), once, in a one-off container of that app's NEW image.

It runs before any replica of the env's apps changes, on the env's network with the env's env
file, so a failed migration stops the deploy while the old version still serves.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from vedfin_ops.config.model import Application, Config
from vedfin_ops.config.names import image
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteError, RemoteHost
from vedfin_ops.run.operation import Operation, bare


def stop_migrations(host: RemoteHost, env: str) -> str:
    """Stop the env's migration containers and say whether they are gone (checked, not
    assumed: the way back must not claim what it did not do)."""
    host.run(commands.stop_migrations(env), what="stop migration", check=False)
    left = host.run(commands.migrations_running(env), what="migrations running",
                    check=False).split()
    if left:
        return (f"migration container still running: {', '.join(left)} (docker rm -f "
                f"{' '.join(left)})")
    return "migration container stopped"


def migrating_app(config: Config, env: str) -> Application | None:
    """The env's app that migrates, if any (the first with a migration command)."""
    return next((app for app in config.apps(env) if app.migrate_command), None)


def migrate(host: RemoteHost, config: Config, env: str, tag: str, release_dir: str,
            show: Callable[[str], None] = print,
            keep_alive: Callable[[str], str] = lambda command: command,
            pins: Mapping[str, str] | None = None) -> bool:
    """Run the migration; False when the env has nothing to migrate; raises on failure.

    `keep_alive` wraps the command so the lock's heartbeat goes on while it runs: a migration
    may print nothing for minutes, and a silent holder looks stale to the next run."""
    app = migrating_app(config, env)
    if app is None or not app.migrate_command:
        return False
    name, command = app.name, app.migrate_command
    target = image(app, tag, pins)
    env_file = f"{release_dir}/env/{name}.env"
    said: list[str] = []

    def line_of_output(line: str) -> None:
        said.append(line)
        show(f"  | {line}")

    try:
        host.run(keep_alive(commands.migrate(target, config.remote.network, env_file, command,
                                             f"{name}-migrate-{tag}", env)),
                 what=f"migrate ({target})", stream=line_of_output,
                 timeout=config.remote.rollout_timeout)
    except RemoteError as exc:
        hint = prisma_hint(said)
        raise CheckFailed(f"{bare(str(exc))}; no replica was changed"
                          + (f"; {hint}" if hint else "")) from None
    return True


_MIGRATION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_P3009_NAME = re.compile(r"^The `([^`\s]+)` migration started")


class StatusFailed(CheckFailed):
    """The app's `migrateStatus` exited non-zero; `why` is the last line it printed (Prisma
    says what is pending on stdout)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def migrate_status(host: RemoteHost, config: Config, env: str, app: Application, image: str,
                   env_file: str, *, name: str, label: str, what: str) -> str:
    """`app`'s `migrateStatus` in a one-off container of `image` with `env_file`, on the env's
    network; the last line it printed, or StatusFailed. Never left running: a Ctrl-C, a
    timeout or a dropped link removes the container (verify's status, a restore drill's)."""
    try:
        out = host.run(commands.migrate(image, config.remote.network, env_file,
                                        app.migrate_status_command or "", name, env,
                                        label=label),
                       what=what, timeout=300)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            host.run(commands.remove_container(name), what="stop migrate status", check=False)
        if not isinstance(exc, RemoteError):
            raise
        told = [line.strip() for line in exc.output.splitlines() if line.strip()]
        raise StatusFailed(host.redact(told[-1]) if told else bare(str(exc))) from None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return host.redact(lines[-1]) if lines else "exit 0"


def prisma_hint(output: list[str]) -> str | None:
    """What to do after Prisma recorded a migration as failed (P3018) or refuses to go on
    because one is (P3009): every later `migrate deploy` stops there until the migration is
    marked rolled back (after fixing it) or applied (after finishing it by hand). The name
    comes from the app's output: used only when it looks like a migration folder's name."""
    if not any(code in line for line in output for code in ("P3018", "P3009")):
        return None
    found: str | None = None
    for line in output:
        text = line.strip()
        if text.startswith("Migration name:"):
            found = text.split(":", 1)[1].strip()
        elif (match := _P3009_NAME.match(text)) is not None:
            found = match.group(1)
        if found is not None:
            break
    name = found if found is not None and _MIGRATION_NAME.fullmatch(found) else "NAME"
    return (f"Prisma keeps {name} as failed and the next deploy stops on it (P3009): once "
            f"the database holds none of it, `npx prisma migrate resolve --rolled-back "
            f"{name}` in a one-off container of the live api image (docs/real-apps.md)")


class Migrate(Operation):
    """`fab migrate` on its own: under the env's lock, audited, stopped cleanly on Ctrl-C."""

    action = "migrate"

    def __init__(self, host: Any, config: Config, env: str, tag: str, **kwargs: Any) -> None:
        super().__init__(host, config, env, tag=tag, **kwargs)

    def body(self) -> bool:
        running = self.host.run(commands.migrations_running(self.env), what="migrations running",
                                check=False).split()
        if running:
            raise CheckFailed(f"a migration of {self.env} is still running "
                              f"({', '.join(running)})")
        self.engine_touched = True  # a container of the env runs from here on
        done = migrate(self.host, self.config, self.env, self.tag, self.layout.current,
                       show=self.say, keep_alive=self.lock.keep_alive)
        with self.shielded():
            self.commit(done)
            self.audit_ok("ok" if done else "noop", tag=self.tag)
        return done

    def put_back(self) -> str:
        return stop_migrations(self.host, self.env)


def run_migrate(host: RemoteHost, config: Config, env: str, tag: str, *,
                say: Callable[[str], None] = print) -> bool:
    from vedfin_ops.config import secret_store
    from vedfin_ops.config.tags import check_tag

    config.require_env(env)
    check_tag(tag)
    host.secrets = list(secret_store.resolve(config, env).values())
    done: bool = Migrate(host, config, env, tag, say=say).execute()
    return done


def require_tag(tag: str | None) -> str:
    if not tag:
        raise UsageError("--tag is required (the image tag to migrate with)")
    return tag
