"""Task 2.3's numbers, reproduced exactly from the shipped config."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SHIPPED
from vedfin_ops import capacity_report, load_config
from vedfin_ops.errors import UsageError


@pytest.fixture(scope="module")
def config() -> Any:
    return load_config(SHIPPED)


def test_production_commits_the_runbook_figures(config: Any) -> None:
    report = capacity_report(config, "production").to_dict()
    assert report["services_only"] == {"memory_mb": 6400, "cpus": 6.25}  # "6.4GB committed"
    assert report["committed"] == {"memory_mb": 7000, "cpus": 7.0}  # "TOTAL COMMITTED"
    assert report["vps"] == {"memory_mb": 4096, "cpus": 2.0, "swap_mb": 2048}
    assert report["status"] == "critical"
    rows = {s["name"]: s for s in report["services"]}
    assert set(rows) == {"api-production", "web-production", "postgres", "redis", "monitoring",
                         "system"}
    assert (rows["api-production"]["total_memory_mb"], rows["api-production"]["total_cpus"]) == (
        3072, 3.0)
    assert (rows["web-production"]["total_memory_mb"], rows["web-production"]["total_cpus"]) == (
        2048, 2.0)
    assert rows["postgres"]["env"] == "shared" and rows["monitoring"]["env"] == "overhead"
    for row in report["services"]:
        assert set(row) >= {"name", "env", "memory_mb", "cpus", "replicas", "total_memory_mb",
                            "total_cpus"}


def test_rolling_deploy_peak_adds_one_new_replica_of_each_app_at_once(config: Any) -> None:
    report = capacity_report(config, "production").to_dict()
    # stack deploy starts both services' updates together; start-first, parallelism 1
    assert report["surge_peak"]["memory_mb"] == 7000 + 1536 + 1024
    assert report["surge_peak"]["surging_services"] == ["api-production", "web-production"]


def test_every_env_together(config: Any) -> None:
    report = capacity_report(config).to_dict()
    assert report["scope"] == "all"
    assert report["committed"] == {"memory_mb": 7000 + 1024 + 1536, "cpus": 9.5}
    assert report["services_only"] == {"memory_mb": 6400 + 1024 + 1536, "cpus": 8.75}
    assert report["surge_peak"]["memory_mb"] == 9560 + 2560  # production's surge is largest


def test_recommendations_say_what_each_frees(config: Any) -> None:
    recs = {r["action"]: r for r in capacity_report(config, "production").to_dict()[
        "recommendations"]}
    assert recs["pause dev and staging"]["frees_memory_mb"] == 512 * 2 + 768 * 2
    assert recs["one replica off-hours"]["frees_memory_mb"] == 1536 + 1024
    assert recs["upgrade VPS CPX21 -> CPX31"]["frees_memory_mb"] == 4096
    assert recs["upgrade VPS CPX21 -> CPX31"]["frees_cpus"] == 2.0


def test_a_config_that_fits_is_ok_without_recommendations(variant: Any) -> None:
    def small(data: dict[str, Any]) -> None:
        data["applications"] = [a for a in data["applications"] if a["name"].endswith("-dev")]
        data["vps"].update(memory="16g", cpus=4)
    report = capacity_report(variant(small)).to_dict()
    assert report["status"] == "ok" and report["recommendations"] == []


def test_over_the_ram_warning_but_within_swap_is_warn(variant: Any) -> None:
    def tight(data: dict[str, Any]) -> None:
        data["applications"] = [a for a in data["applications"] if a["name"].endswith("-dev")]
        data["vps"].update(memory="2g", swap="4g")
    report = capacity_report(variant(tight)).to_dict()
    assert report["committed"]["memory_mb"] == 1024 + 1280 + 600
    assert report["status"] == "warn"


def test_stop_first_deploys_add_no_surge(variant: Any) -> None:
    def stop_first(data: dict[str, Any]) -> None:
        data["deploymentStrategy"] = {"maxSurge": 0, "maxUnavailable": 1}
        for app in data["applications"]:
            app["replicas"] = 2
    report = capacity_report(variant(stop_first), "production").to_dict()
    assert report["surge_peak"]["memory_mb"] == report["committed"]["memory_mb"]


def test_unknown_env_is_refused(config: Any) -> None:
    with pytest.raises(UsageError):
        capacity_report(config, "qa")
