"""The tool's own failure paths on the real engine, under real traffic (issue: every failure
ends on one known release). tests/deploy/test_orchestration.py covers every step with a scripted
engine; these prove the same endings against the sandbox's swarm, sshd and edge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from typing import Any

import pytest

from tests.http_load import Load
from vedfin_ops import load_config
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.remote.host import Host, connect
from vedfin_ops.reports.status import status
from vedfin_ops.run.env_run import listing
from vedfin_ops.run.layout import Layout
from vedfin_ops.run.operation import RunFailed

from .conftest import ROOT, docker, docker_logged_in, fab, sandbox_image, short
from .test_deploy import _version

pytestmark = pytest.mark.integration

API = "vedfin-production_api-production"


@pytest.fixture(scope="module")
def config(sandbox_up: dict[str, Any]) -> Any:
    return load_config(sandbox_up["config"])


def _host(sandbox_up: dict[str, Any]) -> Host:
    return Host(connect("sandbox", sandbox_up["ssh_config"]))


def _deploy(sandbox_up: dict[str, Any], config: Any, tag: str) -> Any:
    host = _host(sandbox_up)
    try:
        return deploy(host, config, "production", tag, say=lambda m: None)
    finally:
        host.close()


def _audit_last(sandbox_up: dict[str, Any], config: Any) -> dict[str, Any]:
    host = _host(sandbox_up)
    try:
        line = host.run(f"tail -n 1 {config.remote.base_dir}/audit.log", what="t")
    finally:
        host.close()
    result: dict[str, Any] = json.loads(line)
    return result


def _images(stack: str = "vedfin-production") -> dict[str, str]:
    ids = docker("service", "ls", "-q", "--filter",
                 f"label=com.docker.stack.namespace={stack}").stdout.split()
    out = docker("service", "inspect", "--format",
                 "{{.Spec.Name}} {{.Spec.TaskTemplate.ContainerSpec.Image}}", *ids).stdout
    return {name: short(ref) for name, ref in
            (line.split(" ", 1) for line in out.strip().splitlines())}


def test_a_release_whose_health_says_database_disconnected_is_rolled_back_after_verify(
        sandbox_up: dict[str, Any], config: Any) -> None:
    """The container's own health check passes; only the tool's verify sees it. Exit 1, one
    error line, the old version served throughout, the release marked failed, audited."""
    _deploy(sandbox_up, config, "v2")
    with Load(config.edge.http_port) as load:
        result = fab(sandbox_up, "deploy.production", "--tag", "dbdown")
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: deploy production failed: verify failed"), last
    assert "database='disconnected'" in last and "production back on" in last
    assert "Traceback" not in result.stderr
    assert _version(config) == "api v2"
    assert load.failed == [], f"{len(load.failed)} of {load.sent} failed: {load.failed[:5]}"
    assert set(_images().values()) == {"vedfin-sandbox/api:v2", "vedfin-sandbox/web:v2"}
    audit = _audit_last(sandbox_up, config)
    assert (audit["action"], audit["result"], audit["tag"]) == ("deploy", "failed", "dbdown")


def test_a_release_that_turns_unhealthy_inside_the_monitor_window_never_goes_live(
        sandbox_up: dict[str, Any], config: Any) -> None:
    """The tool stops watching once only the new tasks serve and verifies while the engine's
    monitor window (retries x (interval + timeout) + 2 s) runs out; a task whose health
    check fails half a second after it passed is still inside that window: the engine rolls
    it back (or the verify sees it first), the deploy fails and v2 stays `current`."""
    _deploy(sandbox_up, config, "v2")
    with pytest.raises(RunFailed, match="production back on") as info:
        _deploy(sandbox_up, config, "sickly")  # it serves 404s until found: no load here
    print(info.value)
    assert "rolled back" in str(info.value) or "verify failed" in str(info.value), info.value
    assert _version(config) == "api v2"
    assert set(_images().values()) == {"vedfin-sandbox/api:v2", "vedfin-sandbox/web:v2"}
    audit = _audit_last(sandbox_up, config)
    assert (audit["action"], audit["result"], audit["tag"]) == ("deploy", "failed", "sickly")


def test_a_release_failing_the_edge_at_start_is_put_back_when_zero_downtime_is_required(
        sandbox_up: dict[str, Any], config: Any) -> None:
    """coldstart passes its health check (asked on the loopback) while it still answers the
    edge's requests with errors: the engine and smoke see a healthy release, the receipt
    sees the failed requests; with --require-zero-downtime the deploy fails and v2 stays."""
    _deploy(sandbox_up, config, "v2")
    result = fab(sandbox_up, "deploy.production", "--tag", "coldstart",
                 "--require-zero-downtime")
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert "zero downtime required, but" in said and "production back on" in said, said
    counts = re.search(r"receipt: (\d+) failed of (\d+) requests", said)
    assert counts and 0 < int(counts[1]) < int(counts[2]), said
    assert _version(config) == "api v2"
    audit = _audit_last(sandbox_up, config)
    assert (audit["action"], audit["result"], audit["tag"]) == ("deploy", "failed", "coldstart")
    assert f"receipt: {counts[1]} failed of {counts[2]}" in audit["detail"]


def test_a_health_endpoint_answering_a_non_object_fails_verify_not_the_tool(
        sandbox_up: dict[str, Any], config: Any) -> None:
    _deploy(sandbox_up, config, "v2")
    with pytest.raises(RunFailed, match="health is JSON but not an object") as info:
        _deploy(sandbox_up, config, "notobject")
    assert "production back on" in str(info.value)
    assert _version(config) == "api v2"


def test_a_migration_printing_brackets_succeeds_and_prints_them_literally(
        sandbox_up: dict[str, Any], config: Any) -> None:
    tag = "v1" if _version(config) == "api v2" else "v2"
    result = fab(sandbox_up, "deploy.production", "--tag", tag)
    assert result.returncode == 0, result.stderr
    assert "Applying migration [/app/prisma/migrations/001_init] [bold]" in result.stderr


def test_the_engine_changed_by_hand_is_deployed_again_not_called_a_noop(
        sandbox_up: dict[str, Any], config: Any) -> None:
    _deploy(sandbox_up, config, "v2")
    docker_logged_in("service", "update", "--quiet", "--no-resolve-image",
                     "--with-registry-auth", "--image",
                     sandbox_image("api:v1"), API, timeout=180)  # waits for the update to converge
    assert _version(config) == "api v1"
    host = _host(sandbox_up)
    try:
        drift = status(host, config, "production")["drift"]
    finally:
        host.close()
    assert len(drift) == 1 and drift[0].startswith(
        f"{API}: runs {sandbox_image('api:v1')}, the release has {sandbox_image('api:v2')}@sha256:")
    result = _deploy(sandbox_up, config, "v2")
    assert result.result == "ok" and API in result.services_updated
    assert _version(config) == "api v2"


def test_sigterm_in_the_middle_of_a_rollout_puts_production_back_then_the_next_deploy_works(
        sandbox_up: dict[str, Any], config: Any) -> None:
    _deploy(sandbox_up, config, "v2")
    env = {**os.environ, "VEDFIN_CONFIG": sandbox_up["config"], "COLUMNS": "200"}
    with Load(config.edge.http_port) as load:
        proc = subprocess.Popen([shutil.which("fab") or "fab", "-r", str(ROOT), "-S",
                                 str(sandbox_up["ssh_config"]), "-H", "sandbox",
                                 "deploy.production", "--tag", "v1"],
                                stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env)
        deadline = time.monotonic() + 120
        while docker("service", "inspect", "--format", "{{.UpdateStatus.State}}", API,
                     check=False).stdout.strip() != "updating":
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the rollout never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: deploy production interrupted: interrupted (SIGTERM)"), last
    assert "production back on" in last and "Traceback" not in err
    assert set(_images().values()) == {"vedfin-sandbox/api:v2", "vedfin-sandbox/web:v2"}
    assert _version(config) == "api v2"
    assert load.failed == [], f"{len(load.failed)} of {load.sent} failed: {load.failed[:5]}"
    audit = _audit_last(sandbox_up, config)
    assert (audit["result"], audit["tag"]) == ("interrupted", "v1")
    host = _host(sandbox_up)
    try:
        state = listing(host, Layout.of(config, "production"))
        assert state.releases[-1][1] == "interrupted"
        assert host.run(f"test -e {Layout.of(config, 'production').lock} && echo held || "
                        f"echo free", what="t").strip() == "free"
    finally:
        host.close()
    assert _deploy(sandbox_up, config, "v1").result == "ok"
    assert _version(config) == "api v1"


def test_standalone_migrate_and_db_init_take_the_locks_and_write_audit_lines(
        sandbox_up: dict[str, Any], config: Any) -> None:
    _deploy(sandbox_up, config, "v2")
    migrated = fab(sandbox_up, "migrate", "--env", "production", "--tag", "v2")
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying migration [/app/prisma/migrations/001_init] [bold]" in migrated.stderr
    audit = _audit_last(sandbox_up, config)
    assert (audit["action"], audit["result"], audit["tag"]) == ("migrate", "ok", "v2")
    initialised = fab(sandbox_up, "db-init")
    assert initialised.returncode == 0, initialised.stderr
    assert _audit_last(sandbox_up, config)["action"] == "db-init"
    host = _host(sandbox_up)
    lock = Layout.of(config, "production").lock
    try:
        host.run(f"mkdir -p {lock} && echo '{{\"who\": \"ops@laptop\"}}' > {lock}/holder",
                 what="t")
        held = fab(sandbox_up, "migrate", "--env", "production", "--tag", "v2")
        assert held.returncode == 1 and "ops@laptop" in held.stderr
        assert held.stderr.strip().count("\n") == 0, held.stderr
    finally:
        host.run(f"rm -rf {lock}", what="t")
        host.close()


def _shared_spec() -> dict[str, Any]:
    """What the engine runs for postgres, redis and the edge: image, limits and the swarm
    configs each service reads (by name)."""
    ids = docker("service", "ls", "-q", "--filter",
                 "label=com.docker.stack.namespace=vedfin-shared").stdout.split()
    specs = json.loads(docker("service", "inspect", *ids).stdout)
    return {s["Spec"]["Name"]: {
        "image": s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "resources": s["Spec"]["TaskTemplate"].get("Resources"),
        "configs": sorted(c["ConfigName"] for c in
                          s["Spec"]["TaskTemplate"]["ContainerSpec"].get("Configs") or [])}
        for s in specs}


def test_a_failed_deploy_that_changed_the_caddyfile_and_redis_puts_both_back(
        sandbox_up: dict[str, Any], config: Any) -> None:
    """A production deploy of a broken release whose config also adds a domain (a new
    Caddyfile, so a new swarm config for the edge) and changes redis's memory: the engine
    refuses the broken image, and the shared stack goes back to its earlier spec and configs
    (swarm never takes changed data under an old config's name), recorded and live alike.
    The recorded release deploys as a no-op afterwards, and status shows no drift."""
    import yaml

    from vedfin_ops.config.loader import config_from_dict

    _deploy(sandbox_up, config, "v2")
    before = _shared_spec()
    with open(sandbox_up["config"]) as fh:
        data = yaml.safe_load(fh)
    data["redis"]["resources"]["memory"] = "96m"
    web = next(a for a in data["applications"] if a["name"] == "web-production")
    web["additionalDomains"] = [*web.get("additionalDomains", []), "app.v-edfinance.localhost"]
    changed = config_from_dict(data, sandbox_up["config"])
    with pytest.raises(RunFailed) as info:
        _deploy(sandbox_up, changed, "broken")
    assert "shared stack back on its earlier files" in str(info.value), str(info.value)
    assert _shared_spec() == before
    assert _deploy(sandbox_up, config, "v2").result == "noop"
    host = _host(sandbox_up)
    try:
        assert status(host, config, "production")["drift"] == []
    finally:
        host.close()
