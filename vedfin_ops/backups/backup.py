"""db.backup and db.backups: an env's database dumped with `pg_dump -Fc` inside the postgres
container and streamed to the host, as `<base>/backups/<database>/<UTC>.dump` (0600) with a
record beside it (`<UTC>.json`: size, sha256, who, why). Deploy takes one before anything
changes, because redeploying an old image does not undo a migration.

A dump becomes a backup only once whole: it is written to a partial file and renamed after
its checksum is recorded, so a failed or interrupted backup never lists as one. Retention
(`backups.keep`) removes the oldest complete backups of a database after a new one is made.
A record counts as a backup only with its dump beside it at the size it records (a dump
freed or cut by hand leaves a record that is no backup: neither restored, nor counted, nor
trusted to hold a kept database), and the live release's pre-deploy backup is never removed
(`rollback --restore-db` restores it). Ids are the host's UTC time, as the nightly script's.
The record's format and the listing are `records.py`'s (the off-host copies read them too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

from vedfin_ops.backups.records import (
    _SHA256,
    Backup,
    folder,
    id_order,
    list_backups,
    root,
)
from vedfin_ops.config.model import MAX_IDENTIFIER, Config
from vedfin_ops.config.names import shared_stack_name
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.remote.quoting import sql_ident, sql_literal
from vedfin_ops.run.lock import who
from vedfin_ops.run.operation import Operation


def new_id(when: datetime, taken: set[str]) -> str:
    """The start time in UTC; a second backup within the same second gets `.2`, so ids sort
    by time."""
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup_id, n = stamp, 1
    while backup_id in taken:
        n += 1
        backup_id = f"{stamp}.{n}"
    return backup_id


def to_remove(backups: list[Backup], orphans: list[str], keep: int,
              protect: frozenset[str] = frozenset()) -> list[str]:
    """Paths (relative to the backups root) of what retention removes: per database all but
    the newest `keep` backups (dump and record), and dumps nobody recorded. Ids in `protect`
    (the backup just made, the one being restored) are never removed, whatever the clocks
    that named them said."""
    out: list[str] = []
    by_db: dict[str, list[Backup]] = {}
    for backup in backups:
        by_db.setdefault(backup.database, []).append(backup)
    for database, found in by_db.items():
        found.sort(key=lambda b: id_order(b.id))
        for old in found[:-keep] if len(found) > keep else []:
            if old.id not in protect:
                out += [f"{database}/{old.id}.dump", f"{database}/{old.id}.json"]
    return out + list(orphans)


STAMP_LEN = 16  # 20261129t123500z


def kept_prefix(database: str, word: str) -> str:
    """`<db>_<word>_`, the database's part cut so that with a UTC stamp it fits PostgreSQL's
    63 characters (the names a restore gives the databases it makes and keeps)."""
    tail = f"_{word}_"
    return database[:MAX_IDENTIFIER - len(tail) - STAMP_LEN] + tail


def before_copies_sql(database: str) -> str:
    """The databases a restore kept (`<db>_before_<utc>`, exactly: never a database that
    merely starts like one)."""
    pattern = "^" + re.escape(kept_prefix(database, "before")) + "[0-9]{8}t[0-9]{6}z$"
    return f"SELECT datname FROM pg_database WHERE datname ~ {sql_literal(pattern)};\n"


def database_exists(host: RemoteHost, container: str, user: str, database: str) -> bool:
    return host.run(commands.database_exists(container, user, database),
                    what="database exists").strip() == "yes"


def postgres(host: RemoteHost, config: Config) -> str | None:
    found = host.run(commands.postgres_container(f"{shared_stack_name(config)}_postgres"),
                     what="find postgres").strip()
    return found or None


def take_backup(host: RemoteHost, config: Config, env: str, reason: str,
                wrap: Callable[[str], str] = lambda command: command,
                protect: frozenset[str] = frozenset(),
                source: str | None = None, container: str | None = None) -> Backup | None:
    """One backup of the env's database, retention after it; None when the database does not
    exist (yet). `wrap` keeps the caller's lock alive around the dump, which may take longer
    than a lock's staleness (no time limit: a big database takes what it takes). `source`
    dumps another database as a backup of the env's (the one a restore replaced);
    `container` dumps from another postgres than the shared one (an adopted volume's,
    `adopted.py`). Its id and time are the host's clock, as the nightly script's are;
    retention never removes the live release's pre-deploy backup (what `rollback
    --restore-db` restores)."""
    database = config.environments[config.require_env(env)].database
    container = container or postgres(host, config)
    if container is None:
        raise CheckFailed(f"backup: no healthy postgres container to dump {database} from")
    user = config.postgres.user
    dumped = source or database
    if not database_exists(host, container, user, dumped):
        return None
    listing = list_backups(host, config, env)
    if listing.now is None:
        raise CheckFailed("backup: the host did not say its time (date -u)")
    taken = {b.id for b in listing.backups} | {p.split("/", 1)[-1].split(".json")[0]
                                               for p in listing.broken}
    backup_id = new_id(listing.now, taken)
    created = listing.now.isoformat(timespec="seconds")
    record = {"id": backup_id, "database": database, "env": env, "created": created,
              "by": who(), "reason": reason}
    prefix = json.dumps(record)[:-1] + ", "
    answer = host.run(wrap(commands.backup_dump(container, user, dumped,
                                                folder(config, database), backup_id, prefix)),
                      what=f"backup {database}", timeout=None).split()
    if len(answer) != 2 or not _SHA256.fullmatch(answer[0]) or not answer[1].isdigit():
        raise CheckFailed(f"backup: the host did not say what it wrote ({' '.join(answer)})")
    backup = Backup(backup_id, database, env, int(answer[1]), answer[0], created, who(),
                    reason)
    # a restore kept the database it replaced until the next good backup; only a copy that
    # a backup holds (the restore dumps it after the swap) is dropped
    prefix = kept_prefix(database, "before")
    backed = {b.reason.split(":", 1)[0] for b in listing.backups}
    backed = {name for name in backed if name.startswith(prefix)}
    kept = [name for name in host.run(commands.psql_rows(container, user),
                                      what="kept databases",
                                      stdin=before_copies_sql(database)).splitlines()
            if name in backed and name != dumped] if backed else []
    if kept:
        host.run(commands.psql(container, user), what="drop kept databases",
                 stdin="".join(f"DROP DATABASE IF EXISTS {sql_ident(name)} WITH (FORCE);\n"
                               for name in kept))
    old = to_remove([*listing.backups, backup], listing.orphans, config.backups.keep,
                    protect | {backup.id} | ({listing.live} if listing.live else set()))
    if old:
        host.run(commands.remove_files([f"{root(config)}/{p}" for p in old]),
                 what="remove old backups")
    return backup


class BackupRun(Operation):
    """`fab db.backup --env E`: under the env's lock (a deploy's migration cannot run
    beside it), audited."""

    action = "db-backup"

    def body(self) -> Backup | None:
        database = self.config.environments[self.config.require_env(self.env)].database
        self.say(f"backup: pg_dump -Fc of {database}")
        backup = take_backup(self.host, self.config, self.env, "manual", wrap=self.keep_alive)
        if backup is None:
            self.audit_ok("skipped", detail=f"{database} does not exist yet")
            return None
        from vedfin_ops.backups.offsite import offsite_copy

        copied = offsite_copy(self.host, self.config, backup, self.say, beat=self.beat)
        self.audit_ok("ok", detail=f"{database} {backup.id} {backup.size} bytes "
                                   f"sha256 {backup.sha256[:12]}"
                                   + (f", copied to {copied}" if copied else ""))
        return backup

    def put_back(self) -> str:
        return ""  # a failed dump removes its partial file; nothing else changed


def run_backup(host: RemoteHost, config: Config, env: str, *, say: Callable[[str], None] = print
               ) -> Backup | None:
    from vedfin_ops.config import secret_store

    host.secrets = list(secret_store.resolve(config, env).values())
    result: Backup | None = BackupRun(host, config, env, say=say).execute()
    return result

