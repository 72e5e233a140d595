"""The runbook's off-hours single replica, run by the host's cron: the window (wrapping
midnight), the generated script (valid shell, every value quoted) run on a scripted host: down
to one replica and back, audited, skipped while a deploy holds the lock; a deploy inside the
window goes back to the off-hours count unless --full-replicas."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from vedfin_ops.schedule import nightly, offhours

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


def _cron_lines(world: World) -> list[tuple[str, str]]:
    """(schedule, command) of each off-hours line in the fake host's installed crontab."""
    tab = (world.root / "crontab").read_text()
    return [(" ".join(line.split()[:5]), " ".join(line.split()[5:]))
            for line in tab.splitlines() if "offhours-" in line]


def _log(world: World) -> list[str]:
    return Path(offhours.log_path(world.config)).read_text().splitlines()


def test_cron_runs_each_installed_line_on_the_host_down_then_up_then_retries(world: World
                                                                             ) -> None:
    """The crontab as installed, each line's command run by `sh` on the scripted host at its
    time against the scripted engine (what cron does), not a syntax check."""
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    path = offhours.script_path(world.config, "production")
    lines = _cron_lines(world)
    assert lines == [("0 0 * * *", f"{path} down"), ("0 6 * * *", f"{path} up"),
                     ("*/5 * * * *", f"{path} retry")]
    for (when, command), (hhmm, replicas) in zip(lines, (("00:00", 1), ("06:00", 2)),
                                                 strict=False):
        world.host.set_time(hhmm)
        world.host.run(command, what="cron")
        assert _replicas(world) == dict.fromkeys(APPS, replicas), when
    audited = len(world.audit())
    world.host.set_time("06:05")
    world.host.run(lines[2][1], what="cron")  # nothing pending: no lock taken, nothing done
    assert len(world.audit()) == audited and _replicas(world) == dict.fromkeys(APPS, 2)
    assert not Path(world.layout.lock).exists()


def test_the_timer_scales_down_and_back_audited_and_retries_after_a_held_lock(world: World
                                                                               ) -> None:
    from vedfin_ops.reports.status import status

    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    job = offhours.script_path(world.config, "production")
    assert _replicas(world) == dict.fromkeys(APPS, 2)
    world.host.set_time("00:00")
    world.host.run(f"{job} down", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 1)
    last = world.audit()[-1]
    assert (last["action"], last["result"], last["detail"], last["who"]) == (
        "offhours-down", "ok", "api-production=1, web-production=1",
        f"{world.config.remote.user} (cron)")
    assert last["time"][:4] == str(datetime.now().year)
    Path(world.layout.lock).mkdir()  # a deploy holds the env at 06:00
    world.host.set_time("06:00")
    world.host.run(f"{job} up", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 1)
    assert _log(world)[-1].endswith("skipped: another run holds the lock; up is retried "
                                    "every 5 min until 00:00")
    info = status(world.host, world.config, "production")
    said = info["offhours"]
    assert said["pending"] == "up" and said["scheduled"] == {"down": "00:00", "up": "06:00"}
    assert said["last_run"].endswith("up is retried every 5 min until 00:00")
    shown = _render(info)
    assert "off-hours: 1 replica(s) per app from 00:00 to 06:00 (cron)" in shown
    assert "warning: off-hours up due since " in shown and "has not run (retried by cron " \
        "until its window closes)" in shown
    world.host.set_time("06:05")
    world.host.run(f"{job} retry", what="cron")  # still held: still pending
    assert _replicas(world) == dict.fromkeys(APPS, 1)
    assert status(world.host, world.config, "production")["offhours"]["pending"] == "up"
    Path(world.layout.lock).rmdir()
    world.host.set_time("06:10")
    world.host.run(f"{job} retry", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 2)
    assert world.audit()[-1]["action"] == "offhours-up"
    assert not Path(world.layout.lock).exists()
    assert status(world.host, world.config, "production")["offhours"]["pending"] is None


def _render(info: dict[str, object]) -> str:
    from rich.console import Console

    from vedfin_ops.reports.tables import status_tables

    console = Console(width=400, record=True)
    console.print(status_tables(info))
    return " ".join(console.export_text().split())


@pytest.mark.parametrize("start", ["00:00", "22:00"])  # the shipped window, one over midnight
def test_a_skipped_run_gives_up_when_its_window_closes(world: World, start: str) -> None:
    assert world.config.off_hours is not None
    world.config.off_hours.start = start
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    job = offhours.script_path(world.config, "production")
    Path(world.layout.lock).mkdir()
    world.host.set_time(start)
    world.host.run(f"{job} down", what="cron")
    Path(world.layout.lock).rmdir()
    world.host.set_time("06:00")  # the window closed before the lock was free
    audited = len(world.audit())
    world.host.run(f"{job} retry", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 2) and len(world.audit()) == audited
    assert _log(world)[-1].endswith("gave up: down was not run before the window closed at "
                                    "06:00")
    assert status_of(world)["pending"] is None
    # the other end: up skipped at 06:00, the lock free only once the window is open again
    world.host.run(f"{job} down", what="cron")  # (run by hand: the env on 1 replica)
    Path(world.layout.lock).mkdir()
    world.host.run(f"{job} up", what="cron")
    Path(world.layout.lock).rmdir()
    world.host.set_time(start)
    world.host.run(f"{job} retry", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 1)  # not up inside the window
    assert _log(world)[-1].endswith(f"gave up: up was not run before the window opened "
                                    f"again at {start}")
    assert status_of(world)["pending"] is None


def status_of(world: World) -> dict[str, object]:
    from vedfin_ops.reports.status import status

    said: dict[str, object] = status(world.host, world.config, "production")["offhours"]
    return said


def test_a_paused_env_stays_paused_at_both_ends_of_the_window(world: World) -> None:
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    job = offhours.script_path(world.config, "production")
    world.host.run("docker service scale --detach " +
                   " ".join(f"{name}=0" for name in APPS), what="pause")
    audited = len(world.audit())
    for mode, hhmm in (("down", "00:00"), ("up", "06:00")):
        world.host.set_time(hhmm)
        world.host.run(f"{job} {mode}", what="cron")
        assert _replicas(world) == dict.fromkeys(APPS, 0), mode
        assert "skipped: production is paused (api-production=0, web-production=0)" in \
            _log(world)[-1]
    assert len(world.audit()) == audited and status_of(world)["pending"] is None


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
    from vedfin_ops.deploy.options import DeployOptions
    from vedfin_ops.deploy.pipeline import deploy

    _window_now(world, inside=True)
    deploy(world.host, world.config, "production", "v2", DeployOptions(full_replicas=True),
           say=world.said.append, hooks=world.hooks(), clock=world.clock.clock())
    world.settle()
    assert _replicas(world) == dict.fromkeys(APPS, 2)
    _window_now(world, inside=False)
    assert world.deploy("v3").result == "ok"
    world.settle()
    assert _replicas(world) == dict.fromkeys(APPS, 2)
    assert not any(s.startswith("off-hours:") for s in world.said)


def test_a_scale_the_engine_refuses_is_retried_not_forgotten(world: World) -> None:
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    job = offhours.script_path(world.config, "production")
    docker = world.host.bin / "docker"
    engine = docker.read_text()
    docker.write_text('#!/bin/sh\n[ "$1 $2" = "service scale" ] && { echo "Error response '
                      'from daemon: rpc error: code = Unavailable" >&2; exit 1; }\n' +
                      engine.split("\n", 1)[1])
    world.host.set_time("00:00")
    done = world.host.run(f"{job} down", what="cron", check=False)
    assert _replicas(world) == dict.fromkeys(APPS, 2) and done == ""
    assert _log(world)[-1].endswith("failed: Error response from daemon: rpc error: code = "
                                    "Unavailable; down is retried every 5 min until 06:00")
    assert status_of(world)["pending"] == "down"
    docker.write_text(engine)
    world.host.set_time("00:05")
    world.host.run(f"{job} retry", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 1) and status_of(world)["pending"] is None


def test_an_engine_that_cannot_answer_keeps_the_run_pending(world: World) -> None:
    """dockerd restarting at 06:00 (an upgrade) is no "not deployed": the up run stays
    pending and the retry scales production back once the engine answers."""
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    job = offhours.script_path(world.config, "production")
    world.host.set_time("00:00")
    world.host.run(f"{job} down", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 1)
    docker = world.host.bin / "docker"
    engine = docker.read_text()
    docker.write_text('#!/bin/sh\necho "Cannot connect to the Docker daemon at '
                      'unix:///var/run/docker.sock. Is the docker daemon running?" >&2\n'
                      'exit 1\n')
    world.host.set_time("06:00")
    world.host.run(f"{job} up", what="cron", check=False)
    assert _log(world)[-1].endswith("Is the docker daemon running?; up is retried every 5 min "
                                    "until 00:00"), _log(world)[-1]
    docker.write_text(engine)
    assert status_of(world)["pending"] == "up"
    world.host.set_time("06:05")
    world.host.run(f"{job} retry", what="cron")
    assert _replicas(world) == dict.fromkeys(APPS, 2) and status_of(world)["pending"] is None


def test_a_full_replicas_deploy_is_not_undone_by_the_run_it_made_wait(world: World) -> None:
    """The 00:00 run found the deploy's lock and stayed pending; the deploy, with
    --full-replicas, set the count the operator asked for: the retry at 00:05 keeps it."""
    from vedfin_ops.deploy.options import DeployOptions
    from vedfin_ops.deploy.pipeline import deploy

    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    job = offhours.script_path(world.config, "production")
    _window_now(world, inside=True)
    pending = Path(offhours.pending_path(world.config, "production", "down"))
    pending.write_text("2026-12-06T00:00:00Z\n")  # what the skipped run left
    deploy(world.host, world.config, "production", "v2", DeployOptions(full_replicas=True),
           say=world.said.append, hooks=world.hooks(), clock=world.clock.clock())
    world.settle()
    assert not pending.exists()
    world.host.run(f"{job} retry", what="cron")
    world.settle()
    assert _replicas(world) == dict.fromkeys(APPS, 2)
