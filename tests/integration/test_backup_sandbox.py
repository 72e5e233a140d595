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

from tests.http_load import Load
from vedfin_ops import load_config
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.run.env_run import listing
from vedfin_ops.run.layout import Layout

from .conftest import docker, fab, sandbox_host

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


def _audit_tail(sandbox_up: dict[str, Any], lines: int) -> str:
    host = sandbox_host(sandbox_up)
    try:
        return str(host.run(f"tail -n {lines} /srv/vedfin-sandbox/audit.log", what="audit"))
    finally:
        host.close()


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
    tail = _audit_tail(sandbox_up, 6)
    assert '"action": "db-restore"' in tail and '"result": "ok"' in tail


def test_a_drill_restores_the_newest_backup_beside_the_live_database_and_records_it(
        sandbox_up: dict[str, Any], live: Any) -> None:
    """Into a scratch database of the real pgvector server: tables and rows against the
    dump's, the vector query, the stand-in api's migrate status run from its live image
    against the scratch database; dropped after; status shows the proof."""
    before = _rows()
    backup = _backup(sandbox_up)
    done = fab(sandbox_up, "db.drill", "--env", "production")
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert f"{backup['id']} restores:" in said
    assert "rows as in the dump" in said and "vector distance query ok" in said, said
    assert "migrate status:" in said, said
    assert not [d for d in _databases() if d.startswith(f"{DB}_drill_")]
    assert _rows() == before  # the live database as it was
    shown = fab(sandbox_up, "status", "--env", "production", "--json")
    assert shown.returncode == 0, shown.stderr
    proven = json.loads(shown.stdout)["backups"]["last_proven"]
    assert proven["backup"] == backup["id"] and proven["result"] == "ok"
    assert proven["rtoSeconds"] > 0 and proven["rpoSeconds"] >= 0
    assert '"action": "db-drill"' in _audit_tail(sandbox_up, 1)


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
    from vedfin_ops.deploy.db_init import db_init
    from vedfin_ops.errors import CheckFailed

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


# -- off-host copies: the sandbox's S3 server (moto), as R2 through the same API -------------

def _bucket(live: Any) -> Any:
    from vedfin_ops.backups.offsite import bucket
    from vedfin_ops.config import secret_store

    if live.backups.s3 is None:
        pytest.skip("no backups.s3 in the sandbox config: moto[server] is not installed")
    return bucket(live, secret_store.resolve(live, "production"))


def test_each_backup_is_copied_off_host_and_restores_from_there(
        sandbox_up: dict[str, Any], live: Any) -> None:
    """The host lost its backups; the copy in the bucket brings the data back, row by row."""
    import hashlib

    target = _bucket(live)
    before = _rows()
    backup = _backup(sandbox_up)
    key = target.key(DB, backup["id"], "dump")
    body = target.client.get_object(Bucket=target.settings.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == backup["sha256"]  # byte for byte
    listed = fab(sandbox_up, "db.backups", "--env", "production", "--s3", "--json")
    assert listed.returncode == 0, listed.stderr
    assert backup in json.loads(listed.stdout)["backups"]

    for path in FOLDER.glob(f"{backup['id']}.*"):
        path.unlink()  # the host's copy is gone
    sql("DELETE FROM backup_items WHERE id > 10;\n")
    restored = fab(sandbox_up, "db.restore", "--env", "production", "--from",
                   f"s3:{backup['id']}", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"fetching {backup['id']}" in restored.stderr
    assert _rows() == before
    fetched = FOLDER / f"{backup['id']}.dump"
    assert fetched.stat().st_mode & 0o777 == 0o600
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == backup["sha256"]


def test_a_wrong_s3_secret_fails_db_backup_in_one_line_and_a_deploy_goes_on(
        sandbox_up: dict[str, Any], live: Any) -> None:
    """SignatureDoesNotMatch from the server, one line, the secret in no output; the backup
    on the host is whole; a deploy (which copies once its release is live) warns and records
    it in a `backup-copy` audit line, because the host copy is what a rollback needs."""
    _bucket(live)
    wrong = "wrong-secret-" + "x" * 20
    failed = fab(sandbox_up, "db.backup", "--env", "production",
                 extra_env={"BACKUP_S3_SECRET_ACCESS_KEY": wrong})
    assert failed.returncode == 1, failed.stdout + failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SignatureDoesNotMatch" in errors[0], failed.stderr
    assert "is whole on the host, but its off-host copy failed" in errors[0]
    assert wrong not in failed.stdout + failed.stderr
    host_copy = max(FOLDER.glob("*.json"))
    record = json.loads(host_copy.read_text())
    assert (FOLDER / f"{record['id']}.dump").stat().st_size == record["size"]

    deployed = fab(sandbox_up, "deploy.production", "--tag", "v2",
                   extra_env={"BACKUP_S3_SECRET_ACCESS_KEY": wrong})
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "backups not copied off-host" in deployed.stderr and wrong not in deployed.stderr
    assert "SignatureDoesNotMatch" in deployed.stderr
    deploy_line, copy_line = _audit_tail(sandbox_up, 2).splitlines()
    assert '"action": "deploy"' in deploy_line and '"result": "ok"' in deploy_line
    assert '"action": "backup-copy"' in copy_line and '"result": "failed"' in copy_line
    assert wrong not in copy_line


def test_a_corrupted_copy_in_the_bucket_is_refused_and_nothing_changes(
        sandbox_up: dict[str, Any], live: Any) -> None:
    target = _bucket(live)
    backup = _backup(sandbox_up)
    key = target.key(DB, backup["id"], "dump")
    body = bytearray(target.client.get_object(Bucket=target.settings.bucket,
                                              Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    target.client.put_object(Bucket=target.settings.bucket, Key=key, Body=bytes(body))
    for path in FOLDER.glob(f"{backup['id']}.*"):
        path.unlink()
    before, databases = _rows(), _databases()
    refused = fab(sandbox_up, "db.restore", "--env", "production", "--from",
                  f"s3:{backup['id']}", "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"the copy of {backup['id']} in s3://" in refused.stderr
    assert "is corrupted" in refused.stderr
    assert _rows() == before and _databases() == databases
    assert not list(FOLDER.glob(f"*{backup['id']}*"))  # the partial download is gone
    unknown = fab(sandbox_up, "db.restore", "--env", "production", "--from",
                  "s3:20200101T000000Z", "--yes")
    assert unknown.returncode == 2 and "no copy 20200101T000000Z" in unknown.stderr


def test_a_backup_that_would_not_fit_is_refused_before_pg_dump_starts(
        sandbox_up: dict[str, Any], live: Any) -> None:
    """Room for 1.5 times the last dump, asked before pg_dump runs: a disk filled by a backup
    would take postgres down with it."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    uid = FOLDER.stat().st_uid
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=256k,mode=700,uid={uid}", "tmpfs",
                    str(FOLDER)], check=True)
    try:
        old = FOLDER / "20200101T000000Z.dump"
        old.write_bytes(b"PGDMP" + bytes(120 * 1024))
        refused = fab(sandbox_up, "db.backup", "--env", "production")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "not enough room for a backup" in refused.stderr, refused.stderr
        assert "1.5 times the last dump is 180 KiB" in refused.stderr
        assert sorted(p.name for p in FOLDER.iterdir()) == [old.name]  # pg_dump never ran
    finally:
        subprocess.run(["umount", str(FOLDER)], check=False)


# -- nightly backups: cron on the host ----------------------------------------------------

USER = "vedfin-deployer"


def _as_deployer(command: str) -> subprocess.CompletedProcess[str]:
    """As cron runs a job: the deploy user, a bare environment."""
    return subprocess.run(["su", "-s", "/bin/sh", USER, "-c",
                           f"env -i PATH=/usr/bin:/bin HOME=/ SHELL=/bin/sh {command}"],
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_nightly_backup_runs_as_cron_runs_it_and_status_shows_its_age(
        sandbox_up: dict[str, Any], live: Any, tmp_path: Path) -> None:
    _as_deployer("printf '%s\\n' '5 4 * * * /bin/true # the user s own line' | crontab -")
    done = fab(sandbox_up, "db.schedule")
    assert done.returncode == 0, done.stdout + done.stderr
    crontab = _as_deployer("crontab -l").stdout
    assert "/bin/true # the user s own line" in crontab  # other lines are kept
    entry = next(line for line in crontab.splitlines()
                 if line.endswith("nightly-backup-production"))
    minute, hour, *_rest = entry.split()
    job = entry.split(None, 5)[5]

    ran = _as_deployer(job)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    log = (FOLDER.parent / "nightly.log").read_text().splitlines()[-1]
    assert " production ok " in log, log
    listed = json.loads(fab(sandbox_up, "db.backups", "--env", "production", "--json").stdout)
    nightly = listed["backups"][-1]
    assert nightly["reason"] == "nightly" and nightly["id"] in log
    import hashlib

    dump = FOLDER / f"{nightly['id']}.dump"
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == nightly["sha256"]
    assert dump.stat().st_mode & 0o777 == 0o600

    status = json.loads(fab(sandbox_up, "status", "--env", "production", "--json").stdout)
    assert status["backups"]["last"] == nightly["id"]
    assert status["backups"]["nightly_scheduled"] == f"{int(hour):02d}:{int(minute):02d}"
    assert 0 <= status["backups"]["age_seconds"] < 300
    table = fab(sandbox_up, "status", "--env", "production").stdout
    assert f"backups: last {nightly['id']}" in table and "(cron)" in table

    # a deploy or restore holding the lock: the night is skipped, said in the log
    lock = Path(live.remote.base_dir) / "production" / ".lock"
    lock.mkdir(parents=True)
    try:
        assert _as_deployer(job).returncode == 0
    finally:
        lock.rmdir()
    assert "skipped: another run holds the lock" in \
        (FOLDER.parent / "nightly.log").read_text().splitlines()[-1]

    if live.backups.s3 is not None:  # cron has no S3 client: the next backup copies it
        assert fab(sandbox_up, "db.backup", "--env", "production").returncode == 0
        copies = json.loads(fab(sandbox_up, "db.backups", "--env", "production", "--s3",
                                "--json").stdout)["backups"]
        assert nightly["id"] in [c["id"] for c in copies]

    off = tmp_path / "no-nightly.yaml"
    off.write_text(Path(sandbox_up["config"]).read_text().replace(
        "  beforeDeploy: true\n", "  beforeDeploy: true\n  nightly: null\n"))
    removed = fab(sandbox_up, "db.schedule", extra_env={"VEDFIN_CONFIG": str(off)})
    assert removed.returncode == 0, removed.stdout + removed.stderr
    crontab = _as_deployer("crontab -l").stdout
    assert "nightly-backup" not in crontab and "/bin/true # the user s own line" in crontab
    status = json.loads(fab(sandbox_up, "status", "--env", "production", "--json").stdout)
    assert status["backups"]["nightly_scheduled"] is None
    _as_deployer("crontab -r")
