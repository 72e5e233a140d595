"""ufw as the config names it: the ports of `firewall.allow` and the SSH port open, those of
`firewall.deny` denied, incoming denied by default, and no other rule that opens a port.

Read from `ufw show added` (the rules in the words that add them, whether ufw is active or
not) and `ufw status verbose` (active, the default policy). A rule that mentions the SSH port
is never taken away, whatever else it says: the operator may have narrowed it on purpose, and
this run talks over it. The apply's order never locks the operator out: the SSH port's allow
rule first, the firewall enabled only once ufw lists that rule (`commands.host.ufw_enable`
checks again on the host), the rules the config does not name removed before it is enabled.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from vedfin_ops.host.facts import Verdict, change, ok
from vedfin_ops.remote.probes.host_facts import parse_ufw, sections

OPENS = ("allow", "limit")
CLOSES = ("deny", "reject")


@dataclass(frozen=True)
class Rule:
    action: str  # allow, limit, deny, reject, route
    spec: tuple[str, ...]  # the words after the action, without a comment or `in`

    @property
    def words(self) -> list[str]:
        """The rule as `ufw delete` takes it."""
        return [self.action, *self.spec]

    def port(self) -> int | None:
        """The port of a rule for one port from anywhere (`22/tcp`, `22`), else None."""
        if len(self.spec) == 1:
            match = re.fullmatch(r"(\d+)(/tcp)?", self.spec[0])
            if match:
                return int(match.group(1))
        return None

    def mentions(self, port: int) -> bool:
        text = " ".join(self.spec)
        return bool(re.search(rf"(?<![\d.]){port}(?!\d)", text)) or \
            (port == 22 and "openssh" in text.lower())


def parse_added(text: str) -> list[Rule]:
    """`ufw show added` -> its rules (the header and `(None)` are no rules)."""
    rules = []
    for line in text.splitlines():
        if not line.startswith("ufw "):
            continue
        try:
            words = shlex.split(line)[1:]
        except ValueError:
            words = line.split()[1:]
        if "comment" in words:
            words = words[:words.index("comment")]
        if not words:
            continue
        action, spec = words[0], words[1:]
        if spec[:1] == ["in"]:
            spec = spec[1:]
        rules.append(Rule(action, tuple(spec)))
    return rules


def wanted(allow: list[int], deny: list[int], ssh: int) -> tuple[list[int], list[int]]:
    """The ports to open (the SSH port first) and to deny (never the SSH port)."""
    opened = [ssh, *sorted(set(allow) - {ssh})]
    return opened, sorted(set(deny) - set(opened))


def judge_firewall(text: str, allow: list[int], deny: list[int], ssh: int) -> Verdict:
    opened, denied = wanted(allow, deny, ssh)
    parts = sections(text)
    if "NOUFW" in parts or "ADDED" not in parts:
        return change(["install ufw", f"allow {', '.join(map(str, opened))} (TCP)",
                       *([f"deny {', '.join(map(str, denied))}"] if denied else []),
                       "deny other incoming", "enable ufw"],
                      ["ufw"], allow=opened, deny=denied, delete=[], default=True, enable=True)
    rules = parse_added(parts["ADDED"])
    status = parse_ufw(parts.get("STATUS", ""))
    has_open = {r.port() for r in rules if r.action in OPENS}
    has_closed = {r.port() for r in rules if r.action in CLOSES}
    add = [p for p in opened if p not in has_open]
    block = [p for p in denied if p not in has_closed]
    extra = [r for r in rules if r.action in OPENS and r.port() not in opened
             and not r.mentions(ssh)]
    default = status.default_incoming != "deny"
    enable = not status.active
    changes = []
    if add:
        changes.append(f"allow {', '.join(map(str, add))} (TCP)")
    if block:
        changes.append(f"deny {', '.join(map(str, block))}")
    changes += [f"remove `{' '.join(r.words)}` (the config does not name it)" for r in extra]
    if default:
        changes.append(f"deny other incoming (default is {status.default_incoming or '?'})")
    if enable:
        changes.append("enable ufw")
    if changes:
        return change(changes, allow=add, deny=block, delete=[r.words for r in extra],
                      default=default, enable=enable)
    return ok(f"active; allows {', '.join(map(str, opened))}"
              + (f"; denies {', '.join(map(str, denied))}" if denied else ""))
