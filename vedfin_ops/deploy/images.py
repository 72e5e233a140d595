"""The release's images in the registry: each resolved to its digest before anything changes
on the host (a missing tag or a refused login stops the deploy with nothing changed), so the
stack files and release.json carry `repo:tag@sha256:...` and a rollback runs the same bits."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vedfin_ops.config.model import Config
from vedfin_ops.config.names import image
from vedfin_ops.remote.registry import Registry, pinned


def resolve_pins(config: Config, env: str, tag: str, secrets: Mapping[str, str], *,
                 pushed: Mapping[str, str] | None = None,
                 say: Callable[[str], None] = print) -> dict[str, str]:
    """`repo:tag` -> `repo:tag@sha256:...` for every app image of `env` (none without a
    registry in the config). `pushed` (`repo:tag` -> digest) are the images this run pushed
    (deploy --build): pinned as pushed, never looked up again, since another run may have
    pushed another build under the same tag since; the others are asked of the registry.
    Raises RegistryError naming the image."""
    registry = config.registry
    if registry is None:
        return {}
    pushed = pushed or {}
    client = Registry(registry.server, registry.username,
                      secrets.get(registry.password_secret, ""), ca=registry.ca_root)
    pins: dict[str, str] = {}
    for app in config.apps(env):
        ref = image(app, tag)
        pins[ref] = pinned(ref, pushed.get(ref) or client.digest(ref))
    ours = sum(1 for ref in pins if pushed.get(ref))
    if pushed:
        say(f"registry: {len(pins)} images of {env} pinned by digest: {ours} as this run "
            f"pushed them, {len(pins) - ours} found in {registry.server}")
    else:
        say(f"registry: {len(pins)} images of {env} found in {registry.server}, pinned by "
            f"digest")
    return pins


def prunable_images(inventory: str) -> list[str]:
    """Image ids no release on the host names by digest (see `commands.image_inventory`).
    An image without a registry digest is never ours to judge; one id with any kept digest
    is kept whole."""
    keep: set[str] = set()
    rows: list[tuple[str, str]] = []
    for line in inventory.splitlines():
        kind, _, rest = line.partition(" ")
        parts = rest.split()
        if kind == "keep" and len(parts) == 1:
            keep.add(parts[0])
        elif kind == "image" and len(parts) == 3:
            rows.append((parts[1], parts[2]))
    kept_ids = {i for d, i in rows if d in keep or not d.startswith("sha256:")}
    return sorted({i for _, i in rows} - kept_ids)
