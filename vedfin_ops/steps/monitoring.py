"""The runbook's Step 7 alarms on the host: `fab monitoring.apply` (and every good deploy)
puts the rendered alarms into Netdata's health configuration and reloads it; what Netdata
loaded is then read back through its own API (`/api/v1/alarms?all`) and compared with the
config, alarm by alarm. A reload that fails puts the previous alarms back: nothing is left
half-applied.
"""

from __future__ import annotations

import contextlib
import html
import json
from dataclasses import dataclass, field
from typing import Any

from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote.host import Remote, RemoteError
from vedfin_ops.remote.quoting import sh
from vedfin_ops.rendering.alarms import HEALTH_FILE, Alarm, alarms
from vedfin_ops.steps.operation import bare
from vedfin_ops.steps.polling import REAL, Clock

UNCHANGED = "VEDFIN-UNCHANGED"
SWAPPED = "VEDFIN-SWAPPED"  # the new file is live: from here a failure puts the old one back
RAISED = ("WARNING", "CRITICAL")


def _prelude(config: Config) -> str:
    """Where the file goes, and how to write there: as the deploy user when it may, else
    through passwordless sudo (Debian's health.d is root's); netdatacli is in /usr/sbin, off a
    deploy user's PATH, and bounded by a timeout (a hung Netdata must not hang a deploy)."""
    folder = f"{config.monitoring.netdata_config}/health.d"
    return (
        f"PATH=\"$PATH:/usr/sbin:/sbin\"; d={sh(folder)}; f={sh(folder + '/' + HEALTH_FILE)}; "
        '[ -d "$d" ] || { echo "no folder $d (is Netdata installed? monitoring.netdataConfig)"'
        ' >&2; exit 3; }; '
        'command -v netdatacli >/dev/null || { echo "netdatacli not found (is Netdata '
        'installed?)" >&2; exit 3; }; '
        "S=; if [ ! -w \"$d\" ]; then if sudo -n true 2>/dev/null; then S='sudo -n'; else "
        'echo "cannot write $d as $(id -un) and no passwordless sudo (let the deploy user write '
        'there, or monitoring.apply: false)" >&2; exit 3; fi; fi; '
        f'reload() {{ $S timeout {RELOAD_TIMEOUT} netdatacli reload-health; }}; ')


RELOAD_TIMEOUT = 20
PREV = ".prev"  # the file before this apply, kept until Netdata is seen to load the new one


def apply_command(config: Config) -> str:
    """The alarms on stdin: written beside the live file, swapped in (the previous one kept
    as `vedfin.conf.prev`), reloaded. An identical file is not swapped: it is reloaded only
    when asked (`reload_same`, when Netdata does not have it loaded)."""
    return _prelude(config) + (
        'tmp=$($S mktemp "$d/.vedfin.XXXXXX") || exit 3; '
        'if ! { $S tee "$tmp" >/dev/null && $S chmod 644 "$tmp"; }; then $S rm -f "$tmp"; '
        'exit 3; fi; '
        f'if cmp -s "$tmp" "$f"; then $S rm -f "$tmp"; echo {UNCHANGED}; '
        f'[ "${{VEDFIN_RELOAD_SAME:-}}" = 1 ] && {{ reload || exit 4; }}; exit 0; fi; '
        # a .prev left by an apply that never settled is the last file known good: kept
        f'if [ -e "$f" ] && [ ! -e "$f{PREV}" ] && ! $S cp -p "$f" "$f{PREV}"; then '
        '$S rm -f "$tmp"; exit 3; fi; '
        '$S mv -f "$tmp" "$f" || { $S rm -f "$tmp"; exit 3; }; '
        f'echo {SWAPPED}; reload || {{ echo "netdatacli reload-health failed" >&2; exit 4; }}')


def restore_command(config: Config) -> str:
    """Back to the file before this apply (none: no file), reloaded; says whether it is."""
    return _prelude(config) + (
        f'if [ -e "$f{PREV}" ]; then $S mv -f "$f{PREV}" "$f" || exit 5; '
        'else $S rm -f "$f" || exit 5; fi; reload >/dev/null 2>&1 || echo not-reloaded')


def settle_command(config: Config) -> str:
    return _prelude(config) + f'$S rm -f "$f{PREV}"'


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

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(ok for _, ok, _ in self.items)

    def problems(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.items if not ok]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "raised": self.raised,
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


def _judge(alarm: Alarm, mine: list[dict[str, Any]]) -> tuple[bool, str]:
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


def apply(host: Remote, config: Config, health_file: str, *, wait: float = 30.0,
          clock: Clock = REAL) -> tuple[bool, Loaded]:
    """Install and reload; then Netdata's API until it has every alarm as configured (its
    reload is asynchronous, and `netdatacli reload-health` says OK even when a file does not
    load). Not loaded within `wait`: the previous file is put back and reloaded. Returns
    (changed, what is loaded); raises CheckFailed."""
    changed = _install(host, config, health_file, reload_same=False)
    now = _until_loaded(host, config, wait, clock)
    if not changed and not now.ok:  # the same file, but not what Netdata has: reload it
        _install(host, config, health_file, reload_same=True)
        now = _until_loaded(host, config, wait, clock)
    if not now.ok:
        said = "; ".join(now.problems())
        back = _put_back(host, config) if changed else "the file was already there"
        raise CheckFailed(f"monitoring: Netdata does not have the alarms as configured: "
                          f"{said} ({back})")
    if changed:  # a stale .prev is replaced by the next apply; Netdata ignores it
        with contextlib.suppress(RemoteError):
            host.run(settle_command(config), what="netdata alarms settle")
    return changed, now


def _install(host: Remote, config: Config, health_file: str, *, reload_same: bool) -> bool:
    command = apply_command(config)
    if reload_same:
        command = "VEDFIN_RELOAD_SAME=1; " + command
    try:
        out = host.run(command, what="netdata alarms install", stdin=health_file)
    except RemoteError as exc:
        back = (f" ({_put_back(host, config)})" if SWAPPED in exc.output and not reload_same
                else "")
        raise CheckFailed(f"monitoring: {bare(str(exc))}{back}") from None
    return UNCHANGED not in out


def _until_loaded(host: Remote, config: Config, wait: float, clock: Clock) -> Loaded:
    deadline = clock.now() + wait
    while True:
        try:
            now = loaded(host, config)
        except RemoteError as exc:  # no answer: waiting would not bring one
            raise CheckFailed(f"monitoring: {bare(str(exc))}") from None
        if now.ok or clock.now() >= deadline:
            return now
        clock.sleep(1.0)


def _put_back(host: Remote, config: Config) -> str:
    try:
        out = host.run(restore_command(config), what="netdata alarms restore")
    except RemoteError as exc:
        return f"the previous alarms could NOT be put back: {bare(str(exc))}"
    if "not-reloaded" in out:
        return "the previous alarms file is back, but Netdata did not reload it"
    return "the previous alarms are back"
