"""The runbook's Step 7 alarms on the host: `fab monitoring.apply` (and every good deploy)
puts the rendered alarms into Netdata's health configuration and reloads it; what Netdata
loaded is then read back through its own API (`/api/v1/alarms?all`) and compared with the
config, alarm by alarm. A reload that fails puts the previous alarms back: nothing is left
half-applied.
"""

from __future__ import annotations

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
RAISED = ("WARNING", "CRITICAL")


def apply_command(config: Config) -> str:
    """One command, the alarms on stdin: written beside the live file, swapped in, reloaded;
    a failed reload restores the previous file (and reloads that). An identical file is left
    alone (no reload)."""
    folder = f"{config.monitoring.netdata_config}/health.d"
    return (  # netdatacli is in /usr/sbin, off a deploy user's PATH on Debian
        f"PATH=\"$PATH:/usr/sbin:/sbin\"; d={sh(folder)}; f={sh(folder + '/' + HEALTH_FILE)}; "
        '[ -d "$d" ] || { echo "no folder $d (is Netdata installed? monitoring.netdataConfig)"'
        ' >&2; exit 3; }; '
        'command -v netdatacli >/dev/null || { echo "netdatacli not found (is Netdata '
        'installed?)" >&2; exit 3; }; '
        'tmp=$(mktemp "$d/.vedfin.XXXXXX") || exit 3; '
        'if ! { cat > "$tmp" && chmod 644 "$tmp"; }; then rm -f "$tmp"; exit 3; fi; '
        f'if cmp -s "$tmp" "$f"; then rm -f "$tmp"; echo {UNCHANGED}; exit 0; fi; '
        'rm -f "$f.prev"; '
        'if [ -e "$f" ] && ! cp -p "$f" "$f.prev"; then rm -f "$tmp"; exit 3; fi; '
        'mv -f "$tmp" "$f" || { rm -f "$tmp"; exit 3; }; '
        'if ! out=$(netdatacli reload-health 2>&1); then '
        'if [ -e "$f.prev" ]; then mv -f "$f.prev" "$f"; else rm -f "$f"; fi; '
        'netdatacli reload-health >/dev/null 2>&1; '
        'echo "netdatacli reload-health failed: $out (the previous alarms are back)" >&2; '
        'exit 4; fi; rm -f "$f.prev"')


def alarms_url(config: Config) -> str:
    return f"http://127.0.0.1:{config.monitoring.netdata_port}/api/v1/alarms?all"


def read_command(config: Config) -> str:
    """Netdata's API from the host itself (its port is not public): curl, else wget."""
    url = sh(alarms_url(config))
    return (f"curl -fsS --max-time 10 {url} 2>&1 || wget -qO- -T 10 {url} 2>&1 || "
            f"{{ echo 'Netdata did not answer on {config.monitoring.netdata_port}' >&2; "
            f"exit 7; }}")


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
    statuses = sorted({str(i.get("status")) for i in mine})
    limits = ", ".join(x for x in (f"warn {alarm.warn}" if alarm.warn else "",
                                   f"crit {alarm.crit}" if alarm.crit else "") if x)
    return True, f"loaded on {len(mine)} chart(s), {limits}, {'/'.join(statuses)}"


def loaded(host: Remote, config: Config) -> Loaded:
    return compare(config, host.run(read_command(config), what="netdata alarms"))


def apply(host: Remote, config: Config, health_file: str, *, wait: float = 30.0,
          clock: Clock = REAL) -> tuple[bool, Loaded]:
    """Install and reload; then Netdata's API until it has every alarm as configured (its
    reload is asynchronous). Returns (changed, what is loaded); raises CheckFailed."""
    try:
        out = host.run(apply_command(config), what="netdata alarms install",
                       stdin=health_file)
    except RemoteError as exc:
        raise CheckFailed(f"monitoring: {bare(str(exc))}") from None
    changed = UNCHANGED not in out
    deadline = clock.now() + (wait if changed else 0.0)
    while True:
        try:
            now = loaded(host, config)
        except RemoteError as exc:  # no answer: waiting would not bring one
            raise CheckFailed(f"monitoring: {bare(str(exc))}") from None
        if now.ok or clock.now() >= deadline:
            break
        clock.sleep(1.0)
    if not now.ok:
        raise CheckFailed("monitoring: Netdata does not have the alarms as configured: "
                          + "; ".join(now.problems()))
    return changed, now
