"""Adopting Dokploy's postgres volume: the rendered stack names it as it is, and the probe's
answer is judged before anything changes (exists, unused, same PostgreSQL major)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.deploy.volumes import judge_adoption, major_of
from vedfin_ops.errors import CheckFailed, ConfigError
from vedfin_ops.rendering.files import render

IMAGE = "pgvector/pgvector:pg17"
OURS = "vedfin-shared_postgres"


def test_an_adopted_volume_is_external_under_its_own_name(shipped_data: dict[str, Any]
                                                          ) -> None:
    data = copy.deepcopy(shipped_data)
    data["postgres"]["volume"] = {"name": "dokploy-postgres-data.1", "external": True}
    shared = yaml.safe_load(render(config_from_dict(data, "d.yaml"))["stacks/shared.yml"])
    assert shared["volumes"]["pgdata_adopted"] == {"external": True,
                                                   "name": "dokploy-postgres-data.1"}
    assert shared["services"]["postgres"]["volumes"] == [
        "pgdata_adopted:/var/lib/postgresql/data"]
    plain = yaml.safe_load(render(config_from_dict(copy.deepcopy(shipped_data), "d.yaml"))
                           ["stacks/shared.yml"])
    assert plain["volumes"]["pgdata"] == {}  # the stack's own, as before


@pytest.mark.parametrize("bad", ["-x", "a b", "a/b", "", "$(id)"])
def test_a_volume_name_docker_would_refuse_is_bad_input(shipped_data: dict[str, Any],
                                                        bad: str) -> None:
    data = copy.deepcopy(shipped_data)
    data["postgres"]["volume"] = {"name": bad, "external": True}
    with pytest.raises(ConfigError, match=r"postgres\.volume\.name"):
        config_from_dict(data, "d.yaml")


@pytest.mark.parametrize("said, major", [
    ("postgres (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)", "17"),
    ("postgres (PostgreSQL) 16.4", "16"), ("postgres (PostgreSQL) 9.6.24", "9.6"),
    ("postgres (PostgreSQL) 18beta1", "18"), ("", None), ("sh: postgres: not found", None),
])
def test_the_image_s_major_version(said: str, major: str | None) -> None:
    assert major_of(said) == major


def test_the_same_major_is_adopted_and_an_empty_volume_initialised() -> None:
    same = "data 17\nimage postgres (PostgreSQL) 17.2\n"
    assert judge_adoption(same, "old", IMAGE, OURS) == "old: PostgreSQL 17 data, adopted as it is"
    ours = f"user /vedfin-shared_postgres.1.abc {OURS}\n" + same  # our own postgres on it
    assert judge_adoption(ours, "old", IMAGE, OURS).endswith("adopted as it is")
    assert judge_adoption("data \nentries \nimage postgres (PostgreSQL) 17.2\n", "old", IMAGE,
                          OURS) == "old: empty, PostgreSQL 17 initialises it"
    ours_service = f"service {OURS}\n" + same
    assert judge_adoption(ours_service, "old", IMAGE, OURS).endswith("adopted as it is")


@pytest.mark.parametrize("answer, says", [
    ("missing\n", "postgres.volume: old does not exist on the host"),
    ("user /dokploy-postgres.1.x dokploy-postgres\ndata 17\nimage postgres (PostgreSQL) 17.2",
     "postgres.volume: old is in use by dokploy-postgres.1.x: remove it first"),
    ("user /pg-by-hand \ndata 17\nimage postgres (PostgreSQL) 17.2", "in use by pg-by-hand"),
    ("service dokploy-postgres\ndata 17\nimage postgres (PostgreSQL) 17.2",
     "in use by service dokploy-postgres: remove it first, a stopped container too"),
    ("data \nentries pgdata lost+found \nimage postgres (PostgreSQL) 17.2",
     "old is not empty but has no PG_VERSION at its root (found pgdata, lost+found)"),
    ("data 15\nimage postgres (PostgreSQL) 17.2",
     "postgres.volume: old holds PostgreSQL 15 data and pgvector/pgvector:pg17 runs "
     "PostgreSQL 17: upgrade the data first (pg_upgrade, or pg_dump with a PostgreSQL 15 "
     "image and restore into 17), or set postgres.image to a PostgreSQL 15 image"),
    ("data 17\nimage ", "cannot tell which PostgreSQL pgvector/pgvector:pg17 runs"),
])
def test_what_cannot_be_adopted_is_refused_naming_why(answer: str, says: str) -> None:
    with pytest.raises(CheckFailed) as info:
        judge_adoption(answer, "old", IMAGE, OURS)
    assert says in str(info.value)


def test_the_probe_mounts_read_only_without_network_and_quotes_everything() -> None:
    from vedfin_ops.remote.commands import volume_probe

    command = volume_probe("old", "registry.local:5000/pg:17; rm -rf /")
    assert "-v old:/adopt:ro" in command and "--network none" in command
    assert "docker ps -aq --filter volume=old" in command  # stopped containers count too
    assert "--user 0" in command  # a 0700 data directory is readable
    assert "'registry.local:5000/pg:17; rm -rf /'" in command
