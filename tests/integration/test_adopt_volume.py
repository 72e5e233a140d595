"""The path off Dokploy: a postgres data volume made by a plain `docker run` of the postgres
image, holding rows, is adopted by the shared stack (`postgres.volume: {name, external:
true}`) and the rows survive; while another container still uses it, the deploy is refused
before anything changes (two postgres on one data directory corrupt it). Before the shared
stack moves onto it, the deploy backs up the databases in it (a postgres of the image on the
volume alone, stopped and removed again), and `db.restore` restores that backup."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from vedfin_ops.backups.records import list_backups
from vedfin_ops.backups.restore import run_restore
from vedfin_ops.config import secret_store
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote.host import Host, connect

from .conftest import SANDBOX_DIR, docker

pytestmark = pytest.mark.integration

VOLUME = "dokploy-test-pgdata"
OLD = "dokploy-test-postgres"
POSTGRES = "vedfin-shared_postgres"
DUMPER = "vedfin-adopt-backup"  # the postgres the deploy starts on the volume to back it up


def _psql(container: str, sql: str, database: str = "postgres") -> str:
    return docker("exec", "-i", container, "psql", "-v", "ON_ERROR_STOP=1", "-U", "postgres",
                  "-d", database, "-At", stdin=sql.encode()).stdout.strip()


def _wait_ready(container: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    # over TCP: the first start's init server (as the official image's) listens on the socket
    # only, and is stopped again before the real one starts
    while docker("exec", container, "pg_isready", "-h", "127.0.0.1", "-U", "postgres",
                 check=False).returncode != 0:
        assert time.monotonic() < deadline, f"{container} never became ready"
        time.sleep(0.5)


def _service_container(timeout: float = 120) -> str:
    """The running container of the shared postgres service, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        ids = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={POSTGRES}",
                     "--filter", "health=healthy").stdout.split()
        if len(ids) == 1:
            return ids[0]
        assert time.monotonic() < deadline, "the shared postgres never became healthy"
        time.sleep(1)


def _mounts() -> list[str]:
    """The volumes the shared postgres mounts (none before the first deploy)."""
    out = docker("service", "inspect", "--format",
                 "{{range .Spec.TaskTemplate.ContainerSpec.Mounts}}{{.Source}} {{end}}",
                 POSTGRES, check=False).stdout
    return out.split()


def _deploy(sandbox_up: dict[str, Any], data: dict[str, Any], tag: str) -> Any:
    config = config_from_dict(data, sandbox_up["config"])
    host = Host(connect("sandbox", sandbox_up["ssh_config"]))
    try:
        return deploy(host, config, "production", tag, say=lambda _m: None)
    finally:
        host.close()


def _adopted_backups(sandbox_up: dict[str, Any], data: dict[str, Any]) -> list[Any]:
    """The backups of production's database the adoption made, on the host."""
    config = config_from_dict(data, sandbox_up["config"])
    host = Host(connect("sandbox", sandbox_up["ssh_config"]))
    try:
        found = list_backups(host, config, "production").backups
    finally:
        host.close()
    return [b for b in found if b.reason == f"before adopting {VOLUME}"]


def _restore(sandbox_up: dict[str, Any], data: dict[str, Any], backup_id: str) -> str:
    config = config_from_dict(data, sandbox_up["config"])
    host = Host(connect("sandbox", sandbox_up["ssh_config"]))
    try:
        return run_restore(host, config, "production", backup_id, yes=True,
                           say=lambda _m: None)
    finally:
        host.close()


def _remove_volume(timeout: float = 60) -> None:
    """The test's volume gone, with the stopped containers still naming it (swarm keeps its
    old postgres tasks in history; a volume in use by any container cannot be removed)."""
    deadline = time.monotonic() + timeout
    while docker("volume", "inspect", VOLUME, check=False).returncode == 0:
        stopped = docker("ps", "-aq", "--filter", f"volume={VOLUME}", "--filter",
                         "status=exited").stdout.split()
        if stopped:
            docker("rm", *stopped, check=False)
        if docker("volume", "rm", VOLUME, check=False).returncode == 0:
            return
        assert time.monotonic() < deadline, f"{VOLUME} could not be removed"
        time.sleep(1)


@pytest.fixture
def old_postgres(sandbox_up: dict[str, Any]) -> Any:
    """Dokploy's postgres, as the runbook's VPS has it: a plain container on a named volume,
    the database holding rows."""
    data = yaml.safe_load(Path(sandbox_up["config"]).read_text())
    password = secret_store.read_file(SANDBOX_DIR / "secrets.env")["POSTGRES_PASSWORD"]
    docker("rm", "-f", OLD, check=False)
    _remove_volume()
    docker("run", "-d", "--name", OLD, "-e", f"POSTGRES_PASSWORD={password}", "-v",
           f"{VOLUME}:/var/lib/postgresql/data", data["postgres"]["image"])
    try:
        _wait_ready(OLD)
        _psql(OLD, "CREATE DATABASE vedfinance_prod;")
        _psql(OLD, "CREATE TABLE learners (id int PRIMARY KEY, name text); INSERT INTO "
                   "learners VALUES (1, 'An'), (2, 'Binh'), (3, 'Chi');", "vedfinance_prod")
        yield data
    finally:
        docker("rm", "-f", OLD, check=False)
        if VOLUME in _mounts():  # put the sandbox back on its own volume
            _deploy(sandbox_up, yaml.safe_load(Path(sandbox_up["config"]).read_text()), "v1")
        _remove_volume()


def test_a_volume_in_use_is_refused_then_adopted_with_its_rows(
        sandbox_up: dict[str, Any], old_postgres: dict[str, Any]) -> None:
    data = old_postgres
    data["postgres"]["volume"] = {"name": VOLUME, "external": True}
    before = _mounts()
    earlier = {b.id for b in _adopted_backups(sandbox_up, data)}  # an earlier run's
    with pytest.raises(CheckFailed, match=rf"postgres.volume: {VOLUME} is in use by {OLD}: "
                                          r"remove it first"):
        _deploy(sandbox_up, data, "v2")
    assert _mounts() == before and VOLUME not in before  # nothing moved

    docker("stop", OLD)
    with pytest.raises(CheckFailed, match=rf"{VOLUME} is in use by {OLD}: remove it first"):
        _deploy(sandbox_up, data, "v2")  # stopped, it would still come back on a restart
    # refused before any backup of it
    assert {b.id for b in _adopted_backups(sandbox_up, data)} == earlier
    docker("rm", OLD)  # the operator removes Dokploy's postgres, as the README says
    result = _deploy(sandbox_up, data, "v2")
    assert result.result == "ok" and POSTGRES in result.services_updated
    assert _mounts() == [VOLUME]
    rows = _psql(_service_container(), "SELECT name FROM learners ORDER BY id;",
                 "vedfinance_prod")
    assert rows.split() == ["An", "Binh", "Chi"]
    # db-init made the envs' other databases and the extensions in the adopted cluster
    names = _psql(_service_container(), "SELECT datname FROM pg_database;").split()
    assert {"vedfinance_dev", "vedfinance_staging", "vedfinance_prod"} <= set(names)

    # the deploy backed the volume's database up before the move, from a postgres on the
    # volume alone, which is gone again; the backup is the one db.restore restores
    adopted = [b for b in _adopted_backups(sandbox_up, data) if b.id not in earlier]
    assert len(adopted) == 1 and adopted[0].size > 0, adopted
    assert docker("ps", "-aq", "--filter", f"name=^{DUMPER}$").stdout.strip() == ""
    _psql(_service_container(), "INSERT INTO learners VALUES (4, 'Dung');", "vedfinance_prod")
    assert _restore(sandbox_up, data, adopted[0].id) == "vedfinance_prod"
    rows = _psql(_service_container(), "SELECT name FROM learners ORDER BY id;",
                 "vedfinance_prod")
    assert rows.split() == ["An", "Binh", "Chi"]  # Dokploy's data as it was adopted
