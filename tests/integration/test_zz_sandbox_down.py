"""Last of the integration tests (tests/conftest.py orders them): `sandbox.down` leaves nothing
of ours behind. The sandbox stays down after it: the README's first command brings it up."""

from __future__ import annotations

import pwd
from typing import Any

import pytest

import sandbox
from sandbox import engine, images, registry, sshd, traefik

from .conftest import SANDBOX_DIR, docker, real_apps_built

pytestmark = pytest.mark.integration


@pytest.mark.timeout(25 * 60)  # it may wait for the nodes' tests (tests/sandbox_sync.py)
def test_sandbox_down_leaves_no_stack_container_sshd_or_user(sandbox_up: dict[str, Any]) -> None:
    from tests.sandbox_sync import mark, registry_lock

    real_apps_built()
    # Under xdist the nodes' tests may be using the registry on the other worker: wait for
    # them; if they have not started, they will find this mark and bring a sandbox up
    with registry_lock(exclusive=True):
        mark("sandbox-down")
        _down_leaves_nothing()


def _down_leaves_nothing() -> None:
    state = sandbox.State.load(SANDBOX_DIR)
    pid_file = SANDBOX_DIR / "sshd.pid"
    assert sshd.running(pid_file) is not None
    sshd_pid = sshd.running(pid_file)
    registry_pid = registry.running(SANDBOX_DIR / "registry")
    created_network = (SANDBOX_DIR / "traefik" / "created-network").exists()
    assert registry_pid is not None and state.trusted_registry
    sandbox.down(SANDBOX_DIR, progress=lambda _m: None)
    assert not SANDBOX_DIR.exists()
    if state.created_user:
        with pytest.raises(KeyError):
            pwd.getpwnam(sandbox.USER)
    else:  # a user that was here before the sandbox is not ours to remove
        assert pwd.getpwnam(sandbox.USER)
    assert sshd_pid is not None
    assert not sshd.alive(sshd_pid), "sshd still runs after down"
    assert not engine.alive(registry_pid), "the registry still runs after down"
    assert not (registry.CERTS_D / state.trusted_registry).exists(), \
        "down must take back the engine's trust in the registry's CA"
    if state.started_dockerd:
        assert not engine.engine_answers(), "down must stop the dockerd that up started"
        return
    # an engine that stays: nothing of ours in it, Dokploy's stand-in Traefik and its
    # network gone, the sandbox's images removed
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert traefik.CONTAINER not in names
    assert not [n for n in names if n.startswith("vedfin-")]
    if created_network:
        assert docker("network", "inspect", traefik.NETWORK, check=False).returncode != 0
    stacks = docker("stack", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [s for s in stacks if s.startswith("vedfin-")]
    left = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    ours = {spec.name for spec in images.specs()}
    assert not ours & set(left), "down must remove the images"
