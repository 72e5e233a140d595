"""The sandbox's tasks (`inv sandbox.up|down|status`): in the checkout's task tree only.

The installed `vedfin` command does not list them: the sandbox creates users and an sshd on
the machine it runs on, which is a developer's and CI's business, not a deploy tool user's.
"""

from __future__ import annotations

import json

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from vedfin_ops.cli.output import err, guarded
from vedfin_ops.cli.output import out as stdout


@task(name="up", help={"use_existing": "use a Docker Engine / swarm the sandbox did not start",
                       "nodes": "also a swarm of N nodes, each in its own network namespace "
                                "(config .sandbox/dokploy-cluster.yaml)",
                       "real": "also the real apps (examples/v-edfinance: NestJS + Prisma, "
                               "Next.js) at the shipped sizes (config .sandbox/dokploy-real.yaml)",
                       "vps": "also a bare Debian 12 VPS (systemd-nspawn) for host.prepare "
                              "(config .sandbox/dokploy-vps.yaml; needs --real)"})
@guarded
def sandbox_up(c: Context, use_existing: bool = False, nodes: int = 1,
               real: bool = False, vps: bool = False) -> None:
    """Turn this machine into a local VPS: engine + swarm, images, sshd, sandbox config."""
    import sandbox
    from vedfin_ops.errors import UsageError
    if nodes < 1:
        raise UsageError(f"--nodes {nodes}: want 1 or more")
    state = sandbox.up(use_existing=use_existing, progress=lambda m: err.print(f"sandbox: {m}"),
                       nodes=nodes, real=real or vps, vps=vps)
    info = sandbox.status()
    stdout.print(f"sandbox up in {state.up_seconds:g}s; edge {info['edge_url']}")
    stdout.print(f"  VEDFIN_CONFIG={info['config']} {info['ssh']}")
    if nodes > 1:
        stdout.print(f"  {nodes} nodes: VEDFIN_CONFIG={info['cluster_config']} "
                     f"{info['cluster_ssh']}")


@task(name="down")
@guarded
def sandbox_down(c: Context) -> None:
    """Remove the local VPS: stacks, images, sshd, deploy user, .sandbox/."""
    import sandbox
    sandbox.down(progress=lambda m: err.print(f"sandbox: {m}"))
    stdout.print("sandbox removed")


@task(name="status", help={"json": "JSON output"})
@guarded
def sandbox_status(c: Context, json_: bool = False) -> None:
    """What the local VPS runs, its SSH line and the edge's URLs."""
    import sandbox
    info = sandbox.status()
    if json_:
        print(json.dumps(info, indent=2))
        return
    for key in ("ssh", "config", "edge_url"):
        stdout.print(f"{key}: {info[key]}")
    for name, url in info["urls"].items():
        stdout.print(f"  {name}: {url}")
    for svc in info["services"]:
        stdout.print(f"  {svc['name']}: {svc['replicas']} {svc['image']}")


ns = Collection("sandbox", sandbox_up, sandbox_down, sandbox_status)
