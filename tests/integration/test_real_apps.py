"""The runbook on the real workload: examples/v-edfinance's NestJS + Prisma api and Next.js
web at the shipped sizes (1536m/1.5 and 1024m/1.0, 2 replicas each): the sandbox's production
switched to them (sandbox/real.py), as the HTTPS and Traefik modules switch its edge. The
stand-in tests keep covering the failure tags; these prove what only real apps show: Node's
start under a health check, Prisma's own migrations and errors, real memory, a Nest task
stopping with requests in flight.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.http_load import Load
from vedfin_ops import load_config
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.deploy.rollback import rollback
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote.host import Host, connect
from vedfin_ops.run.layout import Layout

from .conftest import SANDBOX_DIR, docker, fab, real_apps_built, switched_to

pytestmark = pytest.mark.integration

ENV = "production"
API = "api.v-edfinance.localhost"
WEB = "v-edfinance.localhost"
SAID: list[str] = []


@pytest.fixture(scope="module")
def real(sandbox_up: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The real apps built and pushed (cached by their lock files), and their config; the
    next module that needs the stand-ins deploys them back (`default_config_is_live`)."""
    from sandbox import lifecycle

    real_apps_built()
    path = lifecycle.up_real(SANDBOX_DIR, progress=lambda _m: None)
    _forget_the_apps_schema()
    try:
        with switched_to(sandbox_up, path.name):
            yield {**sandbox_up, "config": str(path)}
    finally:  # the stand-ins' tests count the tables of production's database
        _forget_the_apps_schema()


def _forget_the_apps_schema() -> None:
    """Production's database as before the api's first deploy (a sandbox kept from an earlier
    run has v2's migration applied): v1's deploy must apply v1's migration, v2's v2's."""
    found = docker("ps", "-q", "--filter",
                   "label=com.docker.swarm.service.name=vedfin-shared_postgres").stdout.split()
    if found:
        docker("exec", found[0], "psql", "-U", "postgres", "-d", "vedfinance_prod", "-X", "-c",
               "DROP TABLE IF EXISTS _prisma_migrations, users, lessons", check=False)


@pytest.fixture(scope="module")
def config(real: dict[str, Any]) -> Any:
    return load_config(real["config"])


@pytest.fixture
def host(real: dict[str, Any]) -> Iterator[Host]:
    h = Host(connect("sandbox", real["ssh_config"]))
    try:
        yield h
    finally:
        h.close()


def _deploy(real: dict[str, Any], config: Any, tag: str) -> Any:
    h = Host(connect("sandbox", real["ssh_config"]))
    try:
        return deploy(h, config, ENV, tag, say=SAID.append, show=SAID.extend)
    finally:
        h.close()


def _get(config: Any, name: str, path: str, timeout: float = 10) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{config.edge.http_port}{path}",
                        headers={"Host": name}, timeout=timeout)


def _version(config: Any) -> str:
    return str(_get(config, API, "/api/version").json()["version"])


def _psql(sql: str) -> str:
    """A query in production's database, in the postgres container of the real stack."""
    container = docker("ps", "-q", "--filter",
                       "label=com.docker.swarm.service.name=vedfin-shared_postgres"
                       ).stdout.split()[0]
    return docker("exec", container, "psql", "-U", "postgres", "-d", "vedfinance_prod", "-AtX",
                  "-c", sql).stdout.strip()


def _columns(table: str) -> set[str]:
    return set(_psql("SELECT column_name FROM information_schema.columns "
                     f"WHERE table_name = '{table}'").split())


def _at(real: dict[str, Any], config: Any, tag: str) -> None:
    """Production on `tag`, deployed unless it already is."""
    try:
        if _version(config) == tag:
            return
    except (requests.RequestException, ValueError, KeyError):
        pass
    _deploy(real, config, tag)


# 1 s requests, each one a stopping Nest task must finish, not drop
SLOW = ((API, "/api/debug/slow?ms=1000"),)


def slow_clients(port: int) -> Load:
    """4 clients whose requests are in flight when a task stops."""
    return Load(port, rate=1000, clients=4, version_path="/api/version", targets=SLOW)


def test_v1_then_v2_rolls_out_with_no_failed_request_from_8_clients(
        real: dict[str, Any], config: Any) -> None:
    """A real code change and a real additive migration, under load through the edge: 8
    clients on api and web, and 4 more whose 1 s requests are in flight when each old api
    task gets SIGTERM (Nest's shutdown hooks finish them; the edge sends the next ones to
    the new tasks)."""
    first = _deploy(real, config, "v1")
    assert first.result in ("ok", "noop")
    assert _version(config) == "v1"
    assert "duration_minutes" not in _columns("lessons")
    health = _get(config, API, "/api/health").json()
    assert health == {"status": "ok", "database": "connected", "redis": "connected"}
    with Load(config.edge.http_port, clients=8, rate=25, max_requests=20000,
              version_path="/api/version") as load, \
            slow_clients(config.edge.http_port) as slow:
        time.sleep(2)
        started = time.monotonic()
        result = _deploy(real, config, "v2")
        ended = time.monotonic()
        time.sleep(2)
    assert result.result == "ok", result.detail
    # the load ran from before the deploy started until after it ended
    assert load.first_sent < started and load.last_answered > ended, (load.first_sent,
                                                                      started, ended)
    assert load.sent >= 1000, load.sent
    assert load.failed == [], f"{len(load.failed)} of {load.sent} failed: {load.failed[:5]}"
    assert slow.within(started, ended) >= 20, (slow.sent, len(slow.spans))
    assert slow.failed == [], f"{len(slow.failed)} of {slow.sent} slow failed: {slow.failed}"
    versions = {json.loads(v)["version"] for v in load.versions if v.startswith("{")}
    assert {"v1", "v2"} <= versions, load.versions
    assert "duration_minutes" in _columns("lessons")
    lessons = _get(config, API, "/api/lessons")
    assert lessons.status_code == 200, lessons.text
    # an embedding-sized vector (1536, the runbook's `embedding vector(1536)`) through Prisma
    _psql("INSERT INTO lessons (title, embedding) VALUES "
          "('budgeting', array_fill(0.5::real, ARRAY[1536])::vector), "
          "('far away', array_fill(-1::real, ARRAY[1536])::vector)")
    near = _get(config, API, "/api/lessons/similar?vector=0.5,0.5&limit=2")
    assert near.status_code == 200, near.text
    assert [row["title"] for row in near.json()] == ["budgeting", "far away"], near.text
    assert _get(config, WEB, "/version").text.strip() == "web v2"
    print(f"v1 -> v2 under load in {ended - started:.1f}s: {load.sent} requests from 8 "
          f"clients and "
          f"{slow.sent} slow ones in flight, 0 failed")


def test_verify_checks_every_box_from_the_real_apps(real: dict[str, Any], config: Any) -> None:
    """Right after a deploy (a rollback last fails the zero-downtime box, as it should)."""
    _at(real, config, "v2")
    # the deploy's Uptime Kuma step is best effort (a warning when Kuma does not answer in
    # time, as on a loaded machine): what an operator runs after such a warning, first
    applied = fab(real, "monitoring.apply", extra_env={"VEDFIN_CONFIG": real["config"]})
    assert applied.returncode == 0, (applied.stdout + applied.stderr,
                                     [line for line in SAID if "kuma" in line.lower()])
    result = fab(real, "verify", "--env", ENV, "--json",
                 extra_env={"VEDFIN_CONFIG": real["config"]})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"], ([i for i in report["items"] if not i["ok"]],
                              [line for line in SAID if "kuma" in line.lower()])
    migrations = [i for i in report["items"] if "migration" in i["name"].lower()]
    assert migrations and all(i["ok"] for i in migrations), report["items"]
    assert "Database schema is up to date!" in migrations[0]["detail"]
    for item in report["items"]:
        print(f"verify: {item['name']}: {item['detail']}")


def test_live_capacity_measures_the_real_processes(real: dict[str, Any], config: Any) -> None:
    _at(real, config, "v2")
    result = fab(real, "capacity-report", "--env", ENV, "--json",
                 extra_env={"VEDFIN_CONFIG": real["config"]})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {s["name"]: s for s in report["services"]}
    api, web = rows["api-production"], rows["web-production"]
    # Node + Nest + Prisma: far above the stand-ins' few MB, far below the 1536m limit
    assert 60 < api["used_memory_mb"] < 1536 * 2, api
    assert 30 < web["used_memory_mb"] < 1024 * 2, web
    assert report["status"] in ("ok", "warn", "critical")
    table = fab(real, "capacity-report", "--env", ENV,
                extra_env={"VEDFIN_CONFIG": real["config"]})
    assert "ACTUAL USAGE (measured now)" in table.stdout
    print(table.stdout)


def test_a_real_prisma_migration_error_stops_before_any_replica_changes(
        real: dict[str, Any], config: Any, host: Host) -> None:
    _at(real, config, "v2")
    service = "vedfin-production_api-production"
    before = docker("service", "inspect", "--format", "{{.Version.Index}}", service).stdout
    backups_before = _backup_ids(real)
    with pytest.raises(CheckFailed) as info:
        _deploy(real, config, "badmigration")
    said = str(info.value)
    assert "migrate" in said and "no replica was changed" in said, said
    assert any("Error: P3018" in line for line in SAID)  # Prisma's own words, printed
    assert "already exists" in said, said  # the database's, in the one-line error
    assert "npx prisma migrate resolve --rolled-back 20261208000000_" in said, said
    assert docker("service", "inspect", "--format", "{{.Version.Index}}",
                  service).stdout == before
    assert _version(config) == "v2"
    new = {k: v for k, v in _backup_ids(real).items() if k not in backups_before}
    assert list(new.values()) == ["before deploy of badmigration"], new
    # Prisma keeps the migration as failed (the next deploy would stop with P3009): what the
    # error says to run, run as an operator would on the host
    name = said.split("--rolled-back ", 1)[1].split("`", 1)[0]
    layout = Layout.of(config, ENV)
    live_image = docker("service", "inspect", "--format",
                        "{{.Spec.TaskTemplate.ContainerSpec.Image}}", service).stdout.strip()
    resolved = docker("run", "--rm", "--network", config.remote.network, "--env-file",
                      f"{layout.current}/env/api-production.env", live_image,
                      "npx", "prisma", "migrate", "resolve", "--rolled-back", name,
                      "--schema=/app/apps/api/prisma/schema.prisma", timeout=180)
    assert f"Migration {name} marked as rolled back" in resolved.stdout, resolved.stdout


def _backup_ids(real: dict[str, Any]) -> dict[str, str]:
    """The env's backups on the host (`db.backups`): id -> reason."""
    listed = fab(real, "db.backups", "--env", ENV, "--json",
                 extra_env={"VEDFIN_CONFIG": real["config"]})
    assert listed.returncode == 0, listed.stderr
    return {b["id"]: b["reason"] for b in json.loads(listed.stdout)["backups"]}


def test_rollback_restore_db_brings_back_a_dropped_column(real: dict[str, Any], config: Any,
                                                           host: Host) -> None:
    _at(real, config, "v2")
    kept = f"Kept {uuid.uuid4().hex[:8]}"  # this run's, not one an earlier run left
    _psql(f"INSERT INTO users (email, name) VALUES ('keep@example.com', '{kept}') "
          f"ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name")
    result = _deploy(real, config, "dropcolumn")
    assert result.result == "ok", result.detail
    assert "name" not in _columns("users")
    back = rollback(host, config, ENV, say=SAID.append, show=SAID.extend, restore_db=True)
    assert back
    assert _version(config) == "v2"
    assert "name" in _columns("users")
    assert _psql("SELECT name FROM users WHERE email = 'keep@example.com'") == kept
    assert _get(config, API, "/api/users").status_code == 200
