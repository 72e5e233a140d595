"""Step 7's alarms: rendered from one list, installed into Netdata's health.d with the previous
file put back when the reload fails, and compared with what Netdata's API says it loaded. The
real Netdata loads and raises them in tests/integration/test_monitoring_sandbox.py; here a
scripted host (its own `netdatacli` and `curl`) injects the failures."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.fake.host import FakeHost
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.errors import CheckFailed
from vedfin_ops.rendering.alarms import alarms
from vedfin_ops.rendering.files import netdata_health
from vedfin_ops.steps import monitoring

from . import test_orchestration as orchestration
from .test_orchestration import World

v1_live, world = orchestration.v1_live, orchestration.world


def _config(tmp_path: Path, **alerts: Any) -> Any:
    return config_from_dict({
        "applications": [{"name": "api-production", "resources": {"memory": "64m",
                                                                    "cpus": 0.1}}],
        "vps": {"memory": "1g", "cpus": 1},
        "alerts": alerts, "verify": {"allowNoChecks": True},
        "monitoring": {"netdataConfig": str(tmp_path / "netdata"), "netdataPort": 29999},
    }, "m.yaml")


def netdata_answer(config: Any, *, raised: str | None = None, **override: Any) -> str:
    """What Netdata 1.37's /api/v1/alarms?all says for these alarms (expressions
    HTML-escaped as it sends them)."""
    out: dict[str, Any] = {}
    for alarm in alarms(config):
        charts = ["disk_space._", "disk_space._var"] if alarm.kind == "template" else [alarm.on]
        for chart in charts:
            item = {"name": alarm.name, "chart": chart, "status": "CLEAR", "value": 12.5,
                    "info": html.escape(alarm.info),
                    "warn": html.escape(alarm.warn) if alarm.warn else None,
                    "crit": html.escape(alarm.crit) if alarm.crit else None}
            if raised == alarm.name:
                item["status"] = "CRITICAL"
            item.update(override.get(alarm.name, {}))
            out[f"{chart}.{alarm.name}"] = item
    return json.dumps({"hostname": "vps", "status": True, "alarms": out})


def test_the_rendered_alarms_carry_the_runbooks_thresholds(tmp_path: Path) -> None:
    text = netdata_health(_config(tmp_path))
    assert "lookup: average -5m unaligned of user,system" in text
    assert "crit: $this > 85\n" in text  # CPU, disk
    assert "warn: $this > 85\n    crit: $this > 90\n" in text  # RAM: mitigation 3 + alert
    assert "template: vedfin_disk_usage\n      on: disk.space" in text
    assert text.count("every: 60s") == 3


def test_what_netdata_loaded_is_compared_alarm_by_alarm(tmp_path: Path) -> None:
    config = _config(tmp_path)
    good = monitoring.compare(config, netdata_answer(config, raised="vedfin_ram_usage"))
    assert good.ok and [n for n, _, _ in good.items] == [
        "vedfin_cpu_usage", "vedfin_ram_usage", "vedfin_disk_usage"]
    assert good.items[2][2] == "loaded on 2 chart(s), crit $this > 85, CLEAR"
    assert good.raised == ["system.ram.vedfin_ram_usage CRITICAL (12.5)"]
    stale = monitoring.compare(_config(tmp_path, ram={"above": 95}), netdata_answer(config))
    assert not stale.ok and stale.problems()[1] == (
        "vedfin_ram_usage: loaded with warn '$this > 85', crit '$this > 90'; the config says "
        "'$this > 85', '$this > 95'")
    assert "another version" in stale.problems()[0]  # the digest of all of them changed
    missing = json.loads(netdata_answer(config))
    missing["alarms"] = {k: v for k, v in missing["alarms"].items() if "cpu" not in k}
    assert monitoring.compare(config, json.dumps(missing)).problems() == [
        "vedfin_cpu_usage: not loaded"]
    # same thresholds, another file (only `every` changed): not what the config says yet
    config.monitoring.alarm_every = 10
    stale = monitoring.compare(config, netdata_answer(_config(tmp_path)))
    assert not stale.ok and stale.problems()[0].startswith(
        "vedfin_cpu_usage: Netdata runs another version of it (info ends ")
    with pytest.raises(CheckFailed, match=r"^Netdata's alarms API answered something else: "
                                          r"'<html>\[bold\]'$"):
        monitoring.compare(config, "<html>[bold]\n</html>")


@pytest.fixture
def netdata_host(tmp_path: Path) -> FakeHost:
    """A scripted host with Netdata's folder, a `netdatacli` that reloads (or fails when
    told: real Netdata's never does) and a `curl` answering what `alarms.json` holds."""
    host = FakeHost(tmp_path / "host")
    (tmp_path / "netdata" / "health.d").mkdir(parents=True)
    for name, script in {
        "netdatacli": f'echo "$@" >> {tmp_path}/reloads\n'
                      f'[ -e {tmp_path}/reload-fails ] && {{ echo "health reload [bold]'
                      f'failed" >&2; exit 1; }}\nexit 0\n',
        "curl": f"[ -e {tmp_path}/alarms.json ] || exit 7\ncat {tmp_path}/alarms.json\n",
        "wget": "exit 4\n",
    }.items():
        path = host.bin / name
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)
    return host


def test_apply_installs_reloads_and_leaves_an_identical_file_alone(tmp_path: Path,
                                                                   netdata_host: FakeHost
                                                                   ) -> None:
    config = _config(tmp_path)
    (tmp_path / "alarms.json").write_text(netdata_answer(config))
    changed, now = monitoring.apply(netdata_host, config, netdata_health(config))
    installed = tmp_path / "netdata" / "health.d" / "vedfin.conf"
    assert changed and now.ok and installed.read_text() == netdata_health(config)
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "reloads").read_text() == "reload-health\n"
    changed, now = monitoring.apply(netdata_host, config, netdata_health(config))
    assert not changed and now.ok and (tmp_path / "reloads").read_text() == "reload-health\n"
    assert sorted(os.listdir(installed.parent)) == ["vedfin.conf"]


def test_a_failed_reload_puts_the_previous_alarms_back(tmp_path: Path,
                                                       netdata_host: FakeHost) -> None:
    config = _config(tmp_path)
    installed = tmp_path / "netdata" / "health.d" / "vedfin.conf"
    installed.write_text("# the alarms before\n")
    (tmp_path / "reload-fails").touch()
    with pytest.raises(CheckFailed) as raised:
        monitoring.apply(netdata_host, _config(tmp_path, cpu={"above": 70}),
                         netdata_health(config))
    said = str(raised.value)
    assert "(exit 4): health reload [bold]failed" in said and "\n" not in said
    assert said.endswith("netdatacli reload-health failed (the previous alarms file is back, "
                         "but Netdata did not reload it)")
    assert installed.read_text() == "# the alarms before\n"
    assert sorted(os.listdir(installed.parent)) == ["vedfin.conf"]
    installed.unlink()  # a first install whose reload fails leaves no file
    with pytest.raises(CheckFailed):
        monitoring.apply(netdata_host, config, netdata_health(config))
    assert os.listdir(installed.parent) == []


def test_a_file_netdata_reloads_but_does_not_load_is_replaced_by_the_previous_one(
        tmp_path: Path, netdata_host: FakeHost) -> None:
    """netdatacli says OK to any reload: only Netdata's API tells whether the alarms loaded,
    and when they did not, the file before this apply goes back."""
    config = _config(tmp_path, cpu={"above": 70})
    installed = tmp_path / "netdata" / "health.d" / "vedfin.conf"
    installed.write_text("# the alarms before\n")
    (tmp_path / "alarms.json").write_text(netdata_answer(_config(tmp_path)))  # still 85
    clock = orchestration.FakeClock()
    with pytest.raises(CheckFailed) as raised:
        monitoring.apply(netdata_host, config, netdata_health(config), clock=clock.clock())
    assert str(raised.value).startswith(
        "monitoring: Netdata does not have the alarms as configured: vedfin_cpu_usage: loaded "
        "with warn 'None', crit '$this > 85'; the config says None, '$this > 70'")
    assert "vedfin_ram_usage: Netdata runs another version of it" in str(raised.value)
    assert str(raised.value).endswith("(the previous alarms are back)")
    assert installed.read_text() == "# the alarms before\n"
    assert sorted(os.listdir(installed.parent)) == ["vedfin.conf"]
    assert (tmp_path / "reloads").read_text().count("reload-health") == 2  # new, then old


def test_an_apply_that_never_settled_keeps_the_last_good_file(tmp_path: Path,
                                                              netdata_host: FakeHost) -> None:
    """A Ctrl-C during the wait left an unverified file live beside `.prev`: the next apply
    that fails puts back `.prev` (known good), not the unverified one."""
    config = _config(tmp_path, cpu={"above": 70})
    folder = tmp_path / "netdata" / "health.d"
    (folder / "vedfin.conf").write_text("# unverified\n")
    (folder / "vedfin.conf.prev").write_text("# the last good alarms\n")
    (tmp_path / "alarms.json").write_text(json.dumps({"alarms": {}}))
    with pytest.raises(CheckFailed, match=r"\(the previous alarms are back\)$"):
        monitoring.apply(netdata_host, config, netdata_health(config),
                         clock=orchestration.FakeClock().clock())
    assert (folder / "vedfin.conf").read_text() == "# the last good alarms\n"
    assert sorted(os.listdir(folder)) == ["vedfin.conf"]


def test_the_same_file_is_reloaded_when_netdata_does_not_have_it(tmp_path: Path,
                                                                  netdata_host: FakeHost
                                                                  ) -> None:
    config = _config(tmp_path)
    (tmp_path / "netdata" / "health.d" / "vedfin.conf").write_text(netdata_health(config))
    (tmp_path / "alarms.json").write_text(json.dumps({"alarms": {}}))
    clock = orchestration.FakeClock()
    with pytest.raises(CheckFailed, match=r"vedfin_cpu_usage: not loaded.*\(the file was "
                                          r"already there\)$"):
        monitoring.apply(netdata_host, config, netdata_health(config), clock=clock.clock())
    assert (tmp_path / "reloads").read_text() == "reload-health\n"  # reloaded once, kept


def test_no_netdata_or_alarms_it_does_not_load_are_one_line_errors(tmp_path: Path,
                                                                   netdata_host: FakeHost
                                                                   ) -> None:
    config = _config(tmp_path)
    with pytest.raises(CheckFailed, match=r"is Netdata installed\? monitoring.netdataConfig"):
        config.monitoring.netdata_config = str(tmp_path / "nowhere")
        monitoring.apply(netdata_host, config, netdata_health(config))
    config = _config(tmp_path)
    with pytest.raises(CheckFailed, match=r"netdata alarms failed .*exit 7"):
        monitoring.apply(netdata_host, config, netdata_health(config))
    (tmp_path / "alarms.json").write_text(netdata_answer(_config(tmp_path, disk={"above": 50})))
    (tmp_path / "netdata" / "health.d" / "vedfin.conf").unlink()  # a change: reloaded
    clock = orchestration.FakeClock()
    with pytest.raises(CheckFailed, match=r"^monitoring: Netdata does not have the alarms as "
                                          r"configured: .*vedfin_disk_usage: loaded with"):
        monitoring.apply(netdata_host, config, netdata_health(config), clock=clock.clock())
    assert clock.t >= 30  # a reload is asynchronous: asked again for 30 s first


def test_a_deploy_without_netdata_warns_and_stands(world: World) -> None:
    result = world.deploy("v2")
    assert result.result == "ok"
    assert any(s.startswith("warning: monitoring not applied (") and
               s.endswith("; fab monitoring.apply)") for s in world.said), world.said
