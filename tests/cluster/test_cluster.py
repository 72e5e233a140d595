"""Outgrowing one VPS: the config's `nodes`, the placement rules rendered into the stacks, and
capacity judged node by node. Pure: the engine's own scheduling of these files on a real
multi-node swarm is the sandbox's part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vedfin_ops.cluster.placement import max_replicas_per_node, node_labels, place
from vedfin_ops.config.loader import ConfigError
from vedfin_ops.errors import CheckFailed
from vedfin_ops.rendering.files import render
from vedfin_ops.reports.capacity import capacity_report

REGISTRY = "127.0.0.1:15443"  # a cluster pulls from a registry (never reached by pure tests)


def _nodes(count: int, memory: str = "4g", first: dict[str, Any] | None = None,
           registry: dict[str, Any] | None = None) -> Any:
    """A change: `vps` replaced by `count` nodes, the first the manager, public, postgres's
    (with `first`'s keys changed), the images in a registry."""
    def change(data: dict[str, Any]) -> None:
        data.pop("vps")
        data["nodes"] = [{"name": f"node{i}", "host": f"deployer@10.0.0.{i + 1}",
                          "role": "manager" if i == 0 else "worker", "memory": memory,
                          "cpus": 2, "swap": "2g", "public": i == 0, "postgres": i == 0}
                         for i in range(count)]
        data["nodes"][0].update(first or {})
        server = (registry or {}).get("server", REGISTRY)
        for app in data["applications"]:
            app["image"] = f"{server}/vedfin/{app['name'].split('-')[0]}"
        data["registry"] = {"server": server, "username": "deployer",
                            "password": "${REGISTRY_PASSWORD}", **(registry or {})}
        data["secrets"]["shared"]["REGISTRY_PASSWORD"] = "manual"
    return change


def _stacks(config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    files = render(config, "production")
    return (yaml.safe_load(files["stacks/shared.yml"]),
            yaml.safe_load(files["stacks/production.yml"]))


def test_one_vps_is_a_one_node_cluster_and_its_stacks_carry_no_placement(variant: Any) -> None:
    config = variant(lambda d: None)
    [node] = config.cluster()
    assert (node.role, node.public, node.postgres, node.memory) == ("manager", True, True, 4096)
    assert not config.multi_node
    for text in render(config, "production").values():
        assert "placement" not in text


def test_three_nodes_pin_postgres_and_the_edge_and_spread_the_apps(variant: Any) -> None:
    config = variant(_nodes(3))
    shared, apps = _stacks(config)
    assert shared["services"]["postgres"]["deploy"]["placement"] == {
        "constraints": ["node.labels.vedfin.postgres == true"]}
    if "edge" in shared["services"]:
        assert shared["services"]["edge"]["deploy"]["placement"] == {
            "constraints": ["node.labels.vedfin.edge == true"]}
    assert "placement" not in shared["services"]["redis"]["deploy"]
    for name in ("api-production", "web-production"):
        assert apps["services"][name]["deploy"]["placement"] == {
            "preferences": [{"spread": "node.id"}], "max_replicas_per_node": 1}
    assert node_labels(config.nodes[0]) == {"vedfin.postgres": "true", "vedfin.edge": "true"}
    assert node_labels(config.nodes[1]) == {}


def test_without_vps_the_first_manager_gives_the_single_host_figures(variant: Any) -> None:
    config = variant(_nodes(2, memory="8g"))
    assert (config.vps.memory, config.vps.cpus, config.vps.swap) == (8192, 2.0, 2048)


@pytest.mark.parametrize(("replicas", "nodes", "cap"), [
    (2, 1, None),  # one node: nothing to spread over
    (1, 3, None),  # one replica: nothing to spread
    (2, 2, None),  # a cap of 1 would leave the start-first surge nowhere to go
    (2, 3, 1),
    (3, 2, 2),
    (4, 3, 2),
    (6, 3, 3),
])
def test_the_cap_per_node_leaves_room_for_the_start_first_surge(replicas: int, nodes: int,
                                                               cap: int | None) -> None:
    assert max_replicas_per_node(replicas, nodes) == cap


@given(st.integers(1, 12), st.integers(1, 8))
def test_a_cap_always_spreads_and_never_stalls_an_update(replicas: int, nodes: int) -> None:
    cap = max_replicas_per_node(replicas, nodes)
    if cap is not None:
        assert cap < replicas, "a cap that lets every replica on one node protects nothing"
        assert cap * nodes >= replicas + 1, "the surge task must fit somewhere"


@pytest.mark.parametrize("count", [2, 3, 4])
def test_losing_any_one_node_keeps_every_app_serving(variant: Any, count: int) -> None:
    config = variant(_nodes(count))
    plans = place(config, "production")
    for app in config.apps("production"):
        for lost in plans:
            left = sum(p.tasks.get(app.name, 0) for p in plans if p is not lost)
            assert left >= 1, f"{app.name} has no replica left without {lost.node.name}"
    assert [p.node.name for p in plans if "postgres" in p.tasks] == ["node0"]


def test_capacity_is_judged_per_node_and_names_the_node_that_does_not_fit(
        variant: Any) -> None:
    """Three 4 GB nodes hold the production plan's 7000 MiB of limits between them, but
    the node that holds postgres (1024 MiB) cannot also take a surging api task when it is
    a 2 GB machine: the cluster fits, that node does not."""
    roomy = capacity_report(variant(_nodes(3)), "production")
    assert roomy.vps_memory_mb == 3 * 4096
    edge = 64  # the edge's limit, on the public node only
    assert {n.name: n.peak_memory_mb for n in roomy.nodes} == {
        "node0": 3160 + edge + 1024, "node1": 1880 + 1536, "node2": 3160}
    small_first = _nodes(3, memory="8g", first={"memory": "2g", "swap": "0m"})
    tight = capacity_report(variant(small_first), "production")
    assert tight.committed_memory_mb <= tight.vps_memory_mb  # the cluster as a whole fits
    assert tight.status == "critical"
    assert tight.reasons == ["node0: limits commit 2712 MiB, more than RAM + swap (2048 + 0 "
                             "MiB)", "node0: a rolling deploy peaks at 4248 MiB of limits "
                             "(api-production start beside the old), more than RAM + swap "
                             "(2048 MiB)"]
    data = tight.to_dict()["nodes"][0]
    assert data["name"] == "node0" and data["status"] == "critical"
    assert data["tasks"]["postgres"] == 1 and data["tasks"]["edge"] == 1


def test_one_node_capacity_is_the_whole_vps_as_before(variant: Any) -> None:
    report = capacity_report(variant(lambda d: None), "production")
    [node] = report.nodes
    assert node.committed_memory_mb == report.committed_memory_mb
    assert node.peak_memory_mb == report.surge_peak_memory_mb
    assert report.status == "critical" and node.status == "critical"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: (d.pop("vps"), d.update(nodes=[])), "nodes: empty"),
    (lambda d: d.update(nodes=[{"name": "a", "host": "a", "memory": "4g", "cpus": 2,
                                "public": True, "postgres": True}]),
     "nodes: give vps (one machine) or nodes"),
    (lambda d: (_nodes(2)(d), d["nodes"][0].update(role="worker")), "nodes: no manager"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(postgres=True)),
     "nodes: 2 nodes hold postgres's volume (node0, node1)"),
    (lambda d: (_nodes(2)(d), d["nodes"][0].update(postgres=False)),
     "nodes: 0 nodes hold postgres's volume (none)"),
    (lambda d: (_nodes(2)(d), d["nodes"][0].update(public=False)),
     "nodes: 0 public nodes (none): mark exactly one"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(public=True)),
     "nodes: 2 public nodes (node0, node1)"),
    (lambda d: (_nodes(2)(d), d["nodes"][0].update(postgres=False),
                d["nodes"][1].update(postgres=True)),
     "nodes: postgres's node (node1) must be the first manager listed (now node0)"),
    (lambda d: (_nodes(2)(d), d.pop("registry")), "nodes: a cluster needs registry"),
    (lambda d: (_nodes(2)(d), d["nodes"][0].update(memory="4x")),
     'nodes[0].memory: "4x" is not a size'),
    (lambda d: (d.pop("vps"), d.update(nodes={"a": 1})), "nodes: {"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(host="-oProxyCommand=x")),
     "nodes[1].host"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(name="node0")),
     'nodes[1].name: "node0" is already the name of nodes[0]'),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(host="deployer@10.0.0.1")),
     'nodes[1].host: "deployer@10.0.0.1" is already the host of nodes[0]'),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(labels={"vedfin.postgres": "true"})),
     'nodes[1].labels: "vedfin.postgres": vedfin.* labels are the tool\'s own'),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(host="x; rm -rf /")), "nodes[1].host"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(name="-bad")), "nodes[1].name"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(labels={"zone": "a b"})),
     "nodes[1].labels.zone"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(role="boss")), "nodes[1].role"),
    (lambda d: d["environments"].update(cluster={"database": "vedfinance_cluster"}),
     "environments.cluster: a reserved name"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(memory="lots")), "nodes[1].memory"),
    (lambda d: (_nodes(2)(d), d["nodes"][1].update(cpu=2)),
     'nodes[1].cpu: unknown key "cpu" (did you mean "cpus"?)'),
])
def test_a_cluster_the_tool_cannot_place_on_is_one_line_naming_the_key(
        variant: Any, change: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        variant(change)
    line = info.value.line()
    assert line.startswith("error: dokploy.yaml: ") and "\n" not in line
    assert expected in line, line
    assert info.value.exit_code == 2


# The shape `docker node inspect --format '{{json .}}'` prints (Docker 20.10, the sandbox's
# engine), trimmed of what the tool does not read.
def _engine_node(node_id: str, hostname: str, labels: dict[str, str], *, state: str = "ready",
                 availability: str = "active", role: str = "worker") -> dict[str, Any]:
    return {"ID": node_id, "Version": {"Index": 1644},
            "Spec": {"Labels": labels, "Role": role, "Availability": availability},
            "Description": {"Hostname": hostname,
                            "Resources": {"NanoCPUs": 2000000000, "MemoryBytes": 4294967296},
                            "Engine": {"EngineVersion": "20.10.24+dfsg1"}},
            "Status": {"State": state, "Addr": "10.0.0.1"},
            **({"ManagerStatus": {"Leader": True, "Reachability": "reachable",
                                  "Addr": "10.0.0.1:2377"}} if role == "manager" else {})}


def _inventory(*nodes: dict[str, Any]) -> str:
    import json

    return "".join(json.dumps(n) + "\n" for n in nodes)


def test_the_engine_s_node_inventory_reads_as_nodes() -> None:
    from vedfin_ops.cluster.nodes import parse_nodes

    [manager, worker] = parse_nodes(_inventory(
        _engine_node("sja9", "node0", {"vedfin.postgres": "true"}, role="manager"),
        _engine_node("k2x1", "node1", {}, state="down", availability="drain")))
    assert (manager.hostname, manager.role, manager.leader, manager.labels) == (
        "node0", "manager", True, {"vedfin.postgres": "true"})
    assert (worker.state, worker.availability, worker.leader) == ("down", "drain", False)


@pytest.mark.parametrize("line", ["not json", '{"ID": "x"}', "[1, 2]", '{"ID": "x", '
                                  '"Description": null}'])
def test_an_unreadable_node_inventory_is_an_error_not_an_empty_cluster(line: str) -> None:
    from vedfin_ops.cluster.nodes import parse_nodes

    with pytest.raises(CheckFailed, match="unreadable node inventory line"):
        parse_nodes(line + "\n")


def test_each_missing_node_label_or_state_is_one_finding_with_its_fix(variant: Any) -> None:
    from vedfin_ops.cluster.nodes import parse_nodes, placement_problems

    config = variant(_nodes(3))
    engine = parse_nodes(_inventory(
        _engine_node("a", "node0", {"vedfin.edge": "true"}, role="manager",
                     availability="drain"),
        _engine_node("b", "node1", {}, state="down")))
    assert placement_problems(config, engine) == [
        "node0: labels vedfin.postgres missing (docker node update --label-add "
        "vedfin.postgres=true node0)",
        "node0: holds postgres's volume but is drain (docker node update --availability "
        "active node0)",
        "node1: down, not ready",
        "node2: not in the swarm (join it: docker swarm join on deployer@10.0.0.3 with a "
        "manager's join-token; or set its name to the engine's hostname)",
        *(f"{app}: 0 active node(s) hold at most 0 of its tasks (1 per node), one short of a "
          f"start-first update of 2 replicas (bring a node back: docker node update "
          f"--availability active NODE)" for app in ("api-production", "web-production"))]
    assert placement_problems(variant(lambda d: None), []) == []  # one node: no labels


def test_a_placement_label_where_the_config_does_not_put_it_is_a_finding(variant: Any
                                                                          ) -> None:
    """The holder changed, or a node outside the config kept its label: postgres pinned by
    it could start there, on an empty volume."""
    from vedfin_ops.cluster.nodes import parse_nodes, placement_problems

    config = variant(_nodes(3))
    right = {i: node_labels(config.nodes[i]) for i in range(3)}
    engine = parse_nodes(_inventory(
        _engine_node("a", "node0", right[0], role="manager"),
        _engine_node("b", "node1", {"vedfin.postgres": "true", "zone": "b"}),
        _engine_node("old", "node2", {}, state="down"),  # left and joined again
        _engine_node("c", "node2", right[2]),
        _engine_node("d", "spare", {"vedfin.edge": "true"})))
    assert placement_problems(config, engine) == [
        # removed, the label stops a postgres that runs there: swarm starts it on node0,
        # on an empty volume, unless its data went there first
        "node1: carries vedfin.postgres but the config does not place that there (if "
        "postgres runs on node1, its data is there: move it to node0 first; then docker "
        "node update --label-rm vedfin.postgres node1)",
        "spare: carries vedfin.edge but the config does not place that there (docker node "
        "update --label-rm vedfin.edge spare)"]


def _cluster_world(tmp_path: Any, shipped_data: dict[str, Any], mp: pytest.MonkeyPatch,
                   registry: Any, memory: str = "4g", first: dict[str, Any] | None = None
                   ) -> Any:
    """A scripted manager of a 3-node swarm (no node labelled yet), nothing deployed, the
    images in a real registry."""
    import copy

    from tests.deploy.test_orchestration import FakeClock, World, _secrets
    from tests.fake.host import FakeHost
    from vedfin_ops.config.loader import config_from_dict

    data = copy.deepcopy(shipped_data)
    data.setdefault("remote", {})["baseDir"] = str(tmp_path / "srv")
    _nodes(3, memory, first, {"server": registry.server, "username": registry.username,
                              "caRoot": str(registry.ca)})(data)
    config = config_from_dict(data, "dokploy.yaml")
    _secrets(mp, config)
    mp.setenv("REGISTRY_PASSWORD", registry.password)
    world = World(tmp_path, config, FakeHost(tmp_path), FakeClock())
    world.host.set_engine(nodes=[
        _engine_node(f"id{i}", f"node{i}", {}, role="manager" if i == 0 else "worker")
        for i in range(3)])
    return world


def _label(world: Any) -> None:
    nodes = world.host.engine()["nodes"]
    for i, node in enumerate(nodes):
        node["Spec"]["Labels"] = node_labels(world.config.nodes[i])
    world.host.set_engine(nodes=nodes)


def test_a_deploy_to_a_cluster_without_its_labels_stops_before_any_change(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """Postgres updates stop-first: pinned to a label no node carries, it would be stopped
    and never start again. The deploy refuses before the first change; labelled, it goes
    through."""
    from vedfin_ops.run.operation import RunFailed

    world = _cluster_world(tmp_path, shipped_data, monkeypatch, registry)
    with pytest.raises(RunFailed) as info:
        world.deploy("v1")
    message = str(info.value)
    assert "the swarm cannot place this config" in message
    assert "node0: labels vedfin.edge, vedfin.postgres missing" in message
    assert world.host.engine()["services"] == {}, "nothing may reach the engine"
    assert "upload" not in world.host.commands
    _label(world)
    assert world.deploy("v1").result == "ok"
    assert world.audit()[-1]["result"] == "ok"


def _drain(world: Any, node: str, **kwargs: Any) -> Any:
    """A drain verified by the world's smoke stand-in (`world.verify_failures`), each env it
    verifies recorded in `world.verified`."""
    from vedfin_ops.cluster.membership import drain

    def check(config: Any, env: str, **_: Any) -> list[str]:
        world.verified = [*getattr(world, "verified", []), env]
        return list(world.verify_failures)

    kwargs.setdefault("verify_fn", check)
    return drain(world.host, world.config, node, say=world.said.append,
                 clock=world.clock.clock(), **kwargs)


def _availability(world: Any, node: str) -> str:
    found = [n for n in world.host.engine()["nodes"]
             if n["Description"]["Hostname"] == node]
    return str(found[0]["Spec"]["Availability"])


def _deployed_cluster(tmp_path: Any, shipped_data: dict[str, Any],
                      mp: pytest.MonkeyPatch, registry: Any) -> Any:
    world = _cluster_world(tmp_path, shipped_data, mp, registry)
    _label(world)
    assert world.deploy("v1").result == "ok"
    world.host.set_engine(node_tasks={"node2": ["api.2", "web.2"]})
    return world


def test_a_drain_moves_the_node_s_tasks_and_is_audited(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    assert _drain(world, "node2") == {"node": "node2", "moved": 2, "verified": ["production"]}
    assert _availability(world, "node2") == "drain"
    last = world.audit()[-1]
    assert (last["action"], last["result"], last["env"]) == ("cluster-drain", "ok", "cluster")
    assert last["detail"] == "node2: 2 task(s) moved, verified: production"
    assert _drain(world, "node2") == {"node": "node2", "moved": 0,  # converged: a noop
                                      "verified": []}
    assert world.audit()[-1]["result"] == "noop"


@pytest.mark.parametrize(("node", "expected"), [
    ("node0", "node0 runs postgres (vedfin-shared_postgres), on its volume"),
    ("node1", "node1 holds postgres's volume: draining it stops the database"),  # by label
    ("ghost", "no node 'ghost' in the swarm (known: node0, node1, node2)"),
])
def test_a_drain_that_would_leave_something_nowhere_is_refused_before_any_change(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any, node: str, expected: str) -> None:
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    nodes = world.host.engine()["nodes"]
    nodes[1]["Spec"]["Labels"]["vedfin.postgres"] = "true"  # a second holder, by hand
    world.host.set_engine(nodes=nodes)
    with pytest.raises(RunFailed) as info:
        _drain(world, node)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == (2 if node == "ghost" else 1)
    assert {_availability(world, f"node{i}") for i in range(3)} == {"active"}
    assert f"drain {node}" not in world.host.commands


def test_a_drain_past_the_other_nodes_limits_is_said_not_refused(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """Limits are caps, not use (the deploy's gate judges them so too): the shipped plan
    commits more than two 4 GB nodes hold, and runs."""
    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    assert _drain(world, "node2")["moved"] == 2
    assert any(s.startswith("warning: without node2 the limits commit more than the other "
                            "nodes hold: node0: ") for s in world.said)


@pytest.mark.parametrize("kind", ["stuck", "remote", "exception", "ctrl-c", "sigterm"])
def test_a_drain_that_does_not_converge_or_is_stopped_makes_the_node_active_again(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any, kind: str) -> None:
    from tests.fake.host import Fault
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    if kind == "stuck":
        world.host.set_engine(stuck=True)
        world.config.remote.rollout_timeout = 20.0
    else:
        world.host.inject(Fault("drain state", 2, kind))  # the first look after the drain
    with pytest.raises(RunFailed) as info:
        _drain(world, "node2")
    message = str(info.value)
    assert message.endswith("node2 is active again"), message
    assert ("not converged after 20 s (vedfin-" in message) if kind == "stuck" else True
    assert _availability(world, "node2") == "active"
    last = world.audit()[-1]
    assert last["action"] == "cluster-drain"
    assert last["result"] == ("interrupted" if kind in ("ctrl-c", "sigterm") else "failed")
    assert not any(Path(world.config.remote.base_dir, env, ".lock").exists()
                   for env in ["cluster", *world.config.environments]), "every lock released"


def test_cluster_status_shows_each_node_its_tasks_and_what_would_stop_a_deploy(
        tmp_path: Any, variant: Any) -> None:
    """Through the manager: the engine's nodes (one unknown to the config), a configured
    node the swarm lacks, tasks per node; names from the engine printed as text."""
    from rich.console import Console

    from tests.fake.host import FakeHost
    from vedfin_ops.cluster.membership import cluster_status
    from vedfin_ops.reports.tables import cluster_table

    config = variant(_nodes(3))
    host = FakeHost(tmp_path)
    host.set_engine(nodes=[
        _engine_node("id0", "node0", node_labels(config.nodes[0]), role="manager"),
        _engine_node("id1", "node1", {}, state="down"),
        _engine_node("idx", "[bold]stray[/bold]", {"zone": "b"})])
    # the scripted engine has no `docker node ps`: the tasks come from a script of our own
    (host.bin / "docker-real").write_text((host.bin / "docker").read_text())
    (host.bin / "docker-real").chmod(0o755)
    (host.bin / "docker").write_text(
        '#!/bin/sh\nif [ "$1 $2" = "node ps" ]; then eval "last=\\${$#}"; '
        'case "$last" in id0) echo "id0 a.1"; echo "id0 b.1";; idx) echo "idx c.1";; esac; '
        f'exit 0; fi\nexec {host.bin / "docker-real"} "$@"\n')
    info = cluster_status(host, config)
    by_name = {n["name"]: n for n in info["nodes"]}
    assert by_name["node0"]["tasks"] == 2 and by_name["node0"]["leader"]
    assert by_name["node1"]["state"] == "down" and by_name["node1"]["tasks"] == 0
    assert by_name["[bold]stray[/bold]"]["configured"] is False
    assert by_name["node2"]["state"] == "missing"
    assert info["problems"][0] == "node1: down, not ready"
    console = Console(width=220, record=True, color_system=None)
    console.print(cluster_table(info))
    text = console.export_text()
    assert "[bold]stray[/bold] (not in the config)" in text
    assert "vedfin.edge=true, vedfin.postgres=true" in text
    assert "problem: node2: not in the swarm" in text


def test_a_rollback_on_a_cluster_that_lost_a_label_stops_before_any_change(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    from vedfin_ops.deploy.rollback import rollback
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    assert world.deploy("v2").result == "ok"
    before = world.env_images()
    nodes = world.host.engine()["nodes"]
    nodes[0]["Spec"]["Labels"] = {}  # someone cleaned the labels up by hand
    world.host.set_engine(nodes=nodes)
    with pytest.raises(RunFailed, match=r"the swarm cannot place this config .*node0: labels "
                                        r"vedfin\.edge, vedfin\.postgres missing"):
        rollback(world.host, world.config, "production", say=world.said.append,
                 clock=world.clock.clock(), verify_fn=lambda *a, **k: [])
    assert world.env_images() == before


@pytest.mark.parametrize("kind", ["remote", "exception", "ctrl-c", "sigterm"])
def test_a_fault_while_reading_the_nodes_ends_a_cluster_deploy_before_any_change(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any, kind: str) -> None:
    """The node inventory is the first thing a deploy to a cluster asks: a dropped link, a
    bug, Ctrl-C or SIGTERM there leave v1 live and untouched, one line, an audit line."""
    from tests.fake.host import Fault
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    before = world.env_images()
    world.host.inject(Fault("swarm nodes", 1, kind))
    with pytest.raises(RunFailed) as info:
        world.deploy("v2")
    assert "\n" not in str(info.value)
    assert world.env_images() == before
    last = world.audit()[-1]
    assert (last["action"], last["result"]) == (
        "deploy", "interrupted" if kind in ("ctrl-c", "sigterm") else "failed")


def test_preflight_reads_every_node_over_its_own_ssh_link(tmp_path: Path,
                                                          variant: Any) -> None:
    """An item per node: the manager's usage from the tool's own link, each other node's
    over a link of its own (the scripted host stands for each; its /proc is this machine's)."""
    from tests.fake.host import FakeHost
    from vedfin_ops.checks.preflight import node_checks
    from vedfin_ops.checks.runner import run_check

    config = variant(_nodes(3))
    host = FakeHost(tmp_path)
    checks = [run_check(name, fn) for name, fn in
              node_checks(host, config, "production", "", force=False)]
    assert [c.name for c in checks] == ["node node0", "node node1", "node node2"]
    assert all(c.ok for c in checks), checks
    assert host.siblings == ["deployer@10.0.0.2", "deployer@10.0.0.3"]
    assert all("surge" in c.detail and "fits" in c.detail for c in checks)


def test_preflight_fails_on_a_node_it_cannot_reach(tmp_path: Path, variant: Any) -> None:
    from tests.fake.host import FakeHost
    from vedfin_ops.checks.preflight import node_checks
    from vedfin_ops.checks.runner import run_check

    host = FakeHost(tmp_path)
    host.unreachable = {"deployer@10.0.0.3"}
    checks = {name: run_check(name, fn) for name, fn in
              node_checks(host, variant(_nodes(3)), "production", "", force=False)}
    assert checks["node node1"].ok
    failed = checks["node node2"]
    assert not failed.ok
    assert failed.detail == "node2 (deployer@10.0.0.3): cannot reach deployer@10.0.0.3: " \
                            "timed out"


def test_the_gate_refuses_a_node_the_surge_does_not_fit_though_the_cluster_has_room(
        variant: Any) -> None:
    """Three 4 GB nodes: 12 GB between them, 3.5 GB used on the one where the surging api
    task lands. The cluster has 8.5 GB free; that node has 0.5 GB, less than the task."""
    from vedfin_ops.checks.gate import node_gate
    from vedfin_ops.cluster.placement import place
    from vedfin_ops.remote.probes.usage import Usage

    config = variant(_nodes(3, first={"swap": "0m"}))
    plans = place(config, "production")
    busy = next(p for p in plans if p.surge_mb)
    tight = Usage(4096, 3584, 0, 0, 0.5, 2)
    roomy = Usage(4096, 512, 0, 0, 0.5, 2)
    results = {p.node.name: node_gate(p.node.name, tight if p is busy else roomy,
                                      p.surge_mb, p.surging) for p in plans}
    assert not results[busy.node.name].ok
    assert results[busy.node.name].reason.startswith(f"{busy.node.name}: used 3584 MiB RAM")
    assert "exceeds its RAM + swap (4096 MiB)" in results[busy.node.name].reason
    assert all(r.ok for n, r in results.items() if n != busy.node.name)
    free = sum(u.memory_total_mb - u.memory_used_mb
               for u in [tight if p is busy else roomy for p in plans])
    assert free > sum(p.surge_mb for p in plans), "the cluster as a whole has the room"


def _join_world(tmp_path: Any, shipped_data: dict[str, Any], mp: pytest.MonkeyPatch,
                registry: Any) -> Any:
    """A labelled two-node swarm; node2 (configured, a worker) waits to join."""
    world = _cluster_world(tmp_path, shipped_data, mp, registry)
    _label(world)
    engine = world.host.engine()
    joinable = engine["nodes"].pop()
    world.host.set_engine(nodes=engine["nodes"], joinable=joinable)
    return world


def _join(world: Any, node: str) -> Any:
    from vedfin_ops.cluster.membership import join

    return join(world.host, world.host, world.config, node, say=world.said.append,
                clock=world.clock.clock())


def test_cluster_join_adds_the_node_with_its_labels_and_never_shows_the_token(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    world = _join_world(tmp_path, shipped_data, monkeypatch, registry)
    result = _join(world, "deployer@10.0.0.3")  # by host, as the user may name it
    assert result == {"node": "node2", "joined": True, "labels": [], "stray": []}
    engine = world.host.engine()
    token = engine["joined_token"]
    assert [n["Status"]["State"] for n in engine["nodes"]] == ["ready"] * 3
    everything = "\n".join([*world.said, Path(world.layout.audit).read_text()])
    assert token not in everything and token not in "\n".join(world.host.command_lines)
    assert world.audit()[-1]["result"] == "ok"
    again = _join(world, "node2")
    assert again["joined"] is False and world.audit()[-1]["result"] == "noop"


def test_cluster_join_sets_missing_labels_and_never_removes_one(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """A label removed from a node makes swarm stop what it pins there (postgres, off its
    volume): a stray one is named with its command, never removed by the tool."""
    world = _cluster_world(tmp_path, shipped_data, monkeypatch, registry)
    nodes = world.host.engine()["nodes"]
    nodes[0]["Spec"]["Labels"] = {"vedfin.postgres": "true"}
    nodes[1]["Spec"]["Labels"] = {"vedfin.postgres": "true"}  # stray: not node1's
    world.host.set_engine(nodes=nodes)
    result = _join(world, "node0")
    assert result["joined"] is False
    assert result["labels"] == ["vedfin.edge"]
    assert _join(world, "node1")["stray"] == ["vedfin.postgres"]
    assert world.said[-2] == ("warning: node1 carries vedfin.postgres, which the config does "
                              "not give it; once nothing pinned by it runs there: docker node "
                              "update --label-rm vedfin.postgres node1")
    labels = {n["Description"]["Hostname"]: n["Spec"]["Labels"]
              for n in world.host.engine()["nodes"]}
    assert labels["node0"] == node_labels(world.config.nodes[0])
    assert labels["node1"] == {"vedfin.postgres": "true"}
    assert world.audit()[-1]["result"] == "noop"


def test_cluster_join_refuses_before_any_change(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """An unconfigured node, a manager (joined by hand: undoing half a manager join costs the
    quorum), an engine named otherwise than the config says, one in another swarm, and a
    former member's `down` entry: each refused with nothing joined."""
    from vedfin_ops.errors import UsageError
    from vedfin_ops.run.operation import RunFailed

    world = _join_world(tmp_path, shipped_data, monkeypatch, registry)
    with pytest.raises(UsageError, match="'node9' is not in the config's nodes"):
        _join(world, "node9")
    member_nodes = world.host.engine()["nodes"]
    world.host.set_engine(nodes=member_nodes[1:])  # node0, a manager, not in the swarm
    with pytest.raises(RunFailed, match="node0 is a manager in the config; join managers by "
                                        "hand") as info:
        _join(world, "node0")
    assert info.value.exit_code == 2
    world.host.set_engine(nodes=member_nodes, local_name="vps7")
    with pytest.raises(RunFailed, match=r"the engine at deployer@10\.0\.0\.3 is named 'vps7', "
                                        r"the config says 'node2'"):
        _join(world, "node2")
    world.host.set_engine(local_name="", local_swarm="active")
    with pytest.raises(RunFailed, match="node2's engine is 'active' in a swarm"):
        _join(world, "node2")
    gone = _engine_node("id9", "node2", {}, state="down")
    world.host.set_engine(nodes=[*member_nodes, gone], local_swarm="inactive")
    with pytest.raises(RunFailed, match=r"the swarm lists node2 as down .* docker node rm id9"):
        _join(world, "node2")
    engine = world.host.engine()
    assert "joined_token" not in engine and "left" not in engine
    assert [r["result"] for r in world.audit()] == ["failed"] * 4


@pytest.mark.parametrize("kind", ["not-ready", "remote", "exception", "ctrl-c", "sigterm"])
def test_a_join_that_fails_after_the_node_joined_takes_it_out_again(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any, kind: str) -> None:
    from tests.fake.host import Fault
    from vedfin_ops.run.operation import RunFailed

    world = _join_world(tmp_path, shipped_data, monkeypatch, registry)
    if kind == "not-ready":
        world.host.set_engine(joined_state="down")
        world.config.remote.rollout_timeout = 10.0
    else:
        world.host.inject(Fault("swarm nodes", 2, kind))  # the first look after the join
    with pytest.raises(RunFailed) as info:
        _join(world, "node2")
    message = str(info.value)
    assert message.endswith("node2 left the swarm again"), message
    assert "\n" not in message
    engine = world.host.engine()
    assert [n["Description"]["Hostname"] for n in engine["nodes"]] == ["node0", "node1"]
    assert engine["left"] == 1
    last = world.audit()[-1]
    assert last["action"] == "cluster-join"
    assert last["result"] == ("interrupted" if kind in ("ctrl-c", "sigterm") else "failed")
    assert not Path(world.config.remote.base_dir, "cluster", ".lock").exists()


def test_recommendations_say_which_node_to_add(variant: Any) -> None:
    """A cluster past its limits is told which machine to add: a worker the size of its
    largest node (and what that leaves on the worst node), or, when the worst node is
    postgres's, a bigger one of those: workers only take apps away from it."""
    tight = capacity_report(variant(_nodes(3, memory="8g", first={"memory": "2g",
                                                                   "swap": "0m"})),
                            "production")
    add, bigger = tight.recommendations
    assert add.action == "add a worker node (8 GB, 2 CPU)"
    assert add.frees_memory_mb == 1024  # the surging api task lands on the new worker
    assert add.detail == ("node0 then peaks at 3224 MiB of 2048 MiB RAM + swap (critical; "
                          "now 4248 MiB, critical)")
    assert add.command.endswith("fab -H MANAGER cluster.join node3")
    assert bigger.action == "a bigger node0 (postgres's node)"
    roomy = capacity_report(variant(_nodes(3)), "production")
    assert [r.action for r in roomy.recommendations][:1] == ["add a worker node (4 GB, 2 CPU)"]


def test_the_live_report_on_a_cluster_judges_each_node_by_what_it_uses(
        tmp_path: Path, variant: Any) -> None:
    """Each node measured over its own link: one at 95% of its RAM makes the cluster
    critical, named; the JSON carries each node's figures."""
    from tests.fake.host import FakeHost
    from vedfin_ops.cluster.nodes import measure_nodes
    from vedfin_ops.remote.probes.usage import Usage

    config = variant(_nodes(3))
    host = FakeHost(tmp_path)
    calm = Usage(4096, 1024, 2048, 0, 0.3, 2)
    measured = measure_nodes(host, config, calm)
    assert sorted(measured) == ["node0", "node1", "node2"]
    assert host.siblings == ["deployer@10.0.0.2", "deployer@10.0.0.3"]
    assert measured["node1"].memory_total_mb > 0  # this machine's /proc, read as node1's
    busy = {"node0": calm, "node1": calm, "node2": Usage(4096, 3900, 2048, 100, 1.0, 2)}
    report = capacity_report(config, "production", calm, busy)
    assert report.status == "critical"
    assert report.reasons[0].startswith("node2: RAM 3900 of 4096 MiB used (95%)")
    data = report.to_dict()["nodes"]
    assert data[2]["live"] == {"memory_total_mb": 4096, "memory_used_mb": 3900,
                               "swap_total_mb": 2048, "swap_used_mb": 100}
    host.unreachable = {"deployer@10.0.0.2"}
    with pytest.raises(CheckFailed, match=r"^node1 \(deployer@10\.0\.0\.2\): cannot reach"):
        measure_nodes(host, config, calm)


def _shared(world: Any, service: str) -> str:
    from vedfin_ops.config.names import shared_stack_name

    return f"{shared_stack_name(world.config)}_{service}"


def _vps_world(tmp_path: Any, shipped_data: dict[str, Any], mp: pytest.MonkeyPatch) -> Any:
    """One VPS (`vps:`: no placement rendered), v1 live; then a worker joined by hand."""
    from tests.deploy.test_orchestration import v1_on_a_new_host

    world = v1_on_a_new_host(tmp_path, shipped_data, mp)
    world.host.set_engine(nodes=[_engine_node("id0", "vm", {}, role="manager"),
                                 _engine_node("id1", "w1", {})])
    return world


def test_a_drain_of_the_node_postgres_runs_on_is_refused_whatever_its_labels(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """`vps:` renders no placement, so nothing labels the manager: postgres runs there,
    unpinned, on its volume. Drained, it would start on the worker, on an empty volume."""
    from vedfin_ops.run.operation import RunFailed

    world = _vps_world(tmp_path, shipped_data, monkeypatch)
    with pytest.raises(RunFailed) as info:
        _drain(world, "vm")
    message = str(info.value)
    postgres = _shared(world, "postgres")
    assert message.endswith(f"failed: cluster.drain: vm runs postgres ({postgres}), on its "
                            f"volume: drained, postgres would start on another node, on an "
                            f"empty volume (move the volume first)"), message
    assert info.value.exit_code == 1
    assert _availability(world, "vm") == "active"
    assert "drain vm" not in world.host.commands
    world.host.set_engine(node_tasks={"w1": ["api.2"]})
    assert _drain(world, "w1")["moved"] == 1  # a node postgres does not run on drains


@pytest.mark.parametrize(("node", "expected"), [
    ("node0", "node0 holds postgres's volume: draining it stops the database"),
    ("node1", "node1 is the only public node: the edge would have nowhere to run"),
])
def test_a_drain_of_the_config_s_postgres_or_public_node_is_refused_without_its_labels(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any, node: str, expected: str) -> None:
    """Labels cleaned up by hand: the config still says where postgres's volume and the
    public address are. Refused in one line naming them (it was "unexpected
    StopIteration"), before any change."""
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    world.config.nodes[0].public, world.config.nodes[1].public = False, True
    engine = world.host.engine()
    for each in engine["nodes"]:
        each["Spec"]["Labels"] = {}
    engine["services"][_shared(world, "postgres")]["node"] = "node2"  # not the drained one
    world.host.set_engine(nodes=engine["nodes"], services=engine["services"])
    with pytest.raises(RunFailed) as info:
        _drain(world, node)
    message = str(info.value)
    assert f"failed: cluster.drain: {expected}" in message, message
    assert info.value.exit_code == 1
    assert {_availability(world, f"node{i}") for i in range(3)} == {"active"}


def test_a_drain_is_verified_by_each_running_env_s_smoke_checks(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """The tasks moved: every env that runs is smoke-checked after (staging, never deployed
    here, is not); a failed check makes the node active again."""
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    world.verify_failures = ["api-production: 502 through the edge"]
    with pytest.raises(RunFailed) as info:
        _drain(world, "node2")
    assert "failed: cluster.drain: verify failed: production: api-production: 502 through " \
           "the edge;" in str(info.value)
    assert str(info.value).endswith("node2 is active again")
    assert _availability(world, "node2") == "active"
    world.verify_failures = []
    world.verified = []
    world.host.set_engine(node_tasks={"node2": ["api.2", "web.2"]})
    assert _drain(world, "node2") == {"node": "node2", "moved": 2, "verified": ["production"]}
    assert world.verified == ["production"]


def test_the_cli_s_drain_runs_the_smoke_suite(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """`fab cluster.drain` gives no verify of its own: the drain's default is the smoke suite
    a deploy's verify runs (here answering as an edge that lost the api would)."""
    from vedfin_ops.checks.runner import Check
    from vedfin_ops.checks.smoke import SmokeReport
    from vedfin_ops.cluster.membership import drain
    from vedfin_ops.run import env_run
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    asked: list[str] = []

    def smoke(config: Any, env: str, options: Any = None) -> SmokeReport:
        asked.append(env)
        report = SmokeReport(env)
        report.checks = [Check("api", False, "502 Bad Gateway", 0.1)]
        return report

    monkeypatch.setattr(env_run, "smoke_test", smoke)
    with pytest.raises(RunFailed, match=r"verify failed: production: api: 502 Bad Gateway"):
        drain(world.host, world.config, "node2", say=world.said.append,
              clock=world.clock.clock())
    assert asked == ["production"]
    assert _availability(world, "node2") == "active"


@pytest.mark.parametrize(("label", "service"), [("vedfin.postgres", "postgres"),
                                                ("vedfin.edge", "edge")])
def test_a_join_never_gives_a_second_node_a_placement_label(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any, label: str, service: str) -> None:
    """node1 carries the label and runs the service (its volume is there); the config says
    node0. Labelled too, node0 would let swarm start it on either, on an empty volume:
    refused, naming both nodes, nothing changed."""
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    engine = world.host.engine()
    del engine["nodes"][0]["Spec"]["Labels"][label]
    engine["nodes"][1]["Spec"]["Labels"][label] = "true"
    engine["services"][_shared(world, service)]["node"] = "node1"
    world.host.set_engine(nodes=engine["nodes"], services=engine["services"])
    with pytest.raises(RunFailed) as info:
        _join(world, "node0")
    message = str(info.value)
    the = "the edge" if service == "edge" else service
    assert f"failed: cluster.join: node1 carries {label} already and {the} runs on node1 " \
           f"(its volume is there): labelled too, node0 would let swarm start {the} on " \
           f"either" in message, message
    assert "\n" not in message and info.value.exit_code == 1
    labels = {n["Description"]["Hostname"]: n["Spec"]["Labels"]
              for n in world.host.engine()["nodes"]}
    assert label not in labels["node0"] and labels["node1"][label] == "true"
    assert world.audit()[-1]["result"] == "failed"


def test_a_new_node_is_not_joined_beside_another_node_s_placement_label(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """The config moved the public address to node2; node0 still carries vedfin.edge: the
    join stops before node2 is in the swarm."""
    from vedfin_ops.run.operation import RunFailed

    world = _join_world(tmp_path, shipped_data, monkeypatch, registry)
    world.config.nodes[0].public, world.config.nodes[2].public = False, True
    with pytest.raises(RunFailed, match=r"failed: cluster\.join: node0 carries vedfin\.edge "
                                        r"already and the edge is not deployed"):
        _join(world, "node2")
    engine = world.host.engine()
    assert "joined_token" not in engine
    assert [n["Description"]["Hostname"] for n in engine["nodes"]] == ["node0", "node1"]


def test_a_node_joins_only_beside_a_postgres_pinned_to_its_node(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """A postgres deployed from `vps:` has no constraint: with a second node any restart may
    start it there, on an empty volume. The join is refused with the command that pins it;
    once run, the node joins."""
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    engine = world.host.engine()
    joinable = engine["nodes"].pop()
    postgres = _shared(world, "postgres")
    engine["services"][postgres]["constraints"] = []
    world.host.set_engine(nodes=engine["nodes"], joinable=joinable,
                          services=engine["services"])
    with pytest.raises(RunFailed) as info:
        _join(world, "node2")
    message = str(info.value)
    assert message.startswith(f"cluster-join cluster failed: cluster.join: postgres "
                              f"({postgres}) runs on node0 unpinned: with node2 in the swarm a "
                              f"restart may start it there, on an empty volume; pin it "
                              f"first: "), message
    assert "joined_token" not in world.host.engine()
    fix = message.rpartition("pin it first: ")[2].split(" (")[0]
    world.host.run(fix, what="the printed fix")
    assert world.host.engine()["services"][postgres]["constraints"] == [
        "node.labels.vedfin.postgres == true"]
    assert _join(world, "node2")["joined"] is True


@pytest.mark.parametrize(("text", "deployed", "running", "volume", "pinned"), [
    ("absent\n", False, "", "", False),
    ('placement {"Constraints":["node.labels.vedfin.postgres == true"],"Platforms":[]}\n'
     "Running|node0|Running 2 hours ago\nShutdown|node1|Shutdown 3 hours ago\n",
     True, "node0", "node0", True),
    # pending (no node takes it): its volume is where it last ran
    ('placement {"Constraints":["node.labels.vedfin.postgres==true"]}\n'
     "Running||Pending 5 seconds ago\nShutdown|node1|Failed 9 seconds ago\n",
     True, "", "node1", True),
    # pinned to managers, not to its volume's node
    ('placement {"Constraints":["node.role == manager"]}\nRunning|node0|Running 1 hour ago\n',
     True, "node0", "node0", False),
    ("placement {}\nRunning|vm|Running 1 hour ago\n", True, "vm", "vm", False),
    ("placement null\n", True, "", "", False),
])
def test_a_service_s_placement_reads_as_where_it_runs_and_what_pins_it(
        text: str, deployed: bool, running: str, volume: str, pinned: bool) -> None:
    from vedfin_ops.cluster.nodes import parse_service_place

    place = parse_service_place(text)
    assert (place.deployed, place.running_on, place.volume_node) == (deployed, running, volume)
    assert place.pinned_by("vedfin.postgres") is pinned


@pytest.mark.parametrize("text", ["", "Running|node0|Running\n", "placement {not json\n",
                                  'placement ["a"]\n'])
def test_an_unreadable_placement_is_an_error_not_an_unpinned_service(text: str) -> None:
    from vedfin_ops.cluster.nodes import parse_service_place

    with pytest.raises(CheckFailed, match="unreadable service placement"):
        parse_service_place(text)


@pytest.mark.parametrize(("engine_says", "expected"), [
    ("Error: no such service: vedfin-shared_postgres", "absent"),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", "error"),
])
def test_only_a_missing_service_reads_as_not_deployed(tmp_path: Path, engine_says: str,
                                                      expected: str) -> None:
    """An engine that cannot answer must not make postgres look undeployed (a join would
    then skip the check that it is pinned)."""
    from tests.fake.host import FakeHost
    from vedfin_ops.cluster.nodes import read_service_place
    from vedfin_ops.remote.host import RemoteError

    host = FakeHost(tmp_path)
    (host.bin / "docker").write_text(f"#!/bin/sh\necho '{engine_says}' >&2\nexit 1\n")
    if expected == "absent":
        assert read_service_place(host, "vedfin-shared_postgres", "p").deployed is False
    else:
        with pytest.raises(RemoteError, match="Cannot connect to the Docker daemon"):
            read_service_place(host, "vedfin-shared_postgres", "p")


def test_a_drain_of_the_node_a_pending_postgres_last_ran_on_is_refused(
        tmp_path: Any, shipped_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        registry: Any) -> None:
    """Postgres's task waits for a node (pending) and its labels are gone: its volume is
    still on node1, where it last ran, and draining node1 would start it elsewhere."""
    from vedfin_ops.run.operation import RunFailed

    world = _deployed_cluster(tmp_path, shipped_data, monkeypatch, registry)
    engine = world.host.engine()
    engine["services"][_shared(world, "postgres")]["ps"] = [
        "Running||Pending 5 seconds ago", "Shutdown|node1|Failed 9 seconds ago"]
    world.host.set_engine(services=engine["services"])
    with pytest.raises(RunFailed) as info:
        _drain(world, "node1")
    assert "cluster.drain: node1 holds postgres's volume (its last task ran there)" in \
        str(info.value), info.value
    assert _availability(world, "node1") == "active"
