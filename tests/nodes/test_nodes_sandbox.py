"""The cluster on real engines: the sandbox's three nodes (`inv sandbox.up --nodes 3`), each a
Docker Engine in its own network namespace with its own sshd, one swarm, overlay networking
between them, images pulled from the sandbox registry.

Its own xdist group: under `-n 2` it runs on the unit tests' worker after them, beside the
single-VPS sandbox's tests (a swarm of its own: nothing here touches that engine). It waits for
that sandbox's registry and images, and `test_zz_sandbox_down` waits for this module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox import nodes
from tests.http_load import Load
from tests.integration.conftest import ROOT, SANDBOX_DIR, unavailable
from tests.nodes.beside import beside_the_sandbox
from vedfin_ops import load_config
from vedfin_ops.remote.host import Host, connect

# the first test's setup may wait for the other worker's sandbox.up
pytestmark = [pytest.mark.integration, pytest.mark.timeout(40 * 60)]

COUNT = 3
@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    """The nodes, up for this module. Alone (`-n0`) this module brings the sandbox up
    itself (idempotent) and leaves it up. Under xdist it holds the registry lock (shared)
    while it runs, so the other worker's sandbox.down waits for it; when that down came
    first (its mark), the sandbox's driver is done and this module brings one up and takes
    it down again."""
    import sandbox
    from sandbox.local import SandboxError

    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        unavailable("the nodes need root and dockerd")
    with beside_the_sandbox() as own_sandbox:
        try:
            try:
                got = sandbox.up_nodes(SANDBOX_DIR, COUNT, ROOT / "dokploy.yaml",
                                       progress=lambda _m: None)
            except SandboxError as exc:
                pytest.fail(f"inv sandbox.up --nodes {COUNT} failed: {exc}")
            print(f"{COUNT} nodes up in {got.up_seconds} s")
            info = sandbox.status(SANDBOX_DIR)
            yield {"config_path": info["cluster_config"],
                   "config": load_config(info["cluster_config"]),
                   "ssh_config": str(SANDBOX_DIR / "cluster" / "ssh_config"),
                   "edge_port": got.edge_port}
        finally:
            if not own_sandbox and SANDBOX_DIR.exists():
                sandbox.down_nodes(SANDBOX_DIR, progress=lambda _m: None)


def _host(cluster: dict[str, Any]) -> Host:
    return Host(connect("node0", cluster["ssh_config"]))


def _deploy(cluster: dict[str, Any], tag: str) -> Any:
    from vedfin_ops.deploy.pipeline import deploy

    host = _host(cluster)
    try:
        return deploy(host, cluster["config"], "production", tag, say=print,
                      show=lambda _lines: None)
    finally:
        host.close()


def _tasks() -> list[dict[str, str]]:
    """Every running task of the swarm, from the manager's engine: service, node, id."""
    ids = nodes.docker(0, "service", "ls", "-q").stdout.split()
    out = nodes.docker(0, "service", "ps", *ids, "--filter", "desired-state=running",
                       "--format", "{{.Name}} {{.Node}} {{.ID}} {{.CurrentState}}").stdout
    tasks = []
    for line in out.splitlines():
        name, node, task_id, state = line.split(" ", 3)
        if state.startswith("Running"):
            tasks.append({"service": name.rsplit(".", 1)[0], "node": node, "id": task_id})
    return tasks


def _on(tasks: list[dict[str, str]], suffix: str) -> list[str]:
    return sorted(t["node"] for t in tasks if t["service"].endswith(suffix))


def _fab(cluster: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEDFIN_CONFIG": cluster["config_path"], "COLUMNS": "200"}
    return subprocess.run([shutil.which("fab") or "fab", "-r", str(ROOT), "-S",
                           cluster["ssh_config"], "-H", "node0", *args], capture_output=True,
                          text=True, timeout=600, env=env, check=False)


def _version(cluster: dict[str, Any]) -> str:
    return requests.get(f"http://127.0.0.1:{cluster['edge_port']}/version",
                        headers={"Host": "api.v-edfinance.localhost"}, timeout=5).text.strip()


def _wait(what: str, done: Any, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(1)


def test_three_engines_form_one_swarm_each_with_its_own_address_and_host_key(
        cluster: dict[str, Any]) -> None:
    listed = nodes.docker(0, "node", "ls", "--format",
                          "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").stdout.split("\n")
    assert sorted(line for line in listed if line) == [
        "node0 Ready Leader", "node1 Ready ", "node2 Ready "]
    keys = {line.split()[2] for line in
            (SANDBOX_DIR / "cluster" / "known_hosts").read_text().splitlines()}
    assert len(keys) == COUNT, "each node has a host key of its own"
    for index in range(COUNT):
        address = nodes.docker(index, "info", "--format", "{{.Swarm.NodeAddr}}").stdout.strip()
        assert address == nodes.address(index)


def _audit(action: str) -> list[dict[str, Any]]:
    path = Path(nodes_config_base(), "audit.log")
    return [json.loads(line) for line in path.read_text().splitlines()
            if json.loads(line).get("action") == action]


def nodes_config_base() -> str:
    import sandbox

    return sandbox.CLUSTER_BASE_DIR


def test_cluster_join_brings_a_node_back_over_its_own_ssh_link(
        cluster: dict[str, Any]) -> None:
    """node2 leaves the swarm; `fab cluster.join node2` joins it again through the manager's
    token (never shown) and node2's own sshd, and a second run changes nothing."""
    nodes.docker(2, "swarm", "leave", "--force")
    nodes.docker(0, "node", "rm", "--force", "node2")
    token = nodes.docker(0, "swarm", "join-token", "-q", "worker").stdout.strip()
    joined = _fab(cluster, "cluster.join", "node2")
    assert joined.returncode == 0, joined.stderr
    assert "node2 joined" in joined.stdout
    assert token not in joined.stdout + joined.stderr
    listed = nodes.docker(0, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
    assert "node2 Ready" in listed
    again = _fab(cluster, "cluster.join", "node2")
    assert again.returncode == 0 and "already in the swarm" in again.stdout, again.stderr
    results = [line["result"] for line in _audit("cluster-join")]
    assert results[-2:] == ["ok", "noop"]
    assert token not in Path(nodes_config_base(), "audit.log").read_text()


def test_cluster_join_refuses_a_node_in_another_swarm_and_changes_nothing(
        cluster: dict[str, Any]) -> None:
    nodes.docker(2, "swarm", "leave", "--force")
    nodes.docker(0, "node", "rm", "--force", "node2")
    nodes.docker(2, "swarm", "init", "--advertise-addr", nodes.address(2))
    try:
        refused = _fab(cluster, "cluster.join", "node2")
        assert refused.returncode == 1
        assert "node2's engine is 'active' in a swarm" in refused.stderr, refused.stderr
        assert "node2" not in nodes.docker(0, "node", "ls", "--format",
                                           "{{.Hostname}}").stdout.split()
        assert _audit("cluster-join")[-1]["result"] == "failed"
    finally:
        nodes.docker(2, "swarm", "leave", "--force")
        assert _fab(cluster, "cluster.join", "node2").returncode == 0


def test_deploy_spreads_each_app_over_the_nodes_and_pins_postgres_and_the_edge(
        cluster: dict[str, Any]) -> None:
    result = _deploy(cluster, "v1")
    assert result.result in ("ok", "noop")
    assert _version(cluster) == "api v1", "the edge on node0 reaches the api over the overlay"
    tasks = _tasks()
    for app in ("api-production", "web-production"):
        placed = _on(tasks, f"_{app}")
        assert len(placed) == 2 and len(set(placed)) == 2, f"{app} not spread: {placed}"
    assert _on(tasks, "_postgres") == ["node0"]
    assert _on(tasks, "_edge") == ["node0"]
    status = _fab(cluster, "cluster.status", "--json")
    assert status.returncode == 0, status.stderr
    seen = {n["name"]: n for n in json.loads(status.stdout)["nodes"]}
    assert sorted(seen) == ["node0", "node1", "node2"]
    for name, node in seen.items():
        assert node["state"] == "ready" and node["availability"] == "active"
        assert node["tasks"] == sum(1 for t in tasks if t["node"] == name), name


def test_capacity_per_node_is_what_the_engines_run(cluster: dict[str, Any]) -> None:
    """The report's tasks and committed limits per node against what each engine runs now,
    by the limits the engine holds. Redis goes wherever swarm likes (its tasks are placed in
    one batch with postgres and the edge): it may sit on another node than the report's."""
    from vedfin_ops.reports.capacity import capacity_report

    _deploy(cluster, "v1")
    config = cluster["config"]
    limits = {}
    for service in nodes.docker(0, "service", "ls", "--format", "{{.Name}}").stdout.split():
        spec = json.loads(nodes.docker(0, "service", "inspect", service).stdout)[0]["Spec"]
        memory = spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"]
        limits[service.split("_", 1)[1]] = memory / 2**20
    engine: dict[str, dict[str, int]] = {nodes.name(i): {} for i in range(COUNT)}
    for task in _tasks():
        short = task["service"].split("_", 1)[1]
        engine[task["node"]][short] = engine[task["node"]].get(short, 0) + 1
    overhead = sum(o.memory for o in config.overhead.values())
    report = {n.name: n for n in capacity_report(config, "production").nodes}
    assert sorted(report) == sorted(engine)
    planned_total: dict[str, int] = {}
    for name, planned in report.items():
        print(f"{name}: engine {engine[name]}, report {planned.tasks}")
        assert planned.memory_mb == config.nodes[int(name[4:])].memory
        for service in ("postgres", "edge"):  # pinned: the same node in both
            assert planned.tasks.get(service, 0) == engine[name].get(service, 0), service
        for app in ("api-production", "web-production"):  # spread in both: a cap of one
            assert planned.tasks.get(app, 0) <= 1 and engine[name].get(app, 0) <= 1, app
        for service, count in planned.tasks.items():
            if not service.startswith("overhead:"):
                planned_total[service] = planned_total.get(service, 0) + count
    running_total: dict[str, int] = {}
    for on_node in engine.values():
        for service, count in on_node.items():
            running_total[service] = running_total.get(service, 0) + count
    assert planned_total == running_total
    committed = sum(p.committed_memory_mb for p in report.values()) - COUNT * overhead
    assert round(committed) == round(sum(limits[s] * n for s, n in running_total.items()))
    # live: each node measured over its own link, against the memory its engine reports
    live = _fab(cluster, "capacity-report", "--env", "production", "--json")
    assert live.returncode == 0, live.stderr
    for node in json.loads(live.stdout)["nodes"]:
        engine_mb = json.loads(nodes.docker(0, "node", "inspect", node["name"]).stdout)[0][
            "Description"]["Resources"]["MemoryBytes"] / 2**20
        assert abs(node["live"]["memory_total_mb"] - engine_mb) <= 0.01 * engine_mb, node
        assert 0 < node["live"]["memory_used_mb"] < node["live"]["memory_total_mb"]
    table = _fab(cluster, "capacity-report", "--env", "production")
    assert "Per node" in table.stdout and "node2" in table.stdout, table.stdout


def test_preflight_reaches_every_node_and_a_node_it_cannot_reach_stops_the_deploy(
        cluster: dict[str, Any]) -> None:
    import sandbox
    from sandbox.local import terminate

    _deploy(cluster, "v1")
    checked = _fab(cluster, "preflight", "--env", "production")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for index in range(COUNT):
        assert f"node {nodes.name(index)}" in checked.stdout, checked.stdout
    folder = SANDBOX_DIR / "cluster"
    terminate(int((folder / "node1" / "sshd.pid").read_text()))
    try:
        refused = _fab(cluster, "deploy.production", "--tag", "v2")
        assert refused.returncode == 1
        assert "node node1: node1 (node1)" in refused.stderr, refused.stderr
        assert _version(cluster) == "api v1", "nothing may change"
    finally:
        nodes.start_sshd(folder, 1, sandbox.USER)
    assert _fab(cluster, "preflight", "--env", "production").returncode == 0


def test_draining_a_worker_under_load_fails_no_request(cluster: dict[str, Any]) -> None:
    from vedfin_ops.cluster.membership import drain

    _deploy(cluster, "v1")
    host = _host(cluster)
    try:
        with Load(cluster["edge_port"]) as load:
            time.sleep(1)
            result = drain(host, cluster["config"], "node2", say=print,
                           show=lambda _lines: None)
            time.sleep(1)
    finally:
        host.close()
    try:
        assert result["node"] == "node2" and result["moved"] >= 1, result
        assert load.sent >= 20, load.sent
        assert load.failed == [], f"{len(load.failed)} of {load.sent} failed: {load.failed[:5]}"
        tasks = _tasks()
        assert "node2" not in {t["node"] for t in tasks}
        for app in ("api-production", "web-production"):
            assert len(_on(tasks, f"_{app}")) == 2, tasks
    finally:
        nodes.docker(0, "node", "update", "--availability", "active", "node2")


def test_placement_is_judged_by_where_postgres_and_the_edge_run(
        cluster: dict[str, Any]) -> None:
    """The engines' own `service ps` places postgres and the edge on node0. A config that
    moved the public address to node2 (node0 still labelled) cannot give node2 the edge's
    label too, and node0 cannot be drained: postgres runs there. Nothing moves."""
    from vedfin_ops.cluster.membership import drain, join
    from vedfin_ops.run.operation import RunFailed

    _deploy(cluster, "v1")
    config = cluster["config"]
    moved = config.model_copy(update={"nodes": [
        n.model_copy(update={"public": n.name == "node2"}) for n in config.nodes]})
    before = sorted(t["id"] for t in _tasks())
    host = _host(cluster)
    try:
        with pytest.raises(RunFailed) as joined:
            join(host, host, moved, "node2", say=print)
        with pytest.raises(RunFailed) as drained:
            drain(host, config, "node0", say=print, show=lambda _lines: None)
    finally:
        host.close()
    assert "cluster.join: node0 carries vedfin.edge already and the edge runs on node0 " \
           "(its volume is there)" in str(joined.value), joined.value
    assert "cluster.drain: node0 runs postgres" in str(drained.value), drained.value
    labels = nodes.docker(0, "node", "inspect", "--format", "{{json .Spec.Labels}}",
                          "node2").stdout
    assert "vedfin.edge" not in labels, labels
    availability = nodes.docker(0, "node", "inspect", "--format", "{{.Spec.Availability}}",
                                "node0").stdout.strip()
    assert availability == "active"
    assert sorted(t["id"] for t in _tasks()) == before, "no task may move or restart"


def test_a_stopped_worker_engine_is_shown_down_and_its_tasks_move_elsewhere(
        cluster: dict[str, Any]) -> None:
    _deploy(cluster, "v1")
    before = _tasks()
    postgres = [t["id"] for t in before if t["service"].endswith("_postgres")]
    victim = next(t["node"] for t in before if t["service"].endswith("_api-production")
                  and t["node"] != "node0")
    index = int(victim.removeprefix("node"))
    folder = SANDBOX_DIR / "cluster"
    nodes.stop_engine(folder, index)
    try:
        def down() -> bool:
            status = _fab(cluster, "cluster.status", "--json")
            seen = {n["name"]: n for n in json.loads(status.stdout)["nodes"]}
            return status.returncode == 1 and seen[victim]["state"] == "down"

        _wait(f"{victim} shown down by cluster.status", down, 90)

        def moved() -> bool:
            tasks = _tasks()
            return all(len(_on(tasks, f"_{app}")) == 2 and victim not in _on(tasks, f"_{app}")
                       for app in ("api-production", "web-production"))

        _wait("every replica running on the other nodes", moved, 120)
        after = _tasks()
        assert [t["id"] for t in after if t["service"].endswith("_postgres")] == postgres, \
            "postgres must not move or restart"
        assert _version(cluster) == "api v1"
        refused = _fab(cluster, "deploy.production", "--tag", "v2")
        assert refused.returncode == 1
        assert f"{victim}" in refused.stderr and "not ready" in refused.stderr, refused.stderr
    finally:
        nodes.start_engine(folder, index)
        _wait(f"{victim} ready again", lambda: f"{victim} Ready" in nodes.docker(
            0, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout, 90)


def test_nodes_go_away_with_the_sandbox_nodes_down(cluster: dict[str, Any]) -> None:
    """Last of the module: `down_nodes` leaves no engine, sshd, forwarder, namespace, bridge
    or iptables rule (the fixture's teardown does it again, harmlessly)."""
    import sandbox

    folder = SANDBOX_DIR / "cluster"
    pids = [nodes.engine_pid(folder, i) for i in range(COUNT)]
    pids += [int((folder / nodes.name(i) / "sshd.pid").read_text()) for i in range(COUNT)]
    pids.append(int((folder / "forward.pid").read_text()))
    assert all(pids) and all(nodes.alive(p) for p in pids if p)
    sandbox.down_nodes(SANDBOX_DIR, progress=lambda _m: None)
    assert not [p for p in pids if p and nodes.alive(p)], "a process of the nodes still runs"
    assert not Path(f"/run/netns/{nodes.netns(0)}").exists()
    assert subprocess.run(["ip", "link", "show", nodes.BRIDGE], capture_output=True,
                          check=False).returncode != 0
    assert subprocess.run(["iptables", "-C", *nodes.FORWARD_RULE], capture_output=True,
                          check=False).returncode != 0
    assert not (SANDBOX_DIR / "dokploy-cluster.yaml").exists()
    assert not folder.exists()
