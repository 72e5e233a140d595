"""Backups: deploy dumps the env's database before anything changes, a failed dump stops it
there, `--no-backup` says so, retention keeps `backups.keep`; the records, the listing and
the command's quoting. Against the scripted host of tests/fake (every fault of the backup
commands is also in tests/deploy/test_orchestration.py's matrix, which walks every command of a
deploy); the real pg_dump runs in tests/integration/test_backup_sandbox.py."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World, assert_back_on_v1
from vedfin_ops.backups import records
from vedfin_ops.backups.backup import new_id, to_remove
from vedfin_ops.backups.records import Backup, list_backups, parse_listing
from vedfin_ops.remote.quoting import sql_ident, sql_literal
from vedfin_ops.run.env_run import listing
from vedfin_ops.run.operation import RunFailed

v1_live, world = orchestration.v1_live, orchestration.world  # the fake host with v1 live

SHA = "a" * 64


def _backups_dir(world: World) -> Path:
    return Path(world.config.remote.base_dir) / "backups" / "vedfinance_prod"


def test_deploy_backs_up_the_database_first_and_records_it(world: World) -> None:
    assert world.deploy("v2").result == "ok"
    commands = world.host.commands
    # beside the upload; the release gets its name (and release.json the backup's) after it
    assert commands.index("backup vedfinance_prod") < commands.index("rename")
    found = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    assert len(found.backups) == 2, found  # v1's deploy took one too (postgres answered)
    latest = found.backups[-1]
    assert latest.reason == "before deploy of v2" and latest.env == "production"
    dump = _backups_dir(world) / f"{latest.id}.dump"
    assert dump.read_text() == "PGDMP fake dump of vedfinance_prod\n"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert stat.S_IMODE(dump.parent.stat().st_mode) == 0o700
    import hashlib

    assert latest.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert latest.size == dump.stat().st_size
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.meta["backup"] == latest.id
    assert world.audit()[-1]["detail"] == f"backup {latest.id}"


def test_a_failed_backup_stops_the_deploy_before_anything_changes(world: World) -> None:
    world.host.set_engine(dump_fails=True)
    calls = list(world.host.engine()["calls"])
    before = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    with pytest.raises(RunFailed) as caught:
        world.deploy("v2")
    message = str(caught.value)
    assert "backup of vedfinance_prod failed, nothing changed" in message
    assert "--no-backup to deploy without one" in message and "\n" not in message
    assert "rename" not in world.host.commands  # no release: its upload beside is removed
    releases = Path(world.layout.releases)
    assert not [p for p in releases.iterdir() if p.name.startswith(".tmp-")]
    new_calls = world.host.engine()["calls"][len(calls):]
    assert [c for c in new_calls if not c.startswith(("ps ", "exec ", "service inspect"))] \
        == [], new_calls  # looked, changed nothing
    after = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    assert after.backups == before.backups and not after.orphans
    assert not [p for p in _backups_dir(world).iterdir() if p.name.startswith(".partial")]
    assert world.audit()[-1]["result"] == "failed"


def test_no_backup_skips_it_and_the_audit_log_says_so(world: World) -> None:
    from vedfin_ops.deploy.options import DeployOptions
    from vedfin_ops.deploy.pipeline import deploy

    result = deploy(world.host, world.config, "production", "v2",
                    DeployOptions(no_backup=True), say=world.said.append, hooks=world.hooks(),
                    clock=world.clock.clock())
    assert result.result == "ok"
    assert "backup vedfinance_prod" not in world.host.commands
    lines = world.audit()
    assert any(e["action"] == "backup" and e["result"] == "skipped"
               and e["detail"] == "--no-backup" for e in lines)
    assert lines[-1]["detail"] == "backup skipped (--no-backup)"


def test_an_env_whose_database_does_not_exist_yet_deploys_without_one(world: World) -> None:
    world.host.set_engine(no_database=True)
    assert world.deploy("v2").result == "ok"
    assert world.audit()[-1]["detail"] == "backup none (vedfinance_prod does not exist yet)"


def test_retention_keeps_the_newest_backups_and_removes_orphans(world: World) -> None:
    world.config.backups.keep = 2
    folder = _backups_dir(world)
    (folder / "20200101T000000Z.dump").write_text("a dump nobody recorded")
    for tag in ("v2", "v1", "v2"):
        assert world.deploy(tag).result == "ok"
        world.clock.sleep(1)
    found = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    assert len(found.backups) == 2 and not found.orphans
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{b.id}.{ext}" for b in found.backups for ext in ("dump", "json"))


@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parametrize("kind", ["remote", "exception", "ctrl-c", "sigterm"])
def test_a_fault_around_the_dump_ends_on_v1_and_lists_only_whole_backups(
        world: World, kind: str, after: bool) -> None:
    """Before the dump ran: no backup of v2's deploy. After it ran (the link went once the
    host had done it): the backup is whole and listed as what it is, the deploy still ends on
    v1 with nothing else changed."""
    import hashlib

    from tests.fake.host import Fault

    world.host.inject(Fault("backup vedfinance_prod", 1, kind, after=after))
    with pytest.raises(RunFailed) as caught:
        world.deploy("v2")
    outcome = "interrupted" if kind in ("ctrl-c", "sigterm") else "failed"
    assert_back_on_v1(world, caught.value, outcome)
    found = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    ours = [b for b in found.backups if b.reason == "before deploy of v2"]
    assert len(ours) == (1 if after else 0) and not found.orphans
    for backup in ours:
        dump = _backups_dir(world) / f"{backup.id}.dump"
        assert hashlib.sha256(dump.read_bytes()).hexdigest() == backup.sha256
    assert not [p for p in _backups_dir(world).iterdir() if p.name.startswith(".")]


def test_a_backup_drops_only_the_kept_copies_a_backup_holds(world: World) -> None:
    """A restore keeps the replaced database as `<db>_before_<utc>` and dumps it; the next
    good backup drops the copies that a backup holds, never any other database."""
    held, unheld = "vedfinance_prod_before_20261129t120000z", \
        "vedfinance_prod_before_20261129t130000z"
    folder = _backups_dir(world)
    record = {"id": "20261129T120001Z", "database": "vedfinance_prod", "env": "production",
              "size": 1, "sha256": SHA, "created": "t", "by": "me",
              "reason": f"{held}: the database replaced by restore of 20261128T000000Z"}
    (folder / "20261129T120001Z.dump").write_text("x")
    (folder / "20261129T120001Z.json").write_text(json.dumps(record))
    world.host.set_engine(kept_databases=[held, unheld])
    assert world.deploy("v2").result == "ok"
    drops = [q for q in world.host.engine()["sql"] if q.startswith("DROP DATABASE")]
    assert drops == [f'DROP DATABASE IF EXISTS "{held}" WITH (FORCE);\n'], drops


@pytest.mark.parametrize("dump", ["freed by hand", "cut"])
def test_a_kept_database_stays_when_the_backup_holding_it_lost_its_dump(
        world: World, dump: str) -> None:
    """The backup a restore made of the replaced database is the only other copy of it: when
    its dump is gone (or not the size its record says), the record is no backup, and the
    next backup leaves `<db>_before_<utc>` alone."""
    held = "vedfinance_prod_before_20261129t120000z"
    folder = _backups_dir(world)
    record = {"id": "20261129T120001Z", "database": "vedfinance_prod", "env": "production",
              "size": 100, "sha256": SHA, "created": "t", "by": "me",
              "reason": f"{held}: the database replaced by restore of 20261128T000000Z"}
    (folder / "20261129T120001Z.json").write_text(json.dumps(record))
    if dump == "cut":
        (folder / "20261129T120001Z.dump").write_text("x" * 50)
    world.host.set_engine(kept_databases=[held])
    assert world.deploy("v2").result == "ok"
    assert not [q for q in world.host.engine().get("sql", []) if q.startswith("DROP DATABASE")]
    found = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    assert "20261129T120001Z" not in {b.id for b in found.backups}
    assert [b.split()[0] for b in found.broken] == ["vedfinance_prod/20261129T120001Z.json"]
    assert (folder / "20261129T120001Z.json").exists()  # left for the operator to judge


def test_records_without_their_dumps_do_not_count_toward_keep(world: World) -> None:
    world.config.backups.keep = 2
    folder = _backups_dir(world)
    whole = list_backups(world.host, world.config, "production").backups  # type: ignore
    for i in (1, 2):  # newer than any backup, dumps deleted by hand
        record = whole[-1].to_dict() | {"id": f"2099010{i}T000000Z"}
        (folder / f"2099010{i}T000000Z.json").write_text(json.dumps(record))
    assert world.deploy("v2").result == "ok"
    found = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    assert len(found.backups) == 2 and found.backups[0] == whole[-1], found
    assert len(found.broken) == 2


def test_retention_keeps_the_backup_rollback_restore_db_needs(world: World) -> None:
    """keep: 1, and a manual backup after a deploy: the live release's pre-deploy backup
    stays (it is what `rollback --restore-db` restores), and the rollback restores it."""
    from vedfin_ops.backups.backup import run_backup

    world.config.backups.keep = 1
    assert world.deploy("v2").result == "ok"
    before_v2 = listing(world.host, world.layout).meta["backup"]  # type: ignore[arg-type]
    world.clock.sleep(1)
    import time

    time.sleep(1)  # ids are the host's seconds
    manual = run_backup(world.host, world.config, "production",  # type: ignore[arg-type]
                        say=world.said.append)
    assert manual is not None and manual.id != before_v2
    ids = [b.id for b in list_backups(world.host, world.config,  # type: ignore[arg-type]
                                      "production").backups]
    assert ids == [before_v2, manual.id]
    assert _rollback_restoring(world)
    assert f"database: {before_v2} is vedfinance_prod" in world.audit()[-1]["detail"]


def test_the_nightly_retention_keeps_the_live_backup_and_counts_only_whole_ones(
        world: World) -> None:
    from vedfin_ops.schedule import nightly

    world.config.backups.keep = 1
    assert world.deploy("v2").result == "ok"
    before_v2 = listing(world.host, world.layout).meta["backup"]  # type: ignore[arg-type]
    folder = _backups_dir(world)
    whole = list_backups(world.host, world.config, "production").backups  # type: ignore
    record = whole[-1].to_dict() | {"id": "20990101T000000Z"}  # its dump freed by hand
    (folder / "20990101T000000Z.json").write_text(json.dumps(record))
    import time

    time.sleep(1)  # ids are the host's seconds
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    world.host.run(nightly.script_path(world.config, "production"), what="nightly")
    found = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    assert [b.reason for b in found.backups] == ["before deploy of v2", "nightly"], found
    assert found.backups[0].id == before_v2
    assert (folder / "20990101T000000Z.json").exists()


def test_a_backup_s_id_is_the_host_s_time_not_this_machine_s(world: World) -> None:
    """The nightly script names backups by the host's clock: so does every other backup,
    so their ids sort by one clock."""
    date = world.host.bin / "date"
    date.write_text('#!/bin/sh\n[ "$*" = "-u +%Y%m%dT%H%M%SZ" ] && '
                    '{ echo 20300101T000000Z; exit 0; }\nexec /bin/date "$@"\n')
    assert world.deploy("v2").result == "ok"
    latest = list_backups(world.host, world.config,  # type: ignore[arg-type]
                          "production").backups[-1]
    assert (latest.id, latest.created) == ("20300101T000000Z", "2030-01-01T00:00:00+00:00")


# --- pure parts ---

def _record(backup_id: str, database: str = "vedfinance_prod", dump_size: str = "10",
            **changes: Any) -> str:
    data = {"id": backup_id, "database": database, "env": "production", "size": 10,
            "sha256": SHA, "created": "2026-11-29T12:00:00+00:00", "by": "ops@laptop",
            "reason": "manual", **changes}
    return f"RECORD {database}/{backup_id}.json {dump_size} {json.dumps(data)}"


def test_the_listing_keeps_only_records_that_are_backups() -> None:
    text = "\n".join([
        _record("20261129T120000Z.2"), _record("20261129T120000Z"),
        _record("20261129T110000Z", database="vedfinance_dev"),
        _record("20261129T130000Z", sha256="not-a-sum"),
        _record("20261129T140000Z", size="10"),
        "RECORD vedfinance_prod/x.json 10 {not json",
        _record("20261129T150000Z").replace("vedfinance_prod/2026", "elsewhere/2026"),
        "ORPHAN vedfinance_prod/20261129T160000Z.dump",
        _record("20261129T170000Z", dump_size="-"), _record("20261129T180000Z", dump_size="9"),
    ])
    found = parse_listing(text)
    assert [(b.database, b.id) for b in found.backups] == [
        ("vedfinance_dev", "20261129T110000Z"), ("vedfinance_prod", "20261129T120000Z"),
        ("vedfinance_prod", "20261129T120000Z.2")]
    assert len(found.unreadable) == 4
    assert found.orphans == ["vedfinance_prod/20261129T160000Z.dump"]
    assert found.broken == [
        "vedfinance_prod/20261129T170000Z.json (its dump is missing)",
        "vedfinance_prod/20261129T180000Z.json (its dump is 9 bytes, the record says 10)"]


def test_ids_sort_by_time_within_one_second() -> None:
    when = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    assert new_id(when, set()) == "20261129T120000Z"
    assert new_id(when, {"20261129T120000Z", "20261129T120000Z.2"}) == "20261129T120000Z.3"
    ids = ["20261129T120000Z.10", "20261129T120000Z.9", "20261129T120000Z"]
    backups_ = [Backup(i, "d", "e", 1, SHA, "", "", "") for i in ids]
    assert to_remove(backups_, [], 1) == ["d/20261129T120000Z.dump", "d/20261129T120000Z.json",
                                          "d/20261129T120000Z.9.dump",
                                          "d/20261129T120000Z.9.json"]


def test_the_dump_command_quotes_every_value_and_never_lists_a_partial_file(
        tmp_path: Path) -> None:
    """Run for real in sh against a stand-in `docker`: an odd database name stays one word,
    a failed dump leaves no file, a good one is renamed only with its record."""
    import subprocess

    from vedfin_ops.remote import commands

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text('#!/bin/sh\n[ "$FAIL" = 1 ] && { echo partial; exit 3; }\n'
                      'for a in "$@"; do printf "<%s>" "$a"; done\n')
    docker.chmod(0o755)
    folder = tmp_path / "backups" / "d b$(x)"
    prefix = json.dumps({"id": "20261129T120000Z", "database": "d'b"})[:-1] + ", "
    command = commands.backup_dump("c 1", "u'x", "d'b; rm -rf /", str(folder),
                                   "20261129T120000Z", prefix)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    failed = subprocess.run(["sh", "-c", command], env={**env, "FAIL": "1"},
                            capture_output=True, text=True)
    assert failed.returncode == 3 and list(folder.iterdir()) == []
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    dump = folder / "20261129T120000Z.dump"
    assert dump.read_text() == "<exec><c 1><pg_dump><-U><u'x><-Fc><-d><d'b; rm -rf />"
    record = json.loads((folder / "20261129T120000Z.json").read_text())
    assert record["database"] == "d'b" and record["size"] == dump.stat().st_size
    assert done.stdout.split() == [record["sha256"], str(record["size"])]
    listed = subprocess.run(["sh", "-c", commands.backup_records(str(tmp_path / "backups"))],
                            capture_output=True, text=True)
    assert listed.stdout.startswith(f"RECORD d b$(x)/20261129T120000Z.json {record['size']} {{")


def test_sql_quoting_doubles_quotes_and_refuses_nul() -> None:
    assert sql_literal("it's") == "'it''s'"
    assert sql_ident('a"b') == '"a""b"'
    with pytest.raises(ValueError):
        sql_literal("a\0b")


def test_backup_records_are_read_back_from_what_backup_writes() -> None:
    data = Backup("20261129T120000Z", "db", "production", 5, SHA, "t", "me", "manual").to_dict()
    assert Backup.from_record(data) == Backup(**data)
    assert Backup.from_record({**data, "id": "../x"}) is None
    assert Backup.from_record([]) is None
    assert records.root(_config()) == "/opt/vedfin/backups"


def _config() -> Any:
    from tests.conftest import SHIPPED
    from vedfin_ops.config.loader import load_config

    return load_config(SHIPPED)


# --- restore: the pure parts (the sandbox restores for real) ---

def test_restore_compares_every_table_and_row_count_with_the_dump() -> None:
    from vedfin_ops.backups.restore import compare_counts, parse_counts

    dump = parse_counts('2 public.items\n0 public."My T"\n5 public.users\n')
    assert dump == {"public.items": 2, 'public."My T"': 0, "public.users": 5}
    assert compare_counts(dump, dict(dump)) == []
    assert compare_counts(dump, {"public.items": 1, 'public."My T"': 0, "public.extra": 3}) == [
        "public.items has 1 rows, the dump 2", "public.users missing",
        "public.extra (3 rows) is not in the dump"]
    assert compare_counts(dump, {**dump, "public.empty_new": 0}) == []


def test_the_swap_renames_both_in_one_transaction_after_closing_the_database() -> None:
    from vedfin_ops.backups.restore import swap_sql

    sql = swap_sql("vedfinance_prod", "vedfinance_prod_restore_x", 'odd"name')
    lines = sql.splitlines()
    assert lines[0] == 'ALTER DATABASE "vedfinance_prod" WITH ALLOW_CONNECTIONS false;'
    assert "pg_terminate_backend" in lines[1] and "'vedfinance_prod'" in lines[1]
    assert lines[2:] == ["BEGIN;", 'ALTER DATABASE "vedfinance_prod" RENAME TO "odd""name";',
                         'ALTER DATABASE "vedfinance_prod_restore_x" RENAME TO '
                         '"vedfinance_prod";',
                         'ALTER DATABASE "odd""name" WITH ALLOW_CONNECTIONS true;', "COMMIT;"]
    # the env's database gone (what a restore is for): one rename, nothing to close
    assert swap_sql("db", "db_restore_x", "db_before_x", exists=False) == \
        'ALTER DATABASE "db_restore_x" RENAME TO "db";\n'


def test_kept_database_names_fit_postgres_and_are_found_again() -> None:
    import re

    from vedfin_ops.backups.backup import before_copies_sql
    from vedfin_ops.backups.restore import kept_name

    when = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    for database in ("vedfinance_prod", "d" * 63):
        name = kept_name(database, when, "before")
        assert len(name) <= 63 and name.endswith("_before_20261129t120000z")
        found = re.search(r"datname ~ '(.*)'", before_copies_sql(database))
        assert found is not None
        pattern = found.group(1).replace("''", "'")
        assert re.fullmatch(pattern, name)
        for other in (name + "x", name.replace("_before_", "_restore_"),
                      f"{database}_before_migration_copy", f"{database}_eu_before_x"):
            assert not re.fullmatch(pattern, other), other


def test_restoring_production_needs_yes_and_a_valid_target_name() -> None:
    from vedfin_ops.backups.restore import run_restore
    from vedfin_ops.errors import UsageError

    config = _config()
    with pytest.raises(UsageError, match="pass --yes"):
        run_restore(None, config, "production", "20261129T120000Z")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--into"):
        run_restore(None, config, "production", "x", into="Bad Name")  # type: ignore[arg-type]


def test_the_dump_s_rows_are_counted_per_copy_block_whatever_the_data_says() -> None:
    import subprocess

    from vedfin_ops.backups.restore import parse_counts
    from vedfin_ops.remote.commands import _COUNT_ROWS, RESTORE_FAILED

    data = ("SET x;\nCOPY public.snippets (body) FROM stdin;\n"
            "COPY public.accounts (id) FROM stdin;\nline\\nbreak\n\\.\n"
            'COPY public."a (b)" (id, "x(y)") FROM stdin;\n1\n\\.\n'
            "COPY public.empty (id) FROM stdin;\n\\.\n")
    counted = subprocess.run(["awk", _COUNT_ROWS], input=data, capture_output=True,
                             text=True, check=True).stdout
    assert parse_counts(counted) == {"public.snippets": 2, 'public."a (b)"': 1,
                                     "public.empty": 0}
    cut = subprocess.run(["awk", _COUNT_ROWS], input=data + RESTORE_FAILED + "\n",
                         capture_output=True, text=True, check=True).stdout
    from vedfin_ops.errors import CheckFailed

    with pytest.raises(CheckFailed, match="could not read the dump"):
        parse_counts(cut)


# -- rollback --restore-db: the database back with the apps ---------------------------------

def _rollback_restoring(world: World) -> str:
    from vedfin_ops.deploy.rollback import rollback

    return rollback(world.host, world.config, "production", say=world.said.append,
                    clock=world.clock.clock(), verify_fn=world.hooks().verify,
                    restore_db=True)


def _databases(world: World) -> set[str]:
    from tests.fake.docker import database_exists

    state = world.host.engine()
    names = set(state.get("db_present", [])) | set(state.get("db_absent", []))
    return {n for n in names | {"vedfinance_prod"} if database_exists(state, n)}


def test_rollback_restore_db_swaps_in_the_backup_taken_before_the_deploy(world: World
                                                                         ) -> None:
    assert world.deploy("v2").result == "ok"
    before_v2 = listing(world.host, world.layout).meta["backup"]  # type: ignore[arg-type]
    assert _rollback_restoring(world)
    assert set(world.env_images().values()) == {"vedfinance/api:v1", "vedfinance/web:v1"}
    swaps = [sql for sql in world.host.engine()["sql"] if "RENAME TO" in sql]
    assert len(swaps) == 1 and '"vedfinance_prod" RENAME TO "vedfinance_prod_before_' \
        in swaps[0]
    kept = {n for n in _databases(world) if n != "vedfinance_prod"}
    assert len(kept) == 1 and next(iter(kept)).startswith("vedfinance_prod_before_")
    last = world.audit()[-1]
    assert (last["action"], last["result"]) == ("rollback", "ok")
    assert f"database: {before_v2} is vedfinance_prod" in last["detail"]
    found = list_backups(world.host, world.config, "production")  # type: ignore[arg-type]
    assert found.backups[-1].reason.startswith(next(iter(kept)))  # the replaced one, dumped


def test_rollback_restore_db_refuses_a_release_deployed_without_a_backup(world: World
                                                                         ) -> None:
    from vedfin_ops.deploy.options import DeployOptions
    from vedfin_ops.deploy.pipeline import deploy

    deploy(world.host, world.config, "production", "v2", DeployOptions(no_backup=True),
           say=world.said.append, hooks=world.hooks(), clock=world.clock.clock())
    engine_calls = len(world.host.engine()["calls"])
    with pytest.raises(RunFailed) as caught:
        _rollback_restoring(world)
    assert "no backup from before" in str(caught.value)
    assert "its deploy took none (skipped (--no-backup))" in str(caught.value)
    assert not [c for c in world.host.engine()["calls"][engine_calls:]
                if c.startswith(("stack ", "service update"))]
    assert set(world.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}


@pytest.mark.parametrize("kind", orchestration.KINDS)
@pytest.mark.parametrize("step", ["checksum", "create database", "pg_restore",
                                  "list restored tables", "swap databases",
                                  "stack deploy"])
def test_a_fault_in_rollback_restore_db_ends_on_v2_with_its_own_database(
        world: World, kind: str, step: str) -> None:
    """Wherever it stops, the current release serves on the database it had: a new database
    is dropped, a swap that went through is undone."""
    from tests.fake.host import Fault

    assert world.deploy("v2").result == "ok"
    world.host.inject(Fault(step, 1, kind, after=step == "swap databases"))
    with pytest.raises(RunFailed) as caught:
        _rollback_restoring(world)
    world.settle()
    assert set(world.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}
    found = _databases(world)
    swapped_back = [sql for sql in world.host.engine().get("sql", [])
                    if '"vedfinance_prod" RENAME TO "vedfinance_prod_restore_' in sql]
    # the original is the env's database again; a restored copy that served stays, by name
    assert {n for n in found if "_restore_" not in n} == {"vedfinance_prod"}, found
    assert len(found) == 1 + len(swapped_back), (found, swapped_back)
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.meta["tag"] == "v2" and state.state(state.current) == "good"
    assert "\n" not in str(caught.value)
    assert world.audit()[-1]["action"] == "rollback"
    assert not Path(world.layout.lock).exists()


# -- db.restore on the scripted host: the real checksum, the shared lock, a restarted postgres --

def _restore(world: World, backup_id: str) -> str:
    from vedfin_ops.backups.restore import RestoreRun, find_backup

    backup = find_backup(world.host, world.config, "production", backup_id)  # type: ignore
    result: str = RestoreRun(world.host, world.config, "production", backup,  # type: ignore
                             say=world.said.append, clock=world.clock.clock()).execute()
    return result


def _deployed_backup(world: World) -> str:
    assert world.deploy("v2").result == "ok"
    taken: str = listing(world.host, world.layout).meta["backup"]  # type: ignore[arg-type]
    return taken


def test_a_restore_swaps_in_the_backup_and_keeps_the_old_database(world: World) -> None:
    taken = _deployed_backup(world)
    assert _restore(world, taken) == "vedfinance_prod"
    kept = {n for n in _databases(world) if n != "vedfinance_prod"}
    assert len(kept) == 1 and next(iter(kept)).startswith("vedfinance_prod_before_")
    assert world.host.engine().get("closed", []) == []
    assert not Path(world.layout.lock).exists()
    assert not Path(world.layout.base, ".shared.lock").exists()


def test_a_dump_corrupted_on_the_host_s_disk_is_refused_before_anything_changes(
        world: World) -> None:
    """The checksum runs on the host (sha256sum, for real): one byte changed, the size the
    same, and the restore stops before it creates anything."""
    taken = _deployed_backup(world)
    dump = _backups_dir(world) / f"{taken}.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    sql_before = list(world.host.engine().get("sql", []))
    with pytest.raises(RunFailed) as caught:
        _restore(world, taken)
    assert f"backup {taken} is corrupted" in str(caught.value)
    assert "vedfinance_prod is untouched" in str(caught.value)
    assert world.host.engine().get("sql", []) == sql_before  # nothing created, nothing closed
    assert _databases(world) == {"vedfinance_prod"}
    assert world.audit()[-1]["result"] == "failed"


def test_a_restore_waits_for_the_shared_lock_and_changes_nothing_if_it_stays_held(
        world: World) -> None:
    """Another env's deploy holds the shared stack (postgres may restart under it): the
    restore waits for it, then stops before it touches a database."""
    from vedfin_ops.run.lock import shared_lock

    taken = _deployed_backup(world)
    other = shared_lock(world.host, world.layout.shared_lock, action="deploy staging")
    other.acquire()
    sql_before = list(world.host.engine().get("sql", []))
    with pytest.raises(RunFailed) as caught:
        _restore(world, taken)
    assert "the shared stack is locked by another run" in str(caught.value)
    assert "deploy staging" in str(caught.value)
    assert world.host.engine().get("sql", []) == sql_before
    assert world.clock.t >= 120  # it waited
    assert not Path(world.layout.lock).exists()
    assert Path(world.layout.shared_lock).exists()  # still the other run's
    other.release()
    assert _restore(world, taken) == "vedfinance_prod"  # once it is free


def test_a_restore_holds_the_shared_lock_while_it_changes_databases(world: World) -> None:
    taken = _deployed_backup(world)
    from tests.fake.host import Fault

    seen: list[bool] = []
    world.host.inject(Fault("swap databases", 1, "remote", after=True))
    original = world.host._fault

    def spy(what: str) -> Any:
        if what in ("create database", "swap databases"):
            seen.append(Path(world.layout.shared_lock).is_dir())
        return original(what)

    world.host._fault = spy  # type: ignore[method-assign]
    with pytest.raises(RunFailed):
        _restore(world, taken)
    assert seen == [True, True]
    assert not Path(world.layout.shared_lock).exists()  # released on the way out


def test_a_restore_cut_by_a_postgres_restart_reopens_the_database_on_the_new_container(
        world: World) -> None:
    """postgres restarts in the middle of the swap, after the env's database stopped taking
    connections: the put-back finds the new container (waiting until it is healthy) and
    opens the database again, the new one dropped."""
    taken = _deployed_backup(world)
    world.host.set_engine(postgres_restarts_at="RENAME TO")
    with pytest.raises(RunFailed) as caught:
        _restore(world, taken)
    state = world.host.engine()
    assert state["postgres_container"] == "pg1"
    assert state.get("closed", []) == [], state.get("closed")
    assert _databases(world) == {"vedfinance_prod"}
    message = str(caught.value)
    assert "vedfinance_prod takes connections again" in message, message
    assert "dropped" in message and "could not put" not in message


def test_rollback_restore_db_takes_the_shared_lock_too(world: World) -> None:
    from vedfin_ops.run.lock import shared_lock

    assert world.deploy("v2").result == "ok"
    other = shared_lock(world.host, world.layout.shared_lock, action="deploy staging")
    other.acquire()
    with pytest.raises(RunFailed) as caught:
        _rollback_restoring(world)
    assert "the shared stack is locked by another run" in str(caught.value)
    assert set(world.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}
    assert _databases(world) == {"vedfinance_prod"}
    other.release()
    assert _rollback_restoring(world)
    assert not Path(world.layout.shared_lock).exists()
