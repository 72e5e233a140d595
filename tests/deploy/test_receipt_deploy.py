"""The zero-downtime receipt in the deploy's orchestration (the scripted host; the probe is
the real one, its requests answered by a scripted edge): recorded in release.json and the
audit line, judged by verify's box, and with --require-zero-downtime a failed request puts
the env back. The sandbox proves the same through a real edge
(tests/integration/test_receipt_sandbox.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World, assert_back_on_v1, ends_failed
from vedfin_ops.deploy.options import DeployOptions
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.monitoring.checklist import Facts, _zero_downtime
from vedfin_ops.run.env_run import listing

v1_live, orchestration_world = orchestration.v1_live, orchestration.world


@pytest.fixture
def world(orchestration_world: World) -> World:
    """The scripted host with v1 live, the probe on (asking a scripted edge: World.hooks)."""
    orchestration_world.config.verify.receipt = True
    return orchestration_world


def _live_meta(world: World) -> dict[str, Any]:
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.current is not None
    meta: dict[str, Any] = json.loads(
        Path(world.layout.release(state.current), "release.json").read_text())
    return meta


def _deploy(world: World, tag: str, **options: Any) -> Any:
    return deploy(world.host, world.config, "production", tag, DeployOptions(**options),
                  say=world.said.append, hooks=world.hooks(), clock=world.clock.clock())


def test_a_deploy_records_what_its_rollout_measured_in_the_release_and_the_audit(
        world: World) -> None:
    assert world.deploy("v2").result == "ok"
    receipt = _live_meta(world)["receipt"]
    assert receipt["failed"] == 0 and receipt["sent"] > 0
    assert set(receipt["apps"]) == {"api-production", "web-production"}
    last = world.audit()[-1]
    assert last["result"] == "ok" and f"receipt: 0 failed of {receipt['sent']} " in \
        last["detail"]
    assert any(s.startswith("receipt: 0 failed of") for s in world.said)


def test_failed_requests_are_recorded_and_fail_verify_s_zero_downtime_box(
        world: World) -> None:
    world.probe_meets = "HTTP 502"
    assert world.deploy("v2").result == "ok"  # not required: recorded, the deploy stands
    meta = _live_meta(world)
    assert meta["receipt"]["failed"] == meta["receipt"]["sent"] > 0
    facts = Facts(meta["id"], "good", None, {}, world.audit(), meta["receipt"])
    try:
        _zero_downtime(world.config, "production", facts)
    except Exception as failed:
        assert f"{meta['receipt']['failed']} failed of" in str(failed)
    else:
        raise AssertionError("a receipt with failed requests passed the box")


def test_zero_downtime_required_puts_back_a_deploy_whose_requests_failed(world: World) -> None:
    world.probe_meets = "refused"
    error = ends_failed(lambda: _deploy(world, "v2", require_zero_downtime=True))
    assert_back_on_v1(world, error, "failed")
    assert "zero downtime required, but" in str(error) and " failed of " in str(error)
    assert "receipt: " in world.audit()[-1]["detail"]


def test_a_probe_that_cannot_start_is_a_warning_not_a_failed_deploy(world: World) -> None:
    hooks = world.hooks()

    def no_probe(config: Any, env: str) -> Any:
        raise OSError("no thread to be had")

    hooks.receipt = no_probe
    result = deploy(world.host, world.config, "production", "v2",
                    DeployOptions(require_zero_downtime=True), say=world.said.append,
                    hooks=hooks, clock=world.clock.clock())
    assert result.result == "ok", world.said
    assert any("no zero-downtime receipt for this deploy (unexpected OSError: no thread to be "
               "had)" in s for s in world.said)
    assert any("zero downtime required, but no receipt was taken" in s for s in world.said)


def test_a_rollback_records_its_receipt_in_its_audit_line(world: World) -> None:
    from vedfin_ops.deploy.rollback import Rollback

    assert world.deploy("v2").result == "ok"
    run = Rollback(world.host, world.config, "production",  # type: ignore[arg-type]
                   say=world.said.append, clock=world.clock.clock(),
                   verify_fn=world.hooks().verify)
    run.make_probe = world.hooks().receipt
    world.probe_meets = "reset"
    run.execute()
    last = world.audit()[-1]
    assert (last["action"], last["result"]) == ("rollback", "ok")
    assert run.receipt["failed"] == run.receipt["sent"] > 0
    assert f"receipt: {run.receipt['failed']} failed of {run.receipt['sent']}" in last["detail"]
