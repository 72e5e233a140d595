"""Capacity measured on the sandbox's real containers; the gate and the mitigations for real."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vedfin_ops import load_config
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.deploy.options import DeployOptions
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.deploy.scale import scale
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote.host import Host, connect

from .conftest import docker, fab, short

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(sandbox_up: dict[str, Any]) -> Iterator[tuple[Any, Host]]:
    config = load_config(sandbox_up["config"])
    host = Host(connect("sandbox", sandbox_up["ssh_config"]))
    deploy(host, config, "production", "v2", say=lambda _m: None)
    yield config, host
    host.close()


def _running(service: str) -> int:
    return len(docker("ps", "-q", "--filter",
                      f"label=com.docker.swarm.service.name={service}").stdout.split())


def test_live_report_measures_the_real_containers(sandbox_up: dict[str, Any], live: Any,
                                                  tmp_path: Path) -> None:
    chart = tmp_path / "live.png"
    result = fab(sandbox_up, "capacity-report", "--env", "production", "--json", "--chart",
                  str(chart))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    host = report["host"]
    assert host["memory_total_mb"] > 0 and 0 < host["memory_used_mb"] < host["memory_total_mb"]
    assert host["cpus"] >= 1 and host["cpu_load"] >= 0
    rows = {s["name"]: s for s in report["services"]}
    api = rows["api-production"]
    assert api["used_memory_mb"] is not None and 0 < api["used_memory_mb"] < 2 * 48
    assert 0 < api["used_percent"] < 100
    assert rows["postgres"]["used_memory_mb"] > 1
    assert report["status"] in ("ok", "warn", "critical")
    assert chart.read_bytes().startswith(b"\x89PNG")
    table = fab(sandbox_up, "capacity-report", "--env", "production")
    assert "ACTUAL USAGE (measured now)" in table.stdout and "Used now" in table.stdout


def test_gate_refuses_a_deploy_with_no_room_left_and_force_is_recorded(
        sandbox_up: dict[str, Any], live: tuple[Any, Host]) -> None:
    _, host = live
    data = yaml.safe_load(Path(sandbox_up["config"]).read_text())
    data["capacity"] = {"hardMarginMb": 1000000}  # no room at all: any deploy is refused
    strict = config_from_dict(data, sandbox_up["config"])
    with pytest.raises(CheckFailed, match=r"preflight failed: capacity: .*exceeds RAM \+ swap"):
        deploy(host, strict, "production", "v1", say=lambda _m: None)
    assert short(docker("service", "inspect", "--format",
                  "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                  "vedfin-production_api-production").stdout.strip()) == "vedfin-sandbox/api:v2"
    result = deploy(host, strict, "production", "v1", DeployOptions(force=True),
                    say=lambda _m: None)
    assert result.result == "ok"
    audit = host.run(f"tail -n 5 {strict.remote.base_dir}/audit.log", what="t")
    assert '"action": "capacity-gate", "release": ' in audit and '"result": "forced"' in audit


def test_scale_production_to_one_replica_and_back(live: tuple[Any, Host]) -> None:
    config, host = live
    assert scale(host, config, "production", 1, action="scale", say=lambda _m: None) == {
        "api-production": 1, "web-production": 1}
    assert _running("vedfin-production_api-production") == 1
    scale(host, config, "production", None, action="resume", say=lambda _m: None)
    assert _running("vedfin-production_api-production") == 2


def test_production_below_one_replica_is_refused_unless_forced(live: tuple[Any, Host]) -> None:
    config, host = live
    with pytest.raises(UsageError, match="refusing to take production below 1 replica"):
        scale(host, config, "production", 0, action="pause")


def test_pause_and_resume_staging(sandbox_up: dict[str, Any], live: tuple[Any, Host]) -> None:
    config, host = live
    deploy(host, config, "staging", "v1", say=lambda _m: None)
    paused = fab(sandbox_up, "pause", "--env", "staging")
    assert paused.returncode == 0, paused.stderr
    assert _running("vedfin-staging_api-staging") == 0
    resumed = fab(sandbox_up, "resume", "--env", "staging")
    assert resumed.returncode == 0, resumed.stderr
    assert _running("vedfin-staging_api-staging") == 1
    audit = host.run(f"tail -n 3 {config.remote.base_dir}/audit.log", what="t")
    assert '"action": "pause"' in audit and '"action": "resume"' in audit


def test_cgroup_reading_agrees_with_docker_stats(live: tuple[Any, Host]) -> None:
    """The fast path (cgroup files, ms) against `docker stats` (~2 s) on the same containers.

    Memory moves while a container warms up, so only containers whose two `docker stats`
    samples, taken around the fast reads, agree within 0.5 MiB are compared; and a health check
    (a `wget` every second in the sandbox) runs inside the container's cgroup, so one read can
    catch it: the lowest of five reads is the container's own memory.
    """
    from vedfin_ops.remote.probes.usage import PROBE, parse_probe, parse_stats
    _, host = live

    def docker_stats() -> dict[str, Any]:
        return {c.name: c for c in parse_stats(
            docker("stats", "--no-stream", "--format", "{{json .}}").stdout)}

    first = docker_stats()
    reads = []
    for _ in range(5):
        reads.append({c.name: c for c in parse_probe(host.run(PROBE, what="probe")).containers})
        time.sleep(0.2)
    fast = {name: min((r[name] for r in reads if name in r and r[name].used_mb is not None),
                      key=lambda c: c.used_mb or 0.0)
            for name in reads[0] if reads[0][name].used_mb is not None}
    second = docker_stats()
    steady = [n for n in fast if n in first and n in second
              and first[n].used_mb is not None and second[n].used_mb is not None
              and abs(first[n].used_mb - second[n].used_mb) <= 0.5]
    assert len(steady) >= 3, (len(fast), len(first), len(second))
    for name in steady:
        low = min(first[name].used_mb, second[name].used_mb)
        high = max(first[name].used_mb, second[name].used_mb)
        got = fast[name].used_mb
        assert got is not None and low - 1.0 <= got <= high + 1.0, (name, got, low, high)
        assert fast[name].limit_mb == pytest.approx(first[name].limit_mb, rel=0.01), name
