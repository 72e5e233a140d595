"""db-init: create missing databases and extensions through the postgres container, verify.

The image's `/docker-entrypoint-initdb.d` hook only runs on an empty data volume; this step
runs the same idempotent SQL on every deploy, so an existing volume gets what the config asks
for too. SQL goes in on stdin (`docker exec -i ... psql`): no port is ever published.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vedfin_ops.config.model import Config
from vedfin_ops.config.names import shared_stack_name
from vedfin_ops.config.pg_settings import normalised
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteError, RemoteHost
from vedfin_ops.remote.quoting import sql_literal
from vedfin_ops.rendering.files import render
from vedfin_ops.run.lock import shared_lock
from vedfin_ops.run.operation import Operation, audit
from vedfin_ops.run.polling import REAL, Clock, TimedOut, until

_NOT_AVAILABLE = re.compile(
    r'extension "([^"]+)" is not available|could not open extension control file '
    r'"[^"]*/([A-Za-z0-9_]+)\.control"')


@dataclass
class DbInitResult:
    created_databases: list[str] = field(default_factory=list)
    created_extensions: list[str] = field(default_factory=list)  # "db.ext"
    vector_distance: float | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created_databases or self.created_extensions)


def find_postgres(host: RemoteHost, config: Config, timeout: float = 120,
                  clock: Clock = REAL) -> str:
    service = f"{shared_stack_name(config)}_postgres"

    def probe() -> str | None:
        found = host.run(commands.postgres_container(service), what="find postgres").strip()
        return found or None

    try:
        return until(probe, timeout=timeout, interval=1.0, clock=clock,
                     transient=(RemoteError,))
    except TimedOut:
        raise CheckFailed(f"db-init: no healthy container of {service} after {timeout:g}s "
                          f"(is the shared stack deployed?)") from None


@dataclass
class Inventory:
    extensions: dict[str, set[str]]  # database -> installed extensions
    distances: dict[str, float]  # database -> vector check result


def parse_inventory(text: str, kind: str = "DB") -> Inventory:
    """`kind` lines (`DB name ext,ext`), and `VEC name distance` lines."""
    inv = Inventory({}, {})
    for line in text.splitlines():
        found, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        if found == kind:
            inv.extensions[name] = {e for e in value.strip().split(",") if e}
        elif found == "VEC" and value.strip():
            inv.distances[name] = float(value.strip())
    return inv


def inventory_sql(databases: list[str], vector: bool, kind: str = "DB") -> str:
    """`\\connect` to each database in turn; a failed connect keeps the previous session, so
    every line names `current_database()` rather than trusting the order."""
    lines = []
    for db in databases:
        lines.append(f"\\connect {db}")
        lines.append(f"SELECT '{kind} ' || current_database() || ' ' || "
                     "coalesce(string_agg(extname, ','), '') FROM pg_extension;")
        if vector:
            lines.append("SELECT 'VEC ' || current_database() || ' ' || "
                         "('[1,2,3]'::vector <-> '[1,2,4]');")
    return "\n".join(lines) + "\n"


def session_sql(databases: list[str], init_sql: str, vector: bool, settings: list[str]) -> str:
    """db-init in one psql session (one `docker exec`, where it was four, about 0.1 s each):
    what each existing database had (`WAS`: a database that does not exist yet is skipped
    with `\\if`, since a failed connect ends a script's session), `init-db.sql`, then what
    each has (`DB`, `VEC`) and the settings the server runs (`SET`). ON_ERROR_STOP holds
    throughout: after init-db.sql every database exists."""
    before = []
    for db in databases:
        before += [f"SELECT EXISTS (SELECT FROM pg_database WHERE datname = {sql_literal(db)})"
                   f" AS vedfin_has \\gset",
                   "\\if :vedfin_has",
                   inventory_sql([db], False, kind="WAS").rstrip("\n"),
                   "\\connect postgres",
                   "\\endif"]
    after = [inventory_sql(databases, vector).rstrip("\n"), "\\connect postgres"]
    named = [f"SELECT 'SET ' || {line.removeprefix('SELECT ')}"
             for line in settings_sql(settings).splitlines()]
    return "\n".join([*before, init_sql.rstrip("\n"), *after, *named]) + "\n"


def db_init(host: RemoteHost, config: Config) -> DbInitResult:
    """Idempotent: a second run changes nothing and says so."""
    container = find_postgres(host, config)
    dbs = [e.database for e in config.environments.values()]
    vector = "vector" in config.postgres.extensions
    sql = session_sql(dbs, render(config)["db/init-db.sql"], vector,
                      list(config.postgres.settings))
    try:
        answer = host.run(commands.psql_rows(container, config.postgres.user),
                          what="init-db.sql", stdin=sql)
    except RemoteError as exc:
        match = _NOT_AVAILABLE.search(exc.output or str(exc))
        if match:
            ext = match.group(1) or match.group(2)
            raise CheckFailed(
                f"db-init: extension {ext} is not available in {config.postgres.image}; "
                f"use an image that provides it (pgvector/pgvector:pg17 has vector and "
                f"pg_stat_statements) or remove it from postgres.extensions") from None
        raise
    before = parse_inventory(answer, "WAS").extensions
    checked = parse_inventory(answer)
    after = checked.extensions
    result = DbInitResult()
    for db, exts in after.items():
        if db not in before:
            result.created_databases.append(db)
        missing = [e for e in config.postgres.extensions if e not in exts]
        if missing:
            raise CheckFailed(f"db-init: {db} lacks {', '.join(missing)} after init")
        result.created_extensions += [f"{db}.{e}" for e in sorted(exts - before.get(db, set()))
                                      if e in config.postgres.extensions]
    missing_dbs = [db for db in dbs if db not in after]
    if missing_dbs:
        raise CheckFailed(f"db-init: databases missing after init: {missing_dbs}")
    for db, distance in checked.distances.items():
        result.vector_distance = distance
        if distance != 1.0:
            raise CheckFailed(f"db-init: vector distance in {db} is {distance}, not 1")
    if vector and len(checked.distances) != len(after):
        raise CheckFailed("db-init: the vector query did not answer in every database")
    check_settings(config, "\n".join(line.removeprefix("SET ") for line in answer.splitlines()
                                     if line.startswith("SET ")))
    return result


def settings_sql(names: list[str]) -> str:
    return "".join(f"SELECT {sql_literal(name)} || ' ' || current_setting({sql_literal(name)});\n"
                   for name in names)


def settings_differ(wanted: dict[str, str], answer: str) -> list[str]:
    """`name value` lines (what the server runs) against the config, both as SHOW prints."""
    running = dict(line.split(" ", 1) for line in answer.splitlines() if " " in line)
    return [f"{name} is {running.get(name, 'not set')}, the config says {value}"
            for name, value in wanted.items()
            if normalised(running.get(name, "")) != normalised(value)]


def check_settings(config: Config, answer: str) -> None:
    """`postgres.settings` are what the server runs (SHOW), after the restart that a change
    of them causes (the shared stack's command changed)."""
    differs = settings_differ(config.postgres.settings, answer)
    if differs:
        raise CheckFailed(f"db-init: postgres does not run its settings: {'; '.join(differs)}")


class DbInit(Operation):
    """`fab db-init` on its own: under the shared lock (postgres serves every env), audited."""

    action = "db-init"

    def __init__(self, host: RemoteHost, config: Config, **kwargs: Any) -> None:
        super().__init__(host, config, next(iter(config.environments)), **kwargs)
        self.lock = shared_lock(host, self.layout.shared_lock, action="db-init",
                                clock=self.clock)

    def lock_prefix(self) -> str:
        return commands.before(commands.mkdir_p(self.layout.base))

    def body(self) -> DbInitResult:
        result = db_init(self.host, self.config)
        audit(self.host, self.layout, "db-init", "ok",
              detail=", ".join(result.created_databases + result.created_extensions)
              or "nothing to do")
        return result

    def put_back(self) -> str:
        return ""


def run_db_init(host: RemoteHost, config: Config, *, say: Callable[[str], None] = print
                ) -> DbInitResult:
    from vedfin_ops.config import secret_store

    host.secrets = list(secret_store.resolve(config).values())
    result: DbInitResult = DbInit(host, config, say=say).execute()
    return result
