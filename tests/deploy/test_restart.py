"""`fab restart`: the runbook's "restart the high-memory container" as a rolling update of the
same spec (new tasks, start-first), watched, verified and audited; a fault at any step leaves
the spec as it was, the lock released and a failed/interrupted audit line. Zero failed requests
under load: tests/integration/test_monitoring_sandbox.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import KINDS, World
from tests.fake import docker as fake_docker
from tests.fake.host import Fault
from vedfin_ops.deploy.scale import restart
from vedfin_ops.errors import UsageError
from vedfin_ops.run.operation import RunFailed

v1_live, world = orchestration.v1_live, orchestration.world
API = "vedfin-production_api-production"


def _restart(world: World, app: str | None = "api-production") -> list[str]:
    return restart(world.host, world.config, "production", app, say=world.said.append,
                   clock=world.clock.clock(), verify_fn=world.hooks().verify)


def _specs(world: World) -> dict[str, dict[str, Any]]:
    """Every service's spec as the engine reports it (`docker service inspect`'s Spec)."""
    return {name: fake_docker.inspect_one(name, svc)["Spec"]
            for name, svc in world.host.engine()["services"].items()}


def _kept(specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a restart must keep: the whole spec but the counter that forces new tasks."""
    out = copy.deepcopy(specs)
    for spec in out.values():
        spec["TaskTemplate"].pop("ForceUpdate", None)
    return out


def _forced(specs: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: spec["TaskTemplate"].get("ForceUpdate", 0) for name, spec in specs.items()}


def test_restart_replaces_the_apps_tasks_and_audits_it(world: World) -> None:
    before = _specs(world)
    assert _restart(world) == ["api-production"]
    assert world.host.engine()["restarts"] == [API]
    after = _specs(world)
    assert _kept(after) == _kept(before)  # image, resources, env, labels, replicas: all kept
    assert _forced(after) == {**_forced(before), API: _forced(before)[API] + 1}
    last = world.audit()[-1]
    assert (last["action"], last["result"], last["detail"]) == ("restart", "ok",
                                                                 "api-production")
    assert "restart: production: api-production on new tasks" in world.said
    assert not Path(world.layout.lock).exists()


def test_every_app_without_app_and_an_unknown_app_refused_before_connecting(world: World
                                                                           ) -> None:
    assert _restart(world, None) == ["api-production", "web-production"]
    commands = len(world.host.commands)
    with pytest.raises(UsageError, match=r"^restart --app: production has no app 'nope'"):
        _restart(world, "nope")
    assert len(world.host.commands) == commands


def test_a_restart_that_fails_verify_is_a_failed_run(world: World) -> None:
    world.verify_failures = ["api-production /api/health: HTTP 502"]
    with pytest.raises(RunFailed, match="restart: verify failed: api-production /api/health"):
        _restart(world)
    assert world.audit()[-1]["result"] == "failed"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", ["restart production", "watch rollout"])
def test_a_fault_during_restart_leaves_the_spec_and_releases_the_lock(world: World, kind: str,
                                                                      what: str) -> None:
    before = _specs(world)
    world.host.inject(Fault(what, 1, kind))
    with pytest.raises(RunFailed):
        _restart(world)
    world.settle()
    assert _kept(_specs(world)) == _kept(before)
    assert world.audit()[-1]["action"] == "restart"
    assert world.audit()[-1]["result"] in ("failed", "interrupted")
    assert not Path(world.layout.lock).exists()
