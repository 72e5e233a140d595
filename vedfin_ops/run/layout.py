"""Where things live on the host, and the pure decisions about releases.

```
<base>/audit.log                       one JSON line per action
<base>/shared.hash                     hash of the shared stack last deployed
<base>/shared -> shared.d/<hash>/      the shared stack's files last promoted (+ `engine.json`)
<base>/.shared.lock/                   held while the shared stack changes, db-init runs or a
                                       database is restored
<base>/backups/<database>/<id>.dump    a backup, its record beside it (`<id>.json`)
<base>/bin/                            the cron scripts (nightly backups, off-hours)
<base>/offhours.log                    one line per off-hours run
<base>/<env>/releases/<UTC>-<hash>/    a rendered release (+ `state`, `reason`, `release.json`,
                                       and `engine.json`: the engine's specs once it was live)
<base>/<env>/current -> releases/...   the live, verified release
<base>/<env>/.lock/holder              present while a run holds <env> (`holder_line`)
```

The records that both the tool's runs and the cron scripts write have one writer each here
(`audit_line`, `holder_line`), so the two can never write them differently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vedfin_ops.config.model import Config

SHARED_PREFIXES = ("stacks/shared.yml", "env/postgres.env", "db/", "edge/")
GOOD = "good"


@dataclass(frozen=True)
class Layout:
    base: str
    env: str

    @classmethod
    def of(cls, config: Config, env: str) -> Layout:
        return cls(config.remote.base_dir.rstrip("/"), env)

    @classmethod
    def of_host(cls, config: Config) -> Layout:
        """For the host-wide paths only (backups, the cron scripts, the off-hours log)."""
        return cls(config.remote.base_dir.rstrip("/"), "")

    @property
    def backups(self) -> str:
        return f"{self.base}/backups"

    @property
    def bin(self) -> str:
        return f"{self.base}/bin"

    @property
    def offhours_log(self) -> str:
        return f"{self.base}/offhours.log"

    @property
    def env_dir(self) -> str:
        return f"{self.base}/{self.env}"

    @property
    def releases(self) -> str:
        return f"{self.env_dir}/releases"

    @property
    def current(self) -> str:
        return f"{self.env_dir}/current"

    @property
    def lock(self) -> str:
        return f"{self.env_dir}/.lock"

    @property
    def audit(self) -> str:
        return f"{self.base}/audit.log"

    @property
    def shared_hash(self) -> str:
        return f"{self.base}/shared.hash"

    @property
    def shared_dir(self) -> str:
        """A link to the shared stack's files last promoted (by whichever env), kept whole in
        a folder of their own so that its stack file's `../edge/Caddyfile` and `../db/...`
        name those files, not a later release's: what a put-back redeploys."""
        return f"{self.base}/shared"

    @property
    def shared_store(self) -> str:
        """Every kept set of shared files, a folder each (pruned to the linked one)."""
        return f"{self.base}/shared.d"

    def shared_files(self, digest: str) -> str:
        """The folder of the shared files whose hash is `digest` (the link's target)."""
        return f"{self.shared_store}/{digest}"

    @property
    def shared_engine(self) -> str:
        """The engine's specs of postgres, redis and the edge when those files went live:
        the no-op check and `status` compare the engine with it."""
        return f"{self.shared_dir}/engine.json"

    @property
    def legacy_shared_file(self) -> str:
        """Where earlier versions kept a bare copy of the shared stack file (its relative
        paths named no files of its own); removed at the next promote of the shared stack."""
        return f"{self.base}/shared.yml"

    @property
    def shared_lock(self) -> str:
        return f"{self.base}/.shared.lock"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"


def audit_line(time: str, who: str, env: str, action: str, result: str, *, release: str = "",
               tag: str = "", detail: str = "") -> str:
    """One line of `<base>/audit.log`, the only writer of its format: every run's
    (`operation.audit`) and the off-hours cron script's (its time a placeholder the script
    fills in)."""
    return json.dumps({"time": time, "who": who, "env": env, "action": action,
                       "release": release, "tag": tag, "result": result, "detail": detail},
                      ensure_ascii=False)


def holder_line(who: str, host: str, pid: int, since: str, action: str, tag: str = "") -> str:
    """What a lock says about its holder (`lock.Holder` reads it back), the only writer of
    its format: the tool's runs (`lock.Lock`) and the cron scripts (`schedule/crontab.py`)."""
    return json.dumps({"who": who, "host": host, "pid": pid, "since": since, "action": action,
                       "tag": tag})


def content_hash(files: Mapping[str, str], only: tuple[str, ...] | None = None) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        if only is None or path.startswith(only):
            digest.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return digest.hexdigest()[:12]


def shared_hash(files: Mapping[str, str]) -> str:
    return content_hash(files, SHARED_PREFIXES)


def release_id(now: datetime, digest: str) -> str:
    """Sorts by time; the hash says whether two releases hold the same files."""
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{digest}"


def digest_of(release: str) -> str:
    return release.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class Listing:
    releases: list[tuple[str, str]]  # (id, state), oldest first
    current: str | None
    shared: str | None = None  # hash of the shared stack last deployed
    meta: dict[str, Any] = field(default_factory=dict)  # current's release.json
    engine: dict[str, dict[str, str]] = field(default_factory=dict)  # current's engine.json
    migrating: list[str] = field(default_factory=list)  # migration containers still running
    problems: list[str] = field(default_factory=list)  # records that could not be read

    def state(self, release: str) -> str | None:
        return dict(self.releases).get(release)

    def previous_good(self) -> str | None:
        """The newest good release older than `current` (what rollback goes back to)."""
        ids = [r for r, s in self.releases if s == GOOD]
        if self.current in ids:
            ids = ids[:ids.index(self.current)]
        elif self.current is not None:
            ids = [r for r in ids if r < self.current]
        return ids[-1] if ids else None

    def to_prune(self, keep: int) -> list[str]:
        """Oldest first beyond `keep`, never `current` nor the good release before it."""
        protected = {self.current, self.previous_good()}
        ids = [r for r, _ in self.releases]
        return [r for r in ids[:-keep] if r not in protected] if keep > 0 else []


def parse_listing(text: str) -> Listing:
    releases: list[tuple[str, str]] = []
    current: str | None = None
    shared: str | None = None
    records: dict[str, dict[str, Any]] = {}
    migrating: list[str] = []
    problems: list[str] = []
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "current":
            current = rest.strip().rsplit("/", 1)[-1] or None
        elif kind == "shared":
            shared = rest.strip() or None
        elif kind == "R":
            name, _, state = rest.partition(" ")
            if name and not name.startswith("."):
                releases.append((name, state.strip() or "unknown"))
        elif kind in ("meta", "engine") and rest.strip():
            try:
                found = json.loads(rest)
            except ValueError:
                found = None
            if isinstance(found, dict):
                records[kind] = found
            else:
                problems.append(f"{current or 'current'}/"
                                f"{'release' if kind == 'meta' else 'engine'}.json is not "
                                f"a JSON object")
        elif kind == "migrating":
            migrating = rest.split()
    return Listing(sorted(releases), current, shared, records.get("meta", {}),
                   records.get("engine", {}), migrating, problems)


@dataclass(frozen=True)
class Record:
    """One release as `status` shows it: what release.json says, and how it ended."""

    id: str
    state: str
    meta: dict[str, Any] = field(default_factory=dict)  # release.json ({} if missing/corrupt)
    reason: str = ""  # the `reason` file (written with `failed` and `interrupted`)
    readable: bool = True  # False: release.json is there but not a JSON object

    def text(self, key: str) -> str | None:
        value = self.meta.get(key)
        return None if value is None or isinstance(value, dict | list) else str(value)


@dataclass(frozen=True)
class Records:
    releases: list[Record]  # oldest first
    base_exists: bool = True


def parse_records(text: str) -> Records:
    """The output of `commands.release_records` (other lines are ignored)."""
    found: dict[str, dict[str, Any]] = {}
    base_exists = True
    name: str | None = None
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "base":
            base_exists = rest.strip() != "no"
        elif kind == "rec":
            name = rest
            if name and not name.startswith("."):
                found[name] = {"id": name, "state": "unknown"}
            else:
                name = None
        elif name is None:
            continue
        elif kind == "rec.state":
            found[name]["state"] = rest.strip() or "unknown"
        elif kind == "rec.reason":
            found[name]["reason"] = " ".join(rest.split())
        elif kind == "rec.json" and rest.strip():
            try:
                meta = json.loads(rest)
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                found[name]["meta"] = meta
            else:
                found[name]["readable"] = False
    return Records([Record(**found[n]) for n in sorted(found)], base_exists)
