"""Where the swarm may run each service on a cluster, and where it will: pure.

The rules (a one-node cluster renders none of them, so its stacks stay as they were):
- postgres is pinned by a label to the node that holds its volume: a volume is local to its
  node, and a postgres the engine moved elsewhere would start on an empty one;
- the edge runs on a public node (the one with the public address DNS points at), where its
  certificates' volume lives too;
- apps spread over the nodes, at most `max_replicas_per_node` of one app on a node, so that
  losing any one node leaves each app of two or more replicas serving.

`place` predicts where tasks land the way swarmkit's spread strategy picks nodes (fewest
tasks of the service, then fewest tasks in all), which is what the per-node capacity and the
gate judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vedfin_ops.config.model import Config, Node

POSTGRES_LABEL = "vedfin.postgres"
EDGE_LABEL = "vedfin.edge"


def node_labels(node: Node) -> dict[str, str]:
    """The engine labels a node must carry: the config's own plus the tool's placement ones."""
    out = dict(node.labels)
    if node.postgres:
        out[POSTGRES_LABEL] = "true"
    if node.public:
        out[EDGE_LABEL] = "true"
    return out


def constraints(config: Config, service: str) -> list[str]:
    """Placement constraints of a shared service (`postgres` or `edge`); none on one node."""
    if not config.multi_node:
        return []
    label = {"postgres": POSTGRES_LABEL, "edge": EDGE_LABEL}.get(service)
    return [] if label is None else [f"node.labels.{label} == true"]


def max_replicas_per_node(replicas: int, nodes: int) -> int | None:
    """The cap that spreads an app without stalling its start-first update.

    The smallest cap that leaves room for one more task than `replicas` across the nodes (the
    start-first surge must land somewhere); a cap that would allow every replica on one node
    protects nothing and is left out (the spread preference still spreads)."""
    if nodes < 2 or replicas < 2:
        return None
    cap = math.ceil((replicas + 1) / nodes)
    return cap if cap < replicas else None


@dataclass
class NodePlan:
    """What lands on one node: the limits of its tasks at rest and at a rollout's peak."""

    node: Node
    tasks: dict[str, int] = field(default_factory=dict)  # service -> replicas here
    memory_mb: int = 0
    cpus: float = 0.0
    surge_mb: int = 0
    surge_cpus: float = 0.0
    surging: list[str] = field(default_factory=list)

    @property
    def running(self) -> int:
        """Tasks the engine counts (overhead entries are not its tasks)."""
        return sum(n for s, n in self.tasks.items() if not s.startswith("overhead:"))

    @property
    def peak_mb(self) -> int:
        return self.memory_mb + self.surge_mb

    def add(self, service: str, memory_mb: int, cpus: float) -> None:
        self.tasks[service] = self.tasks.get(service, 0) + 1
        self.memory_mb += memory_mb
        self.cpus = round(self.cpus + cpus, 3)


def _pick(plans: list[NodePlan], service: str, cap: int | None) -> NodePlan | None:
    """Swarmkit's spread: fewest tasks of this service, then fewest tasks in all."""
    allowed = [p for p in plans if cap is None or p.tasks.get(service, 0) < cap]
    if not allowed:
        return None
    return min(allowed, key=lambda p: (p.tasks.get(service, 0), p.running, p.node.name))


def place(config: Config, env: str | None = None) -> list[NodePlan]:
    """Every task in scope on the node it lands on (the env's apps, or all, plus the shared
    services and each node's overhead), and where one deploy of `env` surges."""
    nodes = config.cluster()
    plans = [NodePlan(node) for node in nodes]
    holder = next(p for p in plans if p.node.postgres)
    res = config.postgres.resources
    holder.add("postgres", res.memory, res.cpus)
    if config.multi_node and config.edge.mode == "caddy":
        # ours, pinned to the public node (Traefik is Dokploy's). On one VPS the runbook's
        # figures count it in the overhead; on a cluster it is on one node only, and the
        # engines' own task lists show it there (tests/nodes)
        public = next(p for p in plans if p.node.public)
        public.add("edge", config.edge.resources.memory, config.edge.resources.cpus)
    redis = config.redis.resources
    # redis keeps nothing on disk (the runbook's `--save ""`): it goes where swarm likes
    target = _pick(plans, "redis", None)
    assert target is not None
    target.add("redis", redis.memory, redis.cpus)
    for name, overhead in config.overhead.items():
        # the system, its agents (Netdata) and the edge's share: counted on every machine
        for plan in plans:
            plan.add(f"overhead:{name}", overhead.memory, overhead.cpus)
    envs = [env] if env is not None else list(config.environments)
    for scope in envs:
        for app in config.apps(scope):
            cap = max_replicas_per_node(app.replicas, len(plans))
            for _ in range(app.replicas):
                spot_plan = _pick(plans, app.name, cap) or _pick(plans, app.name, None)
                assert spot_plan is not None
                spot_plan.add(app.name, app.resources.memory, app.resources.cpus)
    if config.deployment_strategy.order == "start-first":
        for scope in envs:
            _surge(config, scope, plans)
    return plans


def _surge(config: Config, env: str, plans: list[NodePlan]) -> None:
    """Where one deploy of `env` starts its new tasks beside the old (start-first: every
    changed service at once, `parallelism` each); each node keeps the largest env's surge,
    as one env deploys at a time."""
    parallelism = config.deployment_strategy.parallelism
    snapshot = [NodePlan(p.node, dict(p.tasks)) for p in plans]
    extra: dict[str, NodePlan] = {}
    for app in config.apps(env):
        cap = max_replicas_per_node(app.replicas, len(plans))
        for _ in range(min(parallelism, app.replicas)):
            spot = _pick(snapshot, app.name, cap) or _pick(snapshot, app.name, None)
            assert spot is not None
            spot.add(app.name, 0, 0.0)  # counted for the next pick, sized below
            added = extra.setdefault(spot.node.name, NodePlan(spot.node))
            added.add(app.name, app.resources.memory, app.resources.cpus)
    for plan in plans:
        found = extra.get(plan.node.name)
        if found is not None and found.memory_mb > plan.surge_mb:
            plan.surge_mb, plan.surge_cpus = found.memory_mb, found.cpus
            plan.surging = sorted(found.tasks)
