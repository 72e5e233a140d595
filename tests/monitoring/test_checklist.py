"""`fab verify`: the runbook's Post-Deployment Verification, each box from what the host says.
On a scripted host: a clean deploy ticks every box; a failed deploy, a pending migration, a
missing vector extension, a replica short, error lines and an unreachable host each fail their
own box in one line. The real thing: tests/integration/test_monitoring_sandbox.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from tests.fake.host import Fault
from vedfin_ops.checks.runner import Check
from vedfin_ops.monitoring.checklist import checklist
from vedfin_ops.run.operation import RunFailed

v1_live, world = orchestration.v1_live, orchestration.world

ITEMS = ["smoke: api-production /api/health", "live release", "migrations applied",
         "pgvector works", "services healthy", "replicas of api and web",
         "monitoring configured", "no errors in logs", "zero-downtime deploy",
         "backup restore proven"]


class _Smoke:
    def __init__(self, ok: bool = True) -> None:
        self.checks = [Check("api-production /api/health", ok, "status ok" if ok else
                             "HTTP 502", 0.1)]


def _verify(world: World, smoke_ok: bool = True) -> Any:
    world.config.monitoring.check = False  # no Netdata on a scripted host (test_monitoring)
    return checklist(world.host, world.config, "production",
                     run_smoke=lambda *a: _Smoke(smoke_ok))


def _item(report: Any, name: str) -> Check:
    found: Check = next(i for i in report.items if i.name == name)
    return found


def test_a_clean_deploy_ticks_every_box(world: World) -> None:
    assert world.deploy("v2").result == "ok"
    assert any(s.startswith("verify: post-deployment checklist ok (") for s in world.said)
    report = _verify(world)
    assert [i.name for i in report.items] == ITEMS
    assert report.passed, report.failed()
    assert _item(report, "migrations applied").detail == (
        "applied by the deploy of v2 (Applying migration [/app/prisma/migrations/001_init]);"
        " status: Database schema is up to date!")
    assert _item(report, "replicas of api and web").detail == "api-production 2, web-production 2"
    assert _item(report, "pgvector works").detail == (
        "vedfinance_prod: vector distance query ok (1)")
    assert _item(report, "monitoring configured").detail == "skipped: monitoring.check is false"
    # no receipt here (the scripted host's probe is off): read from the config
    # (tests/deploy/test_receipt_deploy.py: the box on a measured receipt)
    assert _item(report, "zero-downtime deploy").detail.startswith("the last deploy (v2, ")
    assert "start-first" in _item(report, "zero-downtime deploy").detail
    as_json = report.to_dict()
    assert as_json["passed"] is True and len(as_json["items"]) == len(ITEMS)


def test_a_failed_deploy_fails_the_zero_downtime_box(world: World) -> None:
    world.verify_failures = ["api-production /api/health: HTTP 502"]
    with pytest.raises(RunFailed):
        world.deploy("v2")
    report = _verify(world, smoke_ok=False)
    assert not report.passed
    assert _item(report, "zero-downtime deploy").detail.startswith(
        "the last deploy (v2, ") and "ended failed" in _item(report,
                                                             "zero-downtime deploy").detail
    assert not _item(report, "smoke: api-production /api/health").ok


def test_each_box_fails_on_its_own_finding(world: World) -> None:
    assert world.deploy("v2").result == "ok"
    engine = world.host.engine()
    engine.update(pending=True, no_vector=True, logs={"vedfin-production_api-production": [
        ("current", "Unhandled rejection: [bold]boom[/bold]")]})
    world.host.set_engine(**engine)
    world.config.verify.log_errors_fail = True
    report = _verify(world)
    failed = dict(f.split(": ", 1) for f in report.failed())
    assert failed["migrations applied"].startswith("applied by the deploy of v2 (")
    assert "Following migration have not yet been applied: 002_vectors" in failed[
        "migrations applied"]
    assert failed["pgvector works"] == "a vector distance query in vedfinance_prod returned " \
                                       "nothing"
    assert failed["no errors in logs"].startswith("1 error line(s), first: ")
    assert failed["no errors in logs"].endswith("| Unhandled rejection: [bold]boom[/bold]")
    assert set(failed) == {"migrations applied", "pgvector works", "no errors in logs"}


def test_a_replica_short_fails_services_and_replicas(world: World) -> None:
    assert world.deploy("v2").result == "ok"
    world.host.run("docker service scale --detach vedfin-production_web-production=1",
                   what="scale")
    world.settle()
    failed = dict(f.split(": ", 1) for f in _verify(world).failed())
    assert failed["replicas of api and web"] == "web-production: 1 of 2 replicas running"
    assert "vedfin-production_web-production 1/2 healthy" in failed["services healthy"]


def test_a_host_that_stops_answering_fails_its_boxes_in_one_line(world: World) -> None:
    assert world.deploy("v2").result == "ok"
    world.host.inject(Fault("verify: list releases", 1, "remote"))
    report = _verify(world)
    failed = dict(f.split(": ", 1) for f in report.failed())
    assert failed["live release"] == "verify: list releases: Socket is closed (injected)"
    assert all("\n" not in f and "crashed" not in f for f in report.failed())


def test_ctrl_c_during_verify_is_not_a_failed_box(world: World) -> None:
    assert world.deploy("v2").result == "ok"
    world.host.inject(Fault("pgvector query", 1, "ctrl-c"))
    with pytest.raises(KeyboardInterrupt):
        _verify(world)
