"""Off-host copies of backups in an S3 bucket (`backups.s3`; Cloudflare R2 speaks the S3 API).

A backup on the host dies with the host. Each backup is streamed from the host over the SSH
link's SFTP channel straight into the bucket (boto3's multipart upload; no copy on this
machine), as `<prefix><stackPrefix>/<database>/<id>.dump` with its record beside it as
`<id>.json`: named by the config's stackPrefix, so two configs writing to one bucket each
count and prune only their own copies. The record goes last: a copy whose record is missing
was cut, and is neither listed nor restored. Each object is stored with server-side
encryption (AES256) where the endpoint implements it (R2 encrypts every object at rest and
implements no SSE header). Before a dump is uploaded its sha256 is appended to the host's own
list (`<base>/backups/offsite.sha256`, sha256sum's format): the record in the bucket sits
beside the dump, and whoever can replace one can replace both.
`db.restore --from s3:ID` refuses a copy whose record's sha256 is not the one this host
copied, streams the dump back into the host's backup folder, checks its sha256 against the
record, and restores it as any backup on the host.

Error messages from the S3 endpoint are data: shown as one line, with secrets redacted.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vedfin_ops.backups.records import ID, Backup, folder, id_order, list_backups, root
from vedfin_ops.config.model import BackupS3, Config
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.run.operation import describe

PART = 16 * 1024 * 1024  # multipart chunks: 10,000 parts hold 156 GiB


@dataclass(frozen=True)
class Bucket:
    """An S3 client for the configured bucket, its secrets resolved."""

    settings: BackupS3
    client: Any
    owner: str  # the config's stackPrefix: its copies are its own folder of the bucket
    secrets: tuple[str, ...] = ()  # redacted from whatever the endpoint says
    legacy: bool = False  # the layout before copies were named by stackPrefix (reads only)

    def said(self, exc: BaseException) -> str:
        """What the endpoint said, one line, the keys and the account id (in URLs) masked."""
        from vedfin_ops.config.secret_store import masked

        return masked(said(exc), self.secrets)

    def folder(self, database: str) -> str:
        if self.legacy:
            return f"{self.settings.prefix}{database}/"
        return f"{self.settings.prefix}{self.owner}/{database}/"

    def key(self, database: str, backup_id: str, ext: str) -> str:
        return f"{self.folder(database)}{backup_id}.{ext}"

    @property
    def where(self) -> str:
        if self.legacy:
            return f"s3://{self.settings.bucket}/{self.settings.prefix}"
        return f"s3://{self.settings.bucket}/{self.settings.prefix}{self.owner}/"


def encryption(settings: BackupS3) -> dict[str, str]:
    """What each upload asks for: server-side encryption (SSE-S3, AES256), except on R2,
    which encrypts every object at rest and implements none of the SSE headers, and where
    the config says `serverSideEncryption: none` (a store that refuses the header)."""
    if settings.server_side_encryption == "none" or \
            re.search(r"\.r2\.cloudflarestorage\.com(:[0-9]+)?(/|$)", settings.endpoint):
        return {}
    return {"ServerSideEncryption": "AES256"}


def ledger(config: Config) -> str:
    """The host's list of what it copied off-host: `<sha256>  <database>/<id>.dump` lines."""
    return f"{root(config)}/offsite.sha256"


def copied_sha256(text: str, database: str, backup_id: str) -> set[str]:
    """The sha256s the ledger gives for a copy (one, unless the list was edited by hand)."""
    name = f"{database}/{backup_id}.dump"
    return {line.split()[0] for line in text.splitlines()
            if len(line.split()) == 2 and line.split()[1] == name}


def endpoint_url(settings: BackupS3, secrets: Mapping[str, str]) -> str:
    """The endpoint with its `${SECRET}` parts filled in (R2's account id)."""
    def fill(match: re.Match[str]) -> str:
        value = secrets.get(match.group(1))
        if not value:
            raise CheckFailed(f"backups.s3.endpoint: ${{{match.group(1)}}} is not set")
        return value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", fill, settings.endpoint)


def bucket(config: Config, secrets: Mapping[str, str]) -> Bucket | None:
    """The configured bucket, or None when `backups.s3` is not set."""
    settings = config.backups.s3
    if settings is None:
        return None
    keys = {}
    for field, name in (("accessKeyId", settings.access_key_id[2:-1]),
                        ("secretAccessKey", settings.secret_access_key[2:-1])):
        if not secrets.get(name):
            raise CheckFailed(f"backups.s3.{field}: ${{{name}}} is not set (add it to the "
                              f"secrets file, or export it)")
        keys[field] = secrets[name]
    from vedfin_ops import extras

    extras.require("boto3", f"{config.source}: backups.s3")
    import boto3  # only when S3 is used: botocore takes a while to import
    from botocore.config import Config as BotoConfig

    owner = config.remote.stack_prefix
    masked = Bucket(settings, None, owner, tuple(v for v in secrets.values() if v))
    try:
        client = boto3.client(
            "s3", endpoint_url=endpoint_url(settings, secrets), region_name=settings.region,
            aws_access_key_id=keys["accessKeyId"],
            aws_secret_access_key=keys["secretAccessKey"],
            verify=settings.ca_root or True,
            config=BotoConfig(connect_timeout=10, read_timeout=60,
                              retries={"max_attempts": 3, "mode": "standard"},
                              # R2 and older S3 servers reject the CRC32 trailers boto3 adds
                              # since 1.36 unless asked only when required
                              request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"))
    except ValueError as exc:  # an endpoint a filled-in secret made invalid, say
        raise CheckFailed(f"backups.s3.endpoint: {masked.said(exc)}") from None
    return Bucket(settings, client, owner, masked.secrets)


def said(exc: BaseException) -> str:
    """What the endpoint said, one line: its error code and message, not a traceback."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        return " ".join(f"{error.get('Code', '')}: {error.get('Message', '')}".split())
    return " ".join(f"{type(exc).__name__}: {exc}".split())


Beat = Callable[[], None]


def _beating(beat: Beat | None) -> Callable[[int], None] | None:
    """boto3's progress callback (called per chunk, in this thread): the caller's lock
    heartbeat (it beats at most every 15 s), so a long transfer never looks stale."""
    if beat is None:
        return None

    def progress(_bytes: int) -> None:
        beat()

    return progress


def upload(host: RemoteHost, target: Bucket, config: Config, backup: Backup,
           beat: Beat | None = None) -> str:
    """The backup's dump, then its record, into the bucket; the object's size is checked
    against the record's. Returns the dump's key. A failed upload aborts its multipart
    upload (boto3 does); an interrupted one may leave parts: an
    AbortIncompleteMultipartUpload lifecycle rule on the bucket clears them."""
    from boto3.s3.transfer import TransferConfig

    dump = f"{folder(config, backup.database)}/{backup.id}.dump"
    key = target.key(backup.database, backup.id, "dump")
    s3, name = target.client, target.settings.bucket
    sse = encryption(target.settings)
    host.run(commands.append_once(ledger(config),
                                  f"{backup.sha256}  {backup.database}/{backup.id}.dump"),
             what="record off-host copy")
    try:
        with host.open_read(dump) as source:
            s3.upload_fileobj(source, name, key,
                              ExtraArgs={"Metadata": {"sha256": backup.sha256}, **sse},
                              Callback=_beating(beat),
                              Config=TransferConfig(multipart_chunksize=PART,
                                                    multipart_threshold=PART,
                                                    use_threads=False))
        size = s3.head_object(Bucket=name, Key=key)["ContentLength"]
        if size != backup.size:
            raise CheckFailed(f"s3://{name}/{key} holds {size} bytes, the backup "
                              f"{backup.size}")
        s3.put_object(Bucket=name, Key=target.key(backup.database, backup.id, "json"),
                      Body=json.dumps(backup.to_dict()).encode(),
                      ContentType="application/json", **sse)
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(f"upload to {target.where}: {target.said(exc)}") from None
    return key


def copy_ids(target: Bucket, database: str) -> list[str]:
    """Ids of the database's copies whose record is in the bucket, oldest first."""
    return _listed(target, database)[0]


def _listed(target: Bucket, database: str) -> tuple[list[str], list[str]]:
    """(ids with a record, ids of dumps without one: uploads cut before their record), each
    oldest first; one LIST per 1000 keys."""
    s3, name = target.client, target.settings.bucket
    prefix = target.folder(database)
    records: list[str] = []
    dumps: list[str] = []
    try:
        # asked for the config's own keys without any `/` of ours (moto's server, the
        # sandbox's S3, miscomputes the signature of a `/` in a query: getmoto/moto#5948);
        # the other databases' keys are filtered here
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=name, Prefix=f"{target.settings.prefix}{target.owner}")
        for page in pages:
            for item in page.get("Contents", []):
                if not item["Key"].startswith(prefix):
                    continue
                stem, _, ext = item["Key"][len(prefix):].rpartition(".")
                if ID.fullmatch(stem) and ext in ("json", "dump"):
                    (records if ext == "json" else dumps).append(stem)
    except Exception as exc:
        raise CheckFailed(f"list {target.where}{database}/: {target.said(exc)}") from None
    orphans = [i for i in dumps if i not in set(records)]
    return sorted(records, key=id_order), sorted(orphans, key=id_order)


def read_copy(target: Bucket, database: str, backup_id: str) -> Backup | None:
    """A copy's record, or None when it is missing or not a backup's."""
    try:
        body = target.client.get_object(Bucket=target.settings.bucket,
                                        Key=target.key(database, backup_id, "json"))["Body"]
        backup = Backup.from_record(json.loads(body.read()))
    except ValueError:
        return None
    except Exception as exc:
        if "NoSuchKey" in said(exc):
            return None
        raise CheckFailed(f"read {target.where}{database}/{backup_id}.json: "
                          f"{target.said(exc)}") from None
    ok = backup is not None and backup.id == backup_id and backup.database == database
    return backup if ok else None


def list_copies(target: Bucket, database: str) -> list[Backup]:
    """The database's copies in the bucket, records read, oldest first."""
    found = (read_copy(target, database, i) for i in copy_ids(target, database))
    return [b for b in found if b is not None]


def prune(target: Bucket, database: str, ids: list[str], protect: str,
          orphans: Sequence[str] = ()) -> list[str]:
    """All but the newest `backups.s3.keep` copies removed (records first: a copy without its
    record is never listed), and dumps whose upload was cut before their record; returns the
    ids removed. `protect` (the copy just made, or being made) is never removed."""
    keep = target.settings.keep
    old = ids[:-keep] if len(ids) > keep else []
    old = [i for i in old if i != protect]
    s3, name = target.client, target.settings.bucket
    for backup_id in old:
        for ext in ("json", "dump"):
            s3.delete_object(Bucket=name, Key=target.key(database, backup_id, ext))
    cut = [i for i in orphans if i != protect]
    for backup_id in cut:
        s3.delete_object(Bucket=name, Key=target.key(database, backup_id, "dump"))
    return old + cut


def require_copied(config: Config, env: str | None, task: str) -> list[str]:
    """`task` reads `env`'s copies in the bucket (None: every copied env's): refused (exit
    2) when there are none to read: no `backups.s3`, or `env` not in `backups.s3.envs`.
    Returns the envs whose copies it reads."""
    s3 = config.backups.s3
    if s3 is None:
        raise UsageError(f"{task} needs backups.s3 in the config")
    envs = s3.envs if env is None else [env]
    if not envs:
        raise UsageError(f"{config.source}: backups.s3.envs: no env's backups are copied "
                         f"off-host (envs: [])")
    for one in envs:
        if one not in s3.envs:
            raise UsageError(f"{config.source}: backups.s3.envs: {one}'s backups are not "
                             f"copied off-host (envs: {', '.join(s3.envs) or '[]'})")
    return list(envs)


def offsite_copy(host: RemoteHost, config: Config, backup: Backup, say: Callable[[str], None],
                 beat: Beat | None = None, catch_up: bool = True) -> str | None:
    """Upload one backup, then (with `catch_up`) every backup of its database the bucket
    lacks (the host's nightly ones: cron has no S3 client), then the bucket's retention. None
    when no bucket is set or the backup's env is not in `backups.s3.envs`. A failed upload of
    `backup` raises CheckFailed saying the backup on the host is whole; the rest is a
    warning."""
    if not config.backups.offsite(backup.env):
        return None
    from vedfin_ops.config import secret_store

    try:
        target = bucket(config, secret_store.resolve(config, backup.env))
        assert target is not None
        say(f"backup: copying {backup.id} to {target.where}")
        key = upload(host, target, config, backup, beat)
    except Exception as exc:
        raise CheckFailed(f"backup {backup.id} is whole on the host, but its off-host copy "
                          f"failed: {describe(exc)}") from None
    if catch_up:
        try:
            copy_missing(host, config, target, backup.env, backup.database, say, beat,
                         protect=backup.id)
        except Exception as exc:  # this backup's copy is made; the rest waits for the next
            say(f"warning: older backups not copied off-host: {describe(exc)}")
    return f"s3://{target.settings.bucket}/{key}"


def copy_missing(host: RemoteHost, config: Config, target: Bucket, env: str, database: str,
                 say: Callable[[str], None], beat: Beat | None = None,
                 protect: str = "") -> list[str]:
    """Every backup of the database on the host that the bucket lacks, uploaded, oldest
    first; then the bucket's retention. Returns the ids copied; raises CheckFailed (each
    backup is whole on the host: the next run tries again)."""
    ids, orphans = _listed(target, database)
    behind = [b for b in list_backups(host, config, env).backups
              if b.id not in ids and b.database == database]
    for missing in behind:
        say(f"backup: copying {missing.id} ({missing.reason}) to {target.where}")
        upload(host, target, config, missing, beat)
    try:
        gone = prune(target, database, sorted([*ids, *(b.id for b in behind)], key=id_order),
                     protect, [o for o in orphans if o not in {b.id for b in behind}])
    except Exception as exc:  # the copies are made; old ones stay until the next run
        say(f"warning: old copies in {target.where} not pruned: {target.said(exc)}")
        gone = []
    if gone:
        say(f"backup: {len(gone)} old copies removed from {target.where}")
    return [b.id for b in behind]


def fetch(host: RemoteHost, config: Config, env: str, backup_id: str,
          secrets: Mapping[str, str], say: Callable[[str], None],
          beat: Beat | None = None) -> Backup:
    """`s3:ID`: the copy streamed into the host's backup folder (partial file, sha256
    checked, then renamed with its record), so it restores as any backup on the host. A
    backup of the same id already on the host is used when its sha256 matches and refused
    when it does not (never overwritten); the disk must have room for the copy first."""
    require_copied(config, config.require_env(env), "db.restore --from s3:ID")
    target = bucket(config, secrets)
    assert target is not None
    database = config.environments[env].database
    backup = read_copy(target, database, backup_id) if ID.fullmatch(backup_id) else None
    if backup is None and ID.fullmatch(backup_id):
        # a copy made before copies were named by stackPrefix: still restorable
        earlier = replace(target, legacy=True)
        backup = read_copy(earlier, database, backup_id)
        if backup is not None:
            target = earlier
            say(f"restore: {backup_id} found in {earlier.where}{database}/ (the layout "
                f"before copies were named by stackPrefix)")
    if backup is None:
        known = ", ".join(copy_ids(target, database)[-5:]) or "none"
        raise UsageError(f"db.restore: no copy {backup_id} of {database} in {target.where} "
                         f"(latest: {known})")
    recorded = copied_sha256(host.run(commands.read_file(ledger(config)),
                                      what="off-host copies"), database, backup.id)
    if recorded and backup.sha256 not in recorded:
        raise CheckFailed(f"the copy of {backup.id} in {target.where} is not the one this host "
                          f"copied (its record says sha256 {backup.sha256[:12]}..., this host "
                          f"copied {sorted(recorded)[0][:12]}...); nothing changed")
    if not recorded:
        say(f"restore: this host has no record of copying {backup.id} (a new host?): the "
            f"bucket's record is trusted")
    here = [b for b in list_backups(host, config, env).backups if b.id == backup.id]
    if here and here[0].sha256 == backup.sha256:
        say(f"restore: {backup.id} is on the host already (same sha256); not fetched")
        return here[0]
    if here:
        raise CheckFailed(f"a different backup {backup.id} is on the host (sha256 "
                          f"{here[0].sha256[:12]}..., the bucket's {backup.sha256[:12]}...); "
                          f"restore it by its id, or move it away first")
    where = folder(config, database)
    partial = f"{where}/.partial-s3-{backup.id}.dump"
    free = host.run(commands.all_of(commands.private_folder(where), commands.free_kib(where)),
                    what="backup folder").strip()
    if free.isdigit() and int(free) * 1024 < backup.size * 1.1:
        raise CheckFailed(f"not enough room to fetch {backup.id}: {int(free)} KiB free in "
                          f"{where}, the copy is {backup.size // 1024} KiB; nothing changed")
    say(f"restore: fetching {backup.id} ({backup.size} bytes) from {target.where}")
    from boto3.s3.transfer import TransferConfig

    try:
        with host.open_new(partial, 0o600) as sink:
            target.client.download_fileobj(target.settings.bucket,
                                           target.key(database, backup.id, "dump"), sink,
                                           Callback=_beating(beat),
                                           Config=TransferConfig(use_threads=False))
        sha = host.run(commands.file_sha256(partial), what="checksum").strip()
        if sha != backup.sha256:
            raise CheckFailed(f"the copy of {backup.id} in {target.where} is corrupted (its "
                              f"sha256 is {sha[:12]}..., its record says "
                              f"{backup.sha256[:12]}...); nothing changed")
        host.run(commands.keep_fetched(partial, f"{where}/{backup.id}.dump",
                                       f"{where}/{backup.id}.json",
                                       json.dumps(backup.to_dict())),
                 what="keep fetched backup")
    except BaseException as exc:  # nothing half-fetched stays, whatever stopped it
        with contextlib.suppress(Exception):
            host.run(commands.remove_files([partial]), what="remove partial", check=False)
        if isinstance(exc, CheckFailed) or not isinstance(exc, Exception):
            raise
        raise CheckFailed(f"download from {target.where}: {target.said(exc)}") from None
    return backup
