"""Every rendered stack file is accepted by a real Docker Engine and becomes the spec we meant."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vedfin_ops import render
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.rendering.local_files import write_tree

from .conftest import docker

pytestmark = pytest.mark.integration

PREFIX = "vedfintest"
GIB = 1024 * 1024 * 1024
SECOND = 1_000_000_000


def _local(data: dict[str, Any], image: str) -> None:
    """Same spec, but images the engine has locally and names that cannot clash."""
    repo, tag = image.rsplit(":", 1)
    data["tag"] = tag
    for app in data["applications"]:
        app["image"] = repo
    data["postgres"]["image"] = data.setdefault("redis", {})["image"] = image
    data["edge"] = {**data.get("edge", {}), "image": image, "httpPort": 18080,
                    "httpsPort": 18443}
    data["remote"] = {**data.get("remote", {}), "stackPrefix": PREFIX, "network": PREFIX}
    data["postgres"]["volume"] = f"{PREFIX}_pgdata"


def _rm_stacks(names: list[str]) -> None:
    """Apps first, then the shared stack whose network they used; bounded wait for both."""
    for name in reversed(names):
        docker("stack", "rm", name, check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = docker("ps", "-aq", "--filter", f"name={PREFIX}-", check=False).stdout.split()
        if not left:
            break
        time.sleep(0.5)
    while time.monotonic() < deadline:
        if docker("network", "inspect", PREFIX, check=False).returncode != 0:
            return
        docker("network", "rm", PREFIX, check=False)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def deployed(shipped_data: dict[str, Any], stub_image: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data = copy.deepcopy(shipped_data)
    _local(data, stub_image)
    config = config_from_dict(data)
    out = tmp_path_factory.mktemp("release")
    write_tree(render(config), out)
    stacks = [f"{PREFIX}-shared", *(f"{PREFIX}-{env}" for env in config.environments)]
    _rm_stacks(stacks)
    try:
        docker("stack", "deploy", "--resolve-image", "never", "-c",
               str(out / "stacks/shared.yml"), f"{PREFIX}-shared")
        for env in config.environments:
            docker("stack", "deploy", "--resolve-image", "never", "-c",
                   str(out / f"stacks/{env}.yml"), f"{PREFIX}-{env}")
        yield out
    finally:
        _rm_stacks(stacks)


def _spec(service: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(docker("service", "inspect", service).stdout)[0]["Spec"]
    return spec


def test_stack_loader_accepts_every_rendered_file(deployed: Path) -> None:
    for stack in sorted((deployed / "stacks").iterdir()):
        result = docker("stack", "config", "-c", str(stack))
        assert "services:" in result.stdout


def test_engine_holds_the_rolling_update_spec_we_rendered(deployed: Path) -> None:
    api = _spec(f"{PREFIX}-production_api-production")
    assert api["Mode"]["Replicated"]["Replicas"] == 2
    update = api["UpdateConfig"]
    assert (update["Parallelism"], update["Order"], update["FailureAction"]) == (
        1, "start-first", "rollback")
    assert update["Monitor"] == 26 * SECOND  # 3 x (5 s + 3 s) + 2 s
    assert api["RollbackConfig"]["Order"] == "start-first"
    limits = api["TaskTemplate"]["Resources"]["Limits"]
    assert (limits["NanoCPUs"], limits["MemoryBytes"]) == (1.5 * SECOND, 1536 * GIB // 1024)
    assert api["EndpointSpec"]["Mode"] == "dnsrr"
    container = api["TaskTemplate"]["ContainerSpec"]
    assert "/api/health" in " ".join(container["Healthcheck"]["Test"])
    assert "NODE_ENV=production" in container["Env"]
    web = _spec(f"{PREFIX}-production_web-production")
    assert web["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == GIB
    dev = _spec(f"{PREFIX}-dev_api-dev")
    assert dev["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == 512 * GIB // 1024


def test_engine_holds_postgres_stop_first_and_the_edge_host_ports(deployed: Path) -> None:
    pg = _spec(f"{PREFIX}-shared_postgres")
    assert pg["UpdateConfig"]["Order"] == "stop-first"
    assert pg["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 30 * SECOND
    assert "Ports" not in pg.get("EndpointSpec", {})
    configs = pg["TaskTemplate"]["ContainerSpec"]["Configs"]
    assert configs[0]["File"]["Name"] == "/docker-entrypoint-initdb.d/init-db.sql"
    edge = _spec(f"{PREFIX}-shared_edge")
    ports = edge["EndpointSpec"]["Ports"]
    assert {(p["PublishedPort"], p["PublishMode"]) for p in ports} == {(18080, "host"),
                                                                       (18443, "host")}
