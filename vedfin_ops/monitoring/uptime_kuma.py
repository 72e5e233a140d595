"""The runbook's Uptime Kuma monitors as code: one HTTP monitor per public health URL of the
envs `monitoring.uptimeKuma.envs` names, checked every `every` (the runbook's 60 s); down for
more than `downAfter` (30 s) notifies Slack, `pagerDutyAfter` (3) failed checks in a row notify
PagerDuty, each when the config has it (`alerts.slack`, `alerts.pagerDuty`).

Uptime Kuma notifies per monitor, on the check that turns it DOWN, so the two thresholds are two
monitors of the same URL: `<url>` (retried after `downAfter`, Slack) and `<url> [PagerDuty]`
(retried every check until the `pagerDutyAfter`-th failure, PagerDuty).

Applied through Uptime Kuma's own API (socket.io, `uptime-kuma-api-ng`) over an SSH tunnel to
its port on the host. A config owns what is named `<stackPrefix>: ...` (`vedfin: ...` for the
default prefix): those are added, edited to match and deleted when the config no longer has
them; anything else on the server (another config's, the user's own) is left alone. A config
with another prefix takes over the `vedfin: ...` monitors an earlier version made for it (the
same app, host and path): renamed, their history kept. Uptime Kuma has no transaction: a run
that stops half-way says what it changed, and the next apply converges (every step compares
before it writes).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from vedfin_ops.checks.endpoints import app_endpoint
from vedfin_ops.config.model import Config
from vedfin_ops.config.secret_store import masked
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.run.polling import REAL, Clock, TimedOut, until

PREFIX = "vedfin: "  # the default prefix's, and every config's before names were per config
SLACK = "vedfin: Slack"
PAGERDUTY = "vedfin: PagerDuty"


def prefix(config: Config) -> str:
    """What the config's monitors and notifications are named with (`: ` ends the stack
    prefix: `shop` does not own `shop-2: ...`)."""
    return f"{config.remote.stack_prefix}: "


def slack(config: Config) -> str:
    return f"{prefix(config)}Slack"


def pagerduty(config: Config) -> str:
    return f"{prefix(config)}PagerDuty"
# what the tool sets on a monitor and compares on the next apply
FIELDS = ("url", "interval", "retryInterval", "maxretries", "headers", "notificationIDList",
          "accepted_statuscodes")


@dataclass(frozen=True)
class Monitor:
    name: str
    url: str
    headers: str | None  # JSON, only where the Host differs from the URL's (the sandbox)
    interval: int
    retry_interval: int
    maxretries: int
    notification: str | None  # the notification's name

    def fields(self, ids: Mapping[str, int]) -> dict[str, Any]:
        note = ids.get(self.notification) if self.notification else None
        return {"url": self.url, "interval": self.interval,
                "retryInterval": self.retry_interval, "maxretries": self.maxretries,
                "headers": self.headers, "accepted_statuscodes": ["200-299"],
                "notificationIDList": [note] if note is not None else []}


def monitors(config: Config) -> list[Monitor]:
    """The monitors the config asks for (pure)."""
    kuma = config.monitoring.uptime_kuma
    if kuma is None:
        return []
    every = round(kuma.every)
    # down for `downAfter`: one failed check, then retries `retry` apart until that long
    retry = max(20, min(every, round(kuma.down_after)))
    slack_retries = max(1, math.ceil(kuma.down_after / retry))
    out: list[Monitor] = []
    for env in kuma.envs:
        for app in config.apps(env):
            path = app.health.path if app.health.path and not app.health.command else "/"
            endpoint = app_endpoint(config, app, path)
            if endpoint is None:
                continue
            host = endpoint.url.split("://", 1)[1].split("/", 1)[0]
            headers = None if host == endpoint.host else json.dumps({"Host": endpoint.host})
            name = f"{prefix(config)}{app.name} {endpoint.host}{path}"
            out.append(Monitor(name, endpoint.url, headers, every, retry, slack_retries,
                               slack(config) if config.alerts.slack else None))
            if config.alerts.pager_duty:
                out.append(Monitor(f"{name} [PagerDuty]", endpoint.url, headers, every, every,
                                   kuma.pager_duty_after - 1, pagerduty(config)))
    return out


def notifications(config: Config, secrets: Mapping[str, str],
                  say: Callable[[str], None] = lambda _m: None) -> dict[str, dict[str, Any]]:
    """The notifications the monitors use, with their secret values (pure). A secret without
    a value leaves its notification out, with a warning (they are optional secrets: the
    monitors are still worth having)."""
    def value(ref: str, key: str) -> str | None:
        name = ref[2:-1]
        if not secrets.get(name):
            say(f"warning: alerts.{key}: secret {name} has no value: Uptime Kuma's "
                f"{key} notifications are off")
            return None
        return secrets[name]

    out: dict[str, dict[str, Any]] = {}
    hook = value(config.alerts.slack, "slack") if config.alerts.slack else None
    if hook:
        out[slack(config)] = {"type": "slack", "slackwebhookURL": hook}
    pager = value(config.alerts.pager_duty, "pagerDuty") if config.alerts.pager_duty else None
    if pager:
        out[pagerduty(config)] = {"type": "PagerDuty",
                          "pagerdutyIntegrationUrl": config.alerts.pager_duty_url,
                          "pagerdutyIntegrationKey": pager,
                          "pagerdutyPriority": "critical", "pagerdutyAutoResolve": "resolve"}
    return out


@dataclass
class Applied:
    """What an apply changed, and each monitor's latest check as Uptime Kuma saw it."""

    changes: list[str] = field(default_factory=list)
    status: list[tuple[str, str, str]] = field(default_factory=list)  # name, UP/DOWN/..., msg

    @property
    def ok(self) -> bool:
        return all(state == "UP" for _, state, _ in self.status)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "changes": self.changes,
                "monitors": [{"name": n, "status": s, "message": m} for n, s, m in self.status]}


Client = Any  # uptime_kuma_api.UptimeKumaApi (untyped)
Connect = Callable[[str, float], Client]


def connect(url: str, timeout: float) -> Client:
    """The client, with this process's SIGINT handler kept: python-socketio and engineio
    put their own in place at a first client (wrapping whatever was there, such as a
    deploy's guard, and calling that stale one on every later Ctrl-C)."""
    import signal
    import threading

    from vedfin_ops import extras

    extras.require("uptime_kuma_api", "monitoring.uptimeKuma")
    from uptime_kuma_api import UptimeKumaApi

    before = signal.getsignal(signal.SIGINT)
    try:
        return UptimeKumaApi(url, timeout=timeout)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, before)


@contextmanager
def session(host: RemoteHost, config: Config, secrets: Mapping[str, str],
            connect: Connect = connect) -> Iterator[Client]:
    """Logged in to the host's Uptime Kuma through the SSH tunnel; every error one line with
    the run's secrets masked."""
    kuma = config.monitoring.uptime_kuma
    port = config.monitoring.uptime_kuma_port
    assert kuma is not None and port is not None
    user = secrets.get(kuma.username[2:-1])
    password = secrets.get(kuma.password[2:-1])
    if not user or not password:
        raise UsageError(f"{config.source}: monitoring.uptimeKuma: the username and password "
                         f"secrets ({kuma.username}, {kuma.password}) need values")
    hide = [v for v in secrets.values() if v]
    forward = getattr(host, "forward", None)
    if forward is None:
        raise CheckFailed("uptime kuma: this host cannot forward a port")
    with forward(port) as local:
        try:
            client = connect(f"http://127.0.0.1:{local}", kuma.timeout)
        except Exception as exc:
            raise CheckFailed(f"uptime kuma on port {port}: {masked(_line(exc), hide)} "
                              f"(reached through an SSH tunnel: is it listening on the host's "
                              f"127.0.0.1:{port}, and does sshd allow TCP forwarding?)") from None
        try:
            try:
                client.login(user, password)
            except Exception as exc:
                raise CheckFailed(f"uptime kuma: login refused "
                                  f"({kuma.username[2:-1]}/{kuma.password[2:-1]}): "
                                  f"{masked(_line(exc), hide)}") from None
            yield client
        finally:
            with contextlib.suppress(Exception):  # a link already gone has nothing to close
                client.disconnect()


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def apply(host: RemoteHost, config: Config, secrets: Mapping[str, str], *,
          connect: Connect = connect, wait: float = 30.0,
          say: Callable[[str], None] = lambda _m: None) -> Applied:
    """Notifications, then monitors, each compared before it is written; then Uptime Kuma's
    own first check of every monitor (UP, or the reason it is not). Raises CheckFailed naming
    what was already changed."""
    wanted_notes = notifications(config, secrets, say)
    wanted = monitors(config)
    applied = Applied()
    hide = [v for v in secrets.values() if v]
    with session(host, config, secrets, connect) as client:
        try:
            mine = prefix(config)
            ids = _notifications(client, wanted_notes, applied, mine)
            _monitors(client, wanted, ids, applied, mine)
            if mine != PREFIX:
                _drop_unused_legacy(client, applied)
            applied.status = _first_checks(client, wanted, wait)
        except CheckFailed:
            raise
        except Exception as exc:
            done = f" (already done: {', '.join(applied.changes)}; apply again)" \
                if applied.changes else ""
            raise CheckFailed(f"uptime kuma: {masked(_line(exc), hide)}{done}") from None
    return applied


def _notifications(client: Client, wanted: Mapping[str, dict[str, Any]],
                   applied: Applied, mine: str) -> dict[str, int]:
    have = {n["name"]: n for n in client.get_notifications()
            if str(n.get("name", "")).startswith(mine)}
    ids: dict[str, int] = {}
    for name, spec in wanted.items():
        now = have.get(name)
        if now is None:
            ids[name] = int(client.add_notification(name=name, **spec)["id"])
            applied.changes.append(f"notification {name} added")
        else:
            ids[name] = int(now["id"])
            if any(_plain(now.get(k)) != v for k, v in spec.items()):
                client.edit_notification(ids[name], **spec)
                applied.changes.append(f"notification {name} updated")
    for name, now in have.items():
        if name not in wanted:
            client.delete_notification(int(now["id"]))
            applied.changes.append(f"notification {name} removed")
    return ids


def _plain(value: Any) -> Any:
    """The client's enums (`NotificationType.SLACK`) as the strings the tool writes."""
    return getattr(value, "value", value)


def _same(now: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    def norm(key: str, value: Any) -> Any:
        if key == "headers":
            return value or None
        if key == "notificationIDList":
            return sorted(int(v) for v in (value or []))
        return value

    # a monitor paused by hand (maintenance) stays paused: `active` is the user's
    return all(norm(k, now.get(k)) == norm(k, v) for k, v in spec.items()) and \
        _plain(now.get("type")) == "http"


def _monitors(client: Client, wanted: list[Monitor], ids: Mapping[str, int],
              applied: Applied, mine: str) -> None:
    from uptime_kuma_api import MonitorType

    every = client.get_monitors()
    have = {m["name"]: m for m in every if str(m.get("name", "")).startswith(mine)}
    # an earlier version's name for one of ours (another prefix than the default's only)
    legacy = {m["name"]: m for m in every if mine != PREFIX and
              str(m.get("name", "")).startswith(PREFIX)}
    for monitor in wanted:
        spec = monitor.fields(ids)
        now = have.get(monitor.name)
        old = PREFIX + monitor.name.removeprefix(mine)
        if now is None and old in legacy:
            client.edit_monitor(int(legacy[old]["id"]), type=MonitorType.HTTP,
                                name=monitor.name, **spec)
            applied.changes.append(f"monitor {monitor.name} renamed from {old}")
        elif now is None:
            client.add_monitor(type=MonitorType.HTTP, name=monitor.name, **spec)
            applied.changes.append(f"monitor {monitor.name} added")
        elif not _same(now, spec):
            client.edit_monitor(int(now["id"]), type=MonitorType.HTTP, **spec)
            applied.changes.append(f"monitor {monitor.name} updated")
    names = {m.name for m in wanted}
    for name, now in have.items():
        if name not in names:
            client.delete_monitor(int(now["id"]))
            applied.changes.append(f"monitor {name} removed")


def _drop_unused_legacy(client: Client, applied: Applied) -> None:
    """The earlier version's notifications (`vedfin: Slack`, `vedfin: PagerDuty`) once no
    monitor uses them: the monitors taken over now use this config's own."""
    used = {int(i) for m in client.get_monitors() for i in m.get("notificationIDList") or []}
    for note in client.get_notifications():
        if note.get("name") in (SLACK, PAGERDUTY) and int(note["id"]) not in used:
            client.delete_notification(int(note["id"]))
            applied.changes.append(f"notification {note['name']} removed (no monitor uses it)")


def _first_checks(client: Client, wanted: list[Monitor], wait: float, clock: Clock = REAL
                  ) -> list[tuple[str, str, str]]:
    """Each monitor's latest heartbeat, waiting up to `wait` for a first one: a monitor that
    cannot reach its URL from the host says so now, not at 3 AM."""
    names = {m.name for m in wanted}
    last: list[list[tuple[str, str, str]]] = []

    def probe() -> list[tuple[str, str, str]] | None:
        by_name = {m["name"]: int(m["id"]) for m in client.get_monitors()
                   if m.get("name") in names}
        out = []
        for monitor in wanted:
            found = by_name.get(monitor.name)
            beat = _last_beat(client, found, monitor.interval) if found is not None else None
            if beat is None:
                out.append((monitor.name, "NO CHECK YET", ""))
            else:
                status = getattr(beat.get("status"), "name", str(beat.get("status")))
                out.append((monitor.name, status, str(beat.get("msg") or "")))
        last[:] = [out]
        return out if all(s != "NO CHECK YET" for _, s, _ in out) else None

    try:
        return until(probe, timeout=wait, interval=1.0, clock=clock)
    except TimedOut:
        return last[0]


def _last_beat(client: Client, monitor_id: int, interval: int) -> dict[str, Any] | None:
    """Asked of the server each time: the client's own heartbeat cache mixes event payloads
    (a list where a beat should be) when a check lands while it is read."""
    hours = max(1, math.ceil(3 * interval / 3600))
    beats = [b for b in client.get_monitor_beats(monitor_id, hours) if isinstance(b, dict)]
    return max(beats, key=lambda b: str(b.get("time", ""))) if beats else None


def status(host: RemoteHost, config: Config, secrets: Mapping[str, str], *,
           connect: Connect = connect) -> Applied:
    """What Uptime Kuma has of the tool's monitors now (no change)."""
    wanted = monitors(config)
    with session(host, config, secrets, connect) as client:
        try:
            have = {m["name"] for m in client.get_monitors()}
            out = Applied(status=_first_checks(client, wanted, 0.0))
        except Exception as exc:
            hide = [v for v in secrets.values() if v]
            raise CheckFailed(f"uptime kuma: {masked(_line(exc), hide)}") from None
    out.status = [(n, s if n in have else "MISSING", m) for n, s, m in out.status]
    return out
