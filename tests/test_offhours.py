"""The runbook's off-hours single replica, run by the host's cron: the window (wrapping
midnight), the generated script (valid shell, every value quoted) run on a scripted host: down
to one replica and back, audited, skipped while a deploy holds the lock; a deploy inside the
window goes back to the off-hours count unless --full-replicas."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

from vedfin_ops.steps import nightly, offhours

from . import test_orchestration as orchestration
from .test_orchestration import World

v1_live, world = orchestration.v1_live, orchestration.world
APPS = ("vedfin-production_api-production", "vedfin-production_web-production")


def _replicas(world: World) -> dict[str, int]:
    return {n: world.host.engine()["services"][n]["replicas"] for n in APPS}


def test_the_window_wraps_midnight(world: World) -> None:
    config = world.config
    assert config.off_hours is not None
    assert [offhours.inside(config, t) for t in ("23:59", "00:00", "05:59", "06:00")] == [
        False, True, True, False]
    config.off_hours.start, config.off_hours.end = "22:30", "05:00"
    assert [offhours.inside(config, t) for t in ("22:29", "22:30", "23:59", "00:00", "04:59",
                                                 "05:00")] == [False, True, True, True, True,
                                                               False]


def test_the_script_is_valid_shell_and_cron_runs_it_at_both_ends(world: World) -> None:
    text = offhours.script(world.config, "production")
    assert subprocess.run(["sh", "-n"], input=text, text=True, check=False).returncode == 0
    path = offhours.script_path(world.config, "production")
    assert offhours.cron_lines(world.config) == [f"0 0 * * * {path} down",
                                                  f"0 6 * * * {path} up"]


def test_the_timer_scales_down_and_back_audited_and_skips_a_held_lock(world: World) -> None:
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    job = offhours.script_path(world.config, "production")
    assert _replicas(world) == dict.fromkeys(APPS, 2)
    world.host.run(f"{job} down", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 1)
    last = world.audit()[-1]
    assert (last["action"], last["result"], last["detail"], last["who"]) == (
        "offhours-down", "ok", "api-production=1, web-production=1",
        f"{world.config.remote.user} (cron)")
    assert last["time"][:4] == str(datetime.now().year)
    Path(world.layout.lock).mkdir()  # a deploy holds the env
    world.host.run(f"{job} up", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 1)
    assert Path(offhours.log_path(world.config)).read_text().splitlines()[-1].endswith(
        "skipped: another run holds the lock")
    Path(world.layout.lock).rmdir()
    world.host.run(f"{job} up", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 2)
    assert world.audit()[-1]["action"] == "offhours-up"
    assert not Path(world.layout.lock).exists()


def _window_now(world: World, inside: bool) -> None:
    """The host's clock inside the shipped window (00:00-06:00) or outside it."""
    assert world.config.off_hours is not None
    assert (world.config.off_hours.start, world.config.off_hours.end) == ("00:00", "06:00")
    world.host.set_time("00:30" if inside else "12:00")


def test_a_deploy_inside_the_window_keeps_the_off_hours_count(world: World) -> None:
    _window_now(world, inside=True)
    assert world.deploy("v2").result == "ok"
    world.settle()
    assert _replicas(world) == dict.fromkeys(APPS, 1)
    assert any(s.startswith("off-hours: production back to 1 replica(s) per app until ")
               for s in world.said)


def test_full_replicas_or_outside_the_window_keeps_the_configured_count(world: World) -> None:
    from vedfin_ops.steps.deploy import deploy

    _window_now(world, inside=True)
    deploy(world.host, world.config, "production", "v2", say=world.said.append,
           hooks=world.hooks(), clock=world.clock.clock(), full_replicas=True)
    world.settle()
    assert _replicas(world) == dict.fromkeys(APPS, 2)
    _window_now(world, inside=False)
    assert world.deploy("v3").result == "ok"
    world.settle()
    assert _replicas(world) == dict.fromkeys(APPS, 2)
    assert not any(s.startswith("off-hours:") for s in world.said)
