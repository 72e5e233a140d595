"""The first deploy onto an adopted data volume (Dokploy's postgres data) backs up the
databases in it before the shared stack moves onto it, on the scripted host: the command
sequence (volume judged, a postgres of the config's image on the volume alone, every env's
database dumped by `db.backup`'s own command into the host's backup folder, that postgres
stopped and removed, only then the push and the shared stack), the records a restore reads,
what a later deploy does (the volume is the shared postgres's: an ordinary backup), and every
fault in it (nothing moved, the dumping postgres gone). The same on real engines:
tests/integration/test_adopt_volume.py."""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_orchestration import HANDLERS, FakeClock, World, _secrets
from tests.fake.host import FakeHost, Fault
from vedfin_ops.backups.records import list_backups
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.remote import commands
from vedfin_ops.run.env_run import listing
from vedfin_ops.run.interrupts import HANDLED
from vedfin_ops.run.operation import RunFailed

VOLUME = "dokploy-pgdata"
SERVER = "vedfin-adopt-backup"
REASON = f"before adopting {VOLUME}"


def _data(shipped_data: dict[str, Any], root: Path) -> dict[str, Any]:
    data = copy.deepcopy(shipped_data)
    data["remote"] = {**data.get("remote", {}), "baseDir": str(root / "srv")}
    data["postgres"]["volume"] = {"name": VOLUME, "external": True}
    return data


@pytest.fixture
def dokploy_host(tmp_path: Path, shipped_data: dict[str, Any],
                 monkeypatch: pytest.MonkeyPatch) -> World:
    """A VPS as Dokploy leaves it once its postgres is removed: no stack of ours, the
    volume holding PostgreSQL 17 data with production's and staging's databases (no dev)."""
    config = config_from_dict(_data(shipped_data, tmp_path), "dokploy.yaml")
    _secrets(monkeypatch, config)
    world = World(tmp_path, config, FakeHost(tmp_path), FakeClock())
    world.host.set_engine(volumes={VOLUME: "17"}, db_absent=["vedfinance_dev"])
    return world


def _adopted_backups(world: World) -> dict[str, Any]:
    found = list_backups(world.host, world.config).backups  # type: ignore[arg-type]
    return {b.env: b for b in found if b.reason == REASON}


def test_the_first_deploy_backs_up_the_adopted_databases_before_anything_moves(
        dokploy_host: World) -> None:
    world = dokploy_host
    assert world.deploy("v1").result == "ok", world.said
    sent = world.host.commands
    order = ["check postgres.volume", "start postgres on adopted volume",
             "backup vedfinance_staging", "backup vedfinance_prod",
             "stop postgres on adopted volume", "rename", "stack deploy vedfin-shared"]
    assert [sent.index(what) for what in order] == sorted(sent.index(what) for what in order)
    # the dumps ran in the postgres on the volume, by db.backup's own command
    lines = world.host.command_lines
    start = next(line for line in lines if f"--name {SERVER}" in line)
    assert commands.adoption_server(SERVER, VOLUME, world.config.postgres.image,
                                    "postgres") in start  # with the lock's heartbeat around it
    assert "--network none" in start and f"-v {VOLUME}:/var/lib/postgresql/data" in start
    assert sum(f"docker exec {SERVER} pg_dump -U postgres -Fc -d " in line
               for line in lines) == 2
    # one backup per database the volume holds, each its env's, in the tool's format
    taken = _adopted_backups(world)
    assert set(taken) == {"production", "staging"}
    folder = Path(world.config.remote.base_dir) / "backups" / "vedfinance_prod"
    assert (folder / f"{taken['production'].id}.dump").read_text() == \
        "PGDMP fake dump of vedfinance_prod\n"
    record = json.loads((folder / f"{taken['production'].id}.json").read_text())
    assert record["reason"] == REASON and record["env"] == "production"
    # the release records it as its pre-deploy backup (what rollback --restore-db restores)
    assert listing(world.host, world.layout).meta["backup"] == \
        taken["production"].id  # type: ignore[arg-type]
    deployed = [line for line in world.audit() if line["action"] == "deploy"]
    assert deployed[-1]["detail"] == f"backup {taken['production'].id}"
    engine = world.host.engine()
    assert engine["adoption_servers"] == [SERVER] and SERVER not in engine.get("containers", {})
    assert any("vedfinance_dev is not in dokploy-pgdata" in line for line in world.said)


def test_db_restore_restores_an_adopted_backup(dokploy_host: World) -> None:
    from vedfin_ops.backups.restore import RestoreRun, find_backup

    world = dokploy_host
    assert world.deploy("v1").result == "ok", world.said
    taken = _adopted_backups(world)["production"]
    backup = find_backup(world.host, world.config, "production", taken.id)  # type: ignore
    restored = RestoreRun(world.host, world.config, "production", backup,  # type: ignore
                          say=world.said.append, clock=world.clock.clock()).execute()
    assert restored == "vedfinance_prod"


def test_once_the_volume_is_the_shared_postgres_s_a_deploy_backs_up_as_ever(
        dokploy_host: World, shipped_data: dict[str, Any]) -> None:
    world = dokploy_host
    assert world.deploy("v1").result == "ok", world.said
    data = _data(shipped_data, world.root)
    data["redis"] = {**data.get("redis", {}), "image": "redis:7.4-alpine"}  # the shared stack
    world.config = config_from_dict(data, "dokploy.yaml")                  # changes again
    world.host.commands.clear()
    assert world.deploy("v2").result == "ok", world.said
    sent = world.host.commands
    assert "start postgres on adopted volume" not in sent
    assert "check postgres.volume" in sent and "backup vedfinance_prod" in sent
    assert len(_adopted_backups(world)) == 2  # none more
    latest = list_backups(world.host, world.config, "production").backups[-1]  # type: ignore
    assert latest.reason == "before deploy of v2"


@pytest.mark.parametrize(("what", "nth"), [("start postgres on adopted volume", 1),
                                           ("database exists", 2),
                                           ("backup vedfinance_prod", 1)])
@pytest.mark.parametrize(("kind", "after"), [("remote", False), ("remote", True),
                                             ("exception", True), ("ctrl-c", False),
                                             ("sigterm", True)])
def test_a_fault_in_the_adoption_backup_moves_nothing_and_leaves_no_postgres_on_the_volume(
        dokploy_host: World, what: str, nth: int, kind: str, after: bool) -> None:
    """Before the push: no release, no shared stack, no lock; the dumping postgres stopped
    and removed; no partial backup listed; the next deploy backs up and adopts."""
    world = dokploy_host
    world.host.inject(Fault(what, nth, kind, after=after))
    with pytest.raises(RunFailed) as caught:
        world.deploy("v1")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("deploy production")
    engine = world.host.engine()
    assert engine["services"] == {} and not engine.get("containers")
    assert not Path(world.layout.lock).exists()
    releases = Path(world.layout.releases)
    assert not releases.exists() or not [p for p in releases.iterdir()
                                         if not p.name.startswith(".")]
    assert {sig: signal.getsignal(sig) for sig in HANDLED} == HANDLERS
    done = _adopted_backups(world)
    assert set(done) <= {"staging", "production"}  # whole ones only: a cut dump never lists
    world.host.inject()
    assert world.deploy("v1").result == "ok", world.said
    assert "production" in _adopted_backups(world)
    assert VOLUME in world.host.engine()["services"]["vedfin-shared_postgres"]["mounts"]


def test_a_postgres_left_on_the_volume_is_stopped_before_the_shared_stack_moves(
        dokploy_host: World) -> None:
    """The link drops as the dumping postgres is being stopped (the command never reaches
    the host): the judge before the move stops it, so two postgres never share the data."""
    world = dokploy_host
    world.host.inject(Fault("stop postgres on adopted volume", 1, "remote"))
    assert world.deploy("v1").result == "ok", world.said
    sent = world.host.commands
    stop = len(sent) - 1 - sent[::-1].index("check postgres.volume")
    assert stop < sent.index("stack deploy vedfin-shared")
    assert SERVER not in world.host.engine().get("containers", {})


def test_a_postgres_that_cannot_start_on_the_volume_stops_the_deploy_saying_why(
        dokploy_host: World) -> None:
    world = dokploy_host
    world.host.set_engine(adopt_fails=True)
    with pytest.raises(RunFailed) as caught:
        world.deploy("v1")
    message = str(caught.value)
    assert "start postgres on adopted volume" in message and "\n" not in message
    assert world.host.engine()["services"] == {}


@pytest.mark.parametrize("no_backup", ["--no-backup", "beforeDeploy: false"])
def test_no_backup_skips_the_adoption_backup_too(dokploy_host: World, shipped_data: dict[str, Any],
                                                 no_backup: str) -> None:
    from vedfin_ops.deploy.options import DeployOptions
    from vedfin_ops.deploy.pipeline import deploy

    world = dokploy_host
    options = DeployOptions(no_backup=no_backup == "--no-backup")
    if no_backup != "--no-backup":
        data = _data(shipped_data, world.root)
        data["backups"] = {**data.get("backups", {}), "beforeDeploy": False}
        world.config = config_from_dict(data, "dokploy.yaml")
    result = deploy(world.host, world.config, "production", "v1", options,
                    say=world.said.append, hooks=world.hooks(), clock=world.clock.clock())
    assert result.result == "ok"
    assert "start postgres on adopted volume" not in world.host.commands
    assert _adopted_backups(world) == {}


def test_a_move_the_backup_step_did_not_foresee_is_backed_up_under_the_shared_lock(
        dokploy_host: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another env's deploy changed the shared files between `inspect` and the shared lock
    (the backup step saw nothing to move): the judge under the lock backs the volume up,
    before the shared stack deploys."""
    from vedfin_ops.deploy.pipeline import Deploy

    world = dokploy_host
    monkeypatch.setattr(Deploy, "back_up_adopted_volume", lambda self: False)
    assert world.deploy("v1").result == "ok", world.said
    sent = world.host.commands
    assert sent.index("read shared hash") < sent.index("start postgres on adopted volume") < \
        sent.index("stop postgres on adopted volume") < sent.index("stack deploy vedfin-shared")
    assert set(_adopted_backups(world)) == {"production", "staging"}
