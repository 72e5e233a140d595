"""The names the tool gives things on the host: stacks and images. Apart from the renderer so
that what only needs a name (capacity, status, the sandbox) does not load Jinja."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vedfin_ops.config.model import Application, Config


ENV_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
# names an env cannot have: the host already uses them (cluster/membership.CLUSTER, the secrets'
# shared scope, `<remote.baseDir>/backups` and `<remote.baseDir>/bin`)
RESERVED_ENVS = {
    "cluster": "cluster runs lock and audit under it",
    "shared": "secrets.shared is every env's scope",
    "backups": "<remote.baseDir>/backups holds the backups",
    "bin": "<remote.baseDir>/bin holds the cron scripts",
}


def env_name(name: str) -> str:
    """An env's name becomes a stack name, a folder (`<remote.baseDir>/<env>`) and a cron
    script's name on the host, whether or not any app is in it: a plain lower-case name,
    never one of the host's own."""
    from vedfin_ops.config.units import show

    if ENV_NAME.fullmatch(name) is None:
        raise ValueError(f"{show(name)} is not an environment name: lower-case letters and "
                         f"digits, words joined by single hyphens, starting with a letter (it "
                         f"names stacks, folders and cron scripts on the host)")
    if name in RESERVED_ENVS:
        raise ValueError(f"a reserved name ({RESERVED_ENVS[name]})")
    return name


def image(app: Application, tag: str, pins: Mapping[str, str] | None = None) -> str:
    """`repo:tag`, or `repo:tag@sha256:...` when the registry pinned it (see deploy/images)."""
    ref = f"{app.image_repo}:{tag}"
    return (pins or {}).get(ref, ref)


def stack_name(config: Config, env: str) -> str:
    return f"{config.remote.stack_prefix}-{env}"


def shared_stack_name(config: Config) -> str:
    return f"{config.remote.stack_prefix}-shared"


def traefik_name(config: Config, app: Application) -> str:
    """The app's router, service and middleware prefix in a Traefik shared with others: `_`
    is in neither a stack prefix nor an app name, so two configs' prefixes never collide."""
    return f"{config.remote.stack_prefix}_{app.name}"
