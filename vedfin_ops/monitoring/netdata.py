"""The runbook's Step 7 alarms on the host: `fab monitoring.apply` (and every good deploy)
puts the rendered alarms into Netdata's health configuration and reloads it; what Netdata
loaded is then read back through its own API (`/api/v1/alarms?all`) and compared with the
config, alarm by alarm. A reload that fails puts the previous alarms back: nothing is left
half-applied.

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
from vedfin_ops.remote.host import Remote, RemoteError
from vedfin_ops.remote.quoting import sh
from vedfin_ops.rendering.alarms import (
    LEGACY_HEALTH_FILE,
    PLUGIN_FILE,
    RESTARTS_CHART,
    Alarm,
    alarms,
    health_file,
)
from vedfin_ops.run.operation import bare
from vedfin_ops.run.polling import REAL, Clock

UNCHANGED = "VEDFIN-UNCHANGED"
SWAPPED = "VEDFIN-SWAPPED"  # the new file is live: from here a failure puts the old one back
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
    root = config.monitoring.netdata_config.rstrip("/")
    return f"""# {MARK}; edit the configs, not this file.
# Netdata's notifications for every vedfin-ops config on this host: an alarm whose role
# (its `to:` line) is vedfin-<stackPrefix> is sent with that config's settings,
# {root}/vedfin-notify-<stackPrefix>.conf.
for vedfin_role in ${{roles//,/ }}; do
  case "$vedfin_role" in
    vedfin-*/*) ;;
    vedfin-?*)
      vedfin_settings={sh(root)}/"vedfin-notify-${{vedfin_role#vedfin-}}.conf"
      if [ -f "$vedfin_settings" ]; then source "$vedfin_settings"; fi ;;
  esac
done
"""


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
MARK = "Rendered by vedfin-ops"


def _prelude(config: Config, file: NetdataFile) -> str:
    """Where the file goes, and how to write there: as the deploy user when it may, else
    through passwordless sudo (Debian's health.d is root's); netdatacli is in /usr/sbin, off a
    deploy user's PATH, and bounded by a timeout (a hung Netdata must not hang a deploy)."""
    root = config.monitoring.netdata_config
    path = f"{root}/{file.rel}"
    folder = path.rsplit("/", 1)[0]
    return (
        f"PATH=\"$PATH:/usr/sbin:/sbin\"; r={sh(root)}; d={sh(folder)}; f={sh(path)}; "
        '[ -d "$r/health.d" ] || { echo "no folder $r/health.d (is Netdata installed? '
        'monitoring.netdataConfig)" >&2; exit 3; }; '
        'command -v netdatacli >/dev/null || { echo "netdatacli not found (is Netdata '
        'installed?)" >&2; exit 3; }; '
        'w="$d"; [ -d "$d" ] || w="$r"; '
        "S=; if [ ! -w \"$w\" ]; then if sudo -n true 2>/dev/null; then S='sudo -n'; else "
        'echo "cannot write $w as $(id -un) and no passwordless sudo (let the deploy user write '
        'there, or monitoring.apply: false)" >&2; exit 3; fi; fi; '
        '[ -d "$d" ] || $S mkdir -p "$d" || exit 3; '
        f'reload() {{ $S timeout {RELOAD_TIMEOUT} netdatacli reload-health; }}; ')


RELOAD_TIMEOUT = 20
PREV = ".prev"  # the file before this apply, kept until Netdata is seen to load the new one


def apply_command(config: Config, file: NetdataFile | None = None) -> str:
    """The file on stdin: written beside the live one, swapped in (the previous one kept
    as `<name>.prev`), reloaded when Netdata's health reads it. An identical file is not
    swapped: it is reloaded only when asked (`VEDFIN_RELOAD_SAME`, when Netdata does not have
    it loaded). A file the tool owns only by name must carry its mark to be replaced."""
    file = file or health(config, "")
    reload = 'reload || { echo "netdatacli reload-health failed" >&2; exit 4; }'
    # read as the writer reads: a 0640 file of root's is unreadable to the deploy user
    foreign = (f'if [ -e "$f" ] && ! $S grep -q {sh(MARK)} "$f"; then echo "$f was not '
               'written by vedfin-ops: move it aside (its settings into the config) and apply '
               'again" >&2; exit 3; fi; ' if file.owned else "")
    # the file's group is the one Netdata runs as (else its own group), so a 0640 file stays
    # readable to Netdata; a group that cannot be set is a failure, not a silent mute
    group = ('g=$(ps -o group= -C netdata 2>/dev/null | head -n 1 | tr -d " "); '
             '[ -n "$g" ] || { getent group netdata >/dev/null && g=netdata; }; '
             'if [ -n "$g" ] && ! $S chgrp "$g" "$tmp"; then $S rm -f "$tmp"; '
             'echo "cannot give $f to group $g (Netdata could not read it)" >&2; exit 3; fi; '
             if file.mode == "640" else "")
    # the old name's file becomes this one's, so it is what a failure puts back and it is
    # never loaded beside the new one (the same alarms twice)
    takeover = (f'o={sh(config.monitoring.netdata_config + "/" + file.legacy)}; '
                'if [ ! -e "$f" ] && [ -e "$o" ] && $S grep -q ' + sh(MARK) +
                ' "$o"; then $S mv -f "$o" "$f" || exit 3; fi; ' if file.legacy else "")
    return _prelude(config, file) + takeover + foreign + (
        'base=$(basename "$f"); tmp=$($S mktemp "$d/.$base.XXXXXX") || exit 3; '
        # whatever stops this command, its temp file (perhaps a secret) goes with it
        """trap '$S rm -f "$tmp" 2>/dev/null' EXIT; trap 'exit 1' HUP INT TERM PIPE; """
        f'if ! {{ $S tee "$tmp" >/dev/null && $S chmod {file.mode} "$tmp"; }}; then '
        '$S rm -f "$tmp"; exit 3; fi; ' + group +
        f'if $S cmp -s "$tmp" "$f"; then $S rm -f "$tmp"; echo {UNCHANGED}; '
        + (f'[ "${{VEDFIN_RELOAD_SAME:-}}" = 1 ] && {{ {reload}; }}; ' if file.reload else "")
        + 'exit 0; fi; '
        # a .prev left by an apply that never settled is the last file known good: kept
        f'if [ -e "$f" ] && [ ! -e "$f{PREV}" ] && ! $S cp -p "$f" "$f{PREV}"; then '
        '$S rm -f "$tmp"; exit 3; fi; '
        '$S mv -f "$tmp" "$f" || { $S rm -f "$tmp"; exit 3; }; '
        f'echo {SWAPPED}; ' + (reload if file.reload else "true"))


def restore_command(config: Config, file: NetdataFile | None = None) -> str:
    """Back to the file before this apply (none: no file), reloaded; says whether it is."""
    file = file or health(config, "")
    return _prelude(config, file) + (
        f'if [ -e "$f{PREV}" ]; then $S mv -f "$f{PREV}" "$f" || exit 5; '
        'else $S rm -f "$f" || exit 5; fi; ' +
        ("reload >/dev/null 2>&1 || echo not-reloaded" if file.reload else "true"))


def settle_command(config: Config, wanted: Sequence[NetdataFile] = ()) -> str:
    """Every wanted file's `.prev` removed: a stale one (an apply stopped before it settled)
    must never become a later rollback's target once the live file is proven. A file of the
    old name that is the tool's (an earlier version wrote it after the takeover) goes too:
    Netdata must not load the same alarms twice."""
    root = config.monitoring.netdata_config
    files = wanted or [health(config, "")]
    paths = " ".join(sh(f"{root}/{f.rel}{PREV}") for f in files)
    old = "".join(f"o={sh(f'{root}/{f.legacy}')}; if [ -e \"$o\" ] && $S grep -q {sh(MARK)} "
                  f'"$o"; then $S rm -f "$o"; fi; ' for f in files if f.legacy)
    return _prelude(config, health(config, "")) + old + f"$S rm -f {paths}"


def alarms_url(config: Config) -> str:
    return f"http://127.0.0.1:{config.monitoring.netdata_port}/api/v1/alarms?all"


def read_command(config: Config) -> str:
    """Netdata's API from the host itself (its port is not public): curl, else wget."""
    url = sh(alarms_url(config))
    return (f"if command -v curl >/dev/null; then curl -fsS --max-time 10 {url}; "
            f"else wget -qO- -T 10 {url}; fi || {{ echo 'Netdata did not answer on "
            f"{config.monitoring.netdata_port}' >&2; exit 7; }}")


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


def loaded(host: Remote, config: Config) -> Loaded:
    return compare(config, host.run(read_command(config), what="netdata alarms"))


PLUGIN_WAIT = 75.0  # Netdata looks for new plugins every 60 s


def apply(host: Remote, config: Config, health_text: str, *,
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


def _apply(host: Remote, config: Config, wanted: list[NetdataFile],
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


def _install(host: Remote, config: Config, file: NetdataFile, *, reload_same: bool,
             changed: list[NetdataFile]) -> bool:
    command = apply_command(config, file)
    if reload_same:
        command = "VEDFIN_RELOAD_SAME=1; " + command
    what = f"netdata {file.rel.rsplit('/', 1)[-1]} install"
    try:
        out = (host.run(command, what=what, secret_stdin=file.text) if file.mode == "640"
               else host.run(command, what=what, stdin=file.text))  # a secret: never in `ps`
    except RemoteError as exc:
        undo = [*changed, file] if SWAPPED in exc.output and not reload_same else changed
        back = f" ({_put_back(host, config, undo)})" if undo else ""
        raise CheckFailed(f"monitoring: {bare(str(exc))}{back}") from None
    return UNCHANGED not in out


def _until_loaded(host: Remote, config: Config, wait: float, clock: Clock,
                  changed: Sequence[NetdataFile] = (),
                  enough: Callable[[Loaded], bool] = lambda n: n.ok) -> Loaded:
    deadline = clock.now() + wait
    while True:
        try:
            now = loaded(host, config)
        except (RemoteError, CheckFailed) as exc:  # no answer: waiting would not bring one
            back = f" ({_put_back(host, config, changed)})" if changed else ""
            raise CheckFailed(f"monitoring: {bare(str(exc))}{back}") from None
        if enough(now) or clock.now() >= deadline:
            return now
        clock.sleep(1.0)


def _put_back(host: Remote, config: Config, changed: Sequence[NetdataFile] | None = None
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
