"""The sandbox is a real VPS: sshd with pinned keys, a swarm that rolls forward and back."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import requests

from vedfin_ops import load_config, render
from vedfin_ops.config.names import shared_stack_name, stack_name
from vedfin_ops.config.secret_store import resolve
from vedfin_ops.remote.host import HostError, connect
from vedfin_ops.rendering.local_files import write_tree

from .conftest import (
    ROOT,
    SANDBOX_DIR,
    docker,
    docker_logged_in,
    sandbox_image,
    short,
    ssh_config_with_known_hosts,
)

pytestmark = pytest.mark.integration


def test_sshd_refuses_a_wrong_key(sandbox_up: dict[str, Any]) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(Path(sandbox_up["ssh_config"]).parent / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect("127.0.0.1", port=sandbox_up["ssh_port"], username="vedfin-deployer",
                       pkey=paramiko.Ed25519Key.from_private_key_file(
                           str(_fresh_key(Path(sandbox_up["ssh_config"]).parent))),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


def _fresh_key(workdir: Path) -> Path:
    import subprocess
    path = workdir / "wrong_key"
    path.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_tool_refuses_an_unknown_host_key(sandbox_up: dict[str, Any], tmp_path: Path) -> None:
    config = ssh_config_with_known_hosts(sandbox_up, tmp_path, "")
    conn = connect("sandbox", config)
    with pytest.raises(HostError, match=r"unknown host key .* --accept-new-host-key"):
        conn.run("true", hide=True)
    # ... and pins it only when told to
    pinned = connect("sandbox", config, accept_new_host_key=True)
    assert pinned.run("echo pinned", hide=True).stdout.strip() == "pinned"
    pinned.close()
    assert "ssh-ed25519" in (tmp_path / "known_hosts").read_text()
    assert connect("sandbox", config).run("true", hide=True).ok


def test_tool_refuses_a_changed_host_key(sandbox_up: dict[str, Any], tmp_path: Path) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(str(_fresh_key(tmp_path)))
    line = f"[127.0.0.1]:{sandbox_up['ssh_port']} ssh-ed25519 {other.get_base64()}\n"
    conn = connect("sandbox", ssh_config_with_known_hosts(sandbox_up, tmp_path, line))
    with pytest.raises(HostError, match="host key CHANGED"):
        conn.run("true", hide=True)


def test_deploy_user_is_not_root_but_runs_docker(sandbox_conn: Any) -> None:
    assert sandbox_conn.run("id -u", hide=True).stdout.strip() != "0"
    state = sandbox_conn.run("docker info --format '{{.Swarm.LocalNodeState}}'", hide=True)
    assert state.stdout.strip() == "active"


def test_a_secret_stdin_arrives_whole_and_a_refusal_keeps_its_reason(
        sandbox_up: dict[str, Any]) -> None:
    """Over the real sshd: 64 KiB on the channel's stdin reach the command byte for byte,
    and a command that refuses before reading its stdin fails with its own words, not a
    closed socket (Invoke, fed in one write, is done before the command exits)."""
    from tests.integration.conftest import sandbox_host
    from vedfin_ops.remote.host import RemoteError

    host = sandbox_host(sandbox_up)
    try:
        secret = "".join(f"{i:07d}\n" for i in range(8192))
        assert host.run("sha256sum", what="digest", secret_stdin=secret).split()[0] == \
            hashlib.sha256(secret.encode()).hexdigest()
        for _ in range(20):  # it was a race: 2 to 7 of 30 lost their reason
            with pytest.raises(RemoteError, match=r"exit 3\): not ours"):
                host.run("echo 'not ours' >&2; exit 3", what="refusal", secret_stdin=secret)
    finally:
        host.close()


def test_sandbox_status_names_the_ssh_line_and_urls(sandbox_up: dict[str, Any]) -> None:
    assert {"ssh_config", "host", "config", "edge_url", "urls"} <= set(sandbox_up)
    port = sandbox_up["edge_url"].rsplit(":", 1)[1]
    assert sandbox_up["edge_url"] == f"http://127.0.0.1:{port}"
    assert sandbox_up["urls"]["api-production"] == f"http://api.v-edfinance.localhost:{port}/"
    assert load_config(sandbox_up["config"]).applications[0].image_repo == sandbox_image("api")


def test_sandbox_up_twice_is_fine(sandbox_up: dict[str, Any]) -> None:
    import sandbox
    again = sandbox.up(use_existing=True, workdir=SANDBOX_DIR, shipped=ROOT / "dokploy.yaml",
                       progress=lambda _m: None)
    assert again.ssh_port == sandbox_up["ssh_port"] and again.images_built == []
    assert sandbox.status(SANDBOX_DIR)["edge_url"] == sandbox_up["edge_url"]


# --- the engine itself, driven directly: the tool's own rollout is tested with the deploy ---

@pytest.fixture(scope="module")
def stacks(sandbox_up: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, Any]]:
    config = load_config(sandbox_up["config"])
    out = tmp_path_factory.mktemp("sandbox-release")
    secrets = resolve(config)

    def deploy(tag: str) -> None:
        write_tree(render(config, "production", tag=tag, secrets=secrets), out)
        docker_logged_in("stack", "deploy", "--resolve-image", "never",
                         "--with-registry-auth", "-c", str(out / "stacks/production.yml"),
                         stack_name(config, "production"))

    write_tree(render(config, "production", tag="v1", secrets=secrets), out)
    docker_logged_in("stack", "deploy", "--resolve-image", "never", "--with-registry-auth",
                     "-c", str(out / "stacks/shared.yml"), shared_stack_name(config))
    deploy("v1")
    yield {"config": config, "deploy": deploy, "edge": sandbox_up["edge_url"]}


def _service(config: Any, app: str) -> dict[str, Any]:
    name = f"{stack_name(config, 'production')}_{app}"
    data: dict[str, Any] = json.loads(docker("service", "inspect", name).stdout)[0]
    return data


def _wait_converged(config: Any, app: str, tag: str, timeout: float = 120) -> str:
    """Poll until the service's update ends; return its final state."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        svc = _service(config, app)
        state = (svc.get("UpdateStatus") or {}).get("State", "")
        if state in ("completed", "rollback_completed", "paused", "rollback_paused") or (
                not state and svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].endswith(
                    f":{tag}")):
            running = docker("service", "ps", "--filter", "desired-state=running", "--format",
                             "{{.Image}} {{.CurrentState}}", svc["ID"]).stdout.splitlines()
            if all(line.split()[1] == "Running" for line in running) and len(running) == \
                    svc["Spec"]["Mode"]["Replicated"]["Replicas"]:
                return state or "completed"
        time.sleep(0.5)
    raise AssertionError(f"{app} did not converge in {timeout}s (state {state!r})")


def _version(edge: str, host: str) -> str:
    return requests.get(f"{edge}/version", headers={"Host": host}, timeout=5).text.strip()


def test_pgvector_postgres_answers_a_distance_query(stacks: dict[str, Any]) -> None:
    config = stacks["config"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ids = docker("ps", "-q", "--filter",
                     f"label=com.docker.swarm.service.name={shared_stack_name(config)}_postgres",
                     "--filter", "health=healthy").stdout.split()
        if ids:
            break
        time.sleep(1)
    else:
        raise AssertionError("postgres never became healthy")
    sql = "CREATE EXTENSION IF NOT EXISTS vector; SELECT '[1,2,3]'::vector <-> '[1,2,4]';"
    out = docker("exec", "-i", ids[0], "psql", "-v", "ON_ERROR_STOP=1", "-U", "postgres",
                 "-At", stdin=sql.encode()).stdout.split()
    assert out[-1] == "1"


def test_engine_rolls_api_from_v1_to_v2_start_first(stacks: dict[str, Any]) -> None:
    config = stacks["config"]
    _wait_converged(config, "api-production", "v1")
    assert _service(config, "api-production")["Spec"]["UpdateConfig"]["Order"] == "start-first"
    stacks["deploy"]("v2")
    assert _wait_converged(config, "api-production", "v2") == "completed"
    image = _service(config, "api-production")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert short(image) == "vedfin-sandbox/api:v2"
    deadline = time.monotonic() + 30
    while _version(stacks["edge"], "api.v-edfinance.localhost") != "api v2":
        assert time.monotonic() < deadline, "the edge never served v2"
        time.sleep(0.5)


def test_engine_rolls_a_broken_release_back_by_itself(stacks: dict[str, Any]) -> None:
    config = stacks["config"]
    _wait_converged(config, "api-production", "v2")
    stacks["deploy"]("broken")
    assert _wait_converged(config, "api-production", "broken", timeout=180) == \
        "rollback_completed"
    svc = _service(config, "api-production")
    assert short(svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]) == "vedfin-sandbox/api:v2"
    assert _version(stacks["edge"], "api.v-edfinance.localhost") == "api v2"
