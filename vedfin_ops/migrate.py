"""migrate: the app's migration command, once, in a one-off container of the NEW api image.

It runs before any replica changes, on the env's network with the env's env file, so a failed
migration stops the deploy while the old version still serves.
"""

from __future__ import annotations

from collections.abc import Callable

from . import commands
from .config import Config
from .errors import CheckFailed, UsageError
from .host import Host, RemoteError
from .render import image


def migrating_app(config: Config, env: str) -> tuple[str, str, str] | None:
    """(app name, command, image repo) of the env's app that migrates, if any."""
    for app in config.apps(env):
        command = app.migrate_command
        if command:
            return app.name, command, app.image_repo
    return None


def migrate(host: Host, config: Config, env: str, tag: str, release_dir: str,
            show: Callable[[str], None] = print) -> bool:
    """Run the migration; False when the env has nothing to migrate; raises on failure."""
    found = migrating_app(config, env)
    if found is None:
        return False
    name, command, _ = found
    app = next(a for a in config.apps(env) if a.name == name)
    target = image(app, tag)
    env_file = f"{release_dir}/env/{name}.env"
    try:
        host.run(commands.migrate(target, config.remote.network, env_file, command,
                                  f"{name}-migrate-{tag}"),
                 what=f"migrate ({target})", stream=lambda line: show(f"  | {line}"),
                 timeout=config.remote.rollout_timeout)
    except RemoteError as exc:
        raise CheckFailed(f"{exc}; no replica was changed") from None
    return True


def require_tag(tag: str | None) -> str:
    if not tag:
        raise UsageError("error: --tag is required (the image tag to migrate with)")
    return tag
