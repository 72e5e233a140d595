"""What a backup is on the host: `<base>/backups/<database>/<id>.dump` with its record beside
it (`<id>.json`), and how the host's backups are listed (`commands.backup_records`). Taking
one is `backup.py`'s; copying one off the host is `offsite.py`'s: both read these."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from vedfin_ops.config.model import Config
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.run.layout import Layout

ID = re.compile(r"^\d{8}T\d{6}Z(\.\d+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Backup:
    id: str  # UTC time it was started, 20261129T123500Z (.2, .3 within one second)
    database: str
    env: str
    size: int
    sha256: str
    created: str
    by: str
    reason: str  # "manual", "nightly", "before deploy of <tag>", or a restore's replaced db

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: Any) -> Backup | None:
        """A record as the backup wrote it, or None when it is not one (hand-edited, cut)."""
        if not isinstance(data, dict):
            return None
        try:
            backup = cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None
        fine = (isinstance(backup.id, str) and ID.fullmatch(backup.id) is not None
                and isinstance(backup.size, int) and isinstance(backup.sha256, str)
                and _SHA256.fullmatch(backup.sha256) is not None
                and all(isinstance(getattr(backup, k), str)
                        for k in ("database", "env", "created", "by", "reason")))
        return backup if fine else None


def root(config: Config) -> str:
    return Layout.of_host(config).backups


def folder(config: Config, database: str) -> str:
    return f"{root(config)}/{database}"


@dataclass
class Listing:
    backups: list[Backup]
    orphans: list[str]  # dumps without a record (relative to the backups root)
    unreadable: list[str]  # records that are not a backup's
    # records whose dump is gone or not the size they say (freed or cut by hand): not
    # backups, so neither restored nor counted by retention, and left for the operator
    broken: list[str] = field(default_factory=list)
    now: datetime | None = None  # the host's clock (`backup_state`)
    live: str = ""  # the live release's pre-deploy backup (`backup_state`)


def parse_listing(text: str) -> Listing:
    """`backup_records` (or `backup_state`) output -> backups (by database, oldest first),
    orphans, bad records, broken ones; with `backup_state`, the host's time and the live
    release's backup."""
    out = Listing([], [], [])
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "ORPHAN" and rest:
            out.orphans.append(rest)
        elif kind == "RECORD":
            path, _, rest = rest.partition(" ")
            size, _, body = rest.partition(" ")
            try:
                backup = Backup.from_record(json.loads(body))
            except ValueError:
                backup = None
            if backup is None or path != f"{backup.database}/{backup.id}.json":
                out.unreadable.append(path)
            elif not size.isdigit():
                out.broken.append(f"{path} (its dump is missing)")
            elif int(size) != backup.size:
                out.broken.append(f"{path} (its dump is {size} bytes, the record says "
                                  f"{backup.size})")
            else:
                out.backups.append(backup)
        elif kind == "NOW" and rest.strip():
            out.now = datetime.strptime(rest.strip(), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        elif kind == "LIVE":
            out.live = _live_backup(rest)
    out.backups.sort(key=lambda b: (b.database, id_order(b.id)))
    return out


def _live_backup(release_json: str) -> str:
    """The backup id a release record names (`backup`), or "" (none, skipped, unreadable)."""
    try:
        meta = json.loads(release_json) if release_json.strip() else {}
    except ValueError:
        return ""
    taken = meta.get("backup") if isinstance(meta, dict) else None
    return taken if isinstance(taken, str) and ID.fullmatch(taken) else ""


def id_order(backup_id: str) -> tuple[str, int]:
    stamp, _, n = backup_id.partition(".")
    return stamp, int(n or 1)


def list_backups(host: RemoteHost, config: Config, env: str | None = None) -> Listing:
    """The backups on the host; for one env, also the host's time and its live release's
    pre-deploy backup (one round trip)."""
    command = commands.backup_records(root(config)) if env is None else \
        commands.backup_state(root(config), f"{Layout.of(config, env).current}/release.json")
    listing = parse_listing(host.run(command, what="list backups"))
    if env is not None:
        database = config.environments[config.require_env(env)].database
        listing.backups = [b for b in listing.backups if b.database == database]
        listing.orphans = [o for o in listing.orphans if o.startswith(f"{database}/")]
        listing.broken = [o for o in listing.broken if o.startswith(f"{database}/")]
    return listing
