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

from vedfin_ops.cluster.placement import node_labels
from vedfin_ops.config.model import Config
from vedfin_ops.remote import commands


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
    address: str = ""


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
                leader=bool((data.get("ManagerStatus") or {}).get("Leader", False)),
                address=str(status.get("Addr", ""))))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"unreadable node inventory line ({exc.__class__.__name__}): "
                             f"{line[:120]!r}") from None
    return out


def placement_problems(config: Config, engine: list[EngineNode]) -> list[str]:
    """What keeps the rendered placement from holding on this swarm, one finding each (with
    the command that fixes it); empty when every configured node is there, ready and
    labelled."""
    by_name = {node.hostname: node for node in engine}
    problems = []
    for node in config.cluster() if config.multi_node else []:
        found = by_name.get(node.name)
        if found is None:
            problems.append(f"{node.name}: not in the swarm (join it: docker swarm join "
                            f"on {node.host} with a manager's join-token; or set its name to "
                            f"the engine's hostname)")
            continue
        if found.state != "ready":
            problems.append(f"{node.name}: {found.state}, not ready")
        missing = {k: v for k, v in node_labels(node).items() if found.labels.get(k) != v}
        if missing:
            adds = " ".join(f"--label-add {k}={v}" for k, v in sorted(missing.items()))
            problems.append(f"{node.name}: labels {', '.join(sorted(missing))} missing "
                            f"(docker node update {adds} {node.name})")
        if node.postgres and found.availability != "active":
            problems.append(f"{node.name}: holds postgres's volume but is {found.availability}"
                            f" (docker node update --availability active {node.name})")
    return problems


def read_nodes(host: Any) -> list[EngineNode]:
    return parse_nodes(host.run(commands.node_inventory(), what="swarm nodes"))
