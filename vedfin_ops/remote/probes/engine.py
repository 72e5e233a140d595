"""The engine snapshot: every service of some stacks and their running tasks in one command,
and its parser (the rollout watch polls this once a second; no-op and status compare it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from vedfin_ops.remote.commands import SERVICE_LABEL, STACK_LABEL
from vedfin_ops.remote.quoting import sh

STACK_IMAGE_LABEL = "com.docker.stack.image"


@dataclass(frozen=True)
class ServiceView:
    name: str
    image: str
    replicas: int
    version: int
    update_state: str
    update_started: str
    update_message: str
    running: int  # healthy (or health-less) running tasks of the spec's image
    others: int  # running tasks of any other image
    template: str = ""  # hash of the task template: what a rolling update replaces
    stack_image: str = ""  # the image `docker stack deploy` last set (its label)


TASKS_MARK = "--TASKS--"  # parse_snapshot splits the service specs from the task lines here


SWARM_TASKS_MARK = "--SWARM-TASKS--"  # on a cluster: the swarm's tasks, on every node
ACTIVE_TASK_STATES = {"New", "Pending", "Assigned", "Accepted", "Preparing", "Ready",
                      "Starting", "Running"}


def snapshot(stacks: list[str], cluster: bool = False) -> str:
    """Every service of the stacks as one JSON array, plus the running tasks of each.

    One command per poll: the spec (with UpdateStatus and Version) from `service inspect`,
    then a line per task that should run. On one VPS the manager's own containers are all the
    tasks (`docker ps`, with their health); on a cluster most tasks run on other nodes, so the
    swarm's task list is read (`service ps`: a task with a health check is `Running` only
    once healthy, `Starting` before).
    """
    ids = (f"ids=$(for f in {' '.join(sh(s) for s in stacks)}; do docker service ls -q "
           f"--filter label={STACK_LABEL}=\"$f\"; done); ")
    specs = "if [ -n \"$ids\" ]; then docker service inspect $ids; else echo '[]'; fi; "
    if cluster:
        return (ids + specs + f"echo {sh(SWARM_TASKS_MARK)}; "
                "if [ -n \"$ids\" ]; then docker service ps $ids --no-trunc --format "
                "'{{.Name}} {{.Image}} {{.DesiredState}} {{.CurrentState}}'; fi")
    return (
        ids + specs + f"echo {sh(TASKS_MARK)}; "
        f"docker ps --no-trunc --filter label={STACK_LABEL} --format "
        f"'{{{{.Label \"{SERVICE_LABEL}\"}}}} {{{{.Image}}}} {{{{.State}}}} {{{{.Status}}}}'"
    )


def swarm_tasks(text: str) -> list[tuple[str, str, str]]:
    """`service ps` lines -> (service, image, ready|starting) for tasks that run or will; a
    task being shut down that still runs counts (as not ready): it still serves."""
    out = []
    for line in text.strip().splitlines():
        parts = line.strip().removeprefix("\\_ ").split()
        if len(parts) < 4 or parts[3] not in ACTIVE_TASK_STATES:
            continue
        if parts[2] != "Running" and parts[3] != "Running":
            continue
        service = parts[0].rsplit(".", 1)[0]
        ready = parts[2] == "Running" and parts[3] == "Running"
        out.append((service, parts[1], "ready" if ready else "starting"))
    return out


def parse_snapshot(text: str) -> dict[str, ServiceView]:
    """The output of `snapshot` -> a view per service."""
    if SWARM_TASKS_MARK in text:
        inspect_text, _, tasks_text = text.partition(SWARM_TASKS_MARK)
        swarm = True
    else:
        inspect_text, _, tasks_text = text.partition(TASKS_MARK)
        swarm = False
    services: list[dict[str, Any]] = json.loads(inspect_text.strip() or "[]")
    tasks: list[tuple[str, str, str]] = swarm_tasks(tasks_text) if swarm else []
    for line in ([] if swarm else tasks_text.strip().splitlines()):
        parts = line.split(" ", 3)
        if len(parts) >= 3:
            status = parts[3] if len(parts) > 3 else ""
            ready = parts[2] == "running" and "(unhealthy)" not in status and \
                "(health: starting)" not in status
            tasks.append((parts[0], parts[1], "ready" if ready else "starting"))
    out: dict[str, ServiceView] = {}
    for svc in services:
        spec = svc["Spec"]
        name = spec["Name"]
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        mode = spec.get("Mode", {})
        replicas = mode.get("Replicated", {}).get("Replicas", 1) if "Replicated" in mode else 1
        update: dict[str, Any] = svc.get("UpdateStatus") or {}
        mine = [t for t in tasks if t[0] == name]
        out[name] = ServiceView(
            name=name, image=image, replicas=replicas,
            version=svc.get("Version", {}).get("Index", 0),
            update_state=update.get("State", ""),
            update_started=update.get("StartedAt", ""),
            update_message=update.get("Message", ""),
            running=sum(1 for t in mine if same_image(t[1], image) and t[2] == "ready"),
            others=sum(1 for t in mine if not same_image(t[1], image)),
            template=hashlib.sha256(json.dumps(spec["TaskTemplate"], sort_keys=True)
                                    .encode()).hexdigest()[:16],
            stack_image=(spec.get("Labels") or {}).get(STACK_IMAGE_LABEL, ""),
        )
    return out


def same_image(running: str, spec: str) -> bool:
    """Whether a task or service running `running` runs the image `spec` names.

    When both pin a digest, the digests decide: `repo:v1@<other digest>` set by hand is
    another image under the same tag, never the release's. A reference without a digest
    (`repo:tag`, as an unpinned spec or a task listing may show it) matches by name only."""
    if running == spec:
        return True
    running_ref, _, running_digest = running.partition("@")
    spec_ref, _, spec_digest = spec.partition("@")
    if running_digest and spec_digest:
        return running_digest == spec_digest
    return running_ref == spec_ref
