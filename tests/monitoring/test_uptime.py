"""Uptime Kuma's monitors: what the config asks for (pure), and how an apply ends when the
server or the link fails half-way. The real server gets the monitors, and tells Slack and
PagerDuty of a real outage, in tests/integration/test_monitoring_sandbox.py; here a scripted
client injects the faults."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from vedfin_ops.config.loader import config_from_dict
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.monitoring import uptime_kuma as uptime

HOOK = "https://hooks.slack.example/services/T0/B0/s3cr3t"
SECRETS = {"SLACK_WEBHOOK_URL": HOOK, "PD_KEY": "pd-routing-key-9f8e",
           "KUMA_USER": "admin", "KUMA_PASSWORD": "kuma-pass-1234"}


def _config(*, pager: bool = True, **kuma: Any) -> Any:
    alerts: dict[str, Any] = {"slack": "${SLACK_WEBHOOK_URL}"}
    if pager:
        alerts["pagerDuty"] = "${PD_KEY}"
    return config_from_dict({
        "applications": [
            {"name": "api-production", "domain": "api.example.com",
             "healthcheck": {"path": "/api/health"},
             "resources": {"memory": "64m", "cpus": 0.1}},
            {"name": "web-production", "domain": "example.com",
             "healthcheck": {"command": ["true"]}, "resources": {"memory": "64m", "cpus": 0.1}},
            {"name": "api-staging", "domain": "api.staging.example.com",
             "resources": {"memory": "64m", "cpus": 0.1}}],
        "vps": {"memory": "2g", "cpus": 2}, "alerts": alerts,
        "monitoring": {"uptimeKumaPort": 3002, "uptimeKuma": {
            "username": "${KUMA_USER}", "password": "${KUMA_PASSWORD}", **kuma}},
        "secrets": {"shared": {n: "manual" for n in SECRETS}},
        "verify": {"allowNoChecks": True},
    }, "k.yaml")


def test_the_runbooks_monitors_every_60s_slack_after_30s_pagerduty_after_3() -> None:
    got = uptime.monitors(_config())
    assert [(m.name, m.url) for m in got] == [
        ("vedfin: api-production api.example.com/api/health",
         "https://api.example.com/api/health"),
        ("vedfin: api-production api.example.com/api/health [PagerDuty]",
         "https://api.example.com/api/health"),
        ("vedfin: web-production example.com/", "https://example.com/"),
        ("vedfin: web-production example.com/ [PagerDuty]", "https://example.com/")]
    slack, pager = got[0], got[1]
    # one failed check, one retry 30 s later: down for 30 s before Slack hears
    assert (slack.interval, slack.retry_interval, slack.maxretries) == (60, 30, 1)
    assert slack.notification == uptime.SLACK and slack.headers is None
    # the third failed check in a row: PagerDuty
    assert (pager.interval, pager.retry_interval, pager.maxretries) == (60, 60, 2)
    assert pager.notification == uptime.PAGERDUTY
    # no PagerDuty configured: one monitor per URL; staging on request
    assert len(uptime.monitors(_config(pager=False))) == 2
    assert "vedfin: api-staging api.staging.example.com/api/health" in [
        m.name for m in uptime.monitors(_config(pager=False,
                                                envs=["production", "staging"]))]
    # a longer downAfter: more retries of at most one interval each
    longer = uptime.monitors(_config(downAfter="150s"))[0]
    assert (longer.retry_interval, longer.maxretries) == (60, 3)


def test_notifications_need_their_secrets() -> None:
    notes = uptime.notifications(_config(), SECRETS)
    assert notes[uptime.SLACK] == {"type": "slack", "slackwebhookURL": HOOK}
    assert notes[uptime.PAGERDUTY]["pagerdutyIntegrationKey"] == "pd-routing-key-9f8e"
    assert notes[uptime.PAGERDUTY]["pagerdutyIntegrationUrl"] == \
        "https://events.pagerduty.com/v2/enqueue"
    said: list[str] = []  # an optional secret unset: that notification is left out, said
    assert list(uptime.notifications(_config(), {**SECRETS, "PD_KEY": ""}, said.append)) == [
        uptime.SLACK]
    assert said == ["warning: alerts.pagerDuty: secret PD_KEY has no value: Uptime Kuma's "
                    "pagerDuty notifications are off"]
    # Uptime Kuma's own login is needed, though: one line naming the secrets
    with pytest.raises(UsageError, match=r"^k.yaml: monitoring.uptimeKuma: the username and "
                                         r"password secrets \(\$\{KUMA_USER\}"):
        _apply(ScriptedKuma(), secrets={**SECRETS, "KUMA_PASSWORD": ""})


@pytest.mark.parametrize(("change", "key"), [
    ({"alerts": {"slack": HOOK}}, "alerts.slack"),  # a literal webhook in the file
    ({"alerts": {"slack": "${NOT_DECLARED}"}}, "alerts.slack"),
    ({"monitoring": {"uptimeKumaPort": None, "uptimeKuma": {
        "username": "${KUMA_USER}", "password": "${KUMA_PASSWORD}"}}}, "monitoring.uptimeKuma"),
    ({"monitoring": {"uptimeKuma": {"username": "${KUMA_USER}", "password": "${KUMA_PASSWORD}",
                                    "envs": ["prod"]}}}, "monitoring.uptimeKuma.envs[0]"),
    ({"monitoring": {"uptimeKuma": {"username": "${KUMA_USER}", "password": "${KUMA_PASSWORD}",
                                    "every": "10s"}}}, "monitoring.uptimeKuma.every"),
    ({"alerts": {"restarts": {"within": "10s"}}}, "alerts.restarts.within"),
    ({"alerts": {"email": "ops at example"}}, "alerts.email"),
])
def test_bad_alerting_config_is_one_line_naming_the_key(change: dict[str, Any],
                                                        key: str) -> None:
    from vedfin_ops.errors import ConfigError
    data: dict[str, Any] = {
        "applications": [{"name": "api-production", "resources": {"memory": "64m",
                                                                    "cpus": 0.1}}],
        "vps": {"memory": "2g", "cpus": 2}, "verify": {"allowNoChecks": True},
        "secrets": {"shared": {n: "manual" for n in SECRETS}}, **change}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, "k.yaml")
    text = str(caught.value)
    assert key in text and "\n" not in text.strip() and HOOK not in text, text


class ScriptedKuma:
    """Uptime Kuma's API as the client speaks it, with a fault at a chosen call."""

    def __init__(self, fail_at: str | None = None, fault: BaseException | None = None) -> None:
        self.notes: dict[int, dict[str, Any]] = {}
        self.mons: dict[int, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.fail_at, self.fault = fail_at, fault
        self.next = 1

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_at and self.fault is not None:
            raise self.fault

    def login(self, user: str, password: str) -> None:
        self._call("login")

    def disconnect(self) -> None:
        self.calls.append("disconnect")

    def get_notifications(self) -> list[dict[str, Any]]:
        self._call("get_notifications")
        return [{"id": i, **n} for i, n in self.notes.items()]

    def add_notification(self, **spec: Any) -> dict[str, Any]:
        self._call("add_notification")
        self.notes[self.next] = spec
        self.next += 1
        return {"id": self.next - 1}

    def edit_notification(self, id_: int, **spec: Any) -> None:
        self._call("edit_notification")
        self.notes[id_].update(spec)

    def delete_notification(self, id_: int) -> None:
        self._call("delete_notification")
        del self.notes[id_]

    def get_monitors(self) -> list[dict[str, Any]]:
        self._call("get_monitors")
        return [{"id": i, **m} for i, m in self.mons.items()]

    def add_monitor(self, **spec: Any) -> None:
        self._call("add_monitor")
        self.mons[self.next] = {"active": True, **spec, "type": spec["type"].value}
        self.next += 1

    def edit_monitor(self, id_: int, **spec: Any) -> None:
        self._call("edit_monitor")
        self.mons[id_].update({**spec, "type": spec["type"].value})

    def resume_monitor(self, id_: int) -> None:
        self.mons[id_]["active"] = True

    def delete_monitor(self, id_: int) -> None:
        self._call("delete_monitor")
        del self.mons[id_]

    def get_monitor_beats(self, id_: int, hours: int) -> list[dict[str, Any]]:
        self._call("get_monitor_beats")
        return [{"status": "UP", "msg": "200 - OK", "time": "2026-11-29 01:00:00"}]


class Tunnel:
    """A host whose `forward` yields a port; the link may drop when the tunnel opens."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse, self.opened = refuse, 0
        self.secrets: list[str] = []

    @contextlib.contextmanager
    def forward(self, port: int) -> Iterator[int]:
        from vedfin_ops.remote.host import RemoteError
        if self.refuse:
            raise RemoteError(f"tunnel to port {port} on vps failed: Connection reset")
        self.opened += 1
        yield 40000


def _apply(client: ScriptedKuma, config: Any = None, host: Any = None,
           secrets: dict[str, str] | None = None) -> uptime.Applied:
    return uptime.apply(host or Tunnel(), config or _config(), secrets or SECRETS,
                        connect=lambda url, timeout: client, wait=0)


def test_apply_converges_and_a_second_apply_changes_nothing() -> None:
    client = ScriptedKuma()
    client.mons[90] = {"name": "someone else's monitor", "url": "https://x", "active": True}
    client.mons[91] = {"name": "vedfin: api-production old.example.com/", "url": "https://o",
                       "active": True}
    first = _apply(client)
    assert first.ok and len(first.status) == 4
    assert first.changes == ["notification vedfin: Slack added",
                             "notification vedfin: PagerDuty added",
                             *[f"monitor {m.name} added" for m in uptime.monitors(_config())],
                             "monitor vedfin: api-production old.example.com/ removed"]
    assert 90 in client.mons  # not ours: left alone
    assert _apply(client).changes == []
    # a threshold changed in the config: that monitor is edited, nothing else
    again = _apply(client, _config(downAfter="150s"))
    assert [c for c in again.changes if "updated" in c] == [
        "monitor vedfin: api-production api.example.com/api/health updated",
        "monitor vedfin: web-production example.com/ updated"]
    # PagerDuty dropped from the config: its monitors and notification go
    gone = _apply(client, _config(pager=False, downAfter="150s"))
    assert sorted(c.split(" ", 1)[0] for c in gone.changes) == ["monitor", "monitor",
                                                                "notification"]


@pytest.mark.parametrize("fail_at", ["login", "get_notifications", "add_notification",
                                     "add_monitor", "get_monitor_beats"])
@pytest.mark.parametrize("kind", ["exception", "ctrl-c"])
def test_a_fault_mid_apply_is_one_line_saying_what_was_done(fail_at: str, kind: str) -> None:
    fault: BaseException = (KeyboardInterrupt() if kind == "ctrl-c"
                            else RuntimeError(f"server said no ({HOOK})\nsecond line"))
    client = ScriptedKuma(fail_at, fault)
    if kind == "ctrl-c":
        with pytest.raises(KeyboardInterrupt):
            _apply(client)
        assert client.calls[-1] == "disconnect"  # the session is closed on the way out
        return
    with pytest.raises(CheckFailed) as caught:
        _apply(client)
    text = str(caught.value)
    assert "\n" not in text and HOOK not in text and "server said no" in text, text
    if fail_at == "login":
        assert text.startswith("uptime kuma: login refused (KUMA_USER/KUMA_PASSWORD): ")
    elif fail_at == "add_monitor":
        assert text.endswith("(already done: notification vedfin: Slack added, notification "
                             "vedfin: PagerDuty added; apply again)"), text
    assert client.calls[-1] == "disconnect"
    # the next apply converges from wherever this one stopped
    client.fail_at = None
    assert _apply(client).ok and _apply(client).changes == []


def test_a_dropped_link_or_a_server_that_is_not_there_is_one_line() -> None:
    with pytest.raises(CheckFailed, match=r"^tunnel to port 3002 on vps failed: Connection "
                                          r"reset$"):
        _apply(ScriptedKuma(), host=Tunnel(refuse=True))

    def nothing_there(url: str, timeout: float) -> Any:
        raise ConnectionRefusedError(f"cannot connect to {url}")

    with pytest.raises(CheckFailed, match=r"^uptime kuma on port 3002: cannot connect to "
                                          r"http://127.0.0.1:40000 \(reached through an SSH "
                                          r"tunnel: .*TCP forwarding\?\)$"):
        uptime.apply(Tunnel(), _config(), SECRETS, connect=nothing_there, wait=0)


def test_a_monitor_that_is_not_up_is_reported_with_kumas_reason() -> None:
    client = ScriptedKuma()
    client.get_monitor_beats = lambda id_, hours: [  # type: ignore[method-assign]
        {"status": "PENDING", "msg": "getaddrinfo ENOTFOUND", "time": "2026-11-29 01:00:00"},
        {"status": "DOWN", "msg": "getaddrinfo ENOTFOUND api.example.com",
         "time": "2026-11-29 01:00:30"}]
    done = _apply(client)
    assert not done.ok and done.status[0] == (
        "vedfin: api-production api.example.com/api/health", "DOWN",
        "getaddrinfo ENOTFOUND api.example.com")
    assert json.loads(json.dumps(done.to_dict()))["ok"] is False


def test_the_sandbox_never_alerts_the_real_slack_or_pagerduty(shipped_data: dict[str, Any]
                                                              ) -> None:
    """The sandbox config sends every alert to its local webhook sink, and has no Slack,
    PagerDuty or Uptime Kuma at all where the sink or the server is missing."""
    import copy

    from sandbox.overlay import sandbox_config
    registry = {"server": "127.0.0.1:15443", "username": "u", "password": "${REGISTRY_PASSWORD}"}
    data = copy.deepcopy(shipped_data)
    data["alerts"]["pagerDuty"] = "${PAGERDUTY_INTEGRATION_KEY}"
    local = sandbox_config(data, edge_port=18080, base_dir="/srv/x", user="u",
                           registry=registry, kuma_port=29302, sink="http://127.0.0.1:29303")
    assert local["alerts"]["pagerDutyUrl"] == "http://127.0.0.1:29303/pagerduty"
    assert local["alerts"]["slack"] == "${SLACK_WEBHOOK_URL}"
    assert local["alerts"]["email"] == data["alerts"]["email"]  # to the sink's mail side
    assert local["monitoring"]["uptimeKumaPort"] == 29302
    bare = sandbox_config(copy.deepcopy(data), edge_port=18080, base_dir="/srv/x", user="u",
                          registry=registry)
    assert "slack" not in bare["alerts"] and "pagerDuty" not in bare["alerts"]
    assert bare["alerts"]["email"] is None
    assert bare["monitoring"]["uptimeKumaPort"] is None and "uptimeKuma" not in bare["monitoring"]


def test_connecting_keeps_this_processs_ctrl_c_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-socketio puts its own SIGINT handler in place at a first client, wrapping the one
    it found (a deploy's guard): every later Ctrl-C would run that stale guard. The real
    library, asked for a client against nothing, does just that; connect() puts ours back."""
    import signal

    import uptime_kuma_api

    def ours(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, ours)
    try:
        import engineio.base_client as eio
        import socketio
        import socketio.base_client as sio

        def fresh() -> None:  # as in a process that has made no client yet
            monkeypatch.setattr(sio, "original_signal_handler", None)
            monkeypatch.setattr(eio, "original_signal_handler", None)

        class Library(uptime_kuma_api.UptimeKumaApi):  # type: ignore[misc]
            def __init__(self, url: str, timeout: float) -> None:
                socketio.Client(handle_sigint=True)  # the real first-client install

        monkeypatch.setattr(uptime_kuma_api, "UptimeKumaApi", Library)
        fresh()
        uptime.connect("http://127.0.0.1:9", 1)
        assert signal.getsignal(signal.SIGINT) is ours
        fresh()
        socketio.Client(handle_sigint=True)  # without connect()'s care
        assert signal.getsignal(signal.SIGINT) is not ours
    finally:
        signal.signal(signal.SIGINT, before)


def _prefixed(config: Any, prefix: str, *, elsewhere: bool = False) -> Any:
    """The config under another stack prefix; `elsewhere`: its apps at other domains (a
    second config on the same host)."""
    remote = config.remote.model_copy(update={"stack_prefix": prefix})
    apps = [a.model_copy(update={"domain": f"{prefix}.{a.domain}"}) if elsewhere else a
            for a in config.applications]
    return config.model_copy(update={"remote": remote, "applications": apps})


def test_two_configs_on_one_kuma_each_apply_only_their_own_monitors() -> None:
    """Config B's apply leaves A's monitors and notifications alone, and A's next apply
    changes nothing of B's: each owns what is named by its stack prefix."""
    client = ScriptedKuma()
    mine, shop = _config(), _prefixed(_config(), "shop", elsewhere=True)
    _apply(client, mine)
    theirs = _apply(client, shop)
    assert theirs.changes == ["notification shop: Slack added",
                              "notification shop: PagerDuty added",
                              *[f"monitor {m.name} added" for m in uptime.monitors(shop)]]
    assert "shop: api-production shop.api.example.com/api/health" in [
        m.name for m in uptime.monitors(shop)]
    assert _apply(client, mine).changes == [] and _apply(client, shop).changes == []
    names = sorted(m["name"] for m in client.mons.values())
    assert len(names) == 8 and sum(n.startswith("vedfin: ") for n in names) == 4
    shop_slack = next(i for i, n in client.notes.items() if n["name"] == "shop: Slack")
    assert all(m["notificationIDList"] in ([shop_slack], [shop_slack + 1])
               for m in client.mons.values() if m["name"].startswith("shop: "))
    assert _apply(client, _prefixed(_config(pager=False), "shop-2", elsewhere=True)
                  ).changes[0] == \
        "notification shop-2: Slack added"  # shop-2 is not shop: nothing of shop's removed
    assert len(client.mons) == 10


def test_a_config_under_its_own_prefix_takes_over_its_old_monitors_by_name() -> None:
    """Monitors an earlier version named `vedfin: ...` for a config whose stack prefix is
    another: renamed (same id, its history kept), not added beside; the old notifications
    no monitor uses any more are removed."""
    client = ScriptedKuma()
    client.mons[90] = {"name": "someone else's monitor", "url": "https://x", "active": True}
    _apply(client)  # as the earlier version named them
    before = {i: m["name"] for i, m in client.mons.items()}
    shop = _prefixed(_config(), "shop")
    took = _apply(client, shop)
    assert {i: m["name"] for i, m in client.mons.items()} == {
        i: n.replace("vedfin: ", "shop: ", 1) for i, n in before.items()}
    assert [c for c in took.changes if c.startswith("monitor")] == [
        f"monitor {n} renamed from {n.replace('shop: ', 'vedfin: ', 1)}"
        for n in (m.name for m in uptime.monitors(shop))]
    assert sorted(n["name"] for n in client.notes.values()) == ["shop: PagerDuty",
                                                                 "shop: Slack"]
    assert _apply(client, shop).changes == []
