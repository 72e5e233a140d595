"""Step 7's alarms: rendered from one list, installed into Netdata's health.d with the previous
file put back when the reload fails, and compared with what Netdata's API says it loaded. The
real Netdata loads and raises them in tests/integration/test_monitoring_sandbox.py; here a
scripted host (its own `netdatacli` and `curl`) injects the failures."""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from tests.fake.host import FakeHost
from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.errors import CheckFailed
from vedfin_ops.monitoring import netdata as monitoring
from vedfin_ops.rendering.alarms import alarms
from vedfin_ops.rendering.files import netdata_health

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
    assert "alarm: vedfin_container_restarts\n      on: vedfin.container_restarts\n" \
           "    calc: $restarts\n   units: containers" in text
    assert text.count("every: 60s") == 4


def test_what_netdata_loaded_is_compared_alarm_by_alarm(tmp_path: Path) -> None:
    config = _config(tmp_path)
    good = monitoring.compare(config, netdata_answer(config, raised="vedfin_ram_usage"))
    assert good.ok and [n for n, _, _ in good.items] == [
        "vedfin_cpu_usage", "vedfin_ram_usage", "vedfin_disk_usage", "vedfin_container_restarts"]
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
    # the restarts alarm lives on the plugin's chart: its absence names the plugin
    missing["alarms"] = {k: v for k, v in missing["alarms"].items() if "restarts" not in k}
    assert monitoring.compare(config, json.dumps(missing)).problems()[1].startswith(
        "vedfin_container_restarts: no chart vedfin.container_restarts yet: Netdata starts "
        "custom-plugins.d/vedfin-restarts.plugin")
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
    installed = tmp_path / "netdata" / "health.d" / "vedfin-vedfin.conf"
    assert changed and now.ok and installed.read_text() == netdata_health(config)
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "reloads").read_text() == "reload-health\n"
    changed, now = monitoring.apply(netdata_host, config, netdata_health(config))
    assert not changed and now.ok and (tmp_path / "reloads").read_text() == "reload-health\n"
    assert sorted(os.listdir(installed.parent)) == ["vedfin-vedfin.conf"]


def test_a_failed_reload_puts_the_previous_alarms_back(tmp_path: Path,
                                                       netdata_host: FakeHost) -> None:
    config = _config(tmp_path)
    installed = tmp_path / "netdata" / "health.d" / "vedfin-vedfin.conf"
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
    assert sorted(os.listdir(installed.parent)) == ["vedfin-vedfin.conf"]
    installed.unlink()  # a first install whose reload fails leaves no file
    with pytest.raises(CheckFailed):
        monitoring.apply(netdata_host, config, netdata_health(config))
    assert os.listdir(installed.parent) == []


def test_a_file_netdata_reloads_but_does_not_load_is_replaced_by_the_previous_one(
        tmp_path: Path, netdata_host: FakeHost) -> None:
    """netdatacli says OK to any reload: only Netdata's API tells whether the alarms loaded,
    and when they did not, the file before this apply goes back."""
    config = _config(tmp_path, cpu={"above": 70})
    installed = tmp_path / "netdata" / "health.d" / "vedfin-vedfin.conf"
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
    assert sorted(os.listdir(installed.parent)) == ["vedfin-vedfin.conf"]
    assert (tmp_path / "reloads").read_text().count("reload-health") == 2  # new, then old


def test_an_apply_that_never_settled_keeps_the_last_good_file(tmp_path: Path,
                                                              netdata_host: FakeHost) -> None:
    """A Ctrl-C during the wait left an unverified file live beside `.prev`: the next apply
    that fails puts back `.prev` (known good), not the unverified one."""
    config = _config(tmp_path, cpu={"above": 70})
    folder = tmp_path / "netdata" / "health.d"
    (folder / "vedfin-vedfin.conf").write_text("# unverified\n")
    (folder / "vedfin-vedfin.conf.prev").write_text("# the last good alarms\n")
    (tmp_path / "alarms.json").write_text(json.dumps({"alarms": {}}))
    with pytest.raises(CheckFailed, match=r"\(the previous alarms are back\)$"):
        monitoring.apply(netdata_host, config, netdata_health(config),
                         clock=orchestration.FakeClock().clock())
    assert (folder / "vedfin-vedfin.conf").read_text() == "# the last good alarms\n"
    assert sorted(os.listdir(folder)) == ["vedfin-vedfin.conf"]


def test_the_same_file_is_reloaded_when_netdata_does_not_have_it(tmp_path: Path,
                                                                  netdata_host: FakeHost
                                                                  ) -> None:
    config = _config(tmp_path)
    (tmp_path / "netdata" / "health.d" / "vedfin-vedfin.conf").write_text(netdata_health(config))
    (tmp_path / "alarms.json").write_text(json.dumps({"alarms": {}}))
    clock = orchestration.FakeClock()
    with pytest.raises(CheckFailed, match=r"vedfin_cpu_usage: not loaded.*\(the files were "
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
    # a Netdata that does not answer cannot prove the new file: the previous one goes back
    with pytest.raises(CheckFailed, match=r"netdata alarms failed .*exit 7.*\(the previous "
                                          r"alarms are back\)$"):
        monitoring.apply(netdata_host, config, netdata_health(config))
    assert not (tmp_path / "netdata" / "health.d" / "vedfin-vedfin.conf").exists()
    (tmp_path / "alarms.json").write_text(netdata_answer(_config(tmp_path, disk={"above": 50})))
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


def _fake_docker(folder: Path, events: str, *, engine: bool = True) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    docker = folder / "docker"
    docker.write_text("#!/bin/sh\n" + (
        'case "$1" in version) exit 0 ;; events) printf %s "$EVENTS"; exec sleep 30 ;; esac\n'
        'exit 1\n'
        if engine else "exit 1\n"))
    docker.chmod(0o755)
    return {"PATH": f"{folder}:/usr/bin:/bin", "EVENTS": events}


def test_the_restarts_plugin_counts_deaths_nobody_asked_for(tmp_path: Path) -> None:
    """The rendered plugin run by a real shell, speaking Netdata's plugin protocol: a
    container the engine killed (a rollout) is not a restart, nor a job that finished (exit 0);
    one that died on its own is, and one the swarm stopped because it turned unhealthy."""
    import subprocess

    from vedfin_ops.rendering.files import netdata_plugin
    plugin = tmp_path / "vedfin-restarts.plugin"
    plugin.write_text(netdata_plugin(_config(tmp_path)))
    plugin.chmod(0o755)
    now = int(time.time())
    events = [(now - 30, "kill aaa "), (now - 29, "die aaa 143"), (now - 20, "die bbb 137"),
              (now - 9, "die ccc 1"), (now - 8, "die ccc 1"), (now - 5, "die job 0"),
              (now - 900, "die old 1"),  # before the window
              (now - 640, "kill ddd "), (now - 590, "die ddd 137"),  # its stop grace ran out
              # hung: unhealthy, so the swarm stopped it (a kill) and replaces it: a restart
              (now - 60, "health_status: unhealthy eee "), (now - 50, "kill eee "),
              (now - 40, "die eee 137"), (now - 30, "health_status: healthy fff ")]
    env = _fake_docker(tmp_path / "bin", "".join(f"{t} {e}\n" for t, e in events))
    run = subprocess.Popen([str(plugin), "1"], env=env, stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    lines = [run.stdout.readline() for _ in range(5)]
    assert lines[0].startswith("CHART vedfin.container_restarts '' 'Task containers that "
                               "died unasked in the last 10m' containers vedfin")
    assert lines[0].rstrip().endswith(" 60 '' vedfin-restarts")  # never faster than alarms
    assert lines[1:] == ["DIMENSION restarts '' absolute 1 1\n",
                         "BEGIN vedfin.container_restarts\n", "SET restarts = 3\n", "END\n"]
    run.terminate()  # Netdata stopping: the event stream goes with it
    assert run.wait(timeout=10) == 0
    out = subprocess.run([str(plugin), "1"], env=_fake_docker(tmp_path / "bin", "",
                                                              engine=False),
                         capture_output=True, text=True, timeout=10)
    assert out.stdout == "DISABLE\n" and "cannot reach the docker engine" in out.stderr


def _slack_config(tmp_path: Path, **alerts: Any) -> Any:
    data = {"applications": [{"name": "api-production",
                              "resources": {"memory": "64m", "cpus": 0.1}}],
            "vps": {"memory": "1g", "cpus": 1}, "verify": {"allowNoChecks": True},
            "alerts": {"slack": "${SLACK_WEBHOOK_URL}", "email": "ops@example.com", **alerts},
            "secrets": {"shared": {"SLACK_WEBHOOK_URL": "manual"}},
            "monitoring": {"netdataConfig": str(tmp_path / "netdata"), "netdataPort": 29999}}
    return config_from_dict(data, "m.yaml")


def test_notifications_carry_the_webhook_only_in_a_private_file(tmp_path: Path) -> None:
    config = _slack_config(tmp_path)
    hook = "https://hooks.example/services/T0/B0/x'y"
    wanted = {f.rel: f for f in monitoring.files(config, {"SLACK_WEBHOOK_URL": hook})}
    assert sorted(wanted) == ["custom-plugins.d/vedfin-restarts.plugin",
                              "health.d/vedfin-vedfin.conf", "health_alarm_notify.conf",
                              "vedfin-notify-vedfin.conf"]
    assert hook not in wanted["health_alarm_notify.conf"].text  # the dispatcher: no secret
    notify = wanted["vedfin-notify-vedfin.conf"]
    assert notify.mode == "640" and notify.owned and not notify.reload
    assert "SLACK_WEBHOOK_URL='https://hooks.example/services/T0/B0/x'\"'\"'y'\n" in notify.text
    assert "DEFAULT_RECIPIENT_EMAIL=ops@example.com\n" in notify.text
    assert wanted["custom-plugins.d/vedfin-restarts.plugin"].mode == "755"
    said: list[str] = []  # an optional secret unset: Slack off, said, nothing refused
    quiet = {f.rel: f for f in monitoring.files(config, {}, say=said.append)}
    assert 'SEND_SLACK="NO"' in quiet["vedfin-notify-vedfin.conf"].text
    assert said == ["warning: alerts.slack: secret SLACK_WEBHOOK_URL has no value: Netdata's "
                    "Slack notifications are off"]


def test_the_secret_file_goes_over_stdin_never_on_the_command_line(tmp_path: Path,
                                                                   netdata_host: FakeHost
                                                                   ) -> None:
    """`ps` on the host shows a command line: the webhook must not be in one. And a file
    of root's (0640) is read through sudo, as it was written."""
    config = _slack_config(tmp_path)
    hook = "https://hooks.example/services/T0/B0/only-on-stdin"
    wanted = monitoring.files(config, {"SLACK_WEBHOOK_URL": hook})
    (tmp_path / "alarms.json").write_text(netdata_answer(config))
    monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:])
    assert all(hook not in c for c in netdata_host.command_lines), "webhook on a command line"
    assert hook in (tmp_path / "netdata" / "vedfin-notify-vedfin.conf").read_text()
    notify = monitoring.apply_command(config, wanted[2])
    assert '$S grep -q' in notify and '$S cmp -s' in notify


def test_apply_installs_every_file_and_refuses_a_notify_file_it_did_not_write(
        tmp_path: Path, netdata_host: FakeHost) -> None:
    config = _slack_config(tmp_path)
    root = tmp_path / "netdata"
    wanted = monitoring.files(config, {"SLACK_WEBHOOK_URL": "https://hooks.example/x"})
    (root / "health_alarm_notify.conf").write_text("SEND_EMAIL=YES  # the admin's own\n")
    (tmp_path / "alarms.json").write_text(netdata_answer(config))
    # the admin's own file is refused, not replaced; the alarms stand, the failure is an item
    changed, now = monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:])
    assert changed and not now.ok and len(now.errors) == 1, now
    assert now.errors[0].startswith("health_alarm_notify.conf: ") and \
        "was not written by vedfin-ops: move it aside" in now.errors[0], now.errors
    assert (root / "health_alarm_notify.conf").read_text() == "SEND_EMAIL=YES  # the admin's own\n"
    assert (root / "health.d" / "vedfin-vedfin.conf").exists()
    (root / "health_alarm_notify.conf").unlink()
    changed, now = monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:])
    assert changed and now.ok
    for file in wanted:
        assert (root / file.rel).read_text() == file.text
        assert oct((root / file.rel).stat().st_mode & 0o777) == f"0o{file.mode}"
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == [
        "health_alarm_notify.conf", "vedfin-notify-vedfin.conf", "vedfin-restarts.plugin",
        "vedfin-vedfin.conf"]


def test_a_plugin_that_makes_no_chart_fails_its_alarm_not_the_others(
        tmp_path: Path, netdata_host: FakeHost) -> None:
    """A netdata user without the docker socket: the plugin disables itself. The CPU, RAM and
    disk alarms stay installed; the restarts alarm is the one failed item, after the minute
    Netdata takes to find a new plugin."""
    config = _config(tmp_path)
    wanted = monitoring.files(config, {})
    answer = json.loads(netdata_answer(config))
    answer["alarms"] = {k: v for k, v in answer["alarms"].items() if "restarts" not in k}
    (tmp_path / "alarms.json").write_text(json.dumps(answer))
    clock = orchestration.FakeClock()
    changed, now = monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:],
                                    clock=clock.clock())
    assert changed and not now.ok and clock.t >= monitoring.PLUGIN_WAIT
    assert [n for n, ok, _ in now.items if not ok] == ["vedfin_container_restarts"]
    assert (tmp_path / "netdata" / "health.d" / "vedfin-vedfin.conf").exists()
    clock = orchestration.FakeClock()  # the same files again: no minute-long wait
    changed, now = monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:],
                                    clock=clock.clock())
    assert not changed and not now.ok and clock.t == 0


def test_a_failed_plugin_install_leaves_the_alarms_and_fails_its_item(
        tmp_path: Path, netdata_host: FakeHost) -> None:
    """A host prepared for the alarms alone (the deploy user may write health.d, not
    custom-plugins.d): the alarms are installed, the plugin is the one failed item."""
    config = _config(tmp_path)
    wanted = monitoring.files(config, {})
    (tmp_path / "netdata" / "custom-plugins.d").write_text("a file where a folder goes\n")
    (tmp_path / "alarms.json").write_text(netdata_answer(config))
    changed, now = monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:])
    assert changed and not now.ok
    assert [e.split(":", 1)[0] for e in now.errors] == [
        "custom-plugins.d/vedfin-restarts.plugin"], now.errors
    assert (tmp_path / "netdata" / "health.d" / "vedfin-vedfin.conf").exists()


@pytest.mark.parametrize("fault", [KeyboardInterrupt, RuntimeError])
def test_an_apply_stopped_while_waiting_puts_every_changed_file_back(
        tmp_path: Path, netdata_host: FakeHost, fault: type[BaseException]) -> None:
    """Ctrl-C (or anything unexpected) while Netdata is asked whether it loaded the new
    files: the previous ones are back, no .prev and no temp file is left, the interrupt goes
    on."""
    config = _config(tmp_path)
    root = tmp_path / "netdata"
    (root / "health.d" / "vedfin-vedfin.conf").write_text("# the alarms before\n")
    wanted = monitoring.files(config, {})
    run = netdata_host.run

    def stopped(command: str, **kwargs: Any) -> str:
        if kwargs.get("what") == "netdata alarms":
            raise fault()
        return run(command, **kwargs)

    netdata_host.run = stopped  # type: ignore[method-assign]
    with pytest.raises(fault):
        monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:])
    assert (root / "health.d" / "vedfin-vedfin.conf").read_text() == "# the alarms before\n"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "health.d/vedfin-vedfin.conf"]


def _prefixed(config: Any, prefix: str) -> Any:
    """The same config under another stack prefix: a second config on the same host."""
    remote = config.remote.model_copy(update={"stack_prefix": prefix})
    return config.model_copy(update={"remote": remote})


def _both(*configs: Any) -> str:
    """Netdata's answer when it has loaded every one of these configs' alarms."""
    merged: dict[str, Any] = {}
    for config in configs:
        merged |= json.loads(netdata_answer(config))["alarms"]
    return json.dumps({"hostname": "vps", "status": True, "alarms": merged})


def _notified(root: Path, roles: str) -> dict[str, str]:
    """What Netdata's alarm-notify.sh (bash) has after it sources health_alarm_notify.conf
    for an alarm sent to `roles`, as it does with `roles` and `name` already set."""
    import subprocess

    script = (f'roles={roles!r}; source {root}/health_alarm_notify.conf; '
              'printf "%s\\n" "${SLACK_WEBHOOK_URL:-}" "${DEFAULT_RECIPIENT_EMAIL:-}"')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    hook, email = out.stdout.splitlines()
    return {"slack": hook, "email": email}


def test_two_configs_on_one_host_keep_their_own_alarms_and_notifications(
        tmp_path: Path, netdata_host: FakeHost) -> None:
    """Config B's apply keeps A's alarms file and A's Slack: each config's alarms go to
    its own role, whose settings file the one health_alarm_notify.conf sources."""
    shop = _prefixed(_slack_config(tmp_path, email="shop@example.com"), "shop")
    mine = _slack_config(tmp_path)
    root = tmp_path / "netdata"
    (tmp_path / "alarms.json").write_text(_both(mine, shop))
    for config, hook in ((mine, "https://hooks.example/mine"),
                         (shop, "https://hooks.example/shop")):
        wanted = monitoring.files(config, {"SLACK_WEBHOOK_URL": hook})
        changed, now = monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:])
        assert changed and now.ok, now.problems()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "custom-plugins.d/vedfin-restarts.plugin", "health.d/vedfin-shop.conf",
        "health.d/vedfin-vedfin.conf", "health_alarm_notify.conf", "vedfin-notify-shop.conf",
        "vedfin-notify-vedfin.conf"]
    assert (root / "health.d" / "vedfin-vedfin.conf").read_text() == netdata_health(mine)
    assert "alarm: shop_cpu_usage\n" in (root / "health.d" / "vedfin-shop.conf").read_text()
    assert "      to: vedfin-shop\n" in (root / "health.d" / "vedfin-shop.conf").read_text()
    assert _notified(root, "vedfin-vedfin") == {"slack": "https://hooks.example/mine",
                                                "email": "ops@example.com"}
    assert _notified(root, "vedfin-shop") == {"slack": "https://hooks.example/shop",
                                              "email": "shop@example.com"}
    assert _notified(root, "sysadmin") == {"slack": "", "email": ""}  # Netdata's own alarms
    assert monitoring.compare(shop, _both(mine, shop)).ok  # each judges its own alarms
    assert [n for n, _, _ in monitoring.compare(shop, _both(mine, shop)).items] == [
        "shop_cpu_usage", "shop_ram_usage", "shop_disk_usage", "shop_container_restarts"]


def test_the_old_unnamed_alarms_file_is_taken_over_not_left_beside_the_new_one(
        tmp_path: Path, netdata_host: FakeHost) -> None:
    """A host set up before files were named per config has health.d/vedfin.conf: the first
    apply moves it to its own name (kept as the file to put back), so Netdata never loads
    the same alarms twice; a vedfin.conf the tool did not write is left alone."""
    config = _config(tmp_path)
    folder = tmp_path / "netdata" / "health.d"
    old = "# Rendered by vedfin-ops; edit the config, not this file.\n# the alarms before\n"
    (folder / "vedfin.conf").write_text(old)
    (tmp_path / "reload-fails").touch()  # first: an apply that fails puts the old one back
    with pytest.raises(CheckFailed):
        monitoring.apply(netdata_host, config, netdata_health(config))
    assert sorted(os.listdir(folder)) == ["vedfin-vedfin.conf"]
    assert (folder / "vedfin-vedfin.conf").read_text() == old
    (tmp_path / "reload-fails").unlink()
    (folder / "vedfin-vedfin.conf").rename(folder / "vedfin.conf")
    (tmp_path / "alarms.json").write_text(netdata_answer(config))
    changed, now = monitoring.apply(netdata_host, config, netdata_health(config))
    assert changed and now.ok and sorted(os.listdir(folder)) == ["vedfin-vedfin.conf"]
    # an old version's run after the takeover wrote it again: the new file's previous
    # content is what a failure puts back, and a good apply leaves no second copy
    (folder / "vedfin.conf").write_text(old)
    (tmp_path / "reload-fails").touch()
    with pytest.raises(CheckFailed):
        monitoring.apply(netdata_host, _config(tmp_path, cpu={"above": 70}),
                         netdata_health(_config(tmp_path, cpu={"above": 70})))
    assert (folder / "vedfin-vedfin.conf").read_text() == netdata_health(config)
    (tmp_path / "reload-fails").unlink()
    assert (folder / "vedfin.conf").exists()
    monitoring.apply(netdata_host, config, netdata_health(config))
    assert sorted(os.listdir(folder)) == ["vedfin-vedfin.conf"]
    (folder / "vedfin-vedfin.conf").unlink()  # a file of the same name that is not the tool's
    (folder / "vedfin.conf").write_text("# the admin's own alarms\n")
    monitoring.apply(netdata_host, config, netdata_health(config))
    assert (folder / "vedfin.conf").read_text() == "# the admin's own alarms\n"
    assert (folder / "vedfin-vedfin.conf").read_text() == netdata_health(config)


def test_the_notify_file_goes_to_the_first_netdata_group_it_may_have(
        tmp_path: Path, netdata_host: FakeHost) -> None:
    """`ps` lists every Netdata on the machine, a container's or a machine's too (the bare
    VPS's ran as a gid that is systemd-timesync here): a group the file cannot be given is
    passed over for the next, and only none at all is a failure."""
    import grp

    config = _slack_config(tmp_path)
    ours = grp.getgrgid(os.getgid()).gr_name
    ps = netdata_host.bin / "ps"
    ps.write_text(f"#!/bin/sh\nprintf ' vedfin-no-such-group\\n {ours}\\n {ours}\\n'\n")
    ps.chmod(0o755)
    wanted = monitoring.files(config, {"SLACK_WEBHOOK_URL": "https://hooks.example/x"})
    (tmp_path / "alarms.json").write_text(netdata_answer(config))
    changed, now = monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:])
    assert changed and now.ok, now.errors
    notify = tmp_path / "netdata" / "vedfin-notify-vedfin.conf"
    assert grp.getgrgid(notify.stat().st_gid).gr_name == ours
    ps.write_text("#!/bin/sh\necho ' vedfin-no-such-group'\n")
    notify.unlink()
    changed, now = monitoring.apply(netdata_host, config, wanted[0].text, extra=wanted[1:])
    assert len(now.errors) == 1 and "cannot give" in now.errors[0] and \
        "(vedfin-no-such-group)" in now.errors[0], now.errors
