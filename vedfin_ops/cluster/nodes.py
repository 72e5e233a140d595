"""The engine's view of the cluster's nodes, read through a manager, and what a deploy needs
of it: every configured node in the swarm, ready, carrying the placement labels.

Why a deploy refuses before any change: postgres updates stop-first, so a postgres pinned to a
label no node carries would be stopped and never start again (its task pending for lack of a
node); an edge pinned likewise would leave every domain without an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vedfin_ops.cluster.placement import POSTGRES_LABEL, node_labels
from vedfin_ops.config.model import Config, Node
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.probes.usage import Usage


@dataclass(frozen=True)
class EngineNode:
    """One node as the engine reports it."""

    id: str
    hostname: str
    role: str  # manager | worker
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    labels: dict[str, str] = field(default_factory=dict)
    leader: bool = False


def parse_nodes(text: str) -> list[EngineNode]:
    """`commands.node_inventory()`'s output; lines that are not a node's JSON are refused
    loudly (a changed engine format must not read as "no nodes")."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            data: dict[str, Any] = json.loads(line)
            spec, status = data.get("Spec", {}), data.get("Status", {})
            out.append(EngineNode(
                id=str(data["ID"]), hostname=str(data["Description"]["Hostname"]),
                role=str(spec.get("Role", "")), state=str(status.get("State", "")),
                availability=str(spec.get("Availability", "")),
                labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
                leader=bool((data.get("ManagerStatus") or {}).get("Leader", False))))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckFailed(f"unreadable node inventory line ({exc.__class__.__name__}): "
                              f"{line[:120]!r}") from None
    return out


def _by_hostname(engine: list[EngineNode]) -> dict[str, EngineNode]:
    """A node that left and joined again keeps a `down` entry under the same hostname: the
    ready one is the node."""
    out: dict[str, EngineNode] = {}
    for node in engine:
        seen = out.get(node.hostname)
        if seen is None or (seen.state != "ready" and node.state == "ready"):
            out[node.hostname] = node
    return out


def placement_problems(config: Config, engine: list[EngineNode]) -> list[str]:
    """What keeps the rendered placement from holding on this swarm, one finding each (with
    the command that fixes it); empty when every configured node is there, ready and
    labelled, no other node carries a placement label, and the active nodes leave each
    capped app room for its start-first surge."""
    from vedfin_ops.cluster.placement import max_replicas_per_node
    from vedfin_ops.config.model import RESERVED_LABEL_PREFIX

    if not config.multi_node:
        return []
    by_name = _by_hostname(engine)
    holder = next((n for n in config.cluster() if n.postgres), None)
    problems = []
    wanted: dict[str, dict[str, str]] = {}
    for node in config.cluster():
        labels = node_labels(node)
        wanted[node.name] = {k: v for k, v in labels.items()
                             if k.startswith(RESERVED_LABEL_PREFIX)}
        found = by_name.get(node.name)
        if found is None:
            problems.append(f"{node.name}: not in the swarm (join it: docker swarm join "
                            f"on {node.host} with a manager's join-token; or set its name to "
                            f"the engine's hostname)")
            continue
        if found.state != "ready":
            problems.append(f"{node.name}: {found.state}, not ready")
        missing = {k: v for k, v in labels.items() if found.labels.get(k) != v}
        if missing:
            adds = " ".join(f"--label-add {k}={v}" for k, v in sorted(missing.items()))
            problems.append(f"{node.name}: labels {', '.join(sorted(missing))} missing "
                            f"(docker node update {adds} {node.name})")
        if (node.postgres or node.public) and found.availability != "active":
            what = "holds postgres's volume" if node.postgres else "is the public node"
            problems.append(f"{node.name}: {what} but is {found.availability} (docker node "
                            f"update --availability active {node.name})")
    for name, seen in sorted(by_name.items()):
        # a placement label where it does not belong pins postgres (or the edge) to a node
        # without its volume (or without the address DNS names)
        stray = sorted(k for k in seen.labels if k.startswith(RESERVED_LABEL_PREFIX)
                       and k not in wanted.get(name, {}))
        if stray:
            removes = " ".join(f"--label-rm {k}" for k in stray)
            # removed, the label stops a postgres that runs there: swarm would start it on
            # the config's node, on an empty volume, unless its data went there first
            first = (f"if postgres runs on {name}, its data is there: move it to "
                     f"{holder.name} first; then "
                     if POSTGRES_LABEL in stray and holder is not None else "")
            problems.append(f"{name}: carries {', '.join(stray)} but the config does not "
                            f"place that there ({first}docker node update {removes} {name})")
    active = sum(1 for n in by_name.values() if n.state == "ready" and
                 n.availability == "active")
    for app in config.applications:
        cap = max_replicas_per_node(app.replicas, len(config.nodes))
        if cap is not None and active * cap < app.replicas + 1:
            problems.append(f"{app.name}: {active} active node(s) hold at most {active * cap} "
                            f"of its tasks ({cap} per node), one short of a start-first "
                            f"update of {app.replicas} replicas (bring a node back: docker "
                            f"node update --availability active NODE)")
    return problems


def read_nodes(host: Any) -> list[EngineNode]:
    return parse_nodes(host.run(commands.node_inventory(), what="swarm nodes"))


@dataclass(frozen=True)
class ServicePlace:
    """Where a shared service runs and what pins it there, as the engine says (not the
    labels: a label says where it may start, the task where it did, and its volume with it)."""

    deployed: bool
    constraints: list[str] = field(default_factory=list)
    running_on: str = ""  # the node of the task meant to run; "" when none is placed
    nodes: list[str] = field(default_factory=list)  # nodes of its tasks, newest first

    @property
    def volume_node(self) -> str:
        """Where its volume is: the node it runs on, else the last one it ran on."""
        return self.running_on or (self.nodes[0] if self.nodes else "")

    def pinned_by(self, label: str) -> bool:
        return any(c.replace(" ", "") == f"node.labels.{label}==true"
                   for c in self.constraints)


def parse_service_place(text: str) -> ServicePlace:
    """`commands.service_placement()`'s output; an unreadable placement is refused loudly
    (a changed format must not read as "not pinned" nor as "runs nowhere")."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines[:1] == ["absent"]:
        return ServicePlace(deployed=False)
    if not lines or not lines[0].startswith("placement "):
        raise CheckFailed(f"unreadable service placement: {text[:120]!r}")
    try:
        data = json.loads(lines[0].removeprefix("placement ")) or {}
        constraints = [str(c) for c in (data.get("Constraints") or [])]
    except (ValueError, AttributeError, TypeError):
        raise CheckFailed(f"unreadable service placement: {lines[0][:120]!r}") from None
    running, nodes = "", []
    for line in lines[1:]:
        desired, _, rest = line.partition("|")
        node = rest.partition("|")[0].strip()
        if not node:
            continue
        if node not in nodes:
            nodes.append(node)
        if desired.strip().lower() == "running" and not running:
            running = node
    return ServicePlace(True, constraints, running, nodes)


def read_service_place(host: Any, service: str, what: str) -> ServicePlace:
    return parse_service_place(host.run(commands.service_placement(service), what=what))


NODE_PROBE_TIMEOUT_S = 60


def configured_node(config: Config, name_or_host: str) -> Node | None:
    """The configured node a user named: by its name (the engine's) or its SSH host."""
    return next((n for n in config.nodes if name_or_host in (n.name, n.host)), None)


def first_manager(config: Config) -> Node:
    """The manager the tool talks to (postgres's node: the loader insists)."""
    return next(n for n in config.nodes if n.role == "manager")


def measure_node(host: Any, node: Node, *, own_link: bool = False) -> Usage:
    """A node's usage now, over its own SSH link (`Host.sibling`: its host key checked), or
    over `host` itself for the node the tool talks to (`own_link`); unreachable, or its key
    unknown or changed, is one line naming it."""
    from vedfin_ops.remote.probes.usage import PROBE, parse_probe

    other = None
    try:
        other = host if own_link else host.sibling(node.host)
        return parse_probe(other.run(PROBE, what=f"probe {node.name}",
                                     timeout=NODE_PROBE_TIMEOUT_S))
    except CheckFailed as exc:
        raise CheckFailed(f"{node.name} ({node.host}): {exc}") from None
    finally:
        if other is not None and other is not host:
            other.close()


def measure_nodes(host: Any, config: Config, manager_usage: Usage) -> dict[str, Usage]:
    """Each node's usage now, the manager's given (the tool's own link), the others each
    over its own SSH link."""
    manager = first_manager(config)
    return {node.name: manager_usage if node.name == manager.name
            else measure_node(host, node) for node in config.nodes}
