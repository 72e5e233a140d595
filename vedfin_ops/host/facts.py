"""What a step's probe said, and what its judge made of it.

A probe (`remote/commands/host.py`) prints one `key value...` line per fact; `Facts` holds
them by key. A `Verdict` is a step's state: `ok`, `change` (what would change, and what its
apply needs), `skip` (the config asks for nothing here), `refuse` (the host is not one this
tool may prepare: the run stops before it changes anything) or `fail` (this step cannot be
done by the tool; said, and the steps that do not need it still run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["ok", "change", "skip", "refuse", "fail"]


class Facts(dict[str, list[str]]):
    """key -> the rest of each line with that key, in order."""

    @classmethod
    def parse(cls, text: str) -> Facts:
        found = cls()
        for line in text.splitlines():
            key, _, rest = line.strip().partition(" ")
            if key:
                found.setdefault(key, []).append(rest.strip())
        return found

    def one(self, key: str, default: str = "") -> str:
        """The first line's value for `key` (`default` when there is none)."""
        values = self.get(key)
        return values[0] if values else default

    def has(self, key: str) -> bool:
        return key in self


def package_states(facts: Facts) -> dict[str, str]:
    """`pkg <name> <status>` lines -> {name: dpkg's two-letter status} (`ii`: installed)."""
    out = {}
    for value in facts.get("pkg", []):
        name, _, status = value.partition(" ")
        out[name] = status.strip()
    return out


def installed(states: Mapping[str, str], package: str) -> bool:
    return states.get(package, "").startswith("ii")


def present(states: Mapping[str, str], package: str) -> bool:
    """Some of the package's files are on the disk: installed, or half of it (unpacked,
    half-configured, ...), not merely remembered (`rc`, `un`)."""
    status = states.get(package, "")
    return len(status) >= 2 and status[1] in "iUFHWT"


def missing_packages(states: Mapping[str, str], packages: tuple[str, ...]) -> list[str]:
    return [p for p in packages if not installed(states, p)]


def package_changes(states: Mapping[str, str], packages: list[str]) -> list[str]:
    """What installing `packages` means, in words: a half-installed one is finished."""
    out = []
    for name in packages:
        status = states.get(name, "")
        out.append(f"finish installing {name} (dpkg state {status})" if present(states, name)
                   else f"install {name}")
    return out


def services(facts: Facts) -> dict[str, tuple[str, str]]:
    """`svc <name> <enabled> <active>` lines -> {name: (enabled, active)}."""
    out = {}
    for value in facts.get("svc", []):
        words = value.split()
        if len(words) >= 3:
            out[words[0]] = (words[1], words[2])
    return out


def service_changes(facts: Facts, name: str) -> list[str]:
    enabled, active = services(facts).get(name, ("none", "none"))
    out = []
    if enabled != "enabled":
        out.append(f"enable {name}")
    if active != "active":
        out.append(f"start {name}")
    return out


@dataclass(frozen=True)
class Verdict:
    state: State
    notes: tuple[str, ...] = ()  # ok: what is there; change: what would change; else: why
    packages: tuple[str, ...] = ()  # what the apply installs first
    data: Mapping[str, Any] = field(default_factory=dict)  # what the apply needs to know

    @property
    def text(self) -> str:
        return "; ".join(self.notes)

    def line(self, plan: bool = True) -> str:
        """How a plan shows it."""
        if self.state == "ok":
            return f"ok ({self.text})" if self.text else "ok"
        if self.state == "change":
            return f"{'would change' if plan else 'changing'}: {self.text}"
        if self.state == "skip":
            return f"skipped: {self.text}"
        if self.state == "refuse":
            return f"refused: {self.text}"
        return f"cannot: {self.text}"


def ok(*notes: str) -> Verdict:
    return Verdict("ok", tuple(n for n in notes if n))


def change(changes: list[str], packages: list[str] | tuple[str, ...] = (), **data: Any
           ) -> Verdict:
    return Verdict("change", tuple(changes), tuple(packages), data)


def skip(why: str) -> Verdict:
    return Verdict("skip", (why,))


def refuse(why: str) -> Verdict:
    return Verdict("refuse", (why,))


def fail(why: str) -> Verdict:
    return Verdict("fail", (why,))
