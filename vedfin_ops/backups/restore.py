"""db.restore: a backup back into the env's database, never half way.

The dump's sha256 is checked against its record first (a corrupted dump is refused before
anything changes). It is restored into a new database, in one transaction, while beside it the
dump's own rows are counted per table (its data, row by row, outside the database container's
CPU limit); the new database's tables and row counts are then compared with those. Only then
the two databases swap names, in one transaction, after the env's database stopped taking
connections: the old one stays as `<db>_before_<UTC>` until the next good backup of the
database. A restore that fails before the swap drops the new database and leaves the original
serving, untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vedfin_ops.backups.backup import database_exists, kept_prefix, postgres, take_backup
from vedfin_ops.backups.records import Backup, folder, list_backups
from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.remote.quoting import sql_ident, sql_literal
from vedfin_ops.run.lock import Lock, shared_lock
from vedfin_ops.run.operation import Operation, describe
from vedfin_ops.run.polling import until

# how long a restore waits for the shared lock (another env's deploy or db-init), and for a
# healthy postgres when it puts a database back (postgres restarted under it)
SHARED_WAIT = 120.0
POSTGRES_WAIT = 120.0

# Every ordinary table of the database (no catalog, no extension's own), quoted the way
# pg_dump names them; and each extension's configuration tables. (Counting in the same query
# through query_to_xml needs a server built with libxml, which pgserver's is not.)
TABLES_SQL = """
SELECT 'TABLE ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1;
SELECT 'EXTCONFIG ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_extension e, unnest(e.extconfig) AS t(oid)
JOIN pg_class c ON c.oid = t.oid JOIN pg_namespace n ON n.oid = c.relnamespace;
"""


# Rows per table as the statistics count them: exact for tables a restore just loaded with
# COPY in one committed transaction, once its session has ended.
STATS_SQL = """
SELECT n_live_tup || ' ' || quote_ident(schemaname) || '.' || quote_ident(relname)
FROM pg_stat_user_tables;
"""


def count_sql(tables: list[str]) -> str:
    """`<rows> <table>` for each table (names as TABLES_SQL gives them, already quoted
    identifiers; each also passed as a literal for the output), `FROM ONLY`: an inheriting
    child's rows are its own, as in the dump."""
    if not tables:
        return "SELECT 1 WHERE false;\n"
    return "\nUNION ALL ".join(f"SELECT count(*) || ' ' || {sql_literal(t)} FROM ONLY {t}"
                               for t in tables) + ";\n"


def parse_counts(text: str) -> dict[str, int]:
    """`<rows> <table>` lines (`commands.restore_counted`, or a query); an extension's
    configuration table (`EXTCONFIG <table>`: the dump holds only the rows the extension marks
    as the user's) is left out of the comparison by the caller; `FAILED` means pg_restore
    could not read the dump."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.strip() == "FAILED":
            raise CheckFailed("pg_restore could not read the dump through to its end")
        if line.strip() == commands.UNREADABLE:
            raise CheckFailed("the dump could not be read in a container of the postgres "
                              "image (docker's userns-remap?): its rows cannot be counted")
        rows, _, table = line.strip().partition(" ")
        if rows.isdigit() and table:
            out[table] = int(rows)
    return out


def extension_tables(text: str) -> set[str]:
    return {line.split(" ", 1)[1].strip() for line in text.splitlines()
            if line.startswith("EXTCONFIG ")}


def compare_counts(dump: dict[str, int], restored: dict[str, int]) -> list[str]:
    """What differs between the dump's tables and the restored database's: every table of the
    dump with its row count, and no table with rows the dump does not have."""
    out = []
    for table, rows in sorted(dump.items()):
        if table not in restored:
            out.append(f"{table} missing")
        elif restored[table] != rows:
            out.append(f"{table} has {restored[table]} rows, the dump {rows}")
    out += [f"{table} ({rows} rows) is not in the dump" for table, rows in
            sorted(restored.items()) if table not in dump and rows]
    return out


def kept_name(database: str, when: datetime, word: str) -> str:
    """`<db>_<word>_<utc>`, within PostgreSQL's 63 characters."""
    return kept_prefix(database, word) + when.astimezone(UTC).strftime("%Y%m%dt%H%M%Sz")


def swap_sql(database: str, restored: str, old: str, exists: bool = True) -> str:
    """Stop new connections, end the ones there, then both renames and the old one's reopening
    in one transaction: the env's database is the old one or the restored one, never
    neither. When the env's database is gone (the disaster a restore is for), one rename."""
    db, new, before = sql_ident(database), sql_ident(restored), sql_ident(old)
    if not exists:
        return f"ALTER DATABASE {new} RENAME TO {db};\n"
    return (f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false;\n"
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = {sql_literal(database)} AND pid <> pg_backend_pid();\n"
            f"BEGIN;\nALTER DATABASE {db} RENAME TO {before};\n"
            f"ALTER DATABASE {new} RENAME TO {db};\n"
            f"ALTER DATABASE {before} WITH ALLOW_CONNECTIONS true;\nCOMMIT;\n")


def reopen_sql(database: str) -> str:
    return f"ALTER DATABASE {sql_ident(database)} WITH ALLOW_CONNECTIONS true;\n"


def swap_back_sql(database: str, restored: str, old: str) -> str:
    """The swap undone (a rollback that restored the database and then failed): the kept
    database is the env's again, in one transaction. The restored copy keeps what was written
    to it meanwhile: it goes back to its own name, open, never dropped."""
    db, new, before = sql_ident(database), sql_ident(restored), sql_ident(old)
    return (f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false;\n"
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = {sql_literal(database)} AND pid <> pg_backend_pid();\n"
            f"BEGIN;\nALTER DATABASE {db} RENAME TO {new};\n"
            f"ALTER DATABASE {before} RENAME TO {db};\n"
            f"ALTER DATABASE {new} WITH ALLOW_CONNECTIONS true;\nCOMMIT;\n")


class DatabaseRestore:
    """A backup restored into a new database, verified, swapped in: the steps of db.restore,
    run by an operation that holds the env's lock (db.restore itself, and rollback
    --restore-db, which swaps the database before the apps go back). It also takes the shared
    lock before it changes a database (`shared`, which the operation lists among its held
    locks): no deploy restarts postgres, and no other env's db-init runs, beside it."""

    def __init__(self, run: Operation, backup: Backup | None, into: str | None = None,
                 when: Callable[[], datetime] = lambda: datetime.now(UTC), *,
                 shared: bool = True) -> None:
        """`shared` False: no shared lock (a restore drill, which changes no database an env
        uses and must never hold a deploy's db-init back: a postgres restarted under it
        fails the drill, which drops its scratch database)."""
        self.run, self.into, self.when = run, into, when
        self.take_shared = shared
        self.dump = ""  # the dump to restore, when not the backup's own file (a drill's pin)
        self.backup: Backup = backup  # type: ignore[assignment]  # set before prepare()
        self.host, self.config = run.host, run.config
        self.database = run.config.environments[run.env].database
        self.container = ""
        self.target = ""
        self.summary = ""
        self.old = ""  # the replaced database's new name, once swapped
        self.live = False  # the env's database existed before the swap
        self.created: str | None = None  # the new database, dropped if the run fails
        self.swapping: tuple[str, str] | None = None  # (new, old name) while the swap runs
        self.swapped = False
        self.shared: Lock = shared_lock(run.host, run.layout.shared_lock,
                                        action=f"{run.action} {run.env} (restore)",
                                        clock=run.clock)

    def locks(self) -> list[Lock]:
        """The locks this restore holds besides the operation's own (for its held_locks)."""
        return [self.shared] if self.shared.taken else []

    def find_postgres(self) -> None:
        """postgres's container, found again: its id changes when it restarts, so a put-back
        never trusts the one it started with (waits for a healthy one)."""
        def healthy() -> str | None:
            return postgres(self.host, self.config)

        self.container = until(healthy, timeout=POSTGRES_WAIT, interval=2.0,
                               clock=self.run.clock,
                               describe=lambda: "no healthy postgres container")

    def psql(self, sql: str, what: str, database: str = "postgres") -> str:
        return self.host.run(commands.psql_rows(self.container, self.config.postgres.user,
                                                database), what=what, stdin=sql)

    def exists(self, database: str) -> bool:
        return database_exists(self.host, self.container, self.config.postgres.user, database)

    def prepare(self) -> str:
        """Checksum, restore into a new database, compare with the dump. Nothing the env
        uses changes here; returns the new database's name."""
        backup, user, run = self.backup, self.config.postgres.user, self.run
        if self.take_shared:
            run.step("restore: taking the shared stack's lock (postgres serves every env)")
            self.shared.acquire(wait=SHARED_WAIT)
        self.container = postgres(self.host, self.config) or ""
        if not self.container:
            raise CheckFailed("restore: no healthy postgres container")
        dump = self.dump or f"{folder(self.config, backup.database)}/{backup.id}.dump"
        run.step(f"restore: checking {backup.id}'s sha256")
        target = self.into or kept_name(self.database, self.when(), "restore")
        answer = dict(line.partition(" ")[::2] for line in self.host.run(
            commands.each_of(
                commands.labelled("SHA", commands.file_sha256(dump)),
                commands.labelled("EXISTS", commands.database_exists(self.container, user,
                                                                     target))),
            what="checksum").splitlines())
        found = answer.get("SHA", "").strip()
        if found != backup.sha256:
            said = f"its sha256 is {found[:12]}..." if found else "it cannot be read"
            raise CheckFailed(f"backup {backup.id} is corrupted ({said}, its record says "
                              f"{backup.sha256[:12]}...); {self.database} is untouched")
        if answer.get("EXISTS", "").strip() == "yes":
            raise CheckFailed(f"database {target} already exists; restore into a new one")
        run.step(f"restore: {backup.id} into a new database {target}")
        self.created = target  # before CREATE: an interrupted CREATE is dropped too
        self.psql(f"CREATE DATABASE {sql_ident(target)} TEMPLATE template0;\n",
                  "create database")
        expected = parse_counts(self.host.run(
            run.keep_alive(commands.restore_counted(self.container, user, target, dump)),
            what="pg_restore", timeout=None))
        run.step("restore: tables and row counts against the dump's")
        listed = self.psql(TABLES_SQL + STATS_SQL, "list restored tables", target)
        skip = extension_tables(listed)
        tables = [line[6:].strip() for line in listed.splitlines()
                  if line.startswith("TABLE ") and line[6:].strip() not in skip]
        expected = {t: n for t, n in expected.items() if t not in skip}
        # the statistics first (no scan); exact counts for any table where they disagree
        # (they lag a moment behind the restore's session, or track_counts is off)
        restored = {t: n for t, n in parse_counts(listed).items() if t in tables}
        recount = [t for t in tables if restored.get(t) != expected.get(t)]
        if recount:
            restored.update(parse_counts(self.psql(count_sql(recount), "count restored",
                                                   target)))
        differs = compare_counts(expected, restored)
        if differs:
            raise CheckFailed(f"the restored database differs from the dump: "
                              f"{'; '.join(differs[:5])}")
        self.summary = f"{len(expected)} tables, {sum(expected.values())} rows as in the dump"
        self.target = target
        return target

    def swap(self) -> str:
        """The restored database becomes the env's (call shielded); says what happened."""
        self.old = kept_name(self.database, self.when(), "before")
        self.live = self.exists(self.database)
        self.run.step(f"restore: swapping {self.target} in as {self.database}"
                      + (f" (the old one stays as {self.old})" if self.live else ""))
        self.swapping = (self.target, self.old)
        self.psql(swap_sql(self.database, self.target, self.old, exists=self.live),
                  "swap databases")
        self.created = self.swapping = None
        self.swapped = True
        return (f"{self.backup.id} is {self.database} ({self.summary})"
                + (f"; the old database is kept as {self.old}" if self.live else ""))

    def keep_replaced(self) -> None:
        """The replaced database dumped as a backup of the env: what was written to it since
        the last backup is kept in a file, so the next good backup can drop the copy."""
        if not (self.swapped and self.live):
            return
        try:
            taken = take_backup(self.host, self.config, self.run.env,
                                f"{self.old}: the database replaced by restore of "
                                f"{self.backup.id}", wrap=self.run.keep_alive, source=self.old,
                                protect=frozenset({self.backup.id}))
        except Exception as exc:  # the restore stands; the copy stays until one is made
            self.run.say(f"warning: the replaced database {self.old} could not be dumped "
                         f"({describe(exc)}); it stays until a backup of it is made")
            return
        if taken is None:
            return
        self.run.say(f"restore: the replaced database dumped as backup {taken.id}")
        from vedfin_ops.backups.offsite import offsite_copy

        try:
            offsite_copy(self.host, self.config, taken, self.run.say, beat=self.run.beat,
                         catch_up=False)
        except Exception as exc:  # it is whole on the host; the next backup copies it
            self.run.say(f"warning: {describe(exc)}")

    def needs_put_back(self) -> bool:
        return self.created is not None or self.swapping is not None

    def put_back(self) -> str:
        """Found out from the server, not assumed: a swap whose COMMIT went through stands
        (then it says so); otherwise the env's database takes connections again and the new
        one is dropped, each tried even if the other fails."""
        said: list[str] = []
        self.find_postgres()
        if self.swapping is not None:
            target, old = self.swapping
            if not self.exists(target) and self.exists(old):
                self.created, self.swapping, self.swapped = None, None, True
                return (f"the swap had committed: {self.database} is the restored database, "
                        f"the old one is kept as {old}")
            try:
                self.psql(reopen_sql(self.database), "reopen database")
                said.append(f"{self.database} takes connections again")
            except Exception as exc:
                said.append(f"{self.database} may still refuse connections ({describe(exc)}): "
                            f"ALTER DATABASE {self.database} WITH ALLOW_CONNECTIONS true")
        if self.created is not None:
            self.psql(f"DROP DATABASE IF EXISTS {sql_ident(self.created)} WITH (FORCE);\n",
                      "drop restored database")
            said.append(f"the new database {self.created} dropped; {self.database} "
                        f"untouched")
        return "; ".join(said)

    def undo(self) -> str:
        """After a swap that must not stand (rollback --restore-db failed after it): the
        database the env had is its database again. A swap into a missing database is left
        as it is (there was nothing to go back to)."""
        if self.needs_put_back():
            said = self.put_back()
            if not self.swapped:
                return said
        if not self.swapped:
            return ""
        if not self.live:
            return f"{self.database} stays the restored {self.backup.id} (it had none before)"
        self.find_postgres()
        try:
            self.psql(swap_back_sql(self.database, self.target, self.old),
                      "swap databases back")
        except BaseException:
            # the swap back is one transaction, but closing the database came before it
            with contextlib.suppress(Exception):
                self.psql(reopen_sql(self.database), "reopen database")
            raise
        self.swapped = False
        return (f"{self.database} is the database it was before the restore again (the "
                f"restored copy, with anything written to it since, stays as {self.target})")


class RestoreRun(Operation):
    """`fab db.restore`: under the env's lock (no deploy migrates meanwhile) and the shared
    lock (no deploy restarts postgres meanwhile), audited."""

    action = "db-restore"

    def __init__(self, host: RemoteHost, config: Config, env: str, backup: Backup | str,
                 into: str | None = None,
                 when: Callable[[], datetime] = lambda: datetime.now(UTC),
                 **kwargs: Any) -> None:
        """`backup` is one on the host, or the id of a copy in the bucket (`s3:ID`), which
        is fetched under the lock (no backup's retention removes it meanwhile)."""
        super().__init__(host, config, env, **kwargs)
        self.fetch_id = backup if isinstance(backup, str) else None
        self.restore = DatabaseRestore(self, backup if isinstance(backup, Backup) else
                                       None, into, when)

    def body(self) -> str:
        restore = self.restore
        if self.fetch_id is not None:
            from vedfin_ops.backups.offsite import fetch
            from vedfin_ops.config import secret_store

            restore.backup = fetch(self.host, self.config, self.env, self.fetch_id,
                                   secret_store.resolve(self.config, self.env), self.step,
                                   beat=self.beat)
        target = restore.prepare()
        if restore.into:
            restore.created = None
            self.committed_note(f"{restore.backup.id} restored into {target} "
                                f"({restore.summary}); {restore.database} untouched")
            return target
        with self.shielded():
            self.committed_note(restore.swap())
        restore.keep_replaced()
        return restore.database

    def committed_note(self, detail: str) -> None:
        self.commit(detail)
        self.say(f"restore: {detail}")
        self.audit_ok("ok", detail=detail)

    def needs_put_back(self) -> bool:
        return self.restore.needs_put_back()

    def held_locks(self) -> list[Lock]:
        return [self.lock, *self.restore.locks()]

    def put_back(self) -> str:
        return self.restore.put_back()


def find_backup(host: RemoteHost, config: Config, env: str, backup_id: str) -> Backup:
    """The backup the user named, among the env's; a wrong id is bad input (exit 2)."""
    found = list_backups(host, config, env).backups
    for backup in found:
        if backup.id == backup_id:
            return backup
    known = ", ".join(b.id for b in found[-5:]) or "none"
    raise UsageError(f"db.restore: no backup {backup_id} of {env} (latest: {known}; "
                     f"fab db.backups --env {env})")


def run_restore(host: RemoteHost, config: Config, env: str, backup_id: str, *,
                into: str | None = None, yes: bool = False,
                say: Callable[[str], None] = print) -> str:
    from vedfin_ops.config import secret_store
    from vedfin_ops.config.model import _database_name
    from vedfin_ops.config.roles import protected

    config.require_env(env)
    if into is not None:
        try:
            _database_name(into)
        except ValueError as exc:
            raise UsageError(f"db.restore --into: {exc}") from None
    elif protected(config, env) and not yes:
        raise UsageError(f"db.restore replaces {env}'s database (the old one is kept); "
                         f"pass --yes if you mean it, or --into NEW_DB to look first")
    host.secrets = list(secret_store.resolve(config, env).values())
    if backup_id.startswith("s3:"):
        from vedfin_ops.backups.offsite import require_copied

        wanted: Backup | str = backup_id[3:]
        require_copied(config, env, "db.restore --from s3:ID")
    else:
        wanted = find_backup(host, config, env, backup_id)
    result: str = RestoreRun(host, config, env, wanted, into, say=say).execute()
    return result
