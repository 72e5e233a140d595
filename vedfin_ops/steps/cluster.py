"""`fab cluster.status`: the swarm's nodes as the engine sees them, beside the config's, and
the tasks on each: what a user reads before and after a node is added, drained or lost."""

from __future__ import annotations

from collections import Counter
from typing import Any

from vedfin_ops.cluster.nodes import placement_problems, read_nodes
from vedfin_ops.config.model import Config
from vedfin_ops.remote import commands


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
