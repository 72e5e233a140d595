"""The names the tool gives things on the host: stacks and images. Apart from the renderer so
that what only needs a name (capacity, status, the sandbox) does not load Jinja."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vedfin_ops.config.model import Application, Config


def image(app: Application, tag: str) -> str:
    return f"{app.image_repo}:{tag}"


def stack_name(config: Config, env: str) -> str:
    return f"{config.remote.stack_prefix}-{env}"


def shared_stack_name(config: Config) -> str:
    return f"{config.remote.stack_prefix}-shared"
