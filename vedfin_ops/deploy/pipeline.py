"""The pipeline of `fab -H HOST deploy --env E` (`deploy.<env>`): Task 2.4 of the runbook.

In order (`deploy()`, then `Deploy.body()`, whose last step `promote` runs the steps of
`Deploy.after_live()` through `after_live.run_steps`):

 here, before the host:  check the env, the shared stack's owner, the tag and the secrets
                         -> with --build: build and push the env's images (at the commit)
                         -> resolve image digests (registry) -> render every file
 on the host, locked:    inspect (records, engine; a no-op when nothing changed)
                         -> refuse an unsafe start -> preflight -> backup -> push the release
                         -> shared stack and db-init (under the shared lock) -> migrate
                         -> rollout (watched until only the new tasks serve) -> verify
                         (smoke and logs through the edge, while the engine's monitor window
                         runs out) -> the engine's `completed` -> promote (`current` moves;
                         audit line)
 after live, best effort: prune releases, prune images, schedule, off-hours, off-hours
                         settle, Netdata, Uptime Kuma, off-site copy, checklist (each a
                         warning if it fails; one that builds on a failed one is skipped)

Nothing moves `current` but a verified release. A failure before the migration or the engine
moved leaves the services as they were; after that, `Deploy.put_back` (run by
`operation.Operation`) undoes what this run moved: a migration still running is stopped, the
env's services go back on the live release and the shared stack on its earlier files.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from fabric import Connection

from vedfin_ops import extras
from vedfin_ops.backups import backup as backup_step
from vedfin_ops.checks.endpoints import routes
from vedfin_ops.checks.preflight import preflight as real_preflight
from vedfin_ops.checks.receipt import Probe
from vedfin_ops.checks.receipt import probe as receipt_probe
from vedfin_ops.config import secret_store
from vedfin_ops.config.model import Config
from vedfin_ops.config.names import shared_stack_name
from vedfin_ops.config.roles import shared_owner
from vedfin_ops.deploy.after_live import Step, run_steps
from vedfin_ops.deploy.build import Built, build_images, building, check_build_first
from vedfin_ops.deploy.db_init import db_init as real_db_init
from vedfin_ops.deploy.images import prunable_images, resolve_pins
from vedfin_ops.deploy.migrate import migrate as real_migrate
from vedfin_ops.deploy.migrate import stop_migrations
from vedfin_ops.deploy.options import SAFE, DeployOptions
from vedfin_ops.deploy.rollout import (
    RolloutFailed,
)
from vedfin_ops.deploy.volumes import judge_adoption, moves_onto
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.monitoring.checklist import MIGRATE_RECORD
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import HANDSHAKES, Host, RemoteError, RemoteHost
from vedfin_ops.remote.probes.engine import ServiceView, parse_snapshot, snapshot
from vedfin_ops.rendering.files import Rendered, render
from vedfin_ops.run.env_run import (
    EnvRun,
    as_host,
    configured_replicas,
    drift,
    engine_reasons,
    engine_record,
    expected_images,
    shared_drift,
    shared_images,
    stack_file_images,
    verify,
)
from vedfin_ops.run.layout import (
    GOOD,
    SHARED_PREFIXES,
    Listing,
    content_hash,
    release_id,
    shared_hash,
)
from vedfin_ops.run.lock import Lock, now_iso, shared_lock, who
from vedfin_ops.run.operation import Say, Show, audit, bare, describe
from vedfin_ops.run.polling import REAL, Clock
from vedfin_ops.run.together import beside, one_at_a_time

SHARED_LOCK_WAIT = 120.0
UNKNOWN_SHARED = "unknown"  # shared.hash when the shared stack runs files nobody recorded
LOG_LINES_SHOWN = 5

MIGRATE_LINES = 5


def deploy(conn: Connection | Host, config: Config, env: str, tag: str | None = None,
           options: DeployOptions = SAFE, *,
           say: Say = print, show: Show | None = None, hooks: Hooks | None = None,
           clock: Clock = REAL) -> DeployResult:
    """The whole pipeline for any env of the config, `tag` (default: the config's) with
    `options` (`options.build`: first build and push the env's images from the config's work tree
    (`tag` default: its commit)). `say`/`show` print progress, `hooks` and `clock` are the
    tests' fakes. Raises RunFailed/CheckFailed (exit 1) or UsageError (exit 2: an env the
    config does not name, missing secrets, two owners of the shared stack, a work tree
    `build` refuses), the last before anything is built or the host is touched."""
    config.require_env(env)
    shared_owner(config)
    extras.check(config)  # the after-live steps must not be the first to find one missing
    built_from: dict[str, Any] | None = None
    if options.build is not None:
        tag, built_from = check_build_first(config, env, options.build, tag)
    tag = check_tag(tag or config.tag)
    secrets = secret_store.resolve(config, env)
    missing = secret_store.missing(config, env, secrets)
    if missing:
        raise UsageError(secret_store.not_set(config, env, missing))
    pushed: list[Built] = []  # this run's pushes so far, each with the digest its push sent
    # with --build, signals end this phase as Ctrl-C does: docker stopped, one line
    with building(env, pushed, say) if built_from is not None else nullcontext():
        if built_from is not None:
            commit = built_from["commit"]
            say(f"build: {env}'s images at {tag}"
                + (f" (commit {commit})" if commit != tag else ""))
            pushed[:] = build_images(config, tag, secrets, push=True, env=env, say=say,
                                     pushed=pushed)
        # nothing changed if this fails; what this run pushed is pinned as pushed
        pins = resolve_pins(config, env, tag, secrets, say=say,
                            pushed={b.image: b.digest for b in pushed if b.digest})
        files = render(config, env, tag=tag, secrets=secrets, pins=pins)
    handshakes_before = HANDSHAKES["count"]
    host = as_host(conn)
    host.secrets = list(secrets.values())
    run = Deploy(host, config, env, tag, files, secrets=secrets, options=options, hooks=hooks,
                 say=say, show=show, clock=clock, pins=pins, built_from=built_from)
    result: DeployResult = run.execute()
    result.commands = list(host.commands)
    result.handshakes = HANDSHAKES["count"] - handshakes_before
    return result


@dataclass
class DeployResult:
    env: str
    tag: str
    release: str
    result: str  # ok | noop | failed
    detail: str = ""
    services_updated: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    handshakes: int = 0
    receipt: dict[str, Any] = field(default_factory=dict)  # what the rollout's probe measured


@dataclass
class Hooks:
    """The steps orchestration tests swap for fakes: each needs more than a scripted host
    answers (DNS and TLS, a real postgres, a migration in the new image, HTTP through the
    edge)."""

    preflight: Callable[..., Any] = real_preflight
    db_init: Callable[..., Any] = real_db_init
    migrate: Callable[..., bool] = real_migrate
    verify: Callable[..., list[str]] = field(default=lambda config, env, **kw:
                                             verify(config, env, **kw))
    receipt: Callable[[Config, str], Probe | None] = receipt_probe


def now() -> datetime:
    return datetime.now(UTC)


def check_tag(tag: str) -> str:
    from vedfin_ops.config.tags import check_tag as check

    return check(tag)


class Deploy(EnvRun):
    action = "deploy"

    def __init__(self, host: RemoteHost, config: Config, env: str, tag: str, files: Rendered, *,
                 secrets: Mapping[str, str], options: DeployOptions = SAFE,
                 hooks: Hooks | None = None, pins: dict[str, str] | None = None,
                 built_from: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(host, config, env, tag=tag, **kwargs)
        self.say = one_at_a_time(self.say)  # steps run at once: before the rollout, after live
        self.files = files
        self.secrets = secrets  # the env's and the shared ones, resolved once by deploy()
        self.options = options
        # the env whose deploys change the shared stack without --allow-shared (None: none)
        self.shared_owner = shared_owner(config)
        self.backup = ""  # the backup taken before anything changed, or why there is none
        self.adopted_backup = False  # an adopted volume's databases backed up by this run
        self.hooks = hooks or Hooks()
        self.pins = pins or {}  # repo:tag -> repo:tag@sha256:... (empty without a registry)
        self.built_from = built_from  # deploy --build: {commit, branch, dirty} of the source
        self.release = release_id(now(), content_hash(files))
        self.result = DeployResult(env, tag, self.release, "failed")
        self.meta: dict[str, Any] = {}
        self.shared_lock = shared_lock(host, self.layout.shared_lock,
                                       action=f"deploy {env} (shared stack, db-init)", tag=tag,
                                       clock=self.clock)
        self.shared_changes = False  # read under the shared lock: this run rolls it
        self.db_ready = False  # db-init done (beside the backup, or after the release)
        self.migrating = False
        self.migration: dict[str, Any] = {}
        self.promoting = False
        self.shared_touched = False
        self.shared_views: dict[str, ServiceView] = {}  # postgres, redis, edge once rolled
        self.make_probe = self.hooks.receipt

    def body(self) -> DeployResult:
        self.inspect()
        if self.is_noop():
            return self.result
        self.refuse_unsafe_start()
        self.run_preflight()
        self.prepare()
        # the receipt covers the shared stack's roll (the edge, postgres) and the migration
        # too: a user's requests meet those as well
        with self.measured(serving=self.state.current is not None):
            self.shared_and_db_init()
            self.migrate()
            self.rollout()
            self.verify()
            self.settle_rollout()
        self.result.receipt = self.receipt
        self.require_zero_downtime()
        self.promote()
        return self.result

    # -- the steps ------------------------------------------------------------------------
    def is_noop(self) -> bool:
        """Nothing to do only when the same files are live, good, AND the engine runs them."""
        current = self.state.current
        if not current or current.rsplit("-", 1)[-1] != self.release.rsplit("-", 1)[-1] or \
                self.state.state(current) != GOOD:
            return False
        differs = drift(self.state.engine, self.state.meta.get("images", {}), self.views,
                        configured_replicas(self.config, self.env))
        if self.state.shared != shared_hash(self.files):
            differs.append("the shared stack (postgres, redis, edge) was last deployed from "
                           "other files")
        else:
            differs += self.shared_engine_drift()
        if differs:
            self.say(f"the engine does not run {current} as recorded ({'; '.join(differs)}); "
                     f"deploying it again")
            return False
        self.result.release, self.result.result = current, "noop"
        self.result.detail = f"nothing changed: {current} is live"
        self.say(self.result.detail)
        audit(self.host, self.layout, "deploy", "noop", release=current, tag=self.tag)
        return True

    def shared_engine_drift(self) -> list[str]:
        stack = shared_stack_name(self.config)
        record = self.host.run(commands.read_file(self.layout.shared_engine),
                               what="read shared record")
        if not record.strip():
            return []
        views = parse_snapshot(self.host.run(snapshot([stack], cluster=self.config.multi_node),
                                             what="read shared services"))
        return shared_drift(record, views, stack)

    def shared_runs_otherwise(self) -> bool:
        """The same shared files, but the engine runs postgres, redis or the edge on another
        spec than recorded (a put-back cut short, a change by hand): deployed again by the
        env that owns them (or --allow-shared); any other env only says so."""
        differs = self.shared_engine_drift()
        if not differs:
            return False
        if self.owns_shared or self.options.allow_shared:
            self.say(f"the shared stack does not run its recorded files "
                     f"({'; '.join(differs)}); deploying them again")
            return True
        self.say(f"warning: {'; '.join(differs)} ({self.owners_deploy} puts it back)")
        return False

    def refuse_unsafe_start(self) -> None:
        self.refuse_unplaceable()
        if self.state.migrating:
            raise CheckFailed(f"a migration of {self.env} is still running "
                              f"({', '.join(self.state.migrating)}); wait for it, or stop it: "
                              f"docker rm -f {' '.join(self.state.migrating)}")
        changes_shared = self.state.shared != shared_hash(self.files)
        if changes_shared and not self.owns_shared and not self.options.allow_shared:
            owner = self.shared_owner
            whose = (f"that {owner} also runs; deploy {owner} first," if owner else
                     "that no env owns (environments.<env>.ownsShared);")
            raise CheckFailed(f"this deploy of {self.env} would change the shared stack "
                              f"(postgres, redis, edge) {whose} or pass --allow-shared if you "
                              f"mean it")

    @property
    def owns_shared(self) -> bool:
        """This env's deploys change the shared stack (and the host's alarms) by right."""
        return self.env == self.shared_owner

    @property
    def owners_deploy(self) -> str:
        """Who puts the shared stack back on its own files, in a message's words."""
        return (f"a deploy of {self.shared_owner}" if self.shared_owner else
                "a deploy with --allow-shared")

    @property
    def edge_starts(self) -> bool:
        """No edge serves this config's TLS before this run: a first deploy, or the shared
        stack (the edge's files among them) changes, e.g. an env moving to HTTPS; in Traefik
        mode, whose routes are the env's own labels, also a change of the env's routes (a
        new domain). Its certificates are then pending at preflight and waited for at
        verify."""
        if self.state.current is None or self.state.shared != shared_hash(self.files):
            return True
        return (self.config.edge.mode == "traefik"
                and self.state.meta.get("routes") != routes(self.config, self.env))

    def run_preflight(self) -> None:
        if self.options.skip_preflight:
            self.step("preflight: skipped (--skip-preflight; recorded in the audit log)")
            audit(self.host, self.layout, "preflight", "skipped", release=self.release,
                  tag=self.tag)
            return
        self.step("preflight: the pre-deployment checklist")
        checklist = self.hooks.preflight(self.host, self.config, self.env,
                                         force=self.options.force,
                                         first_deploy=self.edge_starts)
        for check in checklist.checks:
            if check.warning:
                self.say(f"preflight: {check.name}: {check.detail}")
            if check.detail.startswith("warning: forced"):
                audit(self.host, self.layout, "capacity-gate", "forced", release=self.release,
                      tag=self.tag, detail=check.detail)
        if not checklist.passed:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in checklist.checks if not c.ok)
            raise CheckFailed(f"preflight failed: {failed} (--skip-preflight to deploy anyway)")

    def backup_database(self) -> None:
        """The env's database dumped before anything changes: an old image redeployed does
        not undo a migration. A failed backup stops the deploy here, nothing changed."""
        database = self.config.environments[self.env].database
        if self.options.no_backup or not self.config.backups.before_deploy:
            why = "--no-backup" if self.options.no_backup else "backups.beforeDeploy is false"
            self.backup = f"skipped ({why})"
            self.step(f"backup: skipped ({why}; recorded in the audit log)")
            audit(self.host, self.layout, "backup", "skipped", release=self.release,
                  tag=self.tag, detail=why)
            return
        if self.back_up_adopted_volume():
            return
        if self.state.current is None and backup_step.postgres(self.host, self.config) is None:
            self.backup = "none (first deploy: no database yet)"
            self.step(f"backup: {self.backup}")
            return
        self.step(f"backup: {database}, before anything changes")
        try:
            taken = backup_step.take_backup(self.host, self.config, self.env,
                                            f"before deploy of {self.tag}",
                                            wrap=self.keep_alive)
        except CheckFailed as exc:
            raise CheckFailed(f"backup of {database} failed, nothing changed: {exc} "
                              f"(--no-backup to deploy without one)") from None
        if taken is None:
            self.backup = f"none ({database} does not exist yet)"
        else:
            self.backup = taken.id
            self.say(f"backup: {database} {taken.id} ({taken.size} bytes)")

    def back_up_adopted_volume(self) -> bool:
        """When this deploy moves the shared stack onto an adopted volume (Dokploy's data),
        the backup is of the databases in that volume, dumped from it before anything changes
        (`backups/adopted.py`): the shared postgres, if any, runs on other data. The volume is
        judged here too, so a volume that cannot be adopted stops the deploy before the
        push. False when there is no such move (the volume already the shared postgres's, or
        empty)."""
        volume = self.config.postgres.volume
        if not volume.external or self.state.shared == shared_hash(self.files) or \
                not self.judge_volume(quiet=True):
            return False
        self.step(f"backup: the databases in {volume.name}, before the shared stack moves "
                  f"onto it")
        try:
            taken = self.dump_adopted()
        except CheckFailed as exc:
            raise CheckFailed(f"backup of {volume.name} failed, nothing changed: {exc} "
                              f"(--no-backup to deploy without one)") from None
        mine = taken.get(self.env)
        database = self.config.environments[self.env].database
        self.backup = mine.id if mine is not None else f"none ({database} is not in " \
                                                       f"{volume.name})"
        return True

    def copy_offsite(self) -> None:
        """Once the release is live, off the deploy's critical path: the backup this deploy
        took, and any other the bucket lacks (nightly ones, earlier failures), copied
        off-host. The host copy is what a rollback restores, so a failure is a warning; an
        audit line (`backup-copy`) says how it went either way. Only for the envs of
        `backups.s3.envs`."""
        if not self.config.backups.offsite(self.env):
            return
        from vedfin_ops.backups.offsite import bucket, copy_missing

        database = self.config.environments[self.env].database
        try:
            target = bucket(self.config, self.secrets)
            assert target is not None
            copied = copy_missing(self.host, self.config, target, self.env, database,
                                  self.say, self.beat, protect=self.backup)
            result = "ok"
            detail = (f"{', '.join(copied)} copied to {target.where}" if copied else
                      f"nothing new for {target.where}")
        except Exception as exc:
            result, detail = "failed", f"not copied off-host: {describe(exc)}"
            self.say(f"warning: backups {detail} (the next db.backup or deploy tries again)")
        try:
            audit(self.host, self.layout, "backup-copy", result, release=self.release,
                  tag=self.tag, detail=detail)
        except Exception as exc:
            self.say(f"warning: the backup-copy audit line could not be written "
                     f"({describe(exc)})")

    def prepare(self) -> None:
        """The backup, and beside it the release's upload and (when the shared stack stays as
        it is) db-init, and the images' pull: about a second less before the rollout on the
        sandbox's stand-ins, a pull's length with real images. The release appears under
        its name only once the backup is known (release.json names it) and taken: a failed
        backup leaves only a partial upload, which the next deploy removes. db-init only adds
        what is missing, so beside a backup it changes nothing a restore would need."""
        tmp = self.name_release()
        try:
            beside(lambda: self.upload(tmp), self.backup_database, self.pull_images,
                   hold=self.deferred)
        except Exception:
            with contextlib.suppress(Exception):  # else the next deploy's push removes it
                self.host.run(commands.remove_dirs([tmp]), what="remove partial upload")
            raise
        self.place_release(tmp)

    def pull_images(self) -> None:
        """The release's images, pinned by digest, pulled onto the host (a cluster's manager)
        beside the backup, within `remote.rolloutTimeout`: the migration's container and the
        tasks the engine places there then start without a pull (it does not pull a digest
        it holds); a cluster's other nodes still pull their own. Without a registry the
        images are the host's own, by tag: nothing to pull."""
        images = sorted({image for image in expected_images(self.config, self.env, self.tag,
                                                             self.pins).values()
                         if "@sha256:" in image})
        if self.config.registry is None or not images:
            return
        self.step(f"pull: {len(images)} images onto the host")
        self.registry_login()
        try:
            self.host.run(self.lock.keep_alive(commands.pull_images(images)),
                          what="pull images", timeout=self.config.remote.rollout_timeout)
        except RemoteError as exc:
            raise CheckFailed(f"the host could not pull the release's images, nothing "
                              f"changed: {exc}") from None

    def name_release(self) -> str:
        """The release's id (ids sort by time, never by their content hash) and its upload
        folder; nothing on the host yet."""
        stamps = {r.rpartition("-")[0] for r, _ in self.state.releases}
        stamp, _, digest = self.release.rpartition("-")
        n, first = 1, stamp
        while stamp in stamps:  # another release in the same second
            n += 1
            stamp = f"{first}.{n}"
        self.release = self.result.release = f"{stamp}-{digest}"
        return f"{self.layout.releases}/.tmp-{self.release}"

    def upload(self, tmp: str) -> None:
        self.step(f"push: {self.layout.release(self.release)}")
        self.host.run(commands.clean_partial_uploads(self.layout.releases),
                      what="clean partial uploads")
        self.host.put_tree(tmp, {**self.files, "state": "pushed\n"}, Rendered.is_secret)
        if self.shared_stays:
            self.shared_and_db_init(early=True)

    def place_release(self, tmp: str) -> None:
        rid = self.release
        self.meta = {"id": rid, "env": self.env, "tag": self.tag,
                     "created": now().isoformat(timespec="seconds"), "by": who(),
                     "images": expected_images(self.config, self.env, self.tag, self.pins),
                     "shared_hash": shared_hash(self.files),
                     "routes": routes(self.config, self.env),
                     "backup": self.backup,
                     "skip_preflight": self.options.skip_preflight,
                     "force": self.options.force,
                     **({"built_from": self.built_from} if self.built_from else {})}
        self.host.put_tree(tmp, {"release.json": json.dumps(self.meta, indent=2) + "\n"},
                           Rendered.is_secret)
        self.release_dir = self.layout.release(rid)  # before the rename: the link may drop
        self.host.rename(tmp, self.release_dir)      # after it ran

    @property
    def shared_stays(self) -> bool:
        """The shared stack's files are those deployed (as inspect read them): db-init can
        run beside the backup. Read again under the shared lock before it does."""
        return self.state.current is not None and \
            self.state.shared == shared_hash(self.files)

    def shared_and_db_init(self, early: bool = False) -> None:
        """postgres, redis and the edge serve every env: one writer at a time. When this run
        changes them, the shared lock stays held to the end, so a failure can put them back
        before anyone else deploys; its hash is recorded only when the release goes live.
        `early` (beside the backup): db-init only if the shared stack stays; a change found
        under the lock keeps it held and waits for the backup and the release."""
        if self.db_ready:
            return
        if not self.shared_lock.taken:
            self.shared_lock.acquire(wait=SHARED_LOCK_WAIT)
            # what is deployed now, read under the lock (another env may have changed it
            # since inspect), and a copy of its file for the way back
            deployed = self.host.run(commands.read_file(self.layout.shared_hash),
                                     what="read shared hash").strip() or None
            self.state = replace(self.state, shared=deployed)
            self.shared_changes = (self.state.shared != shared_hash(self.files)
                                   or self.shared_runs_otherwise())
        if self.shared_changes:
            if early:
                return
            assert self.release_dir is not None
            edge = ", edge" if self.config.edge.mode == "caddy" else ""
            self.step(f"shared stack: postgres, redis{edge} (changed)")
            self.check_adopted_volume()
            self.shared_touched = True
            updated, self.shared_views = self.roll(shared_stack_name(self.config),
                                                   f"{self.release_dir}/stacks/shared.yml",
                                                   shared_images(self.config))
            self.result.services_updated += updated
        self.step("db-init: databases and extensions")
        db = self.hooks.db_init(self.host, self.config)
        made = db.created_databases + db.created_extensions
        self.say("db-init: " + (f"created {', '.join(made)}" if made else "nothing to do"))
        self.db_ready = True
        if not self.shared_touched:
            problem = self.shared_lock.release()
            if problem:
                self.say(f"warning: {problem}")

    def check_adopted_volume(self) -> None:
        """An external data volume is judged before the shared stack moves onto it (again,
        under the shared lock); a move this run's backup step did not foresee (the shared
        stack changed since `inspect`) backs the volume's databases up here."""
        volume = self.config.postgres.volume
        if not volume.external:
            return
        if self.judge_volume() and not self.adopted_backup and not self.options.no_backup \
                and self.config.backups.before_deploy:
            self.dump_adopted()

    def dump_adopted(self) -> dict[str, Any]:
        """The adopted volume's databases, each backed up as its env's (`backups/adopted.py`)."""
        from vedfin_ops.backups.adopted import back_up_adopted

        taken = back_up_adopted(self.host, self.config,
                                f"before adopting {self.config.postgres.volume.name}",
                                wrap=self.keep_alive, say=self.say)
        self.adopted_backup = True
        return dict(taken)

    def judge_volume(self, quiet: bool = False) -> bool:
        """The external data volume probed and judged (CheckFailed when it cannot be
        adopted), a leftover of an interrupted adoption backup stopped first; True when it
        holds data the shared postgres does not run on yet."""
        from vedfin_ops.backups.adopted import container_name

        volume, postgres = self.config.postgres.volume, self.config.postgres
        self.registry_login()  # the probe runs the postgres image
        own = f"{shared_stack_name(self.config)}_postgres"
        answer = self.host.run(commands.each_of(
            commands.stop_container(container_name(self.config)),
            commands.volume_probe(volume.name, postgres.image)),
            what="check postgres.volume", timeout=300)
        judged = judge_adoption(answer, volume.name, postgres.image, own)
        if not quiet:
            self.say("postgres.volume: " + judged)
        return moves_onto(answer, own)

    def migrate(self) -> None:
        assert self.release_dir is not None
        self.step(f"migrate: {self.tag}")
        self.migrating = True
        self.registry_login()  # the migration container pulls the new image
        said: list[str] = []

        def show(line: str) -> None:
            said.append(line.strip().removeprefix("| "))
            self.say(line)

        ran = self.hooks.migrate(self.host, self.config, self.env, self.tag, self.release_dir,
                                 show=show, keep_alive=self.keep_alive, pins=self.pins)
        if not ran:
            self.say("migrate: nothing to migrate")
        # what verify's "migrations applied" reads from the live release
        self.migration = {"ran": bool(ran), "tag": self.tag, "time": now_iso(),
                          "last_lines": [self.host.redact(line) for line in said[-MIGRATE_LINES:]]}
        self.migrating = False

    def rollout(self) -> None:
        """Until only the new tasks serve, healthy: verify then runs while the engine's
        monitor window runs out (`settle_rollout` waits for the rest of it)."""
        assert self.release_dir is not None
        self.step(f"rollout: {self.stack} -> {self.tag}")
        # Traefik learns of the new tasks at its next look at the engine: through it, the
        # new tasks serve only later (verify then waits for the engine's `completed`)
        early = self.config.edge.mode != "traefik"
        with self.engine_said():
            updated, after = self.roll(self.stack, f"{self.release_dir}/stacks/{self.env}.yml",
                                       expected_images(self.config, self.env, self.tag, self.pins),
                                       self.views, serving=early)
        self.result.services_updated += updated
        self.views = after

    def require_zero_downtime(self) -> None:
        """`--require-zero-downtime` (or `verify.requireZeroDowntime`): a request the probe saw
        fail fails the deploy as a failed verify does, the env put back on its live release.
        A probe that could not run is no proof either way: said, not judged."""
        if not (self.options.require_zero_downtime or self.config.verify.require_zero_downtime):
            return
        if not self.receipt:
            self.say("warning: zero downtime required, but no receipt was taken (no live "
                     "release before, no domain, or verify.receipt is false)")
            return
        if self.receipt.get("failed"):
            raise CheckFailed(f"zero downtime required, but {self.receipt['failed']} of "
                              f"{self.receipt.get('sent')} requests through the edge failed")

    def settle_rollout(self) -> None:
        """The engine's `completed`, after the verify that overlapped its monitor window: a
        new task that fails inside the window is still rolled back by the engine, and this
        deploy fails with it; the release goes live only once the engine will not move."""
        with self.engine_said():
            self.views = self.settle()

    @contextmanager
    def engine_said(self) -> Iterator[None]:
        """A failed rollout's message with what the engine said about its tasks."""
        try:
            yield
        except RolloutFailed as exc:
            why = engine_reasons(self.host, exc.services)
            raise RolloutFailed(f"{bare(str(exc))}{'; tasks: ' + why if why else ''}",
                                exc.services) from None

    def verify(self) -> None:
        self.step("verify: smoke checks through the edge")
        failures = self.hooks.verify(self.config, self.env,
                                     tls_wait=60.0 if self.edge_starts else 0.0)
        failures += self.check_logs()
        if failures:
            raise CheckFailed(f"verify failed: {'; '.join(failures)}")

    def check_logs(self) -> list[str]:
        """The runbook's "no errors in logs" for the tasks this rollout started: a warning
        with the lines, or a failure where `verify.logErrorsFail` says so."""
        from vedfin_ops.monitoring.logs import log_errors, services

        apps = set(services(self.config, self.env))
        names = [name for name in self.result.services_updated if name in apps]
        if not names or not self.config.verify.log_errors:
            return []
        fail = self.config.verify.log_errors_fail
        try:
            found = log_errors(self.host, self.config, self.env, names,
                               since={n: self.views[n].update_started for n in names
                                      if n in self.views and self.views[n].update_started})
        except Exception as exc:
            if fail:
                return [f"logs: not read ({describe(exc)})"]
            self.say(f"warning: the new tasks' logs not read ({describe(exc)})")
            return []
        if not found:
            self.say("verify: no error lines in the new tasks' logs")
            return []
        head = f"{len(found)} error line(s) in the new tasks' logs (verify.logErrors)"
        self.say(f"{'' if fail else 'warning: '}{head}:")
        for line in found[:LOG_LINES_SHOWN]:
            self.say(f"  | {line}")
        if len(found) > LOG_LINES_SHOWN:
            self.say(f"  | ... {len(found) - LOG_LINES_SHOWN} more (fab logs --env {self.env} "
                     f"--grep ...)")
        return [f"logs: {head}"] if fail else []

    def promote(self) -> None:
        """The records first (engine specs, shared hash, state good), then `current` moves:
        the one command that makes the release live. With its audit line, all or nothing
        against signals; pruning old releases after it is best effort."""
        assert self.release_dir is not None
        rid = self.release
        after = Listing([*self.state.releases, (rid, GOOD)], rid)
        prune = [self.layout.release(r) for r in after.to_prune(self.config.remote.keep_releases)]
        records = [commands.write_text(f"{self.release_dir}/engine.json",
                                       json.dumps(engine_record(self.views)))]
        if self.migration:
            records.append(commands.write_text(f"{self.release_dir}/{MIGRATE_RECORD}",
                                               json.dumps(self.migration)))
        if self.receipt:  # the release's record, with what its rollout measured
            records.append(commands.write_text(
                f"{self.release_dir}/release.json",
                json.dumps({**self.meta, "receipt": self.receipt}, indent=2) + "\n"))
        if self.shared_touched:  # still under the shared lock: the shared files went live
            records += self.keep_shared_records()
        self.beat(force=True)  # the locks are still ours right before the release goes live
        with self.shielded():
            self.promoting = True
            self.host.run(commands.all_of(
                *records,
                commands.write_state(self.release_dir, GOOD),
                commands.swap_symlink(self.release_dir, self.layout.current)),
                what="promote release")
            self.release_dir = None  # promoted: nothing to mark on the way out
            self.result.result, self.result.detail = "ok", f"{rid} live"
            self.commit(self.result)
            self.audit_ok("ok", release=rid, tag=self.tag, detail=f"backup {self.backup}"
                          + self.source_note())
        if self.shared_touched:
            self.prune_shared_files()
        steps = self.after_live(prune)
        run_steps(steps[:-1], self.say, hold=self.deferred)
        run_steps(steps[-1:], self.say)  # the checklist reads what the others left
        self.say(f"done: {self.env} runs {self.tag} ({rid})")

    def source_note(self) -> str:
        """The audit line's word on where the images came from (deploy --build only)."""
        made = self.built_from
        if not made:
            return ""
        dirty = f", {made['dirty']} uncommitted file(s)" if made["dirty"] else ""
        return f"; built from {made['commit']} ({made['branch'] or 'no branch'}{dirty})"

    # -- after the release is live: best effort, each a warning when it fails -------------
    def after_live(self, prune: list[str]) -> list[Step]:
        env = self.env
        return [
            Step("prune releases", lambda: self.host.run(commands.remove_dirs(prune),
                                                         what="prune releases"),
                 failed="old releases not pruned"),
            Step("prune images", self.prune_images, failed="old images not pruned",
                 needs="prune releases"),  # only once the releases naming them are gone
            Step("schedule", self.schedule, hint="fab db.schedule",
                 failed="nightly backups and off-hours not scheduled"),
            Step("off-hours", self.keep_off_hours, hint=f"fab scale --env {env} --replicas N",
                 failed="inside the off-hours window, but not scaled down"),
            Step("off-hours settle", self.settle_off_hours, needs="off-hours",
                 failed="a pending off-hours run was not cleared"),
            Step("netdata", self.apply_monitoring, failed="monitoring not applied",
                 hint="fab monitoring.apply"),
            Step("uptime kuma", self.apply_uptime, failed="uptime kuma not applied",
                 hint="fab monitoring.apply"),
            Step("off-site copy", self.copy_offsite),
            # last, alone: it reads the replicas the off-hours step may have set
            Step("checklist", self.post_deployment_checklist, hint=f"fab verify --env {env}",
                 failed="post-deployment checklist not run"),
        ]

    def schedule(self) -> None:
        from vedfin_ops.schedule import nightly

        nightly.apply(self.host, self.config)

    def post_deployment_checklist(self) -> None:
        """The runbook's Post-Deployment Verification on the live release (what the deploy
        has not proven already): a failed box is a warning, the release is live and good."""
        from vedfin_ops.monitoring.checklist import checklist

        report = checklist(self.host, self.config, self.env, after_deploy=True)
        failed = report.failed()
        if failed:
            self.say(f"warning: post-deployment checklist: {'; '.join(failed)} "
                     f"(fab verify --env {self.env})")
        else:
            self.say(f"verify: post-deployment checklist ok ({len(report.items)} items; "
                     f"fab verify --env {self.env} for all of them)")

    def keep_off_hours(self) -> None:
        """Inside the env's off-hours window (the host's clock) the rollout ran at the
        configured replicas; the env goes back to the off-hours count the timer set, until
        the window's end (`--full-replicas` keeps the configured count). When this fails, a
        pending down run stays for cron's retry (the settle step is skipped)."""
        from vedfin_ops.schedule import offhours

        if self.env not in offhours.envs(self.config) or self.options.full_replicas:
            return
        now = self.host.run(commands.host_clock(), what="host time").strip()
        if not offhours.inside(self.config, now):
            return
        wanted = offhours.counts(self.config, self.env, "down")
        self.host.run(commands.scale_services(wanted), what="off-hours scale")
        assert self.config.off_hours is not None
        self.say(f"off-hours: {self.env} back to {self.config.off_hours.replicas} "
                 f"replica(s) per app until {self.config.off_hours.end} (host time "
                 f"{now}; --full-replicas keeps the configured count)")

    def settle_off_hours(self) -> None:
        """A good deploy set the env's count itself (the off-hours one inside the window,
        the configured one outside it or with --full-replicas): an off-hours run the cron
        left pending (its lock was this deploy's) must not undo it minutes later."""
        from vedfin_ops.schedule import offhours

        if self.env not in offhours.envs(self.config):
            return
        pending = [offhours.pending_path(self.config, self.env, mode) for mode in ("down", "up")]
        self.host.run(commands.remove_files(pending), what="off-hours pending")

    def apply_monitoring(self) -> None:
        """Step 7's alarms: a Netdata that is missing or refuses its reload leaves the file as
        it was (never half-applied). The alarms are the host's, not an env's: only the shared
        stack's owner's deploys apply them, so a dev deploy from another checkout never
        changes production's thresholds."""
        if not self.config.monitoring.apply or not self.owns_shared:
            return
        from vedfin_ops.monitoring import netdata

        wanted = netdata.files(self.config, self.secrets, say=self.say)
        changed, now = netdata.apply(self.host, self.config, wanted[0].text,
                                     extra=wanted[1:], clock=self.clock)
        self.say(f"monitoring: {len(now.items)} Netdata alarms "
                 f"{'installed and loaded' if changed else 'loaded'}")
        for problem in now.problems():
            self.say(f"warning: monitoring: {problem}")

    def apply_uptime(self) -> None:
        """Uptime Kuma's monitors for the health URLs, on the same terms as Netdata's alarms
        (the shared stack's owner applies them): a warning when a first check is not UP."""
        if (self.config.monitoring.uptime_kuma is None or not self.config.monitoring.apply
                or not self.owns_shared):
            return
        from vedfin_ops.monitoring import uptime_kuma

        done = uptime_kuma.apply(self.host, self.config, self.secrets, wait=10.0,
                                 say=self.say)
        self.say(f"uptime kuma: {len(done.status)} monitors"
                 f"{' (' + str(len(done.changes)) + ' changes)' if done.changes else ''}")
        for name, state, message in done.status:
            if state != "UP":
                self.say(f"warning: uptime kuma: {name}: {state} {message}".rstrip())

    def prune_images(self) -> None:
        """App images no kept release of any env names by digest (the runbook alerts on
        disk above 85%). Only with a registry: an image pulled by digest can be pulled
        again; a local one without a digest is never removed."""
        if self.config.registry is None:
            return
        repos = sorted({a.image_repo for a in self.config.applications})
        inventory = self.host.run(commands.image_inventory(self.layout.base, repos),
                                  what="image inventory")
        ids = prunable_images(inventory)
        if ids:
            removed = self.host.run(commands.remove_images(ids), what="prune images")
            self.say(f"pruned {removed.split().count('removed')} of {len(ids)} old images")

    # -- the way back ---------------------------------------------------------------------
    def needs_put_back(self) -> bool:
        return self.migrating or self.shared_touched

    def held_locks(self) -> list[Lock]:
        return [self.lock, *([self.shared_lock] if self.shared_lock.taken else [])]

    def put_back(self) -> str:
        said: list[str] = []
        if self.migrating:
            said.append(stop_migrations(self.host, self.env))
        if self.promoting:
            # the promote may have run before the link went: `current` names the live one
            # again before anything else, so a put-back cut short still points at it; and
            # the shared stack's record says what runs, or the change would never ship
            restore = []
            if self.state.current:
                restore.append(commands.swap_symlink(self.layout.release(self.state.current),
                                                     self.layout.current))
            if self.shared_touched:
                restore.append(commands.write_text(self.layout.shared_hash,
                                                   self.state.shared or ""))
                restore.append(commands.relink_or_remove(
                    self.layout.shared_files(self.state.shared or "none"),
                    self.layout.shared_dir))
            if restore:
                self.host.run(commands.all_of(*restore), what="restore current")
        failed: list[str] = []
        if self.engine_touched:  # each part on its own: one that fails never skips the other
            try:
                said.append(super().put_back())
            except Exception as exc:
                failed.append(describe(exc))
        if self.shared_touched:
            try:
                said.append(self.put_back_shared())
            except Exception as exc:
                failed.append(f"the shared stack stays on the new files ({describe(exc)}; "
                              f"{self.owners_deploy} puts it back)")
                self.forget_shared_hash()
        if failed:
            raise CheckFailed("; ".join([*said, *failed]))
        return "; ".join(said)

    def forget_shared_hash(self) -> None:
        """The shared stack could not be put back: its recorded hash must not say the old
        files run, or the next deploy of them would be a no-op over the new ones (a host whose
        earlier files were never kept has no engine record to show it). Best effort: the link
        that failed the put-back may fail this too."""
        try:
            self.host.run(commands.write_text(self.layout.shared_hash, UNKNOWN_SHARED),
                          what="forget shared hash")
        except Exception as exc:
            self.say(f"warning: shared.hash still names the earlier files ({describe(exc)})")

    def keep_shared_records(self) -> list[str]:
        """The shared files of this release kept whole in a folder named by their hash, the
        engine's specs of postgres, redis and the edge beside them, the `shared` link and
        hash moved to them: part of the one promote command."""
        assert self.release_dir is not None
        digest = str(self.meta["shared_hash"])
        kept = self.layout.shared_files(digest)
        paths = [path for path in self.files if path.startswith(SHARED_PREFIXES)]
        return [commands.keep_files(self.release_dir, paths, kept),
                commands.write_text(f"{kept}/engine.json",
                                    json.dumps(engine_record(self.shared_views))),
                commands.swap_symlink(kept, self.layout.shared_dir),
                commands.write_text(self.layout.shared_hash, digest),
                commands.remove_files([self.layout.legacy_shared_file])]

    def prune_shared_files(self) -> None:
        """Shared files no link names any more; best effort, the release is live."""
        digest = str(self.meta["shared_hash"])
        try:
            self.host.run(commands.remove_siblings(self.layout.shared_store, digest),
                          what="prune shared files")
        except Exception as exc:
            self.say(f"warning: old shared files not pruned ({describe(exc)})")

    def put_back_shared(self) -> str:
        """The shared stack back on the files it ran before this run, each under its own
        name: the folder the `shared` link names (whichever env promoted it), else this env's
        live release's files when its recorded hash says they are the ones deployed. Never
        the new release's files under the old configs' names: swarm refuses a config whose
        data changed under the same name."""
        live, deployed = self.state.current, self.state.shared
        kept = self.host.run(commands.read_link(self.layout.shared_dir),
                             what="read shared link").strip()
        if deployed and kept.rstrip("/").rsplit("/", 1)[-1] == deployed:
            path = f"{kept}/stacks/shared.yml"
        elif live and deployed and self.state.meta.get("shared_hash") == deployed:
            path = f"{self.layout.release(live)}/stacks/shared.yml"
        else:
            self.forget_shared_hash()
            return (f"the shared stack stays on the new files (no earlier files of it are "
                    f"known; {self.owners_deploy} deploys its own again)")
        stack = shared_stack_name(self.config)
        expected = stack_file_images(self.host.run(commands.read_file(path),
                                                    what="read shared stack"), stack)
        self.say("putting the shared stack back on its earlier files")
        self.roll(stack, path, expected)
        self.shared_touched = False
        return "shared stack back on its earlier files"
