"""Capacity math: what the config commits on the VPS, what a rolling deploy adds, what to do.

Pure: the config (and, under `-H HOST`, the measured usage) in, a report out. The runbook
commits 7000 MiB of limits on a 4096 MiB VPS on purpose, so the figures here are the runbook's
own and the status says how far past physical memory (and swap) the limits reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from vedfin_ops.config.model import Config
from vedfin_ops.config.names import shared_stack_name, stack_name
from vedfin_ops.config.roles import protected, protected_envs
from vedfin_ops.remote.probes.usage import Usage

Status = Literal["ok", "warn", "critical"]


def _r(value: float) -> float:
    """CPU sums like 0.1 + 0.2 must print as 0.3."""
    return round(value, 3)


@dataclass(frozen=True)
class Line:
    name: str
    env: str  # an env name, "shared" or "overhead"
    memory_mb: int
    cpus: float
    replicas: int
    kind: Literal["app", "shared", "overhead"]
    service: str = ""  # the swarm service that runs it ("" for overhead)
    used_mb: float | None = None  # measured, all replicas together
    running: int = 0  # containers measured
    used_cpu_percent: float | None = None  # measured, % of one CPU, all replicas together

    @property
    def used_percent(self) -> float | None:
        """Measured use as a share of the limits of the replicas that run."""
        if self.used_mb is None or not self.running:
            return None
        return round(self.used_mb / (self.memory_mb * self.running) * 100, 1)

    @property
    def per_replica_used_mb(self) -> float | None:
        return None if self.used_mb is None or not self.running else self.used_mb / self.running

    @property
    def total_memory_mb(self) -> int:
        return self.memory_mb * self.replicas

    @property
    def total_cpus(self) -> float:
        return _r(self.cpus * self.replicas)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "env": self.env, "kind": self.kind,
            "memory_mb": self.memory_mb, "cpus": self.cpus, "replicas": self.replicas,
            "total_memory_mb": self.total_memory_mb, "total_cpus": self.total_cpus,
        }
        if self.kind != "overhead":
            out["used_memory_mb"] = None if self.used_mb is None else round(self.used_mb, 1)
            out["used_percent"] = self.used_percent
            out["used_cpu_percent"] = self.used_cpu_percent
        return out


@dataclass(frozen=True)
class Recommendation:
    action: str
    frees_memory_mb: int
    frees_cpus: float
    detail: str
    command: str

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "frees_memory_mb": self.frees_memory_mb,
                "frees_cpus": _r(self.frees_cpus), "detail": self.detail,
                "command": self.command}


@dataclass(frozen=True)
class Surge:
    """What one rolling deploy adds at its peak, given how the tool rolls out.

    `docker stack deploy` starts every changed service's update at once, and each start-first
    service runs `parallelism` extra tasks while they become healthy; stop-first services (and
    postgres, always) add nothing. One env deploys at a time per lock, so the peak is the
    largest env's sum.
    """

    env: str | None
    memory_mb: int
    cpus: float
    services: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeCapacity:
    """One node of the cluster: what lands on it (`cluster.placement.place`), at rest and at
    a rollout's peak, judged against its own RAM + swap."""

    name: str
    role: str
    memory_mb: int
    cpus: float
    swap_mb: int
    committed_memory_mb: int
    committed_cpus: float
    surge_memory_mb: int
    surging: list[str]
    tasks: dict[str, int]
    status: Status
    reasons: list[str]
    # measured on the node itself (`fab -H MANAGER capacity-report` on a cluster)
    live: dict[str, float] | None = None

    @property
    def peak_memory_mb(self) -> int:
        return self.committed_memory_mb + self.surge_memory_mb

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "memory_mb": self.memory_mb,
                "cpus": self.cpus, "swap_mb": self.swap_mb,
                "committed": {"memory_mb": self.committed_memory_mb,
                              "cpus": self.committed_cpus},
                "surge_peak": {"memory_mb": self.peak_memory_mb,
                               "added_memory_mb": self.surge_memory_mb,
                               "surging_services": self.surging},
                "tasks": self.tasks, "status": self.status, "reasons": self.reasons,
                **({"live": self.live} if self.live is not None else {})}


def with_live_use(nodes: list[NodeCapacity], config: Config,
                  node_usage: dict[str, Usage]) -> list[NodeCapacity]:
    """Each node with what it uses now, judged by the alert thresholds as one VPS is
    (`live_status`): the plan's verdict gives way to the measured one."""
    from dataclasses import replace

    out = []
    for node in nodes:
        usage = node_usage.get(node.name)
        if usage is None:
            out.append(node)
            continue
        status, reasons = live_status(config, usage)
        out.append(replace(node, status=status, reasons=[f"{node.name}: {r}" for r in reasons],
                           live={"memory_total_mb": usage.memory_total_mb,
                                 "memory_used_mb": usage.memory_used_mb,
                                 "swap_total_mb": usage.swap_total_mb,
                                 "swap_used_mb": usage.swap_used_mb}))
    return out


def node_capacity(config: Config, env: str | None = None) -> list[NodeCapacity]:
    """Per node, by the same measure as the whole VPS: limits past RAM + swap (at rest or at
    a rollout's peak) critical, past the RAM warning or the node's CPUs a warning."""
    from vedfin_ops.cluster.placement import place

    out = []
    for plan in place(config, env):
        node = plan.node
        virtual = node.memory + node.swap
        reasons: list[str] = []
        if plan.memory_mb > virtual:
            reasons.append(f"{node.name}: limits commit {plan.memory_mb} MiB, more than RAM "
                           f"+ swap ({node.memory} + {node.swap} MiB)")
        if plan.peak_mb > virtual:
            reasons.append(f"{node.name}: a rolling deploy peaks at {plan.peak_mb} MiB of "
                           f"limits ({', '.join(plan.surging)} start beside the old), more "
                           f"than RAM + swap ({virtual} MiB)")
        status: Status = "critical" if reasons else "ok"
        if not reasons:
            if plan.memory_mb > node.memory * config.alerts.ram_warn / 100:
                reasons.append(f"{node.name}: limits commit {plan.memory_mb} MiB, over "
                               f"{config.alerts.ram_warn:g}% of {node.memory} MiB RAM")
            if plan.cpus > node.cpus:
                reasons.append(f"{node.name}: limits commit {plan.cpus:g} CPU on "
                               f"{node.cpus:g}")
            status = "warn" if reasons else "ok"
        out.append(NodeCapacity(node.name, node.role, node.memory, node.cpus, node.swap,
                                plan.memory_mb, _r(plan.cpus), plan.surge_mb, plan.surging,
                                {k: v for k, v in plan.tasks.items()
                                 if not k.startswith("overhead:")}, status, reasons))
    return out


@dataclass(frozen=True)
class CapacityReport:
    scope: str
    vps_memory_mb: int
    vps_cpus: float
    vps_swap_mb: int
    lines: list[Line]
    surge: Surge
    status: Status
    reasons: list[str]
    recommendations: list[Recommendation]
    host: dict[str, float | None] | None = None  # measured on the host, when live
    nodes: list[NodeCapacity] = field(default_factory=list)

    @property
    def committed_memory_mb(self) -> int:
        return sum(line.total_memory_mb for line in self.lines)

    @property
    def committed_cpus(self) -> float:
        return _r(sum(line.total_cpus for line in self.lines))

    @property
    def services_memory_mb(self) -> int:
        return sum(line.total_memory_mb for line in self.lines if line.kind != "overhead")

    @property
    def services_cpus(self) -> float:
        return _r(sum(line.total_cpus for line in self.lines if line.kind != "overhead"))

    @property
    def surge_peak_memory_mb(self) -> int:
        return self.committed_memory_mb + self.surge.memory_mb

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "vps": {"memory_mb": self.vps_memory_mb, "cpus": self.vps_cpus,
                    "swap_mb": self.vps_swap_mb},
            "services": [line.to_dict() for line in self.lines],
            "committed": {"memory_mb": self.committed_memory_mb, "cpus": self.committed_cpus},
            "services_only": {"memory_mb": self.services_memory_mb, "cpus": self.services_cpus},
            "surge_peak": {
                "memory_mb": self.surge_peak_memory_mb,
                "cpus": _r(self.committed_cpus + self.surge.cpus),
                "added_memory_mb": self.surge.memory_mb,
                "env": self.surge.env,
                "surging_services": self.surge.services,
                "order": "all changed services of one env at once; start-first adds "
                         "parallelism tasks each; postgres stop-first",
            },
            "status": self.status,
            "reasons": self.reasons,
            "recommendations": [r.to_dict() for r in self.recommendations],
            **({"host": self.host} if self.host is not None else {}),
            "nodes": [node.to_dict() for node in self.nodes],
        }


def lines(config: Config, env: str | None = None) -> list[Line]:
    """Everything in scope: the env's apps (all when None), shared services, overhead."""
    out = [Line(a.name, a.env, a.resources.memory, a.resources.cpus, a.replicas, "app",
                f"{stack_name(config, a.env)}_{a.name}")
           for a in config.apps(env)]
    for name, res in (("postgres", config.postgres.resources), ("redis", config.redis.resources)):
        out.append(Line(name, "shared", res.memory, res.cpus, 1, "shared",
                        f"{shared_stack_name(config)}_{name}"))
    out.extend(Line(name, "overhead", res.memory, res.cpus, 1, "overhead")
               for name, res in config.overhead.items())
    return out


def surge(config: Config, env: str | None = None) -> Surge:
    strategy = config.deployment_strategy
    if strategy.order != "start-first":
        return Surge(env, 0, 0.0)
    candidates = [env] if env else list(config.environments)
    best = Surge(None, 0, 0.0)
    for name in candidates:
        apps = config.apps(name)
        extra = {a.name: min(strategy.parallelism, a.replicas) for a in apps}
        memory = sum(a.resources.memory * extra[a.name] for a in apps)
        if memory > best.memory_mb or best.env is None:
            cpus = _r(sum(a.resources.cpus * extra[a.name] for a in apps))
            best = Surge(name, memory, cpus, [a.name for a in apps])
    return best


def _status(config: Config, committed_mb: int, committed_cpus: float,
            peak_mb: int) -> tuple[Status, list[str]]:
    vps = config.vps
    physical, virtual = vps.memory, vps.memory + vps.swap
    warn_mb = vps.memory * config.alerts.ram_warn / 100
    reasons: list[str] = []
    if committed_mb > virtual:
        reasons.append(f"limits commit {committed_mb} MiB, more than RAM + swap "
                       f"({physical} + {vps.swap} MiB)")
    if peak_mb > virtual:
        reasons.append(f"a rolling deploy peaks at {peak_mb} MiB of limits, more than "
                       f"RAM + swap ({virtual} MiB)")
    if reasons:
        return "critical", reasons
    if committed_mb > warn_mb:
        reasons.append(f"limits commit {committed_mb} MiB, over "
                       f"{config.alerts.ram_warn:g}% of {physical} MiB RAM")
    if committed_cpus > vps.cpus:
        reasons.append(f"limits commit {committed_cpus:g} CPU on {vps.cpus:g}")
    return ("warn" if reasons else "ok"), reasons


def recommendations(config: Config, measured: dict[str, Line] | None = None,
                    usage: Usage | None = None) -> list[Recommendation]:
    """The runbook's three options, each with what it frees: the limits it releases, or
    (live) the memory its containers use now."""
    out: list[Recommendation] = []
    measured = {} if usage is None else {
        n: _measured(line, usage) for n, line in (measured or {}).items()}

    def frees(app: Any, replicas: int) -> int:
        line = measured.get(app.name)
        per = line.per_replica_used_mb if line else None
        return round((per if per is not None else app.resources.memory) * replicas)

    others = [a for a in config.applications if not protected(config, a.env)]
    if others:
        envs = sorted({a.env for a in others})
        out.append(Recommendation(
            action=f"pause {' and '.join(envs)}",
            frees_memory_mb=sum(frees(a, a.replicas) for a in others),
            frees_cpus=sum(a.total_cpus for a in others),
            detail=f"replicas to 0 for {', '.join(a.name for a in others)} during peak hours",
            command=" && ".join(f"fab -H vps pause --env {e}" for e in envs),
        ))
    kept = protected_envs(config)  # never paused: one replica off-hours instead
    multi = [a for a in config.applications if a.env in kept and a.replicas > 1]
    if multi:
        out.append(Recommendation(
            action="one replica off-hours",
            frees_memory_mb=sum(frees(a, a.replicas - 1) for a in multi),
            frees_cpus=sum(a.resources.cpus * (a.replicas - 1) for a in multi),
            detail=f"scale {', '.join(a.name for a in multi)} to 1 replica at night "
                   f"(12AM-6AM); no high availability meanwhile",
            command=" && ".join(f"fab -H vps scale --env {e} --replicas 1" for e in kept
                                if any(a.env == e for a in multi)),
        ))
    plan, vps = config.next_plan, config.vps
    if plan.memory > vps.memory:
        out.append(Recommendation(
            action=f"upgrade VPS {vps.plan} -> {plan.name}",
            frees_memory_mb=plan.memory - vps.memory,
            frees_cpus=max(0.0, plan.cpus - vps.cpus),
            detail=f"{plan.memory // 1024} GB RAM, {plan.cpus:g} CPU ({plan.price}): "
                   f"no resource constraints, room for growth",
            command="",
        ))
    return out


def cluster_recommendations(config: Config, env: str | None,
                            nodes: list[NodeCapacity]) -> list[Recommendation]:
    """Which machine to add: one more worker the size of the largest node, placed as swarm
    would place the tasks again, and what that leaves on the worst node; when the worst node
    is postgres's (pinned there), a bigger postgres node instead, as a worker takes only
    apps away from it."""
    from vedfin_ops.config.model import Node

    order = ("ok", "warn", "critical")
    worst = max(nodes, key=lambda n: (order.index(n.status), n.peak_memory_mb))
    cluster = config.cluster()
    largest = max(cluster, key=lambda n: (n.memory, n.cpus))
    name = next(f"node{i}" for i in range(len(cluster), len(cluster) + 100)
                if f"node{i}" not in {n.name for n in cluster})
    extra = Node.model_validate({"name": name, "host": name, "role": "worker",
                                 "memory": f"{largest.memory}m", "cpus": largest.cpus,
                                 "swap": f"{largest.swap}m"})
    grown = config.model_copy(update={"nodes": [*cluster, extra]})
    after = {n.name: n for n in node_capacity(grown, env)}[worst.name]
    out = [Recommendation(
        action=f"add a worker node ({largest.memory // 1024} GB, {largest.cpus:g} CPU)",
        frees_memory_mb=max(0, worst.peak_memory_mb - after.peak_memory_mb),
        frees_cpus=max(0.0, worst.committed_cpus - after.committed_cpus),
        detail=f"{worst.name} then peaks at {after.peak_memory_mb} MiB of "
               f"{worst.memory_mb + worst.swap_mb} MiB RAM + swap ({after.status}; now "
               f"{worst.peak_memory_mb} MiB, {worst.status})",
        command=f"add {{name: {name}, host: ..., memory: {largest.memory // 1024}g}} to "
                f"nodes:, then fab -H MANAGER cluster.join {name}")]
    if "postgres" in worst.tasks and after.status == worst.status:
        out.append(Recommendation(
            action=f"a bigger {worst.name} (postgres's node)",
            frees_memory_mb=0, frees_cpus=0.0,
            detail=f"postgres is pinned to {worst.name} with its volume: more workers take "
                   f"only apps away from it",
            command=""))
    return out


def capacity_report(config: Config, env: str | None = None,
                    usage: Usage | None = None,
                    node_usage: dict[str, Usage] | None = None) -> CapacityReport:
    """The runbook's Task 2.3 as numbers; with `usage` (measured), its ACTUAL USAGE too; on
    a cluster, with `node_usage` (each node measured over its own link), each node's."""
    if env is not None:
        config.require_env(env)
    scope_lines = lines(config, env)
    peak = surge(config, env)
    committed_mb = sum(line.total_memory_mb for line in scope_lines)
    committed_cpus = _r(sum(line.total_cpus for line in scope_lines))
    nodes = node_capacity(config, env)
    if usage is None and config.multi_node:
        # a cluster is judged node by node: the worst node is the cluster's status
        worst = max(nodes, key=lambda n: ("ok", "warn", "critical").index(n.status))
        status = worst.status
        reasons = [r for n in nodes for r in n.reasons if n.status == status]
        recs = cluster_recommendations(config, env, nodes) if status != "ok" else []
        host = None
    elif usage is None:
        status, reasons = _status(config, committed_mb, committed_cpus,
                                  committed_mb + peak.memory_mb)
        recs = recommendations(config) if status != "ok" else []
        host = None
    else:
        scope_lines = [_measured(line, usage) for line in scope_lines]
        status, reasons = live_status(config, usage)
        if node_usage:
            nodes = with_live_use(nodes, config, node_usage)
            order = ("ok", "warn", "critical")
            status = max((n.status for n in nodes), key=order.index)
            reasons = [r for n in nodes for r in n.reasons if n.status == status]
        recs = recommendations(config, {ln.name: ln for ln in lines(config)}, usage)
        host = {"memory_total_mb": usage.memory_total_mb,
                "memory_used_mb": usage.memory_used_mb,
                "memory_used_percent": round(usage.memory_used_mb / usage.memory_total_mb
                                             * 100, 1) if usage.memory_total_mb else 0.0,
                "swap_total_mb": usage.swap_total_mb, "swap_used_mb": usage.swap_used_mb,
                "cpu_load": usage.cpu_load, "cpus": usage.cpus,
                "cpu_percent": usage.cpu_percent}
        if usage.disk is not None:
            host.update({"disk_total_mb": usage.disk.total_mb,
                         "disk_used_mb": usage.disk.used_mb,
                         "disk_used_percent": usage.disk.used_percent,
                         "disk_free_mb": usage.disk.free_mb,
                         "backups_mb": usage.disk.backups_mb})
    cluster = config.cluster()
    return CapacityReport(
        scope=env or "all",
        # a cluster's "vps" is all its machines together (each node's own figures: nodes)
        vps_memory_mb=sum(n.memory for n in cluster),
        vps_cpus=_r(sum(n.cpus for n in cluster)),
        vps_swap_mb=sum(n.swap for n in cluster),
        lines=scope_lines,
        surge=peak,
        status=status,
        reasons=reasons,
        recommendations=recs,
        host=host,
        nodes=nodes,
    )


def _measured(line: Line, usage: Usage) -> Line:
    if not line.service:
        return line
    found = usage.service_used(line.service)
    line = replace(line, used_cpu_percent=usage.service_cpu(line.service))
    if found is None:
        return line
    return replace(line, used_mb=found[0], running=found[1])


def live_status(config: Config, usage: Usage) -> tuple[Status, list[str]]:
    """By the alert thresholds: RAM over `alerts.ram.above` (90%) critical, over `ramWarn`
    (85%) warn. Limits over-committed are the runbook's design and not judged here."""
    if not usage.memory_total_mb:
        return "warn", ["the host reported no memory figures"]
    percent = usage.memory_used_mb / usage.memory_total_mb * 100
    figures = (f"RAM {usage.memory_used_mb:.0f} of {usage.memory_total_mb:.0f} MiB used "
               f"({percent:.0f}%), swap {usage.swap_used_mb:.0f} of "
               f"{usage.swap_total_mb:.0f} MiB")
    status: Status
    if percent > config.alerts.ram.above:
        status, reasons = "critical", [f"{figures}: over {config.alerts.ram.above:g}%"]
    elif percent > config.alerts.ram_warn:
        status, reasons = "warn", [f"{figures}: over {config.alerts.ram_warn:g}%"]
    else:
        status, reasons = "ok", [figures]
    disk = usage.disk
    if disk is not None and disk.used_percent > config.alerts.disk.above:
        reasons.append(f"disk {disk.used_percent:g}% used ({disk.used_mb:.0f} of "
                       f"{disk.total_mb:.0f} MiB, backups {disk.backups_mb:.0f} MiB of it): "
                       f"over the {config.alerts.disk.above:g}% alert (lower backups.keep, "
                       f"or prune images)")
        status = "critical" if status == "critical" else "warn"
    return status, reasons
