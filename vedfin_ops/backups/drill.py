"""db.drill: proof that a backup restores, taken before it is needed.

The newest backup of the env (or the one named, on the host or `s3:ID` in the bucket) is
restored into a scratch database beside the live one (`<db>_drill_<utc>`), its tables and rows
compared with the dump's (db.restore's own check), the pgvector distance query and the app's
`migrateStatus` run against it (a one-off container of the live image, its env file's postgres
URL pointing at the scratch database), the restore timed, and the scratch database dropped.
The result is the env's last drill (`<base>/<env>/drill.json`) and, when it passed, its last
proven restorable backup (`drill-proven.json`), which `status`, `verify` and the report show.

A drill never touches the live database and never holds a deploy back: it takes only its own
lock (`<env>/.drill.lock`, one drill at a time), not the env's nor the shared stack's. The dump
it restores is pinned first by a hard link, so a deploy's backup and its retention may run
beside it. A postgres restarted under it (a deploy changing the shared stack) fails the drill,
whose scratch database is then dropped; one left by a drill cut short (a lost link) is dropped
by the next drill, which names it.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fabric import Connection

from vedfin_ops.backups.backup import kept_prefix
from vedfin_ops.backups.records import Backup, folder, list_backups
from vedfin_ops.backups.restore import DatabaseRestore, find_backup, kept_name
from vedfin_ops.config.model import Config
from vedfin_ops.config.names import stack_name
from vedfin_ops.deploy.db_init import inventory_sql, parse_inventory
from vedfin_ops.deploy.migrate import StatusFailed, migrate_status
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import Host, RemoteError, RemoteHost
from vedfin_ops.remote.quoting import sql_ident, sql_literal
from vedfin_ops.run.layout import Layout
from vedfin_ops.run.lock import Lock
from vedfin_ops.run.operation import Operation, bare, describe

DRILL_LABEL = "vedfin.drill"  # the drill's migrate-status container (never a deploy's)
LAST = "drill.json"  # <base>/<env>/: the env's last drill, passed or failed
PROVEN = "drill-proven.json"  # the last drill that passed
ROOM_FACTOR = 5  # free disk wanted per byte of dump: a custom-format dump is compressed
ROOM_SPARE = 256 * 1024 * 1024
DRILL_WITHIN_S = 7 * 86400  # verify's box: a backup restored within this


def room_needed(dump_size: int) -> int:
    """Bytes the drill wants free before it starts: the restored database is several times
    its compressed dump, and the live databases keep growing meanwhile."""
    return ROOM_FACTOR * dump_size + ROOM_SPARE


def backup_time(backup_id: str) -> datetime:
    """When a backup's data was taken: its id is the host's UTC time at its start."""
    return datetime.strptime(backup_id.split(".")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def leftovers_sql(database: str, keep: set[str]) -> str:
    """The scratch databases of earlier drills of `database`: exactly `<prefix><utc stamp>`
    (never a database that merely looks alike), none of the config's env databases."""
    pattern = "^" + re.escape(kept_prefix(database, "drill")) + "[0-9]{8}t[0-9]{6}z$"
    spared = "".join(f" AND datname <> {sql_literal(name)}" for name in sorted(keep))
    return (f"SELECT datname FROM pg_database WHERE datname ~ {sql_literal(pattern)}"
            f"{spared} ORDER BY 1;\n")


@dataclass(frozen=True)
class Proof:
    """What a drill proved (the record's fields, camelCase in JSON)."""

    backup: str
    result: str  # ok | failed | interrupted
    time: str  # when the drill ended (UTC, ISO)
    rpo_seconds: float | None  # the data's age at the drill: drill time - backup time
    rto_seconds: float | None  # the restore and its check, into the scratch database
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"backup": self.backup, "result": self.result, "time": self.time,
                "rpoSeconds": self.rpo_seconds, "rtoSeconds": self.rto_seconds,
                "detail": self.detail}


def judge(last: dict[str, Any] | None, proven: dict[str, Any] | None, now: datetime,
          within: float = DRILL_WITHIN_S) -> tuple[bool, str]:
    """Verify's box: (passed, detail). No drill yet is a pass with a warning (a new install
    has none to show); a failed last drill, or a proof older than `within`, fails."""
    if last is None and proven is None:
        return True, "warning: no restore drill yet (fab -H HOST db.drill --env ENV)"
    if last is not None and last.get("result") not in ("ok", "interrupted"):
        # an interrupted drill proved nothing either way: the last proof stands
        return False, (f"the last restore drill ({last.get('backup')}, {last.get('time')}) "
                       f"{last.get('result')}: {last.get('detail') or '-'}")
    if proven is None:
        return False, "no restore drill has passed"
    try:
        age = (now - datetime.fromisoformat(str(proven["time"]))).total_seconds()
    except (KeyError, ValueError, TypeError):
        return False, "the last proven restore's record is unreadable"
    rpo, rto = duration_text(proven.get("rpoSeconds")), duration_text(proven.get("rtoSeconds"))
    said = (f"backup {proven.get('backup')} restored {age / 86400:.1f} days ago "
            f"(RPO {rpo}, RTO {rto})")
    if age > within:
        return False, f"{said}: older than {within / 86400:g} days"
    return True, said


def duration_text(seconds: Any) -> str:
    """A drill's RPO or RTO for people (status, verify, the drill's own line); `-` when the
    record has none."""
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def read_records(host: RemoteHost, config: Config, env: str) -> tuple[dict[str, Any] | None,
                                                                       dict[str, Any] | None]:
    """The env's last drill and last proven one (None where there is none, or it is not a
    JSON object)."""
    layout = Layout.of(config, env)
    text = host.run(commands.each_of(
        commands.labelled("LAST", commands.read_file(f"{layout.env_dir}/{LAST}")),
        commands.labelled("PROVEN", commands.read_file(f"{layout.env_dir}/{PROVEN}"))),
        what="read drill records")
    found: dict[str, dict[str, Any] | None] = {"LAST": None, "PROVEN": None}
    for line in text.splitlines():
        label, _, body = line.partition(" ")
        with contextlib.suppress(ValueError):
            data = json.loads(body) if body.strip() else None
            found[label] = data if isinstance(data, dict) else None
    return found["LAST"], found["PROVEN"]


class DrillRun(Operation):
    """`fab db.drill`: see the module docstring. Its lock is the drill's own."""

    action = "db-drill"

    def __init__(self, host: RemoteHost, config: Config, env: str, wanted: str | None,
                 when: Callable[[], datetime] = lambda: datetime.now(UTC),
                 **kwargs: Any) -> None:
        super().__init__(host, config, env, **kwargs)
        self.database = config.environments[env].database
        # one drill of a database at a time (two envs may name the same one)
        path = f"{Layout.of_host(config).base}/.drill-{self.database}.lock"
        self.lock = Lock(host, path, f"{self.database}'s drill", action=f"db-drill {env}",
                         clock=self.clock, hint=f"if it is stale: rm -r {path}")
        self.wanted, self.when = wanted, when
        self.restore = DatabaseRestore(self, None, None, when, shared=False)
        self.pins = f"{self.layout.env_dir}/drill"
        self.backup: Backup | None = None
        self.rto: float | None = None

    def body(self) -> str:
        if self.wanted and self.wanted.startswith("s3:"):
            # the download lands in the host's backups folder, where a backup's clean-up and
            # retention would take it: only then the env's lock, as db.restore holds it
            env_lock = Lock(self.host, self.layout.lock, self.env,
                            action=f"db-drill {self.env} (fetch)", clock=self.clock,
                            hint=f"if it is stale: fab -H HOST lock.release --env {self.env}")
            env_lock.acquire()
            try:
                backup = self.pin(self.choose())
            finally:
                problem = env_lock.release()
                if problem:
                    self.say(f"warning: {problem}")
        else:
            backup = self.pin(self.choose())
        self.restore.into = kept_name(self.database, self.when(), "drill")
        try:
            self.drop_leftovers()
            self.check_room(backup)
            started = time.monotonic()
            scratch = self.restore.prepare()
            self.rto = time.monotonic() - started
            checks = [self.restore.summary, self.vector(scratch), self.migrate_status(scratch)]
            self.step(f"drill: dropping {scratch}")
            self.drop(scratch)
        finally:
            with contextlib.suppress(Exception):  # else the next drill's pin removes it
                self.host.run(commands.remove_dirs([self.pins]), what="unpin dump")
        detail = "; ".join(c for c in checks if c)
        proof = self.proof("ok", detail)
        self.record(proof)  # before the commit: a record lost is a failed drill, said
        self.commit(proof)
        self.say(f"drill: {backup.id} restores: {detail} (restore {duration_text(self.rto)}, "
                 f"data {duration_text(proof.rpo_seconds)} old)")
        self.audit_ok("ok", detail=f"{backup.id}: {detail}; RTO {duration_text(self.rto)}")
        return detail

    def choose(self) -> Backup:
        """The backup named (on the host, or fetched from the bucket as db.restore does),
        else the env's newest."""
        if self.wanted and self.wanted.startswith("s3:"):
            from vedfin_ops.backups.offsite import fetch
            from vedfin_ops.config import secret_store

            return fetch(self.host, self.config, self.env, self.wanted[3:],
                         secret_store.resolve(self.config, self.env), self.step,
                         beat=self.beat)
        if self.wanted:
            return find_backup(self.host, self.config, self.env, self.wanted)
        found = list_backups(self.host, self.config, self.env).backups
        if not found:
            raise CheckFailed(f"no backup of {self.env} to drill (fab -H HOST db.backup "
                              f"--env {self.env})")
        return found[-1]

    def pin(self, backup: Backup) -> Backup:
        """The backup's dump hard-linked into the drill's own folder: a backup's retention
        removing it meanwhile leaves the drill its bytes."""
        self.restore.backup = self.backup = backup
        pin = f"{self.pins}/{backup.id}.dump"
        self.step(f"drill: {backup.id} pinned (a hard link: retention may run beside)")
        try:
            self.host.run(commands.pin_dump(f"{folder(self.config, backup.database)}/"
                                            f"{backup.id}.dump", self.pins, pin),
                          what="pin dump")
        except RemoteError:
            raise CheckFailed(f"backup {backup.id} was removed before the drill could pin "
                              f"it (a backup's retention); run the drill again") from None
        self.restore.dump = pin
        return backup

    def check_room(self, backup: Backup) -> None:
        """Room where postgres keeps its data (its volume, not the deploy user's disk),
        after any scratch database an earlier drill left is dropped."""
        free = self.host.run(commands.free_kib_in_data(self.restore.container),
                             what="free disk").strip()
        need = room_needed(backup.size)
        if not free.isdigit():
            raise CheckFailed(f"could not read the free disk of postgres's data directory "
                              f"({free[:80] or 'no answer'}); the drill did not start")
        if int(free) * 1024 < need:
            raise CheckFailed(f"not enough free disk for a drill of {backup.id}: "
                              f"{int(free) // 1024} MiB free, {need // 2**20} MiB wanted "
                              f"({ROOM_FACTOR}x its {backup.size // 2**20} MiB dump)")

    def drop_leftovers(self) -> None:
        """Scratch databases of earlier drills cut short, named and dropped."""
        self.restore.find_postgres()
        envs = {e.database for e in self.config.environments.values()}
        names = [n.strip() for n in self.restore.psql(leftovers_sql(self.database, envs),
                                                      "drill leftovers").splitlines()
                 if n.strip()]
        for name in names:
            self.say(f"drill: dropping {name}, left by an earlier drill")
            self.drop(name)

    def drop(self, database: str) -> None:
        self.restore.psql(f"DROP DATABASE IF EXISTS {sql_ident(database)} WITH (FORCE);\n",
                          "drop scratch database")
        if self.restore.created == database:
            self.restore.created = None

    def vector(self, scratch: str) -> str:
        if "vector" not in self.config.postgres.extensions:
            return ""
        answer = parse_inventory(self.host.run(
            commands.db_inventory(self.restore.container, self.config.postgres.user),
            what="drill: pgvector query", stdin=inventory_sql([scratch], True), check=False))
        if scratch not in answer.distances:
            raise CheckFailed(f"the restored {scratch} has no working vector distance query")
        return "vector distance query ok"

    def migrate_status(self, scratch: str) -> str:
        """The app's `migrateStatus` in a one-off container of the live image, against the
        scratch database (its env file copied with the postgres URL changed)."""
        app = next((a for a in self.config.apps(self.env) if a.migrate_status_command), None)
        if app is None:
            return ""
        from vedfin_ops.run.env_run import listing

        live = listing(self.host, self.layout).current
        image = self.live_image(app.name)
        if live is None or image is None:
            return f"migrate status skipped: {app.name} is not running"
        scratch_env = f"{self.pins}/{app.name}.env"
        changed, _, still = self.host.run(commands.env_file_for_database(
            f"{self.layout.release(live)}/env/{app.name}.env", scratch_env, self.database,
            scratch), what="drill: env file").strip().partition(" ")
        if changed in ("", "0") or still not in ("", "0"):
            # nothing runs against a file that could still reach the live database
            why = ("has no postgres URL naming" if changed in ("", "0") else
                   "names, outside a postgres URL the drill can rewrite,")
            return f"migrate status skipped: {app.name}'s env file {why} {self.database}"
        try:
            said = migrate_status(self.host, self.config, self.env, app, image, scratch_env,
                                  name=f"{app.name}-drill-{secrets.token_hex(3)}",
                                  label=DRILL_LABEL, what="drill: migrate status")
        except StatusFailed as exc:
            raise CheckFailed(f"`{app.migrate_status_command}` against the restored database "
                              f"says: {exc.why}") from None
        return f"migrate status: {said}"

    def live_image(self, app: str) -> str | None:
        from vedfin_ops.run.env_run import poller

        view = poller(self.host, [stack_name(self.config, self.env)], self.config)().get(
            f"{stack_name(self.config, self.env)}_{app}")
        return view.image if view is not None else None

    def proof(self, result: str, detail: str) -> Proof:
        now = self.when()
        backup = self.backup
        rpo = (now - backup_time(backup.id)).total_seconds() if backup else None
        return Proof(backup.id if backup else "", result, now.isoformat(timespec="seconds"),
                     round(rpo, 1) if rpo is not None else None,
                     round(self.rto, 2) if self.rto is not None else None, detail)

    def record(self, proof: Proof) -> None:
        text = json.dumps(proof.to_dict())
        files = [commands.write_text(f"{self.layout.env_dir}/{LAST}", text)]
        if proof.result == "ok":
            files.append(commands.write_text(f"{self.layout.env_dir}/{PROVEN}", text))
        self.host.run(commands.all_of(*files), what="record drill")

    def needs_put_back(self) -> bool:
        return self.restore.needs_put_back()

    def put_back(self) -> str:
        return self.restore.put_back()

    def mark(self, outcome: str, reason: str) -> None:
        """A failed drill is the env's last drill too (verify's box fails on it); best
        effort: the link may be gone."""
        if self.backup is None:
            return
        try:
            self.record(self.proof(outcome, self.host.redact(bare(reason))))
        except BaseException as exc:
            self.notes.append(f"the drill's record not written ({describe(exc)})")


def run_drill(conn: Connection | Host, config: Config, env: str, wanted: str | None = None,
              *, say: Callable[[str], None] = print) -> str:
    """A drill of `env`'s newest backup (or `wanted`: an id, or `s3:ID`); its detail, or
    RunFailed (exit 1) with the scratch database dropped."""
    from vedfin_ops.config import secret_store
    from vedfin_ops.run.env_run import as_host

    config.require_env(env)
    host = as_host(conn)
    if wanted and wanted.startswith("s3:"):
        from vedfin_ops.backups.offsite import require_copied

        require_copied(config, env, "db.drill --from s3:ID")
    host.secrets = list(secret_store.resolve(config, env).values())
    result: str = DrillRun(host, config, env, wanted, say=say).execute()
    return result
