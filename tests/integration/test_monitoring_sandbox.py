"""Step 7 and Step 6's gaps on the sandbox: a deploy installs the alarms into a real Netdata
(Debian's, run by the sandbox as the deploy user) which loads them, a lowered threshold is raised
by Netdata itself, a task that dies unasked raises the restart alarm and Netdata tells Slack and
mails `alerts.email` (the sandbox's mail sink, reached through Netdata's own sendmail -t);
Uptime Kuma (npm's, run by the sandbox) gets its monitors and tells Slack, then PagerDuty, when
the api goes down (both are the sandbox's webhook sink); a release whose db-health says the
connection failed and whose api allows no CORS origin is refused, and a release that logs an
error line (each of its 4 tasks) is live with a warning."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import docker, fab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def on_v1_after(sandbox_up: dict[str, Any]) -> Iterator[None]:
    yield
    fab(sandbox_up, "deploy.production", "--tag", "v1")


def _out(done: Any) -> str:
    return str(done.stdout) + str(done.stderr)


def _status(sandbox_up: dict[str, Any], config: str | None = None) -> dict[str, Any]:
    done = fab(sandbox_up, "monitoring.status", "--json",
               extra_env={"VEDFIN_CONFIG": config} if config else None)
    assert done.returncode in (0, 1) and done.stdout.startswith("{"), _out(done)
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def test_a_deploy_installs_the_alarms_and_warns_of_its_error_lines(
        sandbox_up: dict[str, Any], on_v1_after: None) -> None:
    done = fab(sandbox_up, "deploy.production", "--tag", "errorlog")
    assert done.returncode == 0, _out(done)
    out = _out(done)
    assert "warning: 4 error line(s) in the new tasks' logs (verify.logErrors):" in out
    assert "| ERROR [ExceptionsHandler] connect ECONNREFUSED 10.0.0.9:6379" in out
    assert "monitoring: 4 Netdata alarms" in out, out
    assert "uptime kuma: 4 monitors" in out, out
    status = _status(sandbox_up)
    assert status["ok"] is True, status
    assert [a["name"] for a in status["alarms"]] == [
        "vedfin_cpu_usage", "vedfin_ram_usage", "vedfin_disk_usage", "vedfin_container_restarts"]
    kuma = status["uptimeKuma"]
    assert kuma["ok"] is True and [m["status"] for m in kuma["monitors"]] == ["UP"] * 4, kuma
    assert kuma["monitors"][0]["name"].startswith(
        "vedfin: api-production api.v-edfinance.localhost:"), kuma
    ram = status["alarms"][1]["detail"]
    assert "warn $this > 85, crit $this > 90" in ram, ram


def test_a_release_failing_db_health_and_cors_is_rolled_back(sandbox_up: dict[str, Any],
                                                             on_v1_after: None) -> None:
    before = fab(sandbox_up, "status", "--env", "production", "--json")
    done = fab(sandbox_up, "deploy.production", "--tag", "smokegaps")
    assert done.returncode == 1, _out(done)
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, done.stderr
    assert "db-health: HTTP 200 but says 'Connection failed: timeout expired'" in error[0]
    assert "CORS from v-edfinance.localhost: no Access-Control-Allow-Origin for " \
           "http://v-edfinance.localhost:" in error[0], error[0]
    after = fab(sandbox_up, "status", "--env", "production", "--json")
    assert json.loads(after.stdout)["current"] == json.loads(before.stdout)["current"]


def test_netdata_raises_an_alarm_whose_threshold_is_lowered(sandbox_up: dict[str, Any],
                                                            tmp_path: Path) -> None:
    data = yaml.safe_load(Path(sandbox_up["config"]).read_text())
    data["alerts"] = {**data.get("alerts", {}), "disk": {"above": 1}}
    data["secretsFile"] = str(Path(sandbox_up["config"]).parent / data["secretsFile"])
    lowered = tmp_path / "lowered.yaml"
    lowered.write_text(yaml.safe_dump(data))
    try:
        done = fab(sandbox_up, "monitoring.apply", extra_env={"VEDFIN_CONFIG": str(lowered)})
        assert done.returncode == 0, _out(done)
        assert "monitoring: alarms installed and reloaded" in done.stdout
        raised: list[str] = []
        for _ in range(30):  # health runs every 5 s in the sandbox's Netdata
            raised = _status(sandbox_up, str(lowered))["raised"]
            if any("vedfin_disk_usage CRITICAL" in r for r in raised):
                break
            time.sleep(2)
        assert any("vedfin_disk_usage CRITICAL" in r for r in raised), raised
        # the config's own threshold is not what Netdata has now: status says so, exit 1
        stale = fab(sandbox_up, "monitoring.status")
        assert stale.returncode == 1 and "FAILED  vedfin_disk_usage: loaded with" in \
            stale.stdout, _out(stale)
    finally:
        back = fab(sandbox_up, "monitoring.apply")
    assert back.returncode == 0, _out(back)
    assert _status(sandbox_up)["ok"] is True


def _on_v1(sandbox_up: dict[str, Any]) -> Any:
    from vedfin_ops import load_config

    done = fab(sandbox_up, "deploy.production", "--tag", "v1")
    assert done.returncode == 0, _out(done)
    return load_config(sandbox_up["config"])


def test_verify_ticks_every_box_of_the_runbooks_checklist(sandbox_up: dict[str, Any]) -> None:
    _on_v1(sandbox_up)
    done = fab(sandbox_up, "verify", "--env", "production", "--json")
    report = json.loads(done.stdout)
    items = {i["name"]: i for i in report["items"]}
    assert done.returncode == 0 and report["passed"], [i for i in report["items"]
                                                       if not i["ok"]]
    assert "status: Database schema is up to date!" in items["migrations applied"]["detail"]
    assert items["pgvector works"]["detail"].startswith("vedfinance_prod: vector distance")
    box = items["monitoring configured"]["detail"]
    assert box.startswith("4 Netdata alarms loaded as configured") and \
        box.endswith("; 4 Uptime Kuma monitors UP"), box
    assert items["replicas of api and web"]["detail"] == "api-production 2, web-production 2"
    assert items["zero-downtime deploy"]["ok"]
    assert any(n.startswith("smoke: api-production CORS from") for n in items)


def test_restart_replaces_the_api_under_load_without_a_failed_request(
        sandbox_up: dict[str, Any]) -> None:
    from tests.http_load import Load

    config = _on_v1(sandbox_up)
    before = {line.split()[0] for line in docker(
        "service", "ps", "-q", "--filter", "desired-state=running",
        "vedfin-production_api-production").stdout.split("\n") if line.strip()}
    with Load(config.edge.http_port, rate=20, max_requests=3000) as load:
        done = fab(sandbox_up, "restart", "--env", "production", "--app", "api-production")
    assert done.returncode == 0, _out(done)
    assert load.sent > 50 and load.failed == [], load.failed[:5]
    after = {line.split()[0] for line in docker(
        "service", "ps", "-q", "--filter", "desired-state=running",
        "vedfin-production_api-production").stdout.split("\n") if line.strip()}
    assert len(after) == 2 and not after & before  # every task is new
    audit = fab(sandbox_up, "audit", "--json").stdout.strip().splitlines()[-1]
    assert json.loads(audit)["action"] == "restart" and json.loads(audit)["result"] == "ok"


def test_the_html_report_of_the_live_env_in_a_real_browser(sandbox_up: dict[str, Any],
                                                           tmp_path: Path) -> None:
    from tests.browser import dom, screenshot

    _on_v1(sandbox_up)
    target = tmp_path / "report.html"
    done = fab(sandbox_up, "report", "--env", "production", "--html", str(target))
    assert done.returncode == 0, _out(done)
    shown = dom(target)
    screenshot(target, "report-sandbox")
    assert '<b id="verdict" class="ok">passed</b>' in shown
    for text in ("vedfin_cpu_usage", "vedfin_ram_usage", "vedfin_disk_usage",
                 "vedfin-production_api-production", "<svg", "migrations applied"):
        assert text in shown, text
    assert "not read" not in shown
    live = json.loads(fab(sandbox_up, "capacity-report", "--env", "production",
                          "--json").stdout)
    assert live["host"]["cpu_percent"] is not None
    api = next(s for s in live["services"] if s["name"] == "api-production")
    assert api["used_cpu_percent"] is not None and api["used_cpu_percent"] >= 0


def test_the_off_hours_timer_scales_production_as_cron_runs_it(sandbox_up: dict[str, Any],
                                                                on_v1_after: None,
                                                                tmp_path: Path) -> None:
    """The crontab line's command, run as cron runs it (the deploy user, a bare env): one
    replica per app and back, with no failed request, audited."""
    import subprocess

    from sandbox import USER
    from tests.http_load import Load
    from vedfin_ops import load_config
    from vedfin_ops.schedule import offhours

    config = _on_v1(sandbox_up)
    # the sandbox's own config has no window (a night-time test run would get 1 replica)
    data = yaml.safe_load(Path(sandbox_up["config"]).read_text())
    data["offHours"] = {"start": "00:00", "end": "06:00", "replicas": 1,
                        "envs": ["production"]}
    data["secretsFile"] = str(Path(sandbox_up["config"]).parent / data["secretsFile"])
    timed = tmp_path / "offhours.yaml"
    timed.write_text(yaml.safe_dump(data))
    done = fab(sandbox_up, "db.schedule", extra_env={"VEDFIN_CONFIG": str(timed)})
    assert done.returncode == 0, _out(done)
    job = offhours.script_path(load_config(timed), "production")
    tab = subprocess.run(["crontab", "-l", "-u", USER], capture_output=True, text=True,
                         check=False).stdout
    assert f"0 0 * * * {job} down" in tab and f"0 6 * * * {job} up" in tab

    def as_cron(mode: str) -> None:
        done = subprocess.run(["su", "-s", "/bin/sh", USER, "-c",
                               f"env -i PATH=/usr/bin:/bin HOME=/ SHELL=/bin/sh {job} {mode}"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    def replicas() -> set[str]:
        return {line.split()[1] for line in docker(
            "service", "ls", "--format", "{{.Name}} {{.Replicas}}", "--filter",
            "name=vedfin-production_").stdout.splitlines()}

    def settled(wanted: str) -> set[str]:
        for _ in range(60):  # bounded: the engine converges in seconds
            if replicas() == {wanted}:
                break
            time.sleep(1)
        return replicas()

    with Load(config.edge.http_port, rate=20, max_requests=2000) as load:
        as_cron("down")
        assert settled("1/1") == {"1/1"}
        as_cron("up")
        assert settled("2/2") == {"2/2"}
    assert load.failed == [], load.failed[:5]
    lines = fab(sandbox_up, "audit", "--json").stdout.strip().splitlines()[-2:]
    assert [json.loads(line)["action"] for line in lines] == ["offhours-down", "offhours-up"]
    assert fab(sandbox_up, "db.schedule").returncode == 0  # the sandbox's block again
    assert "offhours-" not in subprocess.run(["crontab", "-l", "-u", USER],
                                             capture_output=True, text=True).stdout


def _sink_after(sandbox_up: dict[str, Any], count: int, wanted: Any, seconds: float,
                mail: bool = False) -> list[dict[str, Any]]:
    """What the webhook sink (or its mail side) got after its first `count` messages, once
    `wanted` holds."""
    from sandbox import sink

    folder = Path(sandbox_up["config"]).parent / "sink"
    read = sink.mails if mail else sink.received
    new: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = read(folder)[count:]
        if wanted(new):
            break
        time.sleep(2)
    return new


def _sink_count(sandbox_up: dict[str, Any], mail: bool = False) -> int:
    from sandbox import sink

    folder = Path(sandbox_up["config"]).parent / "sink"
    return len(sink.mails(folder) if mail else sink.received(folder))


def test_a_task_that_dies_unasked_raises_the_restart_alarm_and_slack_hears(
        sandbox_up: dict[str, Any]) -> None:
    """A container killed from outside the engine (as the OOM killer would): no `kill` event,
    so the plugin counts it; Netdata raises the alarm and its alarm-notify.sh posts to the
    Slack webhook of the installed notification settings, and mails the alarm to the
    config's `alerts.email` (the runbook's email alerts) with its `sendmail -t`."""
    import os
    import signal

    _on_v1(sandbox_up)
    address = yaml.safe_load(Path(sandbox_up["config"]).read_text())["alerts"]["email"]
    assert address, "the sandbox config keeps the shipped alerts.email"
    heard, mailed = _sink_count(sandbox_up), _sink_count(sandbox_up, mail=True)
    task = docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name="
                  "vedfin-production_api-production").stdout.split()[0]
    os.kill(int(docker("inspect", "-f", "{{.State.Pid}}", task).stdout), signal.SIGKILL)
    raised: list[str] = []
    for _ in range(30):  # plugin and health every 5 s
        raised = _status(sandbox_up)["raised"]
        if any("vedfin_container_restarts CRITICAL" in r for r in raised):
            break
        time.sleep(2)
    assert any("vedfin_container_restarts CRITICAL" in r for r in raised), raised
    got = _sink_after(sandbox_up, heard, lambda new: any(
        m["path"] == "/slack" and "vedfin.container_restarts" in json.dumps(m["body"])
        for m in new), 60)
    assert any(m["path"] == "/slack" and "vedfin.container_restarts" in json.dumps(m["body"])
               for m in got), got

    def mail_for_it(new: list[dict[str, Any]]) -> bool:
        return any(address in m["to"] and "X-Netdata-Chart: vedfin.container_restarts"
                   in m["message"] and "X-Netdata-Severity: critical" in m["message"]
                   for m in new)

    got = _sink_after(sandbox_up, mailed, mail_for_it, 60, mail=True)
    assert mail_for_it(got), [(m["to"], m["subject"]) for m in got] or \
        "no mail: .sandbox/netdata/log/error.log says why alarm-notify.sh sent none"


def test_uptime_kuma_tells_slack_then_pagerduty_when_the_api_is_down(
        sandbox_up: dict[str, Any]) -> None:
    """The api scaled to nothing behind the tool's back: Uptime Kuma's own checks (every 20 s
    in the sandbox) fail, Slack hears after downAfter, PagerDuty after pagerDutyAfter checks;
    `monitoring.status` says DOWN. Scaled back, the monitors are UP again."""
    _on_v1(sandbox_up)
    again = fab(sandbox_up, "monitoring.apply")  # applied by the deploy: nothing to change
    assert again.returncode == 0 and "uptime kuma:" not in again.stdout, _out(again)
    heard = _sink_count(sandbox_up)
    service = "vedfin-production_api-production"
    docker("service", "scale", "--detach", f"{service}=0")
    try:
        def both(new: list[dict[str, Any]]) -> bool:
            return {m["path"] for m in new} >= {"/slack", "/pagerduty"}

        got = _sink_after(sandbox_up, heard, both, 150)
        assert both(got), got
        slack = next(m for m in got if m["path"] == "/slack")
        assert "api-production" in json.dumps(slack["body"]), slack
        pager = next(m for m in got if m["path"] == "/pagerduty")
        assert pager["body"]["event_action"] == "trigger", pager
        assert pager["body"]["routing_key"] != "", pager
        status = fab(sandbox_up, "monitoring.status")
        assert status.returncode == 1 and "FAILED  vedfin: api-production" in status.stdout, \
            _out(status)
    finally:
        docker("service", "scale", "--detach", f"{service}=2")
    _on_v1(sandbox_up)
    states: list[str] = []
    for _ in range(45):  # the next check of each monitor (every 20 s): UP again
        states = [m["status"] for m in _status(sandbox_up)["uptimeKuma"]["monitors"]]
        if states == ["UP"] * 4:
            break
        time.sleep(2)
    assert states == ["UP"] * 4, states
