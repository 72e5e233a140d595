"""The pipeline of `fab -H HOST deploy.<env>`: Task 2.4 of the runbook, end to end.

lock -> push (new release dir, atomically) -> shared stack if it changed -> db-init -> migrate
(one-off container of the new image) -> env stack rollout, watched until the engine converges
-> verify through the edge (rolled back if it fails) -> `current` moves -> audit -> unlock.

Nothing moves `current` but a verified release, so every failure leaves the previous good
release live and named.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fabric import Connection

from . import commands, secret_store
from .config import Config
from .db_init import db_init
from .errors import CheckFailed, UsageError
from .host import HANDSHAKES, Host
from .migrate import migrate
from .preflight import preflight
from .releases import (
    GOOD,
    Layout,
    Listing,
    content_hash,
    digest_of,
    parse_listing,
    release_id,
    shared_hash,
)
from .render import Rendered, image, render, shared_stack_name, stack_name
from .rollout import Before, RolloutFailed, ServiceView, before_of, parse_snapshot, watch
from .smoke import smoke_test

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
Say = Callable[[str], None]
Show = Callable[[list[str]], None]


class LockHeld(CheckFailed):
    pass


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

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def now() -> datetime:
    return datetime.now(UTC)


def as_host(conn: Connection | Host) -> Host:
    return conn if isinstance(conn, Host) else Host(conn)


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise UsageError(f"error: --tag: {tag!r} is not a valid image tag")
    return tag


def audit(host: Host, layout: Layout, action: str, result: str, *, release: str = "",
          tag: str = "", detail: str = "") -> None:
    line = json.dumps({"time": now().isoformat(timespec="seconds"), "who": who(),
                       "env": layout.env, "action": action, "release": release, "tag": tag,
                       "result": result, "detail": host.redact(detail)}, ensure_ascii=False)
    host.run(commands.audit_append(layout.audit, line), what="audit", check=False)


@contextmanager
def locked(host: Host, layout: Layout, tag: str, action: str) -> Iterator[None]:
    """One deploy per env at a time; released on every exit path, Ctrl-C included."""
    holder = json.dumps({"who": who(), "since": now().isoformat(timespec="seconds"),
                         "tag": tag, "action": action})
    out = host.run(f"{commands.mkdir_p(layout.releases)} && "
                   f"{commands.lock_acquire(layout.lock, holder)}", what="lock")
    if not out.startswith("acquired"):
        held = out.partition("\n")[2].strip() or "unknown holder"
        raise LockHeld(f"error: {layout.env} is locked by another deploy: {held} "
                       f"(if it is stale: fab -H HOST lock.release --env {layout.env})")
    try:
        yield
    finally:
        host.run(commands.lock_release(layout.lock), what="unlock", check=False)


def listing(host: Host, layout: Layout) -> Listing:
    return parse_listing(host.run(commands.release_listing(
        layout.releases, layout.current, layout.shared_hash), what="list releases"))


def poller(host: Host, stacks: list[str]) -> Callable[[], dict[str, ServiceView]]:
    return lambda: parse_snapshot(host.run(commands.snapshot(stacks), what="watch rollout"))


def expected_images(config: Config, env: str, tag: str) -> dict[str, str]:
    stack = stack_name(config, env)
    return {f"{stack}_{app.name}": image(app, tag) for app in config.apps(env)}


def shared_images(config: Config) -> dict[str, str]:
    stack = shared_stack_name(config)
    return {f"{stack}_postgres": config.postgres.image, f"{stack}_redis": config.redis.image,
            f"{stack}_edge": config.edge.image}


def roll(host: Host, config: Config, stack: str, stack_file: str, expected: dict[str, str],
         show: Show, before: dict[str, Before] | None = None) -> list[str]:
    """`docker stack deploy`, then watch the engine converge; returns the services updated."""
    poll = poller(host, [stack])
    if before is None:
        before = before_of(poll())
    host.run(commands.stack_deploy(stack_file, stack), what=f"stack deploy {stack}")
    watch(poll, before, expected, set(expected), config.remote.rollout_timeout, show)
    after = poll()
    return sorted(n for n in expected if n not in before or
                  before[n].template != after[n].template)


def deploy(conn: Connection | Host, config: Config, env: str, tag: str | None = None, *,
           skip_preflight: bool = False, force: bool = False, say: Say = print,
           show: Show | None = None) -> DeployResult:
    """The whole pipeline; raises CheckFailed (exit 1) or UsageError (exit 2) on failure."""
    config.require_env(env)
    tag = check_tag(tag or config.tag)
    secrets = secret_store.resolve(config, env)
    missing = secret_store.missing(config, env, secrets)
    if missing:
        raise UsageError(f"error: {config.source}: secrets.{env}: not set: {', '.join(missing)}"
                         f" (inv secrets.generate --env {env}, or export them)")
    files = render(config, env, tag=tag, secrets=secrets)
    show = show or (lambda lines: None)
    handshakes_before = HANDSHAKES["count"]
    host = as_host(conn)
    host.secrets = list(secrets.values())
    layout = Layout.of(config, env)
    digest = content_hash(files)
    rid = release_id(now(), digest)
    result = DeployResult(env, tag, rid, "failed")
    with locked(host, layout, tag, f"deploy {env}"):
        try:
            _pipeline(host, config, env, tag, files, layout, rid, result, say, show,
                      skip_preflight, force)
        except CheckFailed as exc:
            result.detail = host.redact(str(exc))
            audit(host, layout, "deploy", "failed", release=rid, tag=tag, detail=result.detail)
            raise
        except KeyboardInterrupt:
            audit(host, layout, "deploy", "interrupted", release=rid, tag=tag)
            raise
    result.commands = list(host.commands)
    result.handshakes = HANDSHAKES["count"] - handshakes_before
    return result


def _pipeline(host: Host, config: Config, env: str, tag: str, files: Rendered, layout: Layout,
              rid: str, result: DeployResult, say: Say, show: Show, skip_preflight: bool,
              force: bool) -> None:
    state = listing(host, layout)
    current = state.current
    if current and digest_of(current) == digest_of(rid) and state.state(current) == GOOD:
        result.release, result.result = current, "noop"
        result.detail = f"nothing changed: {current} is live"
        say(result.detail)
        audit(host, layout, "deploy", "noop", release=current, tag=tag)
        return

    if skip_preflight:
        say("preflight: skipped (--skip-preflight; recorded in the audit log)")
        audit(host, layout, "preflight", "skipped", release=rid, tag=tag)
    else:
        say("preflight: the pre-deployment checklist")
        checklist = preflight(host, config, env, force=force)
        for check in checklist.checks:
            if check.warning:
                say(f"preflight: {check.name}: {check.detail}")
            if check.detail.startswith("warning: forced"):
                audit(host, layout, "capacity-gate", "forced", release=rid, tag=tag,
                      detail=check.detail)
        if not checklist.passed:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in checklist.checks if not c.ok)
            raise CheckFailed(f"error: preflight failed: {failed} (--skip-preflight to deploy "
                              f"anyway)")

    say(f"push: {layout.release(rid)}")
    release_dir = layout.release(rid)
    tmp = f"{layout.releases}/.tmp-{rid}"
    meta = {"id": rid, "env": env, "tag": tag, "created": now().isoformat(timespec="seconds"),
            "by": who(), "images": expected_images(config, env, tag),
            "shared_hash": shared_hash(files), "skip_preflight": skip_preflight,
            "force": force}
    host.run(commands.clean_partial_uploads(layout.releases), what="clean partial uploads")
    host.put_tree(tmp, {**files, "release.json": json.dumps(meta, indent=2) + "\n",
                        "state": "pushed\n"}, Rendered.is_secret)
    host.rename(tmp, release_dir)

    if state.shared != meta["shared_hash"]:
        say("shared stack: postgres, redis, edge (changed)")
        result.services_updated += roll(host, config, shared_stack_name(config),
                                        f"{release_dir}/stacks/shared.yml",
                                        shared_images(config), show)
        host.run(commands.write_text(layout.shared_hash, str(meta["shared_hash"])),
                 what="record shared stack")

    say("db-init: databases and extensions")
    db = db_init(host, config)
    say("db-init: " + (f"created {', '.join(db.created_databases + db.created_extensions)}"
                       if db.changed else "nothing to do"))

    say(f"migrate: {tag}")
    try:
        if not migrate(host, config, env, tag, release_dir, show=say):
            say("migrate: nothing to migrate")
    except CheckFailed:
        _mark_failed(host, release_dir)
        raise

    stack = stack_name(config, env)
    say(f"rollout: {stack} -> {tag}")
    try:
        result.services_updated += roll(host, config, stack, f"{release_dir}/stacks/{env}.yml",
                                        expected_images(config, env, tag), show)
    except RolloutFailed as exc:
        _mark_failed(host, release_dir)
        why = engine_reasons(host, exc.services)
        if current:
            # Services the engine did not roll back (they updated fine) go back too: the env
            # runs one release, never half of two.
            say(f"rollout failed; putting every service back on {current}")
            _redeploy(host, config, env, layout, current, show)
        raise RolloutFailed(f"{exc}{'; tasks: ' + why if why else ''}"
                            f"{'; live: ' + current if current else ''}", exc.services) from None

    say("verify: smoke checks through the edge")
    failures = verify(config, env)
    if failures:
        _mark_failed(host, release_dir)
        detail = "; ".join(failures)
        if current:
            say(f"verify failed ({detail}); rolling back to {current}")
            _redeploy(host, config, env, layout, current, show)
            raise CheckFailed(f"error: verify failed: {detail}; rolled back to {current}")
        raise CheckFailed(f"error: verify failed: {detail} (no earlier release to go back to)")

    _promote(host, config, layout, release_dir, state)
    result.result = "ok"
    result.detail = f"{rid} live"
    audit(host, layout, "deploy", "ok", release=rid, tag=tag)
    say(f"done: {env} runs {tag} ({rid})")


def _mark_failed(host: Host, release_dir: str) -> None:
    host.run(commands.write_state(release_dir, "failed"), what="mark failed", check=False)


def verify(config: Config, env: str) -> list[str]:
    """The smoke suite after a rollout: what failed, each as `check: detail`."""
    report = smoke_test(config, env)
    return [f"{c.name}: {c.detail}" for c in report.checks if not c.ok]


def engine_reasons(host: Host, services: list[str]) -> str:
    """The engine's errors for the failed tasks: `unhealthy container`, `non-zero exit`..."""
    if not services:
        return ""
    out = host.run(" ; ".join(commands.task_errors(s) for s in services), what="task errors",
                   check=False)
    seen: list[str] = []
    for line in out.splitlines():
        image_name, _, error = line.partition(" ")
        entry = f"{image_name.rsplit('/', 1)[-1]}: {error.strip()}"
        if error.strip() and entry not in seen:
            seen.append(entry)
    return ", ".join(seen[:4])


def _promote(host: Host, config: Config, layout: Layout, release_dir: str,
             state: Listing) -> None:
    """`current` -> the release, marked good; old releases beyond keepReleases go."""
    rid = release_dir.rsplit("/", 1)[-1]
    after = Listing([*state.releases, (rid, GOOD)], rid)
    prune = [layout.release(r) for r in after.to_prune(config.remote.keep_releases)]
    host.run(" && ".join([commands.write_state(release_dir, GOOD),
                          commands.swap_symlink(release_dir, layout.current),
                          commands.remove_dirs(prune)]), what="promote release")


def _release_images(host: Host, layout: Layout, release: str) -> dict[str, str]:
    meta = json.loads(host.run(commands.read_file(f"{layout.release(release)}/release.json"),
                               what="read release") or "{}")
    images: dict[str, str] = meta.get("images", {})
    return images


def _redeploy(host: Host, config: Config, env: str, layout: Layout, release: str,
              show: Show) -> None:
    stack = stack_name(config, env)
    roll(host, config, stack, f"{layout.release(release)}/stacks/{env}.yml",
         _release_images(host, layout, release), show)


def rollback(conn: Connection | Host, config: Config, env: str, *, say: Say = print,
             show: Show | None = None) -> str:
    """Back to the previous good release: redeployed, converged, verified, made current."""
    config.require_env(env)
    host = as_host(conn)
    show = show or (lambda lines: None)
    layout = Layout.of(config, env)
    with locked(host, layout, "rollback", f"rollback {env}"):
        state = listing(host, layout)
        target = state.previous_good()
        if target is None:
            raise CheckFailed(f"error: rollback: {env} has no good release before "
                              f"{state.current or 'the current one'}")
        say(f"rollback: {env} {state.current} -> {target}")
        try:
            _redeploy(host, config, env, layout, target, show)
            failures = verify(config, env)
            if failures:
                raise CheckFailed(f"error: rollback verify failed: {'; '.join(failures)}")
        except CheckFailed as exc:
            audit(host, layout, "rollback", "failed", release=target, detail=str(exc))
            raise
        steps = [commands.swap_symlink(layout.release(target), layout.current)]
        if state.current:
            steps.append(commands.write_state(layout.release(state.current), "rolled-back"))
        host.run(" && ".join(steps), what="make current")
        audit(host, layout, "rollback", "ok", release=target,
              detail=f"from {state.current}")
        say(f"done: {env} back on {target}")
        return target


def status(conn: Connection | Host, config: Config, env: str) -> dict[str, Any]:
    config.require_env(env)
    host = as_host(conn)
    layout = Layout.of(config, env)
    state = listing(host, layout)
    views = poller(host, [shared_stack_name(config), stack_name(config, env)])()
    lock = host.run(commands.read_file(f"{layout.lock}/holder"), what="read lock").strip()
    return {
        "env": env,
        "current": state.current,
        "releases": [{"id": r, "state": s, "current": r == state.current}
                     for r, s in state.releases],
        "lock": json.loads(lock) if lock.startswith("{") else None,
        "services": [{"name": v.name, "image": v.image, "running": v.running,
                      "replicas": v.replicas, "update_state": v.update_state or "-",
                      "message": v.update_message} for v in views.values()],
    }


def release_lock(conn: Connection | Host, config: Config, env: str) -> str:
    config.require_env(env)
    host = as_host(conn)
    layout = Layout.of(config, env)
    holder = host.run(commands.read_file(f"{layout.lock}/holder"), what="read lock").strip()
    host.run(commands.lock_release(layout.lock), what="release lock")
    audit(host, layout, "lock.release", "ok", detail=f"was {holder or 'not held'}")
    return holder
