"""init-db.sql runs twice without error on real PostgreSQL servers and leaves what it promises.

No one package here has both extensions, so the file rendered for `vector` alone runs on the
PostgreSQL + pgvector build that the PyPI package pgserver ships (its binaries copied,
never pgserver's own start-up, which widens the machine's folders), and the file rendered for
`pg_stat_statements` alone on Debian's PostgreSQL 15. The shipped file asks for both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vedfin_ops import render

from .conftest import unavailable
from .pgvector import pgvector_server as pgvector_copy

pytestmark = pytest.mark.integration

DATABASES = ["vedfinance_dev", "vedfinance_staging", "vedfinance_prod"]
DEBIAN_PG = Path("/usr/lib/postgresql/15/bin")


def _sql_for(variant: Any, extensions: list[str]) -> str:
    config = variant(lambda d: d["postgres"].update(extensions=extensions))
    sql: str = render(config)["db/init-db.sql"]
    return sql


def _psql(psql: Path, target: list[str], sql: str, *extra: str) -> str:
    result = subprocess.run([str(psql), "-X", "-v", "ON_ERROR_STOP=1", *target, *extra],
                            input=sql, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def pgvector_server(shared_tmp: Path) -> Iterator[tuple[Path, str]]:
    with pgvector_copy(shared_tmp) as server:
        yield server


@pytest.fixture
def debian_pg15(shared_tmp: Path) -> Iterator[tuple[Path, list[str]]]:
    if not (DEBIAN_PG / "pg_ctl").exists() or shutil.which("runuser") is None:
        unavailable("Debian's postgresql-15 is not installed")
    data, sock = shared_tmp / "data", shared_tmp / "sock"
    sock.mkdir()
    shutil.chown(shared_tmp, "postgres")
    shutil.chown(sock, "postgres")

    def as_postgres(*cmd: str) -> None:
        # No pipes: the server pg_ctl forks would hold them open and hang the wait.
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)

    as_postgres(str(DEBIAN_PG / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    options = f"-c listen_addresses='' -k {sock} -c shared_preload_libraries=pg_stat_statements"
    as_postgres(str(DEBIAN_PG / "pg_ctl"), "-D", str(data), "-l", str(shared_tmp / "log"),
                "-o", options, "-w", "start")
    try:
        yield DEBIAN_PG / "psql", ["-h", str(sock), "-U", "postgres"]
    finally:
        as_postgres(str(DEBIAN_PG / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")


def test_init_db_twice_on_pgvector_creates_databases_and_vector(
        variant: Any, pgvector_server: tuple[Path, str]) -> None:
    psql, uri = pgvector_server
    sql = _sql_for(variant, ["vector"])
    _psql(psql, [uri], sql)
    _psql(psql, [uri], sql)  # idempotent: the second run must not fail
    listed = _psql(psql, [uri], "SELECT datname FROM pg_database ORDER BY 1;", "-At")
    assert set(DATABASES) <= set(listed.split())
    for db in DATABASES:
        db_uri = uri.replace("/postgres?", f"/{db}?")
        assert _psql(psql, [db_uri], "SELECT extname FROM pg_extension;", "-At").split() == [
            "plpgsql", "vector"]
        distance = _psql(psql, [db_uri], "SELECT '[1,2,3]'::vector <-> '[1,2,4]';", "-At")
        assert float(distance) == 1.0


def test_init_db_twice_on_postgres15_creates_pg_stat_statements(
        variant: Any, debian_pg15: tuple[Path, list[str]]) -> None:
    psql, target = debian_pg15
    sql = _sql_for(variant, ["pg_stat_statements"])
    _psql(psql, [*target, "-d", "postgres"], sql)
    _psql(psql, [*target, "-d", "postgres"], sql)
    for db in DATABASES:
        extensions = _psql(psql, [*target, "-d", db], "SELECT extname FROM pg_extension;",
                           "-At").split()
        assert "pg_stat_statements" in extensions
        count = _psql(psql, [*target, "-d", db], "SELECT count(*) >= 0 FROM pg_stat_statements;",
                      "-At")
        assert count.strip() == "t"


def test_shipped_init_db_asks_for_both_extensions(variant: Any) -> None:
    sql = render(variant(lambda d: None))["db/init-db.sql"]
    assert "CREATE EXTENSION IF NOT EXISTS vector;" in sql
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;" in sql
    assert os.linesep in sql


def test_db_init_in_one_session_says_what_it_created_then_nothing(
        variant: Any, pgvector_server: tuple[Path, str]) -> None:
    """The deploy's db-init session (before, init-db.sql, after, settings) on a real server:
    a database that does not exist yet is skipped before (a failed connect would end the
    script), then found after with its extension and a real vector distance."""
    from vedfin_ops.deploy.db_init import parse_inventory, session_sql, settings_differ

    psql, uri = pgvector_server
    sql = _sql_for(variant, ["vector"])
    _psql(psql, [uri], "CREATE DATABASE vedfinance_dev;")  # one of three there, bare
    session = session_sql(DATABASES, sql, True, ["work_mem"])
    first = _psql(psql, [uri], session, "-At")
    assert parse_inventory(first, "WAS").extensions == {"vedfinance_dev": {"plpgsql"}}
    after = parse_inventory(first)
    assert after.extensions == {db: {"plpgsql", "vector"} for db in DATABASES}
    assert after.distances == {db: 1.0 for db in DATABASES}
    settings = "\n".join(line.removeprefix("SET ") for line in first.splitlines()
                         if line.startswith("SET "))
    assert settings_differ({"work_mem": "4MB"}, settings) == []
    again = _psql(psql, [uri], session, "-At")
    assert parse_inventory(again, "WAS").extensions == after.extensions
