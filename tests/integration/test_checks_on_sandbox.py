"""Smoke and preflight against the sandbox's real stack, and pgvector through psycopg."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vedfin_ops import load_config
from vedfin_ops.checks.preflight import preflight
from vedfin_ops.checks.smoke import Options, smoke_test
from vedfin_ops.deploy.options import DeployOptions
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.remote.host import Host, connect

from .conftest import docker, docker_logged_in, sandbox_image
from .pgvector import pgvector_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(sandbox_up: dict[str, Any]) -> Iterator[tuple[Any, Host]]:
    config = load_config(sandbox_up["config"])
    host = Host(connect("sandbox", sandbox_up["ssh_config"]))
    deploy(host, config, "production", "v2", say=lambda _m: None)  # a no-op if already live
    yield config, host
    host.close()


def test_smoke_against_the_sandbox_stack_passes(live: tuple[Any, Host]) -> None:
    config, _ = live
    report = smoke_test(config, "production")
    assert report.passed, report.to_dict()
    names = {c.name for c in report.checks}
    assert "www.v-edfinance.localhost -> v-edfinance.localhost" in names
    assert "api-production /api/health" in names


def test_preflight_on_the_sandbox_passes(live: tuple[Any, Host]) -> None:
    config, host = live
    report = preflight(host, config, "production")
    assert report.passed, report.to_dict()
    checks = {c.name: c for c in report.checks}
    assert checks["firewall: published ports"].detail == f"only {config.edge.http_port} published"
    assert checks["firewall: ufw"].detail == "skipped: firewall.check is none"


def test_preflight_flags_a_container_publishing_port_3000(live: tuple[Any, Host]) -> None:
    config, host = live
    # Not loopback (that is unreachable from outside, so not flagged) but still local: the
    # engine's bridge gateway address.
    gateway = docker("network", "inspect", "bridge", "--format",
                     "{{(index .IPAM.Config 0).Gateway}}").stdout.strip()
    docker_logged_in("run", "-d", "--rm", "--name", "vedfin-debug-3000", "-p",
                     f"{gateway}:3000:3000", sandbox_image("api:v1"))
    try:
        report = preflight(host, config, "production")
        docker("rm", "-f", "vedfin-debug-3000", check=False)
        docker_logged_in("run", "-d", "--rm", "--name", "vedfin-debug-3000", "-p",
                         "127.0.0.1:3000:3000", sandbox_image("api:v1"))
        loopback = preflight(host, config, "production")
    finally:
        docker("rm", "-f", "vedfin-debug-3000", check=False)
    assert {c.name: c for c in loopback.checks}["firewall: published ports"].ok
    check = {c.name: c for c in report.checks}["firewall: published ports"]
    assert not report.passed
    assert check.detail == "vedfin-debug-3000 publishes 3000 (published ports bypass ufw)"


def test_smoke_pgvector_check_through_psycopg(shared_tmp: Path, live: tuple[Any, Host]) -> None:
    config, _ = live
    with pgvector_server(shared_tmp) as (psql, uri):
        def sql(statement: str) -> None:
            subprocess.run([str(psql), "-X", "-v", "ON_ERROR_STOP=1", uri, "-c", statement],
                           check=True, capture_output=True, timeout=60)

        sql("CREATE EXTENSION IF NOT EXISTS vector;")
        report = smoke_test(config, "production", Options(database_url=uri))
        check = {c.name: c for c in report.checks}["pgvector"]
        assert check.ok, check.detail
        sql("DROP EXTENSION vector;")
        no_vector = smoke_test(config, "production", Options(database_url=uri, attempts=1))
        failed = {c.name: c for c in no_vector.checks}["pgvector"]
        assert not failed.ok and 'type "vector" does not exist' in failed.detail


def test_monitoring_check_probes_real_ports_on_the_host(live: tuple[Any, Host]) -> None:
    """Netdata and Uptime Kuma stand-ins: real listeners on the sandbox host's loopback."""
    import socket

    config, host = live
    listeners = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listeners.append(sock)
    ports = [s.getsockname()[1] for s in listeners]
    checked = config.model_copy(update={"monitoring": config.monitoring.model_copy(
        update={"check": True, "netdata_port": ports[0], "uptime_kuma_port": ports[1]})})
    try:
        up = {c.name: c for c in preflight(host, checked, "production").checks}["monitoring"]
        assert up.ok and up.detail == "Netdata and Uptime Kuma answer"
    finally:
        listeners[1].close()
    down = {c.name: c for c in preflight(host, checked, "production").checks}["monitoring"]
    listeners[0].close()
    assert not down.ok and down.detail == f"not answering on the host: Uptime Kuma ({ports[1]})"


def test_skipped_preflight_is_recorded_in_the_audit_log(live: tuple[Any, Host]) -> None:
    config, host = live
    deploy(host, config, "production", "v1", DeployOptions(skip_preflight=True),
           say=lambda _m: None)
    audit = host.run(f"tail -n 3 {config.remote.base_dir}/audit.log", what="t")
    assert '"action": "preflight"' in audit and '"result": "skipped"' in audit
    deploy(host, config, "production", "v2", say=lambda _m: None)
