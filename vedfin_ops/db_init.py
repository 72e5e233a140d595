"""db-init: create missing databases and extensions through the postgres container, verify.

The image's `/docker-entrypoint-initdb.d` hook only runs on an empty data volume; this step
runs the same idempotent SQL on every deploy, so an existing volume gets what the config asks
for too. SQL goes in on stdin (`docker exec -i ... psql`): no port is ever published.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from . import commands
from .config import Config
from .errors import CheckFailed
from .host import Host, RemoteError
from .render import render, shared_stack_name

_NOT_AVAILABLE = re.compile(
    r'extension "([^"]+)" is not available|could not open extension control file '
    r'"[^"]*/([A-Za-z0-9_]+)\.control"')
VECTOR_CHECK = "SELECT '[1,2,3]'::vector <-> '[1,2,4]';"


@dataclass
class DbInitResult:
    created_databases: list[str] = field(default_factory=list)
    created_extensions: list[str] = field(default_factory=list)  # "db.ext"
    vector_distance: float | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created_databases or self.created_extensions)


def find_postgres(host: Host, config: Config, timeout: float = 120) -> str:
    service = f"{shared_stack_name(config)}_postgres"
    deadline = time.monotonic() + timeout
    while True:
        found = host.run(commands.postgres_container(service), what="find postgres").strip()
        if found:
            return found
        if time.monotonic() > deadline:
            raise CheckFailed(f"error: db-init: no healthy container of {service} after "
                              f"{timeout:g}s (is the shared stack deployed?)")
        time.sleep(1)


def _inventory(host: Host, container: str, config: Config) -> dict[str, set[str]]:
    """database -> installed extensions, for the databases the config names."""
    user = config.postgres.user
    dbs = [e.database for e in config.environments.values()]
    listed = host.run(commands.psql(container, user, extra="-At"), what="list databases",
                      stdin="SELECT datname FROM pg_database;").split()
    out: dict[str, set[str]] = {}
    for db in dbs:
        if db in listed:
            exts = host.run(commands.psql(container, user, db, "-At"), what=f"extensions {db}",
                            stdin="SELECT extname FROM pg_extension;").split()
            out[db] = set(exts)
    return out


def db_init(host: Host, config: Config) -> DbInitResult:
    """Idempotent: a second run changes nothing and says so."""
    container = find_postgres(host, config)
    before = _inventory(host, container, config)
    sql = render(config)["db/init-db.sql"]
    try:
        host.run(commands.psql(container, config.postgres.user), what="init-db.sql", stdin=sql)
    except RemoteError as exc:
        match = _NOT_AVAILABLE.search(exc.output or str(exc))
        if match:
            ext = match.group(1) or match.group(2)
            raise CheckFailed(
                f"error: db-init: extension {ext} is not available in {config.postgres.image}; "
                f"use an image that provides it (pgvector/pgvector:pg17 has vector and "
                f"pg_stat_statements) or remove it from postgres.extensions") from None
        raise
    after = _inventory(host, container, config)
    result = DbInitResult()
    for db, exts in after.items():
        if db not in before:
            result.created_databases.append(db)
        missing = [e for e in config.postgres.extensions if e not in exts]
        if missing:
            raise CheckFailed(f"error: db-init: {db} lacks {', '.join(missing)} after init")
        result.created_extensions += [f"{db}.{e}" for e in sorted(exts - before.get(db, set()))
                                      if e in config.postgres.extensions]
    missing_dbs = [e.database for e in config.environments.values() if e.database not in after]
    if missing_dbs:
        raise CheckFailed(f"error: db-init: databases missing after init: {missing_dbs}")
    if "vector" in config.postgres.extensions:
        for db in after:
            out = host.run(commands.psql(container, config.postgres.user, db, "-At"),
                           what=f"vector query in {db}", stdin=VECTOR_CHECK).strip()
            result.vector_distance = float(out.splitlines()[-1])
            if result.vector_distance != 1.0:
                raise CheckFailed(f"error: db-init: vector distance in {db} is {out}, not 1")
    return result
