"""Restore drills on the scripted host (the pin, the checksum, the env file's copy and the disk
check run for real in its shell): the newest backup restored into a scratch database,
compared, queried, its migrate status asked, dropped; recorded as the last proven restorable
backup; the live database never touched; every fault at every step leaves no scratch
database, or one the next drill names and drops. The real PostgreSQL with pgvector runs it in
tests/integration/test_backup_sandbox.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World, ends_failed
from tests.fake.host import Fault
from vedfin_ops.backups import drill
from vedfin_ops.backups.drill import DrillRun, backup_time, judge, room_needed
from vedfin_ops.run.env_run import listing

v1_live, world = orchestration.v1_live, orchestration.world  # the fake host with v1 live


def _drill(world: World, wanted: str | None = None) -> str:
    result: str = DrillRun(world.host, world.config, "production", wanted,  # type: ignore
                           say=world.said.append, clock=world.clock.clock()).execute()
    return result


def _present(world: World) -> set[str]:
    return set(world.host.engine().get("db_present", []))


def _live_untouched(world: World) -> None:
    """No statement the drill sent renamed, dropped or closed the env's database."""
    for sql in world.host.engine().get("sql", []):
        for verb in ("DROP DATABASE IF EXISTS \"vedfinance_prod\"",
                     "ALTER DATABASE \"vedfinance_prod\" "):
            assert verb not in sql, sql


def _records(world: World) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    folder = Path(world.layout.env_dir)
    read = [json.loads(p.read_text()) if p.exists() else None
            for p in (folder / drill.LAST, folder / drill.PROVEN)]
    return read[0], read[1]


@pytest.fixture
def deployed(world: World) -> str:
    """v2 deployed over v1: a backup taken before it, the newest."""
    assert world.deploy("v2").result == "ok"
    taken: str = listing(world.host, world.layout).meta["backup"]  # type: ignore[arg-type]
    return taken


def test_a_drill_restores_the_newest_backup_into_a_scratch_database_and_drops_it(
        world: World, deployed: str) -> None:
    detail = _drill(world)
    assert "tables" in detail and "vector distance query ok" in detail
    assert "migrate status: Database schema is up to date!" in detail
    sql = world.host.engine()["sql"]
    made = [s for s in sql if s.startswith('CREATE DATABASE "vedfinance_prod_drill_')]
    assert len(made) == 1, sql
    scratch = made[0].split('"')[1]
    assert f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE);\n' in sql
    assert not any(n.startswith("vedfinance_prod_drill_") for n in _present(world))
    _live_untouched(world)
    last, proven = _records(world)
    assert last == proven and last is not None
    assert last["backup"] == deployed and last["result"] == "ok"
    assert last["rtoSeconds"] >= 0 and last["rpoSeconds"] >= 0
    audit = world.audit()[-1]
    assert (audit["action"], audit["result"]) == ("db-drill", "ok")
    assert not Path(world.layout.env_dir, "drill").exists()  # the pin is gone
    assert not Path(world.layout.env_dir, ".drill.lock").exists()
    # the migrate status ran against the scratch database, from a private copy of the env
    # file whose URL names it (the copy is gone with the pin)
    assert world.host.engine().get("containers", {}) == {}


def test_the_drill_pins_the_dump_so_retention_beside_it_cannot_take_it(
        world: World, deployed: str) -> None:
    """The pin is a hard link: the backup removed right after it, the drill goes on."""
    dump = Path(world.config.remote.base_dir, "backups", "vedfinance_prod", f"{deployed}.dump")
    real_run = world.host.run

    def run(command: Any, *, what: str, **kwargs: Any) -> str:
        out = real_run(command, what=what, **kwargs)
        if what == "pin dump":
            dump.unlink()  # a deploy's retention, between the pin and the restore
        return out

    world.host.run = run  # type: ignore[method-assign]
    assert "tables" in _drill(world)
    assert _records(world)[1]["backup"] == deployed  # type: ignore[index]


def test_a_drill_without_room_on_the_disk_stops_before_anything(
        world: World, deployed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drill, "ROOM_SPARE", 2**62)
    sql_before = list(world.host.engine().get("sql", []))
    failed = ends_failed(lambda: _drill(world))
    assert "not enough free disk for a drill of" in str(failed) and "\n" not in str(failed)
    assert world.host.engine().get("sql", []) == sql_before
    last, proven = _records(world)
    assert last is not None and last["result"] == "failed" and proven is None


def test_a_drill_of_an_env_without_backups_says_how_to_take_one(world: World) -> None:
    folder = Path(world.config.remote.base_dir, "backups", "vedfinance_prod")
    for path in folder.iterdir():
        path.unlink()
    failed = ends_failed(lambda: _drill(world))
    assert "no backup of production to drill (fab -H HOST db.backup --env production)" in \
        str(failed)


KINDS = ("remote", "exception", "ctrl-c", "sigterm", "sighup")
STEPS = ("pin dump", "drill leftovers", "free disk", "checksum", "create database",
         "pg_restore", "list restored tables", "drill: pgvector query", "drill: env file",
         "drill: migrate status", "drop scratch database", "record drill")


@pytest.mark.parametrize("kind", KINDS)
def test_any_fault_at_any_step_of_a_drill_leaves_the_live_database_and_no_scratch_one(
        world: World, deployed: str, kind: str) -> None:
    """Each step's first command cut before and after it ran: the run ends in one line, the
    live database untouched, no scratch database left, or one the next drill names and
    drops; the drill's lock is free for it."""
    for step in STEPS:
        for after in (False, True):
            fault = Fault(step, 1, kind, after=after)
            world.host.inject(fault)
            try:
                _drill(world)
            except BaseException as exc:  # a signal must converge too
                assert "\n" not in str(exc), (step, after, exc)
                assert type(exc).__name__ == "RunFailed", (step, after, repr(exc))
            assert fault.fired, (step, after)  # the step was reached and cut
            world.host.inject()
            _live_untouched(world)
            assert not Path(world.layout.env_dir, ".drill.lock").exists(), (step, after)
            left = {n for n in _present(world) if n.startswith("vedfinance_prod_drill_")}
            said = len(world.said)
            _drill(world)  # the next drill passes, dropping what was left
            assert not {n for n in _present(world) if n.startswith("vedfinance_prod_drill_")}
            for name in left:
                assert f"drill: dropping {name}, left by an earlier drill" in \
                    world.said[said:], (step, after)


def test_verify_s_box_wants_a_proof_within_a_week_and_fails_on_a_failed_drill() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    proof = {"backup": "20261206T020000Z", "result": "ok", "time": "2026-12-06T02:05:00+00:00",
             "rpoSeconds": 300.0, "rtoSeconds": 42.5, "detail": "3 tables"}
    assert judge(None, None, now) == (True, "warning: no restore drill yet (fab -H HOST "
                                            "db.drill --env ENV)")
    passed, said = judge(proof, proof, now)
    assert passed and said.startswith("backup 20261206T020000Z restored 1.4 days ago")
    assert "RPO 5.0 min, RTO 42.5 s" in said
    assert judge(proof, proof, now + timedelta(days=7))[0] is False
    failed = {**proof, "result": "failed", "detail": "pg_restore: error"}
    assert judge(failed, proof, now) == (False, "the last restore drill (20261206T020000Z, "
                                                "2026-12-06T02:05:00+00:00) failed: "
                                                "pg_restore: error")


def test_a_drill_wants_room_for_the_restored_database_and_a_spare() -> None:
    assert room_needed(100 * 2**20) == 500 * 2**20 + 256 * 2**20
    assert backup_time("20261206T020000Z.2") == datetime(2026, 12, 6, 2, tzinfo=UTC)


def test_leftovers_are_only_names_a_drill_gives_never_an_env_s_database() -> None:
    import re

    sql = drill.leftovers_sql("vedfinance_prod", {"vedfinance_prod", "vedfinance_prod_drill_x"})
    pattern = re.search(r"datname ~ '([^']*)'", sql)
    assert pattern is not None
    ours = re.compile(pattern.group(1))
    assert ours.search("vedfinance_prod_drill_20261207t230000z")
    for other in ("vedfinance_prod_drill_x", "vedfinance_prod_drill_20261207t230000z_old",
                  "vedfinance_prod", "vedfinance_prod_before_20261207t230000z"):
        assert not ours.search(other), other
    assert "datname <> 'vedfinance_prod_drill_x'" in sql


def test_an_env_file_that_still_names_the_live_database_runs_no_migrate_status(
        world: World, deployed: str) -> None:
    """A second way to the database the rewrite cannot change (PGDATABASE): the status
    command is not run at all, rather than against the live database."""
    live = listing(world.host, world.layout).current  # type: ignore[arg-type]
    env_file = Path(world.layout.release(live or ""), "env", "api-production.env")
    env_file.write_text(env_file.read_text() + "PGDATABASE=vedfinance_prod\n")
    detail = _drill(world)
    assert "migrate status skipped: api-production's env file names, outside a postgres " \
           "URL the drill can rewrite, vedfinance_prod" in detail
    assert not any("vedfin.drill=" in line for line in world.host.command_lines)
