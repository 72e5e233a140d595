"""The names the tool gives things on the host: stacks and images. Apart from the renderer so
that what only needs a name (capacity, status, the sandbox) does not load Jinja."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vedfin_ops.config.model import Application, Config


def image(app: Application, tag: str, pins: Mapping[str, str] | None = None) -> str:
    """`repo:tag`, or `repo:tag@sha256:...` when the registry pinned it (see steps/images)."""
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
