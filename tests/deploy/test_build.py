"""`build`: which images, and the exact `docker build` each gets (no shell, nothing to quote)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.deploy.build import build_command, build_images, targets
from vedfin_ops.errors import ConfigError


def _with_build(shipped_data: dict[str, Any], **build: Any) -> dict[str, Any]:
    data = copy.deepcopy(shipped_data)
    for app in data["applications"]:
        kind = app["name"].split("-")[0]
        app["build"] = {"context": f"apps/{kind}", "args": {"APP": kind, "VERSION": "{tag}"},
                        **build}
    return data


def test_one_image_per_repository_with_the_tag_in_its_args(shipped_data: dict[str, Any]
                                                           ) -> None:
    config = config_from_dict(_with_build(shipped_data), "/srv/conf/dokploy.yaml")
    found = targets(config)
    assert [app.image_repo for app, _ in found] == ["vedfinance/api", "vedfinance/web"]
    _, spec = found[0]
    assert spec.context == "/srv/conf/apps/api"  # relative to the config file
    assert build_command("vedfinance/api:abc123", spec, "abc123") == [
        "build", "--tag", "vedfinance/api:abc123", "--file", "/srv/conf/apps/api/Dockerfile",
        "--build-arg", "APP=api", "--build-arg", "VERSION=abc123", "/srv/conf/apps/api"]


def test_hostile_args_stay_one_argument(shipped_data: dict[str, Any]) -> None:
    data = _with_build(shipped_data)
    data["applications"][0]["build"]["args"]["NOTE"] = "$(rm -rf /); `id` 'x' {tag}"
    config = config_from_dict(data, "dokploy.yaml")
    _, spec = targets(config, "production")[0]
    command = build_command("r:t", spec, "t")
    assert "NOTE=$(rm -rf /); `id` 'x' t" in command


def test_two_envs_building_one_repository_differently_are_refused(
        shipped_data: dict[str, Any]) -> None:
    data = _with_build(shipped_data)
    data["applications"][2]["build"]["dockerfile"] = "Other.Dockerfile"  # api-staging
    with pytest.raises(ConfigError, match=r"applications\[2\]\.build: api-production builds"):
        targets(config_from_dict(data, "dokploy.yaml"))


@pytest.mark.parametrize("bad, key", [
    ({"args": {"1BAD": "x"}}, "args"),
    ({"args": {"A": "two\nlines"}}, "args"),
    ({"context": ""}, "context"),
    ({"dockerfile": "a\nb"}, "dockerfile"),
    ({"unknown": 1}, "unknown"),
])
def test_a_bad_build_section_names_its_key(shipped_data: dict[str, Any], bad: dict[str, Any],
                                           key: str) -> None:
    data = copy.deepcopy(shipped_data)
    data["applications"][0]["build"] = bad
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "dokploy.yaml")
    assert "applications[0].build" in info.value.line() and key in info.value.line()


def test_no_build_section_or_no_dockerfile_or_push_without_registry_is_bad_input(
        shipped_data: dict[str, Any], tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="no application has a `build:` section"):
        build_images(config_from_dict(copy.deepcopy(shipped_data), "d.yaml"), "t", {})
    config = config_from_dict(_with_build(shipped_data), str(tmp_path / "d.yaml"))
    with pytest.raises(ConfigError, match=r"applications\[0\]\.build\.dockerfile: .* does not"):
        build_images(config, "t", {})
    with pytest.raises(ConfigError, match="registry: --push needs a registry section"):
        build_images(config, "t", {}, push=True)
