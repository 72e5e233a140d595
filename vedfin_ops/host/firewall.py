"""ufw as the config names it: the ports of `firewall.allow` and the SSH port open, those of
`firewall.deny` denied, incoming denied by default, and no other rule that opens a port to
the world.

Read from `ufw show added` (the rules in the words that add them, whether ufw is active or
not) and `ufw status verbose` (active, the default policy). Only a world-open rule (from
anywhere, on any interface, to any address, incoming) for a port the config does not name is
removed. A rule the operator narrowed (`from X`, `on eth1`, `to X`, an outgoing one) is theirs
and kept, and so is a rule that mentions the SSH port, whatever else it says: this run talks
over it. Any rule letting TCP in to the SSH port counts as the SSH rule, a narrowed one
included (`commands.host.ssh_rule_pattern`, the same the enable's guard greps for): a
world-open one is added only when none is there; an inactive ufw whose SSH rules all come
from sources other than this connection's address is not enabled (it would cut this link).
On a cluster's manager (`nodes`), the
swarm's ports (2377/tcp, 7946/tcp+udp, 4789/udp) are kept where open, and allowed from each
other node's address where missing. The apply's order never locks the operator out: the SSH
port's allow rule first, the firewall enabled only once ufw lists that rule
(`commands.host.ufw_enable` checks again on the host), the rules the config does not name
removed before it is enabled.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from vedfin_ops.host.facts import Verdict, change, fail, ok
from vedfin_ops.remote.commands.host import ssh_rule_pattern
from vedfin_ops.remote.probes.host_facts import parse_ufw, sections

OPENS = ("allow", "limit")
CLOSES = ("deny", "reject")
ANYWHERE = ("any", "0.0.0.0/0", "::/0")
#: what a swarm's nodes reach each other on: its managers' API, the gossip, the overlay's VXLAN
SWARM_PORTS = ((2377, "tcp"), (7946, "tcp"), (7946, "udp"), (4789, "udp"))
#: application profiles whose ports are known here (others are read as no known port)
PROFILES = {"openssh": (frozenset({22}), "tcp")}


@dataclass(frozen=True)
class Peer:
    """Another node of the swarm, as the config names it (`nodes`)."""

    name: str
    address: str | None


@dataclass(frozen=True)
class Rule:
    action: str  # allow, limit, deny, reject, route
    spec: tuple[str, ...]  # the words after the action, without a comment
    line: str = ""  # as `ufw show added` printed it

    @property
    def words(self) -> list[str]:
        """The rule as `ufw delete` takes it."""
        return [self.action, *self.spec]

    def fields(self) -> dict[str, str]:
        """The rule's parts, in ufw's terms: direction, interface, proto, src, sport, dst,
        dport, app (the port or profile of the short form is dport or app)."""
        out = {"direction": "in", "interface": "", "proto": "any", "src": "any", "sport": "",
               "sapp": "", "dst": "any", "dport": "", "app": ""}
        words, i = list(self.spec), 0
        while i < len(words):
            word, following = words[i], words[i + 1] if i + 1 < len(words) else ""
            if word in ("in", "out"):
                out["direction"] = word
                if following == "on" and i + 2 < len(words):
                    out["interface"], i = words[i + 2], i + 2
            elif word in ("log", "log-all"):
                pass
            elif word in ("proto", "from", "to") and following:
                key = {"proto": "proto", "from": "src", "to": "dst"}[word]
                out[key], i = following, i + 1
                nxt = words[i + 1] if i + 1 < len(words) else ""
                if word != "proto" and nxt in ("port", "app") and i + 2 < len(words):
                    part = ("sport" if nxt == "port" else "sapp") if word == "from" else \
                        ("dport" if nxt == "port" else "app")
                    out[part], i = words[i + 2], i + 2
            elif not (out["dport"] or out["app"]):  # the short form: PORT[/PROTO] or APP
                port, _, proto = word.partition("/")
                if re.fullmatch(r"[0-9:,]+", port):
                    out["dport"], out["proto"] = port, proto or "any"
                else:
                    out["app"] = word
            i += 1
        return out

    def narrowed(self) -> str:
        """What the operator narrowed it to (`from 10.0.0.2`, `on eth1`, ...), else ''."""
        f = self.fields()
        said = []
        if f["direction"] == "out":
            said.append("outgoing")
        if f["interface"]:
            said.append(f"on {f['interface']}")
        if f["src"] not in ANYWHERE or f["sport"] or f["sapp"]:
            said.append(f"from {f['src']}")
        if f["dst"] not in ANYWHERE:
            said.append(f"to {f['dst']}")
        return ", ".join(said)

    def ports(self) -> tuple[frozenset[int] | None, str]:
        """The ports it opens and their protocol; None: every port (no port, no profile);
        an empty set: a profile whose ports are not known here."""
        f = self.fields()
        if f["app"]:
            return PROFILES.get(f["app"].lower(), (frozenset(), "any"))
        if not f["dport"]:
            return None, f["proto"]
        found: set[int] = set()
        for part in f["dport"].split(","):
            low, _, high = part.partition(":")
            if low.isdigit() and (high.isdigit() or not high):
                found.update(range(int(low), int(high or low) + 1))
        return frozenset(found), f["proto"]

    def opens(self, port: int, proto: str) -> bool:
        """It lets `proto` in to `port`, for its sources (incoming; an open or a close)."""
        ports, its_proto = self.ports()
        return self.fields()["direction"] == "in" and its_proto in ("any", proto) and \
            (ports is None or port in ports)

    def admits(self, address: str) -> bool:
        """Its source takes `address` in: anywhere, the address, or a network holding it."""
        source = self.fields()["src"]
        if source in ANYWHERE:
            return True
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(source, strict=False)
        except ValueError:
            return source == address

    def from_(self, address: str) -> bool:
        """Its source takes `address` in (anywhere, the address, or a network holding it),
        on no interface and to any address of this host."""
        f = self.fields()
        return not (f["interface"] or f["dst"] not in ANYWHERE or f["sport"] or f["sapp"]) \
            and self.admits(address)

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
        rules.append(Rule(words[0], tuple(words[1:]), line.strip()))
    return rules


def wanted(allow: list[int], deny: list[int], ssh: int) -> tuple[list[int], list[int]]:
    """The ports to open (the SSH port first) and to deny (never the SSH port)."""
    opened = [ssh, *sorted(set(allow) - {ssh})]
    return opened, sorted(set(deny) - set(opened))


def swarm_rules(peers: Sequence[Peer], rules: Sequence[Rule]
                ) -> tuple[list[list[str | int]], list[str]]:
    """The swarm's ports from each other node's address that no rule lets in yet
    ([address, port, proto] each), and a note for each node without an IP address."""
    missing: list[list[str | int]] = []
    notes = []
    for peer in peers:
        try:
            address = str(ipaddress.ip_address(peer.address or ""))
        except ValueError:
            notes.append(f"node {peer.name} has no IP address in the config (nodes[].address): "
                         f"open the swarm's ports from it by hand")
            continue
        for port, proto in SWARM_PORTS:
            if not any(r.action in OPENS and r.opens(port, proto) and r.from_(address)
                       for r in rules):
                missing.append([address, port, proto])
    return missing, notes


def _kept(rule: Rule, named: set[int], peers: Sequence[Peer], ssh: int) -> str | None:
    """Why an open rule stays ('' when it is the config's own, silently), or None: it goes."""
    narrowed = rule.narrowed()
    if narrowed:
        return f"{narrowed}: the operator's own, never removed"
    if rule.mentions(ssh) or _is_ssh_rule(rule, ssh):
        return ""
    ports, proto = rule.ports()
    if ports is None or not ports:
        return None
    swarm = {p for p, q in SWARM_PORTS if proto in ("any", q)} if peers else set()
    if ports <= (named if proto in ("any", "tcp") else set()) | swarm:
        return "a swarm port: `nodes` is set" if ports & swarm else ""
    return None


def _is_ssh_rule(rule: Rule, ssh: int) -> bool:
    return bool(re.search(ssh_rule_pattern(ssh), rule.line or "ufw " + " ".join(rule.words)))


def judge_firewall(text: str, allow: list[int], deny: list[int], ssh: int,
                   peers: Sequence[Peer] = (), client: str | None = None) -> Verdict:
    """`peers`: the other nodes of the swarm this host manages (none on a single host);
    `client`: the address this connection comes from, as the server sees it (None: not
    known)."""
    opened, denied = wanted(allow, deny, ssh)
    parts = sections(text)
    if "NOUFW" in parts or "ADDED" not in parts:
        from_peers, notes = swarm_rules(peers, [])
        return change(["install ufw", f"allow {', '.join(map(str, opened))} (TCP)",
                       *([_swarm_line(from_peers)] if from_peers else []),
                       *([f"deny {', '.join(map(str, denied))}"] if denied else []),
                       "deny other incoming", "enable ufw", *notes],
                      ["ufw"], allow=opened, allow_from=from_peers, deny=denied, delete=[],
                      default=True, enable=True)
    rules = parse_added(parts["ADDED"])
    status = parse_ufw(parts.get("STATUS", ""))
    opens = [r for r in rules if r.action in OPENS]
    world = [r for r in rules if not r.narrowed()]
    ssh_rules = [r for r in opens if _is_ssh_rule(r, ssh)]
    if ssh_rules and not status.active and client and \
            not any(r.admits(client) for r in ssh_rules):
        named = ", ".join("`" + " ".join(r.words) + "`" for r in ssh_rules)
        return fail(f"the firewall is inactive and its rules for the SSH port {ssh} ({named}) "
                    f"do not admit this connection's address {client}: enabling it would cut "
                    f"this link; allow {ssh}/tcp from {client}, or enable ufw by hand")
    add = [p for p in opened if not (p == ssh and ssh_rules) and
           not any(r.action in OPENS and r.opens(p, "tcp") for r in world)]
    block = [p for p in denied
             if not any(r.action in CLOSES and r.opens(p, "tcp") for r in world)]
    extra, kept = [], []
    for rule in opens:
        why = _kept(rule, set(opened), peers, ssh)
        if why is None:
            extra.append(rule)
        elif why:
            kept.append(f"kept `{' '.join(rule.words)}` ({why})")
    from_peers, notes = swarm_rules(peers, rules)
    default = status.default_incoming != "deny"
    enable = not status.active
    changes = []
    if add:
        changes.append(f"allow {', '.join(map(str, add))} (TCP)")
    if from_peers:
        changes.append(_swarm_line(from_peers))
    if block:
        changes.append(f"deny {', '.join(map(str, block))}")
    changes += [f"remove `{' '.join(r.words)}` (the config does not name it)" for r in extra]
    if default:
        changes.append(f"deny other incoming (default is {status.default_incoming or '?'})")
    if enable:
        changes.append("enable ufw")
    if changes:
        return change([*changes, *kept, *notes], allow=add, allow_from=from_peers, deny=block,
                      delete=[r.words for r in extra], default=default, enable=enable)
    swarm = f"; the swarm's ports from {', '.join(p.address or p.name for p in peers)}" \
        if peers and not notes else ""
    return ok(f"active; allows {', '.join(map(str, opened))}"
              + (f"; denies {', '.join(map(str, denied))}" if denied else "") + swarm,
              *kept, *notes)


def _swarm_line(rules: list[list[str | int]]) -> str:
    by: dict[str, list[str]] = {}
    for address, port, proto in rules:
        by.setdefault(str(address), []).append(f"{port}/{proto}")
    return "allow the swarm's ports from the other nodes: " + "; ".join(
        f"{address} {', '.join(ports)}" for address, ports in by.items())
