"""The runbook's Step 7 alarms on the host: `fab monitoring.apply` (and every good deploy of
the env that owns the shared stack, `environments.<env>.ownsShared`, unless the config says
`monitoring.apply: false`: the alarms are the host's, not an env's) puts the rendered alarms
into Netdata's health configuration and reloads it; what Netdata loaded is then read back
through its own API (`/api/v1/alarms?all`) and compared with the config, alarm by alarm. A
reload that fails puts the previous alarms back: nothing is left half-applied.

Several configs may share one host's Netdata: each has its own alarms file (`health.d/vedfin-
<stackPrefix>.conf`, alarms named `<stackPrefix>_...`), its own notification settings
(`vedfin-notify-<stackPrefix>.conf`) and its own role; health_alarm_notify.conf, the same for
all, sends each config's alarms with that config's settings. The unnamed file of earlier
versions (`health.d/vedfin.conf`) is taken over by the first config that applies.
"""

from __future__ import annotations

import contextlib
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote import commands
from vedfin_ops.remote.command import Command, Raw, Secret
from vedfin_ops.remote.commands.netdata import MARK, SWAPPED, UNCHANGED
from vedfin_ops.remote.host import RemoteError, RemoteHost
from vedfin_ops.rendering.alarms import (
    LEGACY_HEALTH_FILE,
    PLUGIN_FILE,
    RESTARTS_CHART,
    Alarm,
    alarms,
    health_file,
)
from vedfin_ops.run.operation import bare
from vedfin_ops.run.polling import REAL, Clock, TimedOut, until

RAISED = ("WARNING", "CRITICAL")


@dataclass(frozen=True)
class NetdataFile:
    """One file of the tool's in Netdata's config folder. `owned`: a file there that the tool
    did not write is refused, never replaced (health_alarm_notify.conf is a name users write
    too); `reload`: Netdata's health must be reloaded to read it (plugins are found by
    Netdata's own scan, notification settings are read at each notification)."""

    rel: str  # under monitoring.netdataConfig
    text: str
    mode: str = "644"
    reload: bool = False
    owned: bool = False
    # the file's name before files were named per config: when this one does not exist yet,
    # the old one (the tool's: it carries the mark) is moved here first and replaced as usual
    legacy: str | None = None


def health(config: Config, text: str) -> NetdataFile:
    return NetdataFile(f"health.d/{health_file(config)}", text, reload=True,
                       legacy=f"health.d/{LEGACY_HEALTH_FILE}")


def notify_file(config: Config) -> str:
    """The config's notification settings (the Slack webhook): one file per config."""
    return f"vedfin-notify-{config.remote.stack_prefix}.conf"


def dispatcher(config: Config) -> str:
    """health_alarm_notify.conf, the one file Netdata's alarm-notify.sh reads (bash, with
    `$roles` set): it reads the settings of the config whose role an alarm goes to, so each
    config's alarms reach its own Slack and email. The same bytes from every config; it
    holds no secret. Netdata's own alarms (role sysadmin) keep Netdata's stock settings."""
    from vedfin_ops.rendering.files import host_script

    return host_script("netdata-dispatch.conf.j2", mark=MARK,
                       root=config.monitoring.netdata_config.rstrip("/"))


def files(config: Config, secrets: Mapping[str, str],
          say: Callable[[str], None] = lambda _m: None) -> list[NetdataFile]:
    """Everything `apply` installs: the alarms, the restarts plugin and the notification
    settings (0640: the Slack webhook is a secret). A webhook secret without a value turns
    Slack off, with a warning: an optional secret never stops a deploy."""
    from vedfin_ops.rendering.files import netdata_health, netdata_notify, netdata_plugin

    out = [health(config, netdata_health(config)),
           NetdataFile(f"custom-plugins.d/{PLUGIN_FILE}", netdata_plugin(config), mode="755")]
    missing: set[str] = set()
    notify = netdata_notify(config, secrets, missing)
    for name in sorted(missing):
        say(f"warning: alerts.slack: secret {name} has no value: Netdata's Slack "
            f"notifications are off")
    out.append(NetdataFile(notify_file(config), notify, mode="640", owned=True))
    out.append(NetdataFile(NOTIFY_FILE, dispatcher(config), owned=True))
    return out


NOTIFY_FILE = "health_alarm_notify.conf"


def apply_command(config: Config, file: NetdataFile | None = None,
                  reload_same: bool = False) -> str:
    """`file` (the alarms by default) installed from stdin (`commands.netdata_install`)."""
    file = file or health(config, "")
    return commands.netdata_install(config.monitoring.netdata_config, file.rel, mode=file.mode,
                                    owned=file.owned, reload=file.reload, legacy=file.legacy,
                                    reload_same=reload_same)


def restore_command(config: Config, file: NetdataFile | None = None) -> str:
    """Back to the file before this apply (`commands.netdata_restore`)."""
    file = file or health(config, "")
    return commands.netdata_restore(config.monitoring.netdata_config, file.rel,
                                    reload=file.reload)


def settle_command(config: Config, wanted: Sequence[NetdataFile] = ()) -> str:
    """Every wanted file's `.prev` removed (`commands.netdata_settle`)."""
    files = wanted or [health(config, "")]
    return commands.netdata_settle(config.monitoring.netdata_config, health(config, "").rel,
                                   [(f.rel, f.legacy) for f in files])


def alarms_url(config: Config) -> str:
    return f"http://127.0.0.1:{config.monitoring.netdata_port}/api/v1/alarms?all"


def read_command(config: Config) -> str:
    return commands.netdata_alarms(alarms_url(config), config.monitoring.netdata_port)


@dataclass
class Loaded:
    """Each of the config's alarms as Netdata has it: ok when loaded with the config's
    thresholds; `raised` lists instances in WARNING/CRITICAL."""

    items: list[tuple[str, bool, str]] = field(default_factory=list)
    raised: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # files apply could not install

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(ok for _, ok, _ in self.items) and not self.errors

    def problems(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.items if not ok] + \
            self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "raised": self.raised, "errors": self.errors,
                "alarms": [{"name": n, "ok": ok, "detail": d} for n, ok, d in self.items]}


def _same(said: Any, wanted: str | None) -> bool:
    if wanted is None:
        return said in (None, "")
    return isinstance(said, str) and " ".join(html.unescape(said).split()) == wanted


def compare(config: Config, answer: str) -> Loaded:
    """Netdata's `/api/v1/alarms?all` against the config's alarms (pure)."""
    try:
        data = json.loads(answer)
        instances = list(data["alarms"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        line = answer.strip().splitlines()[0] if answer.strip() else "nothing"
        raise CheckFailed(f"Netdata's alarms API answered something else: {line[:160]!r}") \
            from None
    loaded = Loaded()
    for alarm in alarms(config):
        mine = [i for i in instances if isinstance(i, dict) and i.get("name") == alarm.name]
        loaded.items.append((alarm.name, *_judge(alarm, mine)))
        loaded.raised += [f"{i.get('chart')}.{alarm.name} {i.get('status')} "
                          f"({i.get('value')})" for i in mine if i.get("status") in RAISED]
    return loaded


NO_CHART = "no chart"


def _judge(alarm: Alarm, mine: list[dict[str, Any]]) -> tuple[bool, str]:
    if not mine and alarm.on == RESTARTS_CHART:
        return False, (f"{NO_CHART} {RESTARTS_CHART} yet: Netdata starts "
                       f"custom-plugins.d/{PLUGIN_FILE} within a minute of its install, and "
                       f"the plugin needs the docker socket (netdata in the docker group, "
                       f"then restart Netdata)")
    if not mine:
        return False, "not loaded"
    wrong = [i for i in mine if not (_same(i.get("warn"), alarm.warn) and
                                     _same(i.get("crit"), alarm.crit))]
    if wrong:
        said = wrong[0]
        return False, (f"loaded with warn {html.unescape(str(said.get('warn')))!r}, crit "
                       f"{html.unescape(str(said.get('crit')))!r}; the config says "
                       f"{alarm.warn!r}, {alarm.crit!r}")
    stale = [i for i in mine if html.unescape(str(i.get("info", ""))) != alarm.info]
    if stale:  # thresholds may agree while the file Netdata runs is another one
        info = html.unescape(str(stale[0].get("info", "")))
        return False, f"Netdata runs another version of it (info ends {info[-18:]!r})"
    statuses = sorted({str(i.get("status")) for i in mine})
    limits = ", ".join(x for x in (f"warn {alarm.warn}" if alarm.warn else "",
                                   f"crit {alarm.crit}" if alarm.crit else "") if x)
    return True, f"loaded on {len(mine)} chart(s), {limits}, {'/'.join(statuses)}"


def loaded(host: RemoteHost, config: Config) -> Loaded:
    return compare(config, host.run(read_command(config), what="netdata alarms"))


PLUGIN_WAIT = 75.0  # Netdata looks for new plugins every 60 s


def apply(host: RemoteHost, config: Config, health_text: str, *,
          extra: Sequence[NetdataFile] = (),
          wait: float = 30.0, clock: Clock = REAL) -> tuple[bool, Loaded]:
    """Install (the alarms, then `extra`: the plugin, the notification settings) and reload;
    then Netdata's API until it has every alarm as configured (its reload is asynchronous,
    and `netdatacli reload-health` says OK even when a file does not load). Not loaded within
    `wait`: every file this apply changed is put back. The restarts alarm waits for its chart,
    which only the plugin makes: a chart that does not come is a failed item (the plugin
    needs the docker socket), not a reason to take the other alarms away. Returns (changed,
    what is loaded); raises CheckFailed."""
    wanted = [health(config, health_text), *extra]
    changed: list[NetdataFile] = []
    try:
        now = _apply(host, config, wanted, changed, wait, clock)
    except BaseException as exc:
        if isinstance(exc, CheckFailed) or not changed:
            raise
        # Ctrl-C, SIGTERM, an unexpected error: nothing stays half-applied
        with contextlib.suppress(BaseException):
            _put_back(host, config, changed)
        raise
    with contextlib.suppress(RemoteError):  # Netdata ignores a .prev; the next apply replaces it
        host.run(settle_command(config, wanted), what="netdata alarms settle")
    return bool(changed), now


def _apply(host: RemoteHost, config: Config, wanted: list[NetdataFile],
           changed: list[NetdataFile], wait: float, clock: Clock) -> Loaded:
    if _install(host, config, wanted[0], reload_same=False, changed=changed):
        changed.append(wanted[0])
    errors = []
    for file in wanted[1:]:  # the plugin and notifications: a failure is theirs alone
        try:
            if _install(host, config, file, reload_same=False, changed=[]):
                changed.append(file)
        except CheckFailed as exc:
            errors.append(f"{file.rel}: {bare(str(exc)).removeprefix('monitoring: ')}")
    # a new plugin is waited for (Netdata finds it within a minute); an old one that made
    # no chart will not make one now
    plugin_new = any(f.rel.endswith(PLUGIN_FILE) for f in changed)
    enough = (lambda n: n.ok) if plugin_new else _health_ok
    now = _until_loaded(host, config, max(wait, PLUGIN_WAIT) if plugin_new else wait, clock,
                        changed, enough)
    if not any(f.reload for f in changed) and not _health_ok(now):
        # the same alarms file, but not what Netdata has: reload it
        _install(host, config, wanted[0], reload_same=True, changed=changed)
        now = _until_loaded(host, config, wait, clock, changed, enough)
    if not _health_ok(now):
        said = "; ".join(now.problems())
        back = _put_back(host, config, changed) if changed else "the files were already there"
        raise CheckFailed(f"monitoring: Netdata does not have the alarms as configured: "
                          f"{said} ({back})")
    now.errors = errors
    return now


def _health_ok(now: Loaded) -> bool:
    """Every alarm of the file loaded as configured, leaving aside one whose chart only the
    plugin makes and that has not appeared."""
    return bool(now.items) and all(ok or detail.startswith(NO_CHART)
                                   for _, ok, detail in now.items)


def _install(host: RemoteHost, config: Config, file: NetdataFile, *, reload_same: bool,
             changed: list[NetdataFile]) -> bool:
    command = apply_command(config, file, reload_same)
    what = f"netdata {file.rel.rsplit('/', 1)[-1]} install"
    try:
        if file.mode == "640":  # it holds a secret (the Slack webhook): never in `ps`
            out = host.run(Command(Raw(command), secret_stdin=Secret(file.text)), what=what)
        else:
            out = host.run(command, what=what, stdin=file.text)
    except RemoteError as exc:
        undo = [*changed, file] if SWAPPED in exc.output and not reload_same else changed
        back = f" ({_put_back(host, config, undo)})" if undo else ""
        raise CheckFailed(f"monitoring: {bare(str(exc))}{back}") from None
    return UNCHANGED not in out


def _until_loaded(host: RemoteHost, config: Config, wait: float, clock: Clock,
                  changed: Sequence[NetdataFile] = (),
                  enough: Callable[[Loaded], bool] = lambda n: n.ok) -> Loaded:
    """Netdata's view once it is `enough`, or its last view when `wait` runs out (the caller
    reports what is missing); no answer at all puts the changed files back at once."""
    last: list[Loaded] = []

    def probe() -> Loaded | None:
        try:
            now = loaded(host, config)
        except (RemoteError, CheckFailed) as exc:  # no answer: waiting would not bring one
            back = f" ({_put_back(host, config, changed)})" if changed else ""
            raise CheckFailed(f"monitoring: {bare(str(exc))}{back}") from None
        last[:] = [now]
        return now if enough(now) else None

    try:
        return until(probe, timeout=wait, interval=1.0, clock=clock)
    except TimedOut:
        return last[0]


def _put_back(host: RemoteHost, config: Config, changed: Sequence[NetdataFile] | None = None
              ) -> str:
    """Every changed file back to what it was, the alarms last (their reload then reads the
    rest as it was too)."""
    failed, unreloaded = [], False
    for file in sorted(changed or [health(config, "")], key=lambda f: f.reload):
        try:
            out = host.run(restore_command(config, file), what="netdata alarms restore")
        except RemoteError as exc:
            failed.append(f"{file.rel}: {bare(str(exc))}")
            continue
        unreloaded |= "not-reloaded" in out
    if failed:
        return f"the previous files could NOT be put back: {'; '.join(failed)}"
    if unreloaded:
        return "the previous alarms file is back, but Netdata did not reload it"
    return "the previous alarms are back"
