"""The swarm's members. `fab cluster.status`: the nodes as the engine sees them, beside the
config's, and the tasks on each: what a user reads before and after a node is added, drained
or lost. `fab cluster.drain` and `fab cluster.join` change them, each a `ClusterRun` (the
cluster's lock and every env's), converged and put back on failure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from vedfin_ops.cluster.nodes import (
    EngineNode,
    ServicePlace,
    configured_node,
    placement_problems,
    read_nodes,
    read_service_place,
)
from vedfin_ops.cluster.placement import EDGE_LABEL, POSTGRES_LABEL
from vedfin_ops.config.model import RESERVED_LABEL_PREFIX, Config, Node
from vedfin_ops.config.names import shared_stack_name, stack_name
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteError, RemoteHost
from vedfin_ops.run.layout import Layout
from vedfin_ops.run.lock import Lock
from vedfin_ops.run.operation import Operation, Say, Show, describe
from vedfin_ops.run.polling import REAL, Clock, TimedOut, until


def parse_node_tasks(text: str) -> Counter[str]:
    """Tasks per node id (`commands.node_tasks()`'s output)."""
    return Counter(line.split(" ", 1)[0] for line in text.splitlines() if line.strip())


def cluster_status(host: Any, config: Config) -> dict[str, Any]:
    """One entry per node the engine knows (configured or not) and per configured node it
    does not; `problems` is what would stop a deploy (`placement_problems`)."""
    engine = read_nodes(host)
    tasks = parse_node_tasks(host.run(commands.node_tasks(), what="tasks per node"))
    configured = {n.name: n for n in config.cluster()} if config.multi_node else {}
    nodes = []
    for node in engine:
        mine = configured.pop(node.hostname, None)
        nodes.append({"name": node.hostname, "role": node.role, "leader": node.leader,
                      "state": node.state, "availability": node.availability,
                      "labels": node.labels, "tasks": tasks.get(node.id, 0),
                      "configured": mine is not None or not config.multi_node})
    for name in configured:
        nodes.append({"name": name, "role": configured[name].role, "leader": False,
                      "state": "missing", "availability": "", "labels": {}, "tasks": 0,
                      "configured": True})
    return {"nodes": nodes, "problems": placement_problems(config, engine)}


def parse_drain_state(text: str) -> tuple[list[str], list[str]]:
    """(tasks still on the node, services short of their replicas as `name n/m`, n the
    tasks that run and are meant to)."""
    from vedfin_ops.remote.probes.engine import SWARM_TASKS_MARK, swarm_tasks

    tasks_part, _, rest = text.partition("--SERVICES--")
    services_part, _, swarm_part = rest.partition(SWARM_TASKS_MARK)
    ready = Counter(service for service, _image, state in swarm_tasks(swarm_part)
                    if state == "ready")
    tasks = [line.strip() for line in tasks_part.splitlines() if line.strip()]
    short = []
    for line in services_part.splitlines():
        parts = line.split()
        if len(parts) < 2 or "/" not in parts[1]:
            continue
        wanted = parts[1].partition("/")[2]
        if str(ready[parts[0]]) != wanted:
            short.append(f"{parts[0]} {ready[parts[0]]}/{wanted}")
    return tasks, short


def wanted_replicas(text: str) -> dict[str, int]:
    """The replicas each service is meant to run (`commands.drain_state()`'s services)."""
    services_part = text.partition("--SERVICES--")[2].partition("--SWARM-TASKS--")[0]
    out = {}
    for line in services_part.splitlines():
        parts = line.split()
        wanted = parts[1].partition("/")[2] if len(parts) >= 2 else ""
        if wanted.isdigit():
            out[parts[0]] = int(wanted)
    return out


def running_envs(config: Config, replicas: dict[str, int]) -> list[str]:
    """The envs with an app meant to run (a paused or never deployed env has no check that
    could pass)."""
    return [env for env in sorted(config.environments)
            if any(replicas.get(f"{stack_name(config, env)}_{app.name}", 0) > 0
                   for app in config.apps(env))]


SHARED_LABELS = {POSTGRES_LABEL: "postgres", EDGE_LABEL: "edge"}  # label -> what it pins


def read_shared_place(host: Any, config: Config, service: str) -> ServicePlace:
    return read_service_place(host, f"{shared_stack_name(config)}_{service}",
                              what=f"{service}'s placement")


def where_it_runs(service: str, place: ServicePlace) -> str:
    """`postgres runs on node1 (its volume is there)`, or why it runs nowhere."""
    the = "the edge" if service == "edge" else service
    if not place.deployed:
        return f"{the} is not deployed"
    if not place.volume_node:
        return f"{the} runs on no node"
    return f"{the} runs on {place.volume_node} (its volume is there)"


CLUSTER = "cluster"  # the scope of cluster runs in locks and the audit log (not an env)


class ClusterRun(Operation):
    """A run on the swarm itself: the cluster's own lock and audit scope ("env": "cluster"),
    then every env's lock, taken first thing in the body (it moves every env's tasks, and no
    deploy may start meanwhile)."""

    def __init__(self, host: RemoteHost, config: Config, doing: str, **kwargs: Any) -> None:
        super().__init__(host, config, CLUSTER, **kwargs)
        self.others = [Lock(host, Layout.of(config, env).lock, env, action=doing,
                            clock=self.clock) for env in sorted(config.environments)]

    def held_locks(self) -> list[Lock]:
        return [self.lock, *(lock for lock in self.others if lock.taken)]

    def lock_prefix(self) -> str:
        return commands.before(commands.mkdir_p(*(Layout.of(self.config, e).env_dir
                                                  for e in [CLUSTER, *self.config.environments])))

    def lock_every_env(self) -> None:
        for lock in self.others:
            lock.acquire()

    def wait(self, done: Callable[[], bool | None], failure: Callable[[float], str]) -> None:
        """Poll `done` every second (a heartbeat for the locks each time) up to
        `remote.rollout_timeout`; CheckFailed with `failure(timeout)` past it."""
        def look() -> bool | None:
            self.beat()
            return done()

        timeout = self.config.remote.rollout_timeout
        try:
            until(look, timeout=timeout, interval=1.0, clock=self.clock)
        except TimedOut:
            raise CheckFailed(failure(timeout)) from None


class Drain(ClusterRun):
    """`fab cluster.drain NODE`: its tasks move to the other nodes, converged, then verified
    by the smoke suite of every env that runs (as a deploy verifies its env: the tasks that
    moved serve through the edge again); any failure (or Ctrl-C) makes the node active
    again."""

    action = "cluster-drain"

    def __init__(self, host: RemoteHost, config: Config, node: str, *,
                 verify_fn: Callable[..., list[str]] | None = None, **kwargs: Any) -> None:
        from vedfin_ops.run.env_run import verify

        super().__init__(host, config, f"drain {node}", **kwargs)
        self.node = node
        self.verify_fn = verify_fn or verify
        self.previous = ""
        self.replicas: dict[str, int] = {}  # per service, from the last drain state read

    def body(self) -> dict[str, Any]:
        self.lock_every_env()
        engine = read_nodes(self.host)
        target = next((n for n in engine if n.hostname == self.node), None)
        if target is None:
            raise UsageError(f"cluster.drain: no node {self.node!r} in the swarm (known: "
                             f"{', '.join(n.hostname for n in engine)})")
        self.refuse_unsafe(engine, target)
        if target.availability == "drain":
            self.say(f"cluster.drain: {self.node} is drained already")
            with self.shielded():
                self.commit({"node": self.node, "moved": 0})
                self.audit_ok("noop", detail=f"{self.node} drained already")
            return {"node": self.node, "moved": 0, "verified": []}
        before = len(parse_drain_state(self.host.run(commands.drain_state(self.node),
                                                     what="drain state"))[0])
        self.previous = target.availability
        self.beat(force=True)
        self.engine_touched = True
        self.host.run(commands.node_availability(self.node, "drain"),
                      what=f"drain {self.node}")
        self.wait_drained()
        envs = running_envs(self.config, self.replicas)
        failures = [f"{env}: {failure}" for env in envs
                    for failure in self.verify_fn(self.config, env)]
        if failures:
            raise CheckFailed(f"cluster.drain: verify failed: {'; '.join(failures)}")
        result = {"node": self.node, "moved": before, "verified": envs}
        checked = f", verified: {', '.join(envs)}" if envs else ", no env runs to verify"
        with self.shielded():
            self.commit(result)
            self.audit_ok("ok", detail=f"{self.node}: {before} task(s) moved{checked}")
        self.say(f"cluster.drain: {self.node} drained, {before} task(s) moved{checked}")
        return result

    def refuse_unsafe(self, engine: list[EngineNode], target: EngineNode) -> None:
        """Nothing may lose its only place: the node postgres runs on (its volume is there,
        whatever the labels say: `vps:` renders none), postgres's node by label or config,
        the last public node, the last node that runs anything."""
        active = [n for n in engine if n.availability == "active" and n.state == "ready"]
        if not [n for n in active if n is not target]:
            raise CheckFailed(f"cluster.drain: {self.node} is the only active node")
        postgres = read_shared_place(self.host, self.config, "postgres")
        if postgres.volume_node == self.node:
            how = (f"runs postgres ({shared_stack_name(self.config)}_postgres), on its volume"
                   if postgres.running_on == self.node
                   else "holds postgres's volume (its last task ran there)")
            raise CheckFailed(f"cluster.drain: {self.node} {how}: drained, postgres would "
                              f"start on another node, on an empty volume (move the volume "
                              f"first)")
        configured = configured_node(self.config, self.node) if self.config.multi_node \
            else None
        if target.labels.get(POSTGRES_LABEL) == "true" or (configured and configured.postgres):
            raise CheckFailed(f"cluster.drain: {self.node} holds postgres's volume: draining "
                              f"it stops the database (move the volume first)")
        if (target.labels.get(EDGE_LABEL) == "true" and not any(
                n is not target and n.labels.get(EDGE_LABEL) == "true" for n in active)) or (
                configured and configured.public and self.config.edge.mode == "caddy"):
            raise CheckFailed(f"cluster.drain: {self.node} is the only public node: the edge "
                              f"would have nowhere to run")
        left = [n for n in self.config.nodes if n.name != self.node]
        if self.config.multi_node and len(left) < len(self.config.nodes):
            from vedfin_ops.reports.capacity import node_capacity

            smaller = self.config.model_copy(update={"nodes": left})
            over = [r for n in node_capacity(smaller) if n.status == "critical"
                    for r in n.reasons]
            if over:  # limits are caps, not use (as the deploy's gate): said, not refused
                self.say(f"warning: without {self.node} the limits commit more than the "
                         f"other nodes hold: {'; '.join(over)}")

    def wait_drained(self) -> None:
        """Until the node runs nothing and every service runs its replicas elsewhere."""
        left: list[str] = []

        def drained() -> bool | None:
            text = self.host.run(commands.drain_state(self.node), what="drain state")
            tasks, short = parse_drain_state(text)
            self.replicas = wanted_replicas(text)
            self.show([f"{self.node}: {len(tasks)} task(s) left", *(f"  {s}" for s in short)])
            left[:] = short or ([f"{len(tasks)} task(s) still on {self.node}"] if tasks
                                else [])
            return None if left else True

        self.wait(drained, lambda timeout: f"cluster.drain: not converged after {timeout:g} s "
                                           f"({', '.join(left)})")

    def put_back(self) -> str:
        if not self.previous:
            return ""
        self.host.run(commands.node_availability(self.node, self.previous),
                      what=f"undrain {self.node}")
        return f"{self.node} is {self.previous} again"


def drain(conn: Any, config: Config, node: str, *, say: Say = print,
          show: Show | None = None, clock: Clock = REAL,
          verify_fn: Callable[..., list[str]] | None = None) -> dict[str, Any]:
    """Drain `node` (the engine's node name) through the manager `conn`; audited."""
    from vedfin_ops.run.env_run import as_env_host

    host = as_env_host(conn, config, sorted(config.environments)[0])
    result: dict[str, Any] = Drain(host, config, node, say=say, show=show,
                                   clock=clock, verify_fn=verify_fn).execute()
    return result


class Join(ClusterRun):
    """`fab -H MANAGER cluster.join NODE`: a configured worker joins the swarm over its own SSH
    link (its host key checked like the manager's), then gets the labels it lacks and must be
    ready. Converged: a node already in the swarm only gets labels it lacks (noop when none).
    Every env's lock is held (a node's labels move pinned tasks). A join that fails after
    the node joined takes it out again (leave on the node, `node rm` of its own ID on the
    manager), so the swarm is as before.

    Labels are only ever added here: removing one could move postgres off its volume (a
    stray `vedfin.*` label is reported, with the command that removes it). Managers are
    joined by hand: a half-done manager join undone with `swarm leave --force` would cost the
    swarm its quorum."""

    action = "cluster-join"

    def __init__(self, host: RemoteHost, config: Config, node: Node, node_host: RemoteHost,
                 **kwargs: Any) -> None:
        super().__init__(host, config, f"join {node.name}", **kwargs)
        self.node, self.node_host = node, node_host
        self.joined = False
        self.node_id = ""  # the joined node's own ID, read from its engine

    def _cancel_running(self) -> None:
        """Ctrl-C also cuts a command hanging on the node's own link."""
        super()._cancel_running()
        cancel = getattr(self.node_host, "cancel_running", None)
        if cancel is not None and self.node_host is not self.host:
            cancel()

    def body(self) -> dict[str, Any]:
        from vedfin_ops.cluster.placement import node_labels

        self.lock_every_env()
        name = self.node.name
        engine = read_nodes(self.host)
        entries = [n for n in engine if n.hostname == name]
        member = next((n for n in entries if n.state == "ready"), None)
        wanted = node_labels(self.node)
        self.refuse_second_holder(engine, member, wanted)
        if member is None:
            if entries:
                raise CheckFailed(
                    f"cluster.join: the swarm lists {name} as {entries[0].state} (a former "
                    f"member): on the manager, docker node rm {entries[0].id}, then join again")
            self.refuse_unpinned_postgres()
            member = self.join()
        add = {k: v for k, v in wanted.items() if member.labels.get(k) != v}
        stray = sorted(k for k in member.labels
                       if k.startswith(RESERVED_LABEL_PREFIX) and k not in wanted)
        if add:
            self.engine_touched = True
            self.host.run(commands.node_labels_update(member.id, add, []),
                          what=f"label {name}")
        if stray:
            self.say(f"warning: {name} carries {', '.join(stray)}, which the config does not "
                     f"give it; once nothing pinned by it runs there: docker node update "
                     + " ".join(f"--label-rm {k}" for k in stray) + f" {name}")
        changed = self.joined or bool(add)
        result = {"node": name, "joined": self.joined, "labels": sorted(add), "stray": stray}
        with self.shielded():
            self.commit(result)
            self.audit_ok("ok" if changed else "noop",
                          detail=f"{name}: " + ("joined" if self.joined else "a member")
                          + (f", labels {', '.join(sorted(add))}" if add else ""))
        self.say(f"cluster.join: {name} " + ("joined the swarm" if self.joined else
                                              "is in the swarm already")
                 + (f"; labels set: {', '.join(sorted(add))}" if add else ""))
        return result

    def refuse_second_holder(self, engine: list[EngineNode], member: EngineNode | None,
                             wanted: dict[str, str]) -> None:
        """A placement label this join would set while another node carries it: postgres's
        (or the edge's) constraint would then match two nodes, and any reschedule may start
        it on the one without its volume. Which node keeps the label is the user's call
        (where the volume is, against what the config says): named, never guessed."""
        name = self.node.name
        for label, service in SHARED_LABELS.items():
            if wanted.get(label) != "true" or (member and member.labels.get(label) == "true"):
                continue
            holders = sorted({n.hostname for n in engine
                              if n.hostname != name and n.labels.get(label) == "true"})
            if not holders:
                continue
            runs = where_it_runs(service, read_shared_place(self.host, self.config, service))
            raise CheckFailed(
                f"cluster.join: {', '.join(holders)} carries {label} already and {runs}: "
                f"labelled too, {name} would let swarm start "
                f"{'the edge' if service == 'edge' else service} on either, on an empty "
                f"volume; make the config and the swarm agree first (the label stays on the "
                f"volume's node: set {'postgres' if service == 'postgres' else 'public'}: "
                f"true there in the config, or move the volume to {name}, then docker node "
                f"update --label-rm {label} {holders[0]})")

    def refuse_unpinned_postgres(self) -> None:
        """A postgres deployed from `vps:` (or by hand) carries no constraint: with one more
        node in the swarm, any restart may start it there, on an empty volume. Pinning it
        restarts postgres, which is not a join's to do: the command is named."""
        postgres = read_shared_place(self.host, self.config, "postgres")
        if not postgres.deployed or postgres.pinned_by(POSTGRES_LABEL):
            return
        service = f"{shared_stack_name(self.config)}_postgres"
        holder = postgres.volume_node or next(
            (n.name for n in self.config.nodes if n.postgres), "its node (pending: no task runs)")
        pin = commands.pin_to_label(service, holder, POSTGRES_LABEL)
        raise CheckFailed(f"cluster.join: postgres ({service}) runs on {holder} unpinned: "
                          f"with {self.node.name} in the swarm a restart may start it there, "
                          f"on an empty volume; pin it first: {pin} (postgres restarts once, "
                          f"on {holder})")

    def join(self) -> EngineNode:
        name = self.node.name
        if self.node.role != "worker":
            raise UsageError(f"cluster.join: {name} is a manager in the config; join managers "
                             f"by hand (docker swarm join-token manager), one at a time, to an "
                             f"odd count: undoing a half-done manager join costs the quorum")
        state, _, engine_name = self.node_host.run(
            commands.swarm_local_state(), what=f"swarm state on {name}").strip().partition(" ")
        if engine_name.strip() != name:
            raise CheckFailed(f"cluster.join: the engine at {self.node.host} is named "
                              f"{engine_name.strip()!r}, the config says {name!r} (nodes[].name "
                              f"is the engine's hostname)")
        if state not in ("inactive", ""):
            raise CheckFailed(f"cluster.join: {name}'s engine is {state!r} in a swarm this "
                              f"manager does not list as a ready node (on {name}: docker "
                              f"swarm leave, then join again)")
        address = self.host.run(commands.manager_address(), what="manager address").strip()
        try:
            token = self.host.run(commands.join_token("worker"), what="join token").strip()
        except RemoteError:  # its output, if any, is the token: never in a message
            raise CheckFailed("cluster.join: the manager gave no join token (docker swarm "
                              "join-token worker failed)") from None
        for host in (self.host, self.node_host):  # never shown, whatever prints it back
            host.secrets.append(token)
        self.engine_touched = True
        self.joined = True
        self.node_host.run(commands.swarm_join(address, token), what=f"join {name}")
        self.node_id = self.node_host.run(commands.swarm_node_id(),
                                          what=f"node id of {name}").strip()
        found: list[EngineNode] = []

        def ready() -> bool | None:
            found[:] = [n for n in read_nodes(self.host) if n.id == self.node_id
                        and n.state == "ready"]
            return True if found else None

        self.wait(ready, lambda timeout: f"cluster.join: {name} joined but is not ready "
                                         f"after {timeout:g} s")
        return found[0]

    def put_back(self) -> str:
        """Each undo step on its own: a node that cannot be reached is still removed from
        the manager's list; what could not be done is named, with its command."""
        if not self.joined:
            return ""
        name, left = self.node.name, []
        try:
            self.node_host.run(commands.swarm_leave(), what=f"leave {name}", check=False)
        except Exception as exc:
            left.append(f"on {name}: docker swarm leave --force ({describe(exc)})")
        if self.node_id:
            try:
                self.host.run(commands.node_remove(self.node_id), what=f"remove {name}")
            except Exception as exc:
                left.append(f"on the manager: docker node rm --force {self.node_id} "
                            f"({describe(exc)})")
        elif not left:
            left.append(f"on the manager, if docker node ls lists {name}: docker node rm "
                        f"--force with its ID")
        if left:
            return f"{name} may still be in the swarm; " + "; ".join(left)
        return f"{name} left the swarm again"


def join(conn: Any, node_conn: Any, config: Config, node: str, *, say: Say = print,
         clock: Clock = REAL) -> dict[str, Any]:
    """Join the configured node `node` (its name or host) through the manager `conn`;
    `node_conn` reaches the node itself; audited."""
    from vedfin_ops.run.env_run import as_env_host

    found = configured_node(config, node)
    if found is None:
        raise UsageError(f"cluster.join: {node!r} is not in the config's nodes (known: "
                         f"{', '.join(n.name for n in config.nodes) or 'none'})")
    first = sorted(config.environments)[0]
    host = as_env_host(conn, config, first)
    node_host = as_env_host(node_conn, config, first)
    result: dict[str, Any] = Join(host, config, found, node_host, say=say,
                                  clock=clock).execute()
    return result
