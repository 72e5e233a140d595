"""host.prepare's Uptime Kuma: the container as Dokploy runs it, then its admin account from
the config's secrets through Kuma's first-run setup (a scripted Kuma behind the tunnel)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.host.fake_vps import FakeVps, public_key
from vedfin_ops.config.model import Config
from vedfin_ops.host.prepare import Prepared, PrepareFailed, prepare

Variant = Callable[[Callable[[dict[str, Any]], Any]], Config]
SECRETS = {"UPTIME_KUMA_USERNAME": "admin", "UPTIME_KUMA_PASSWORD": "a-long-kuma-password-81"}
IMAGE = "registry.example:5000/mirror/uptime-kuma:1"


class Kuma:
    """A scripted Uptime Kuma: it answers once its container runs."""

    def __init__(self, vps: FakeVps) -> None:
        self.vps = vps
        self.admin: tuple[str, str] | None = None
        self.setups = 0
        self.urls: list[str] = []

    def connect(self, url: str, timeout: float) -> Kuma:
        container = self.vps.state().get("containers", {}).get("uptime-kuma")
        if not container or not container["running"]:
            raise ConnectionError("connection refused")
        self.urls.append(url)
        return self

    def need_setup(self) -> bool:
        return self.admin is None

    def setup(self, user: str, password: str) -> None:
        self.setups += 1
        self.admin = (user, password)

    def login(self, user: str, password: str) -> None:
        if self.admin != (user, password):
            raise RuntimeError("Incorrect username or password.")

    def disconnect(self) -> None:
        pass


@pytest.fixture
def vps(tmp_path: Path) -> FakeVps:
    return FakeVps(tmp_path, kuma=True)


@pytest.fixture
def config(vps: FakeVps, variant: Variant) -> Config:
    def change(data: dict[str, Any]) -> None:
        kuma = data["monitoring"]["uptimeKuma"]
        vps.config_change(data)
        data["monitoring"].update(uptimeKuma=kuma, uptimeKumaPort=3002, uptimeKumaImage=IMAGE)

    return variant(change)


def run(vps: FakeVps, config: Config, kuma: Kuma, secrets: dict[str, str] = SECRETS,
        plan: bool = False) -> Prepared:
    return prepare(vps.host, config, public_key=public_key(), plan=plan, paths=vps.paths,
                   secrets=secrets, kuma_connect=kuma.connect, say=lambda _m: None)


def test_uptime_kuma_runs_and_gets_its_admin_from_the_secrets(vps: FakeVps, config: Config
                                                              ) -> None:
    kuma = Kuma(vps)
    planned = run(vps, config, kuma, plan=True)
    assert planned["uptime-kuma"].detail == (f"run Uptime Kuma ({IMAGE}) on 127.0.0.1:3002; "
                                             f"create its admin account")
    result = run(vps, config, kuma)
    assert result["uptime-kuma"].status == "changed"
    assert vps.state()["containers"]["uptime-kuma"] == {
        "running": True, "image": IMAGE, "bind": "127.0.0.1:3002:3001"}
    assert kuma.admin == ("admin", "a-long-kuma-password-81") and kuma.setups == 1
    line = next(c for c in vps.host.command_lines if "docker run" in c)
    assert "--restart unless-stopped" in line and "-v uptime-kuma-data:/app/data" in line
    assert "a-long-kuma-password-81" not in "\n".join(vps.host.command_lines)  # never a command
    again = run(vps, config, kuma)
    assert again["uptime-kuma"].status == "ok" and kuma.setups == 1
    assert [c for c in vps.host.command_lines if "docker run" in c] == [line]


def test_a_kuma_with_another_admin_is_left_as_it_is(vps: FakeVps, config: Config) -> None:
    kuma = Kuma(vps)
    vps.installed("docker.io")
    vps.set(containers={"uptime-kuma": {"running": True, "image": IMAGE,
                                        "bind": "127.0.0.1:3002:3001"}})
    kuma.admin = ("someone", "else")
    with pytest.raises(PrepareFailed) as caught:
        run(vps, config, kuma)
    step = caught.value.result["uptime-kuma"]
    assert step.status == "failed" and "do not log in to: left as it is" in step.detail
    assert kuma.admin == ("someone", "else") and kuma.setups == 0


def test_without_the_admin_secrets_kuma_alone_is_left_undone(vps: FakeVps, config: Config
                                                             ) -> None:
    """They are optional secrets: the rest of the host is prepared, Uptime Kuma is not started
    without an admin to make (it would wait for the first visitor to name one)."""
    with pytest.raises(PrepareFailed) as caught:
        run(vps, config, Kuma(vps), secrets={})
    result = caught.value.result
    assert result["uptime-kuma"].status == "failed"
    assert result["uptime-kuma"].detail.startswith(
        "monitoring.uptimeKuma: the username and password secrets (${UPTIME_KUMA_USERNAME}, "
        "${UPTIME_KUMA_PASSWORD}) need values")
    assert [s.name for s in result.steps if s.status == "failed"] == ["uptime-kuma"]
    assert vps.state().get("containers", {}) == {}
