"""Backups and restore on the sandbox's real PostgreSQL (16 + pgvector), as a user runs them
(`fab db.backup`, `db.backups`, `db.restore`, a deploy): data back row by row, a corrupted or
truncated dump refused with the database untouched, a full disk stopping a deploy before any
change, a backup under load."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vedfin_ops import load_config
from vedfin_ops.steps.deploy import deploy
from vedfin_ops.steps.env_run import listing
from vedfin_ops.steps.releases import Layout

from .conftest import docker, fab, sandbox_host
from .test_deploy import Load

pytestmark = pytest.mark.integration

DB = "vedfinance_prod"
FOLDER = Path("/srv/vedfin-sandbox/backups") / DB


def _pg() -> str:
    found = docker("ps", "-q", "--filter",
                   "label=com.docker.swarm.service.name=vedfin-shared_postgres").stdout.split()
    assert found, "no postgres container"
    return found[0]


def sql(query: str, database: str = DB, check: bool = True) -> str:
    result = docker("exec", "-i", _pg(), "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1",
                    "-U", "postgres", "-d", database, stdin=query.encode(), check=check)
    return result.stdout


def _rows() -> list[str]:
    return sql("SELECT id || '|' || replace(name, E'\\n', '<nl>') || '|' || emb::text "
               "FROM backup_items ORDER BY id;\n").splitlines()


def _databases() -> set[str]:
    return set(sql("SELECT datname FROM pg_database;\n", "postgres").split())


@pytest.fixture(scope="module")
def live(sandbox_up: dict[str, Any]) -> Iterator[Any]:
    """Production live on the default config with a table of rows (pgvector among them)."""
    config = load_config(sandbox_up["config"])
    host = sandbox_host(sandbox_up)
    try:
        deploy(host, config, "production", "v1", say=lambda _m: None)
    finally:
        host.close()
    sql("DROP TABLE IF EXISTS backup_items; DROP TABLE IF EXISTS backup_extra;\n"
        "CREATE TABLE backup_items (id int PRIMARY KEY, name text, emb vector(3));\n"
        "INSERT INTO backup_items SELECT i, 'item ' || i || E' with\\na line break', "
        "('[' || i || ',1,2]')::vector FROM generate_series(1, 500) i;\n"
        "CREATE TABLE backup_extra (k text);\n")
    yield config
    sql("DROP TABLE IF EXISTS backup_items; DROP TABLE IF EXISTS backup_extra;\n", check=False)


def _backup(sandbox_up: dict[str, Any]) -> dict[str, Any]:
    done = fab(sandbox_up, "db.backup", "--env", "production")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = fab(sandbox_up, "db.backups", "--env", "production", "--json")
    assert listed.returncode == 0, listed.stderr
    latest: dict[str, Any] = json.loads(listed.stdout)["backups"][-1]
    return latest


def test_backup_change_and_drop_data_then_restore_brings_it_back_row_by_row(
        sandbox_up: dict[str, Any], live: Any) -> None:
    before = _rows()
    assert len(before) == 500
    backup = _backup(sandbox_up)
    dump = FOLDER / f"{backup['id']}.dump"
    assert dump.stat().st_mode & 0o777 == 0o600 and dump.stat().st_size == backup["size"]
    assert backup["reason"] == "manual" and backup["database"] == DB
    sql("UPDATE backup_items SET name = 'changed' WHERE id <= 100;\n"
        "DELETE FROM backup_items WHERE id > 400; DROP TABLE backup_extra;\n")
    assert _rows() != before
    refused = fab(sandbox_up, "db.restore", "--env", "production", "--from", backup["id"])
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    restored = fab(sandbox_up, "db.restore", "--env", "production", "--from", backup["id"],
                   "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "2 tables, 500 rows as in the dump" in restored.stdout + restored.stderr
    assert _rows() == before
    assert sql("SELECT to_regclass('backup_extra') IS NOT NULL;\n").strip() == "t"
    kept = [d for d in _databases() if d.startswith(f"{DB}_before_")]
    assert len(kept) == 1, kept  # the replaced database, until the next good backup
    _backup(sandbox_up)
    assert not [d for d in _databases() if d.startswith(f"{DB}_before_")]
    audit = sandbox_host(sandbox_up)
    try:
        tail = audit.run("tail -n 6 /srv/vedfin-sandbox/audit.log", what="audit")
    finally:
        audit.close()
    assert '"action": "db-restore"' in tail and '"result": "ok"' in tail


def test_a_corrupted_dump_is_refused_by_its_checksum_and_nothing_changes(
        sandbox_up: dict[str, Any], live: Any) -> None:
    backup = _backup(sandbox_up)
    dump = FOLDER / f"{backup['id']}.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    before, databases = _rows(), _databases()
    refused = fab(sandbox_up, "db.restore", "--env", "production", "--from", backup["id"],
                  "--yes")
    assert refused.returncode == 1
    assert f"backup {backup['id']} is corrupted" in refused.stderr
    assert f"{DB} is untouched" in refused.stderr
    assert _rows() == before and _databases() == databases


def test_a_restore_that_fails_half_way_leaves_the_original_serving(
        sandbox_up: dict[str, Any], live: Any) -> None:
    """A dump cut in half whose record was made to match (the checksum cannot catch it):
    pg_restore stops at the cut, the new database is dropped, the original is as it was."""
    import hashlib

    backup = _backup(sandbox_up)
    dump, record = FOLDER / f"{backup['id']}.dump", FOLDER / f"{backup['id']}.json"
    cut = dump.read_bytes()[: backup["size"] // 2]
    dump.write_bytes(cut)
    record.write_text(json.dumps({**backup, "sha256": hashlib.sha256(cut).hexdigest(),
                                  "size": len(cut)}))
    before, databases = _rows(), _databases()
    failed = fab(sandbox_up, "db.restore", "--env", "production", "--from", backup["id"],
                 "--yes")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "db-restore production failed" in failed.stderr
    assert "dropped" in failed.stderr and f"{DB} untouched" in failed.stderr
    assert _rows() == before and _databases() == databases
    assert sql("SELECT datallowconn FROM pg_database WHERE datname = 'vedfinance_prod';\n",
               "postgres").strip() == "t"


def test_a_full_disk_during_the_deploy_s_backup_stops_it_before_any_change(
        sandbox_up: dict[str, Any], live: Any) -> None:
    sql("INSERT INTO backup_extra SELECT md5(random()::text) || md5(random()::text) "
        "FROM generate_series(1, 20000);\n")
    host = sandbox_host(sandbox_up)
    layout = Layout.of(live, "production")
    FOLDER.mkdir(parents=True, exist_ok=True)
    uid = FOLDER.stat().st_uid
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=64k,mode=700,uid={uid}", "tmpfs",
                    str(FOLDER)], check=True)
    try:
        current = listing(host, layout).current
        with pytest.raises(Exception) as caught:
            deploy(host, live, "production", "v2", say=lambda _m: None)
        message = str(caught.value)
        assert "backup of vedfinance_prod failed, nothing changed" in message, message
        assert "No space left on device" in message or "--no-backup" in message
        assert listing(host, layout).current == current
        assert list(FOLDER.iterdir()) == []  # the partial dump is gone
    finally:
        subprocess.run(["umount", str(FOLDER)], check=False)
        sql("TRUNCATE backup_extra;\n", check=False)
        host.close()


def test_a_backup_while_the_api_is_under_load_fails_no_request(
        sandbox_up: dict[str, Any], live: Any) -> None:
    with Load(live.edge.http_port, rate=40, max_requests=2000) as load:
        for _ in range(3):
            _backup(sandbox_up)
    assert load.sent > 20 and not load.failed, load.failed[:5]


def test_postgres_runs_the_configured_settings_and_db_init_says_when_not(
        sandbox_up: dict[str, Any], live: Any) -> None:
    from vedfin_ops.errors import CheckFailed
    from vedfin_ops.steps.db_init import db_init

    for name, value in live.postgres.settings.items():
        assert sql(f"SHOW {name};\n").strip() == str(value), name
    other = load_config(sandbox_up["config"])  # the module's config stays as it is
    other.postgres.settings = {**other.postgres.settings, "work_mem": "2MB"}
    host = sandbox_host(sandbox_up)
    try:
        with pytest.raises(CheckFailed, match="work_mem is 1MB, the config says 2MB"):
            db_init(host, other)
    finally:
        host.close()


def _current_tag(sandbox_up: dict[str, Any], config: Any) -> str | None:
    host = sandbox_host(sandbox_up)
    try:
        meta = listing(host, Layout.of(config, "production")).meta
    finally:
        host.close()
    tag = meta.get("tag")
    return str(tag) if tag else None


def test_a_migration_that_breaks_the_schema_is_undone_by_rollback_restore_db(
        sandbox_up: dict[str, Any], live: Any) -> None:
    """The runbook's `prisma migrate deploy` with no way back, made one: schemabreak's
    migration drops a column for real (psql in the stand-in api); `rollback --restore-db`
    returns the apps to the release before and the data to the backup the deploy took."""
    from .test_deploy import _version

    before_tag, before_rows = _current_tag(sandbox_up, live), _rows()
    before_version = _version(live)
    deployed = fab(sandbox_up, "deploy.production", "--tag", "schemabreak")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert _version(live) == "api schemabreak"
    columns = sql("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
                  "WHERE attrelid = 'backup_items'::regclass AND attnum > 0 "
                  "AND NOT attisdropped;\n").strip()
    assert columns == "id,emb"  # the migration ran against the real database
    sql("INSERT INTO backup_items (id, emb) VALUES (9999, '[9,9,9]');\n")  # written after

    with Load(live.edge.http_port, rate=20, max_requests=3000) as load:
        back = fab(sandbox_up, "rollback", "--env", "production", "--restore-db")
    assert back.returncode == 0, back.stdout + back.stderr
    assert _current_tag(sandbox_up, live) == before_tag and _version(live) == before_version
    assert _rows() == before_rows  # the column and its data are back, row by row
    assert load.sent > 20 and not load.failed, load.failed[:5]
    kept = [d for d in _databases() if d.startswith(f"{DB}_before_")]
    assert len(kept) == 1, kept  # what the broken release wrote is kept, and dumped
    assert sql("SELECT count(*) FROM backup_items WHERE id = 9999;\n", kept[0]).strip() == "1"
    assert "the replaced database dumped as backup" in back.stdout + back.stderr
