"""Measured usage: docker's units parsed, the live report, and the capacity gate's verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHIPPED
from vedfin_ops import capacity_report, load_config
from vedfin_ops.checks.gate import gate
from vedfin_ops.remote.probes.usage import (
    ContainerStat,
    Usage,
    parse_probe,
    parse_size_mib,
    parse_stats,
)

STATS = Path(__file__).parent.parent / "data" / "docker_stats"


@pytest.mark.parametrize(("text", "mib"), [
    ("0B", 0.0), ("512B", 512 / 1048576), ("472KiB", 472 / 1024), ("58.12MiB", 58.12),
    ("1.5GiB", 1536.0), ("23.54GiB", 23.54 * 1024), ("2TiB", 2 * 1048576.0),
    ("12kB", 12000 / 1048576), ("3.4MB", 3.4e6 / 1048576), ("1.2GB", 1.2e9 / 1048576),
])
def test_every_unit_docker_prints(text: str, mib: float) -> None:
    assert parse_size_mib(text) == pytest.approx(mib)


def test_unreadable_stats_are_unknown_not_zero() -> None:
    assert parse_size_mib("--") is None
    # hand-written, shaped like docker's line for a container whose stats cannot be read
    line = ('{"CPUPerc":"--","MemPerc":"--","MemUsage":"-- / --",'
            '"Name":"vedfin-production_api-production.1.abcdefghijklmnopqrstuvwxy"}')
    stat = parse_stats(line)[0]
    assert (stat.used_mb, stat.limit_mb, stat.cpu_percent) == (None, None, None)
    assert stat.service == "vedfin-production_api-production"


def test_garbage_size_is_refused() -> None:
    with pytest.raises(ValueError, match="not a docker size"):
        parse_size_mib("12 parsecs")


def test_recorded_sandbox_stats_map_containers_to_services() -> None:
    stats = parse_stats(next(STATS.glob("sandbox-*.jsonl")).read_text())
    api = [s for s in stats if s.service == "vedfin-production_api-production"]
    running = [s for s in api if s.used_mb is not None]
    assert len(running) == 2 and all(s.limit_mb == 48.0 for s in running)
    assert len(api) > 2  # --all: the stopped tasks of earlier updates, unmeasured
    pg = next(s for s in stats if s.service == "vedfin-shared_postgres")
    assert pg.limit_mb == 256.0 and pg.used_mb is not None and pg.used_mb > 1


def test_recorded_limits_in_gib() -> None:
    stats = {s.name: s for s in parse_stats(next(STATS.glob("limits-*.jsonl")).read_text())}
    assert stats["vedfin-stats-1536m"].limit_mb == 1536.0
    assert stats["vedfin-stats-nolimit"].limit_mb == pytest.approx(23.54 * 1024)
    assert stats["vedfin-stats-1536m"].service == "vedfin-stats-1536m"


MEMINFO = """MemTotal:        4019296 kB
MemFree:          201320 kB
MemAvailable:     628736 kB
SwapTotal:       2097148 kB
SwapFree:        1573248 kB
"""


def _usage(used_mb: float, swap_used: float = 0.0, containers: list[ContainerStat] | None = None,
           total: float = 4096.0, swap_total: float = 2048.0) -> Usage:
    return Usage(total, used_mb, swap_total, swap_used, 1.2, 2, containers or [])


def _c(service: str, used: float, n: int = 1) -> list[ContainerStat]:
    return [ContainerStat(f"{service}.{i}.x", service, used, None, 1.0) for i in range(n)]


def test_probe_of_proc_and_stats() -> None:
    usage = parse_probe(MEMINFO + "--LOAD--\n1.52 0.80 0.60 2/345 999\n--CPUS--\n2\n--STATS--\n"
                        + next(STATS.glob("sandbox-*.jsonl")).read_text())
    assert usage.memory_total_mb == pytest.approx(3925.1, abs=0.1)
    assert usage.memory_used_mb == pytest.approx((4019296 - 628736) / 1024, abs=0.1)
    assert usage.swap_used_mb == pytest.approx((2097148 - 1573248) / 1024, abs=0.1)
    assert (usage.cpu_load, usage.cpus) == (1.52, 2)
    assert usage.service_used("vedfin-production_api-production") is not None


# The runbook's "ACTUAL USAGE (typical)": api 2000m for 2 replicas, web 1400m, postgres 700m...
RUNBOOK_TYPICAL = [*_c("vedfin-production_api-production", 1000, 2),
                   *_c("vedfin-production_web-production", 700, 2),
                   *_c("vedfin-shared_postgres", 700), *_c("vedfin-shared_redis", 100)]


def test_live_report_adds_usage_and_host_figures() -> None:
    config = load_config(SHIPPED)
    report = capacity_report(config, "production", _usage(3200, 500, RUNBOOK_TYPICAL)).to_dict()
    rows = {s["name"]: s for s in report["services"]}
    assert rows["api-production"]["used_memory_mb"] == 2000
    assert rows["api-production"]["used_percent"] == pytest.approx(65.1, abs=0.1)
    assert rows["redis"]["used_percent"] == pytest.approx(39.1, abs=0.1)
    assert report["host"]["memory_used_mb"] == 3200 and report["host"]["swap_used_mb"] == 500
    assert report["status"] == "ok"  # 78% of RAM
    recs = {r["action"]: r for r in report["recommendations"]}
    assert recs["one replica off-hours"]["frees_memory_mb"] == 1000 + 700  # measured, now
    assert report["committed"]["memory_mb"] == 7000  # the limits stay the runbook's


@pytest.mark.parametrize(("used", "status"), [(3400, "ok"), (3550, "warn"), (3800, "critical")])
def test_live_status_follows_the_alert_thresholds(used: float, status: str) -> None:
    config = load_config(SHIPPED)
    assert capacity_report(config, "production", _usage(used)).status == status


def test_gate_allows_when_use_plus_surge_fits() -> None:
    config = load_config(SHIPPED)
    result = gate(config, "production", _usage(1500, 0, RUNBOOK_TYPICAL))
    # one new api replica (1000 MiB measured) + one web (700 MiB) on top of 1500 MiB
    assert result.ok and result.surge_mb == 1700 and not result.warning
    assert "api-production 1000 MiB x1" in result.reason


def test_gate_passes_with_a_warning_past_the_ram_alert() -> None:
    # The alert means above 90% for 5 minutes, not a moment of a rollout that still fits.
    config = load_config(SHIPPED)
    result = gate(config, "production", _usage(2200, 0, RUNBOOK_TYPICAL))
    assert result.ok and result.warning and result.reason.startswith("warning: ")
    assert "RAM would reach 3900 of 4096 MiB during the rollout, past the 90% alert" in (
        result.reason)


def test_gate_passes_the_runbooks_own_normal_load_with_a_warning() -> None:
    # The runbook's "RAM Usage" table: ~4200 MiB used of 4096 MiB RAM, on its 2048 MiB swap
    # as planned; the surge is one new api replica (1000 MiB measured) and one web (700 MiB).
    config = load_config(SHIPPED)
    result = gate(config, "production", _usage(3900, 300, RUNBOOK_TYPICAL))
    assert result.ok and result.warning
    assert result.surge_mb == 1700
    assert "4200 + 1700 = 5900 of 6144 MiB RAM + swap" in result.reason


def test_gate_refuses_when_use_plus_surge_exceeds_ram_plus_swap() -> None:
    config = load_config(SHIPPED)
    result = gate(config, "production", _usage(4000, 500, RUNBOOK_TYPICAL))  # 4500 + 1700
    assert not result.ok and not result.warning
    assert "6200 MiB exceeds RAM + swap (6144 MiB)" in result.reason
    assert not result.reason.startswith(("error:", "warning:"))


def test_gate_hard_margin_is_taken_off_the_room() -> None:
    config = load_config(SHIPPED)
    usage = _usage(3900, 300, RUNBOOK_TYPICAL)  # 5900 with the surge: fits 6144
    assert gate(config, "production", usage, hard_margin_mb=244).ok  # room 5900
    result = gate(config, "production", usage, hard_margin_mb=300)  # room 5844
    assert not result.ok
    assert "exceeds RAM + swap (6144 MiB) minus the 300 MiB hard margin (5844 MiB)" in (
        result.reason)


def test_gate_refuses_beyond_ram_plus_swap_and_sizes_unmeasured_by_limit() -> None:
    config = load_config(SHIPPED)
    result = gate(config, "production", _usage(3000, 2000))  # nothing measured: limits
    assert not result.ok and result.surge_mb == 1536 + 1024
    assert "exceeds RAM + swap (6144 MiB)" in result.reason
    assert "(limit)" in result.reason


def test_gate_ignores_over_committed_limits(variant: Any) -> None:
    config = load_config(SHIPPED)
    assert capacity_report(config, "production").status == "critical"  # limits
    assert gate(config, "production", _usage(800, 0, RUNBOOK_TYPICAL)).ok  # use


def test_the_probe_s_host_total_is_an_integer_the_shell_can_compare(tmp_path: Any) -> None:
    """awk prints a product past 2^31 as `2.52765e+10` unless told otherwise; the shell's
    `[ "$l" -gt "$total" ]` then fails and an unlimited container (Dokploy's Traefik, on
    cgroup v1: 9223372036854771712) was reported with an 8.8e12 MiB limit. Found by the
    sandbox's test against docker stats."""
    import re
    import subprocess

    from vedfin_ops.remote.probes.usage import CGROUP_STATS

    line = re.search(r"^total=\$\((awk .*) /proc/meminfo\)$", CGROUP_STATS, re.M)
    assert line is not None
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684532 kB\nMemFree: 1 kB\n")
    total = subprocess.run(["sh", "-c", f"{line.group(1)} {meminfo}"], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert total == str(24684532 * 1024)
    compared = subprocess.run(["sh", "-c", f'[ 9223372036854771712 -gt "{total}" ]'],
                              capture_output=True, text=True)
    assert compared.returncode == 0 and not compared.stderr


CPU_SAMPLE_TEXT = """1795977775000000000
cpu  1000 0 500 8000 100 0 0 0 0 0
C vedfin-shared_postgres.1.pjscb0igqhqnmhyt2dmt6p0is 23000000
C vedfin-production_api-production.1.qgr03f8salhkhhmdwgwe9khsn 200000
C gone-by-the-second-snapshot 5
--AGAIN--
1795977776000000000
cpu  1100 0 550 8040 110 0 0 0 0 0
C vedfin-shared_postgres.1.pjscb0igqhqnmhyt2dmt6p0is 23250000
C vedfin-production_api-production.1.qgr03f8salhkhhmdwgwe9khsn 1400000
"""


def test_cpu_is_sampled_over_a_second_for_the_host_and_each_container() -> None:
    """The host's share of all CPUs from /proc/stat's deltas (idle and iowait idle); each
    container's CPU time over the elapsed time as docker stats scales it (100% = one CPU)."""
    from vedfin_ops.remote.probes.usage import parse_cpu

    host, containers = parse_cpu(CPU_SAMPLE_TEXT)
    assert host == 75.0  # 150 busy of 200 jiffies
    assert containers == {"vedfin-shared_postgres.1.pjscb0igqhqnmhyt2dmt6p0is": 25.0,
                          "vedfin-production_api-production.1.qgr03f8salhkhhmdwgwe9khsn": 120.0}
    assert parse_cpu("") == (None, {})
    assert parse_cpu(CPU_SAMPLE_TEXT.split("--AGAIN--")[0]) == (None, {})  # cut short


def test_the_live_report_carries_cpu_per_service_and_for_the_host(shipped_data: Any) -> None:
    from vedfin_ops.config.loader import config_from_dict
    from vedfin_ops.remote.probes.usage import CPU_MARK, parse_probe
    from vedfin_ops.reports.capacity import capacity_report

    config = config_from_dict(shipped_data, "dokploy.yaml")
    stats = "\n".join(
        json.dumps({"Name": name, "MemUsage": "100MiB / 512MiB", "CPUPerc": "--"}) for name in
        ("vedfin-shared_postgres.1.pjscb0igqhqnmhyt2dmt6p0is",
         "vedfin-production_api-production.1.qgr03f8salhkhhmdwgwe9khsn"))
    text = ("MemTotal: 4194304 kB\nMemAvailable: 2097152 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
            f"--LOAD--\n0.5 0.4 0.3 1/100 9\n--CPUS--\n2\n{CPU_MARK}\n{CPU_SAMPLE_TEXT}"
            f"--STATS--\n{stats}\n")
    report = capacity_report(config, "production", parse_probe(text)).to_dict()
    assert report["host"]["cpu_percent"] == 75.0
    by_name = {s["name"]: s for s in report["services"]}
    assert by_name["api-production"]["used_cpu_percent"] == 120.0
    assert by_name["postgres"]["used_cpu_percent"] == 25.0
    assert by_name["web-production"]["used_cpu_percent"] is None
