"""What deploy, rollback, scale (pause, resume) and restart share: one env's stack rolled,
watched and compared with the release it should run; a failed deploy or rollback is put back
on the live release here (scale and restart have their own way back)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fabric import Connection

from vedfin_ops.checks.receipt import Probe, summary_line
from vedfin_ops.checks.receipt import probe as receipt_probe
from vedfin_ops.checks.smoke import Options as SmokeOptions
from vedfin_ops.checks.smoke import smoke_test
from vedfin_ops.config.model import Config
from vedfin_ops.config.names import image, shared_stack_name, stack_name
from vedfin_ops.deploy.rollout import Before, Verdict, before_of, hidden_from_stack_deploy, watch
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import Host, RemoteHost
from vedfin_ops.remote.probes.engine import (
    ServiceView,
    parse_snapshot,
    same_image,
    snapshot,
)
from vedfin_ops.run.layout import (
    Layout,
    Listing,
    parse_listing,
)
from vedfin_ops.run.operation import Operation, describe


def as_host(conn: Connection | Host) -> Host:
    """A Fabric Connection gets our checked Host around it; a Host (or a test's fake host)
    is used as it is."""
    return Host(conn) if isinstance(conn, Connection) else conn


def as_env_host(conn: Connection | Host, config: Config, env: str) -> Host:
    """`as_host`, masking the env's secret values in everything it prints or raises: every
    step called as a plain function masks them, not only the CLI's tasks."""
    from vedfin_ops.config import secret_store

    host = as_host(conn)
    host.secrets = list(secret_store.resolve(config, env).values())
    return host

def listing(host: RemoteHost, layout: Layout) -> Listing:
    return parse_listing(host.run(commands.env_state(
        layout.releases, layout.current, layout.shared_hash, layout.env),
        what="list releases"))


def poller(host: RemoteHost, stacks: list[str], config: Config
           ) -> Callable[[], dict[str, ServiceView]]:
    """Reads the stacks' services and tasks; on a cluster, the swarm's tasks on every node."""
    command = snapshot(stacks, cluster=config.multi_node)
    return lambda: parse_snapshot(host.run(command, what="watch rollout"))


def expected_images(config: Config, env: str, tag: str,
                    pins: Mapping[str, str] | None = None) -> dict[str, str]:
    stack = stack_name(config, env)
    return {f"{stack}_{app.name}": image(app, tag, pins) for app in config.apps(env)}


def shared_images(config: Config) -> dict[str, str]:
    """In Traefik mode there is no edge of ours: an existing Traefik routes to the apps."""
    stack = shared_stack_name(config)
    out = {f"{stack}_postgres": config.postgres.image, f"{stack}_redis": config.redis.image}
    if config.edge.mode == "caddy":
        out[f"{stack}_edge"] = config.edge.image
    return out


def engine_record(views: dict[str, ServiceView]) -> dict[str, dict[str, str]]:
    """What the engine runs per service: recorded when a release goes live, compared by the
    no-op check and `status`, so the tool's records never outrank the engine."""
    return {name: {"image": v.image, "template": v.template} for name, v in sorted(views.items())}


def drift(recorded: dict[str, dict[str, str]], images: dict[str, str],
          views: dict[str, ServiceView], replicas: dict[str, int] | None = None) -> list[str]:
    """How the engine differs from the live release's record ([] when it runs exactly that).

    With an engine record (written at promote), image and task template must match; for a
    release promoted before records existed, the images from release.json; with neither, the
    tool cannot vouch for anything. `replicas`: the counts the release sets (a `scale` or
    `pause` since is drift too: the next deploy restores them)."""
    if not recorded and not images:
        return ["no record of what the live release runs (release.json and engine.json "
                "missing or unreadable)"]
    found: list[str] = []
    names = sorted(set(recorded) | set(images) | set(views))
    for name in names:
        view = views.get(name)
        want = recorded.get(name)
        if view is None:
            found.append(f"{name}: not running")
        elif want is not None:
            if view.image != want.get("image"):
                found.append(f"{name}: runs {view.image}, the release has {want.get('image')}")
            elif view.template != want.get("template"):
                found.append(f"{name}: its spec was changed outside the tool")
        elif name in images:
            if not same_image(view.image, images[name]):
                found.append(f"{name}: runs {view.image}, the release has {images[name]}")
        else:
            found.append(f"{name}: not part of the release")
        if view is not None and replicas and name in replicas and \
                view.replicas != replicas[name]:
            found.append(f"{name}: {view.replicas} replicas, the release has {replicas[name]}")
    return found


def shared_drift(record_text: str, views: dict[str, ServiceView], stack: str) -> list[str]:
    """How the engine's postgres, redis and edge (`views` of the shared `stack`) differ from
    their specs recorded when the shared files last went live: a failed put-back, or
    `docker service update` by hand, shows here even though the files' hash is unchanged.
    A host promoted before that record existed has none: nothing to compare."""
    if not record_text.strip():
        return []
    try:
        recorded = json.loads(record_text)
    except ValueError:
        return ["the shared stack's engine record is not readable JSON"]
    if not isinstance(recorded, dict) or not recorded:
        return []
    mine = {n: v for n, v in views.items() if n.startswith(stack + "_")}
    return [f"shared stack: {problem}" for problem in drift(recorded, {}, mine)]


def configured_replicas(config: Config, env: str) -> dict[str, int]:
    stack = stack_name(config, env)
    return {f"{stack}_{app.name}": app.replicas for app in config.apps(env)}


def stack_file_images(text: str, stack: str) -> dict[str, str]:
    """`<stack>_<service>` -> image, read from a rendered stack file (the images a put-back
    of that file must see running)."""
    import yaml

    try:
        data = yaml.safe_load(text) or {}
        services = data.get("services") or {}
        return {f"{stack}_{name}": str(spec["image"]) for name, spec in services.items()
                if isinstance(spec, dict) and "image" in spec}
    except (yaml.YAMLError, AttributeError, TypeError):
        return {}


def verify(config: Config, env: str, *, tls_wait: float = 0.0) -> list[str]:
    """The smoke suite after a rollout: what failed, each as `check: detail`.

    An env with no checks never passes by saying nothing: the config must say
    `verify.allowNoChecks: true` for that.
    """
    report = smoke_test(config, env, SmokeOptions(tls_wait=tls_wait))
    if not report.checks:
        if config.verify.allow_no_checks:
            return []
        return [f"no smoke checks for {env} (no app has a domain); set verify.allowNoChecks: "
                f"true to deploy unverified"]
    return [f"{c.name}: {c.detail}" for c in report.checks if not c.ok]


def engine_reasons(host: RemoteHost, services: list[str]) -> str:
    """The engine's errors for the failed tasks: `unhealthy container`, `non-zero exit`..."""
    if not services:
        return ""
    out = host.run(commands.task_errors(*services), what="task errors",
                   check=False)
    seen: list[str] = []
    for line in out.splitlines():
        image_name, _, error = line.partition(" ")
        entry = f"{image_name.rsplit('/', 1)[-1]}: {error.strip()}"
        if error.strip() and entry not in seen:
            seen.append(entry)
    return ", ".join(seen[:4])


class EnvRun(Operation):
    """An operation on one env's stack: rolls it and can put it back on the live release."""

    def __init__(self, host: RemoteHost, config: Config, env: str, **kwargs: Any) -> None:
        super().__init__(host, config, env, **kwargs)
        self.stack = stack_name(config, env)
        self.state = Listing([], None)
        self.views: dict[str, ServiceView] = {}
        self.poll = poller(host, [self.stack], config)
        self.logged_in = False
        # the last roll's poll, before and expected images: what `settle` watches on
        self.rolled: tuple[Callable[[], dict[str, ServiceView]], dict[str, Before],
                           dict[str, str]] | None = None
        self.make_probe: Callable[[Config, str], Probe | None] = receipt_probe
        self.receipt: dict[str, Any] = {}  # what the last measured rollout's probe saw

    def inspect(self) -> None:
        self.state = listing(self.host, self.layout)
        if self.state.problems:
            self.say("warning: " + "; ".join(self.state.problems))
        self.views = self.poll()

    def refuse_unplaceable(self) -> None:
        """On a cluster, before any change: the swarm must hold the placement (postgres and
        the edge are pinned by node labels, and postgres updates stop-first)."""
        if not self.config.multi_node:
            return
        from vedfin_ops.cluster.nodes import placement_problems, read_nodes

        problems = placement_problems(self.config, read_nodes(self.host))
        if problems:
            raise CheckFailed(f"the swarm cannot place this config (postgres and the edge "
                              f"are pinned by node labels): {'; '.join(problems)}")

    def converge(self, poll: Callable[[], dict[str, ServiceView]], before: dict[str, Before],
                 expected: dict[str, str], serving: bool = False) -> Verdict:
        """Watch the engine converge on `expected` (service -> image): each view drawn for
        the user and a heartbeat for the lock; raises RolloutFailed. `serving`: return as
        soon as only the new tasks serve, healthy (the engine's monitor window may run on)."""
        def show(lines: list[str]) -> None:
            self.show(lines)
            self.beat()

        return watch(poll, before, expected, set(expected), self.config.remote.rollout_timeout,
                     show, clock=self.clock, serving=serving)

    def roll(self, stack: str, stack_file: str, expected: dict[str, str],
             views: dict[str, ServiceView] | None = None, serving: bool = False
             ) -> tuple[list[str], dict[str, ServiceView]]:
        """`docker stack deploy`, then watch the engine converge (`serving`: only until the
        new tasks serve; `self.rolled` keeps what `settle` needs to watch on to `completed`)."""
        poll = self.poll if stack == self.stack else poller(self.host, [stack], self.config)
        if views is None:
            views = poll()
        before = before_of(views)
        if stack == self.stack:
            self.engine_touched = True
        hidden = hidden_from_stack_deploy(views, expected)
        self.registry_login()
        self.beat(force=True)  # the lock is still ours right before the engine moves
        command = commands.stack_deploy(stack_file, stack,
                                        registry_auth=self.config.registry is not None)
        if hidden:
            self.say(f"changed outside the tool, deployed again: {', '.join(hidden)}")
            command = commands.all_of(
                commands.reset_stack_image_labels({n: views[n].image for n in hidden}), command)
        self.host.run(command, what=f"stack deploy {stack}")
        self.rolled = (poll, before, expected)
        after = self.converge(poll, before, expected, serving=serving).views
        updated = sorted(n for n in expected if n not in before or
                         before[n].template != after[n].template)
        return updated, after

    def settle(self) -> dict[str, ServiceView]:
        """After a `roll(serving=True)`: watch on until the engine says `completed` (its
        monitor window over: from then on it no longer rolls back by itself)."""
        assert self.rolled is not None
        return self.converge(*self.rolled).views

    @contextmanager
    def measured(self, serving: bool = True) -> Iterator[None]:
        """The zero-downtime receipt of what runs inside (checks/receipt.py): its probe from
        before the engine moves until the rollout is judged, then its figures said, kept in
        `self.receipt` and noted for the audit line (a failed run's too). Only when the env
        `serving` already (a first deploy, a resume from zero have nothing to drop) and an
        app has a domain. A probe that cannot start is a warning: never why a run fails."""
        probe = None
        try:
            if serving and self.config.verify.receipt:
                try:
                    probe = self.make_probe(self.config, self.env)
                    if probe is not None:
                        probe.only(self.serving_apps())
                        probe = probe.start() if probe.endpoints else None
                except Exception as exc:
                    probe = None
                    self.say(f"warning: no zero-downtime receipt for this {self.action} "
                             f"({describe(exc)})")
            yield
        finally:
            if probe is not None:
                try:
                    self.receipt = probe.stop().to_dict()
                except Exception as exc:  # the probe's own bug: never the run's failure
                    self.say(f"warning: the zero-downtime receipt was lost ({describe(exc)})")
                else:
                    line = summary_line(self.receipt)
                    self.say(f"receipt: {line}")
                    self.notes.append(f"receipt: {line}")

    def serving_apps(self) -> set[str]:
        """The env's apps whose service ran a task before this run moved the engine."""
        prefix = f"{self.stack}_"
        return {name.removeprefix(prefix) for name, view in self.views.items()
                if name.startswith(prefix) and view.running > 0}

    def registry_login(self) -> None:
        """Log the host into the registry once per run, before the first pull."""
        registry = self.config.registry
        if registry is None or self.logged_in:
            return
        from vedfin_ops.config import secret_store

        password = secret_store.resolve(self.config, self.env).get(registry.password_secret)
        if not password:
            raise CheckFailed(f"registry.password: {registry.password} is not set")
        self.host.run(commands.registry_login(registry.server, registry.username, password),
                      what="registry login")
        self.logged_in = True

    def release_images(self, release: str) -> dict[str, str]:
        if release == self.state.current and self.state.meta:
            images = self.state.meta.get("images", {})
        else:
            text = self.host.run(commands.read_file(f"{self.layout.release(release)}/"
                                                    f"release.json"), what="read release")
            try:
                images = json.loads(text or "{}").get("images", {})
            except (ValueError, AttributeError):
                raise CheckFailed(f"{self.layout.release(release)}/release.json is not "
                                  f"readable JSON") from None
        return {str(k): str(v) for k, v in images.items()} if isinstance(images, dict) else {}

    def redeploy(self, release: str) -> dict[str, ServiceView]:
        _, after = self.roll(self.stack, f"{self.layout.release(release)}/stacks/{self.env}.yml",
                             self.release_images(release))
        return after

    def put_back(self) -> str:
        live = self.state.current
        if live is None:
            return (f"no earlier release of {self.env} to go back to; the failed release "
                    f"stays up for inspection")
        self.say(f"putting every service of {self.env} back on {live}")
        self.redeploy(live)
        return f"{self.env} back on {live}"
