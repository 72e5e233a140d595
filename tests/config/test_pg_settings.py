"""`postgres.settings`: the runbook's tuning as server options, refused when it cannot fit the
container's memory, and compared with what the server runs (SHOW) after db-init."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vedfin_ops import render
from vedfin_ops.config.model import Config
from vedfin_ops.config.pg_settings import budget_mib, normalised
from vedfin_ops.deploy.db_init import settings_differ, settings_sql
from vedfin_ops.errors import ConfigError

RUNBOOK = {"shared_buffers": "256MB", "work_mem": "4MB", "max_connections": "20",
           "maintenance_work_mem": "64MB"}


def test_the_shipped_config_carries_the_runbook_s_tuning_as_server_options(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> None:
    config = variant(lambda d: None)
    assert config.postgres.settings == RUNBOOK
    assert budget_mib(config.postgres.settings) == 400  # the runbook's own arithmetic
    shared = yaml.safe_load(render(config)["stacks/shared.yml"])
    assert shared["services"]["postgres"]["command"] == [
        "postgres", "-c", "shared_preload_libraries=pg_stat_statements",
        "-c", "shared_buffers=256MB", "-c", "work_mem=4MB", "-c", "max_connections=20",
        "-c", "maintenance_work_mem=64MB"]


@pytest.mark.parametrize(("settings", "said"), [
    ({"shared_buffers": "1GB"}, "more than postgres.resources.memory (1024 MiB)"),
    ({"max_connections": 300, "work_mem": "4MB"}, "more than postgres.resources.memory"),
    ({"shared_buffers": "256 MB; DROP"}, "not a number with a unit or a plain word"),
    ({"shared_buffers": "256XB"}, "unit 'XB' is not one of PostgreSQL's"),
    ({"Shared Buffers": "1MB"}, "is not a PostgreSQL setting name"),
    ({"work_mem": True}, "is not a value"),
    ({"max_connections": "many"}, "is not a whole number"),
])
def test_bad_settings_name_the_key(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config], settings: dict[str, Any],
        said: str) -> None:
    def change(data: dict[str, Any]) -> None:
        data["postgres"]["settings"] = {**RUNBOOK, **settings}

    with pytest.raises(ConfigError) as caught:
        variant(change)
    assert "postgres.settings" in str(caught.value) and said in str(caught.value), \
        str(caught.value)


@pytest.mark.parametrize(("given_", "shown"), [
    ("256MB", "256MB"), ("262144kB", "256MB"), ("1024MB", "1GB"), ("1536MB", "1536MB"),
    ("20", "20"), ("60s", "1min"), ("1500ms", "1500ms"), ("On", "on"), ("0", "0"),
])
def test_values_compare_as_show_prints_them(given_: str, shown: str) -> None:
    assert normalised(given_) == shown


@given(st.integers(min_value=1, max_value=2**20), st.sampled_from(["kB", "MB", "GB"]))
def test_a_memory_value_and_its_kb_form_show_alike(number: int, unit: str) -> None:
    factor = {"kB": 1, "MB": 1024, "GB": 1024**2}[unit]
    assert normalised(f"{number}{unit}") == normalised(f"{number * factor}kB")


def test_db_init_reads_the_running_values_and_names_each_difference() -> None:
    sql = settings_sql(["shared_buffers", "work_mem"])
    assert sql.count("current_setting('shared_buffers')") == 1
    running = "shared_buffers 256MB\nwork_mem 4MB\nmax_connections 100\n"
    assert settings_differ({"shared_buffers": "262144kB", "work_mem": "4MB"}, running) == []
    assert settings_differ(RUNBOOK, running) == [
        "max_connections is 100, the config says 20",
        "maintenance_work_mem is not set, the config says 64MB"]
