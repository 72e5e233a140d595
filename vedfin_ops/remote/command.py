"""A command built from parts, its secrets marked where they are put in.

A part is a plain word (quoted with `sh`: a value from the config never becomes syntax), a
`Raw` shell fragment (operators, redirections, `$var`s: written by a builder in `remote/`,
never by a value), a `Secret` (one quoted word in the command the host runs, `***` wherever
the command is shown), or another `Command` (its text as it is). A secret the command sends
on the channel's stdin (`docker login --password-stdin`) is its `secret_stdin`.

`render()` is the exact line the host runs; `masked()` (and `str()`) is what logs, errors and
reports show: built from the parts, so a secret is hidden because it was marked, not because
a scan of the output happened to find it (`Host.redact` still scans every output, as a second
line of defence). Modelled on pyinfra's `api/command.py` (StringCommand, QuoteString,
MaskString).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vedfin_ops.remote.quoting import sh

MASK = "***"
#: shorter values are not scanned for in text (too likely to be ordinary words); a `Secret`
#: part is masked whatever its length
SCAN_MIN = 4


@dataclass(frozen=True)
class Secret:
    """A value that reaches the host but never a log."""

    value: str

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK


@dataclass(frozen=True)
class Raw:
    """Shell syntax, verbatim (never a value from the config: those are words)."""

    text: str


class Command:
    """Parts joined by one space; see the module docstring."""

    __slots__ = ("parts", "secret_stdin")
    parts: tuple[Part, ...]
    secret_stdin: Secret | None

    def __init__(self, *parts: Part, secret_stdin: Secret | None = None) -> None:
        if any(isinstance(p, Command) and p.secret_stdin is not None for p in parts):
            # one channel, one stdin: the outer command's; an inner one would be dropped
            raise ValueError("a nested command cannot carry secret stdin: give it to the "
                             "outer command")
        self.parts = parts
        self.secret_stdin = secret_stdin

    def render(self) -> str:
        """The command line the host runs."""
        return " ".join(_render(part) for part in self.parts)

    def masked(self) -> str:
        """The command as it may be shown: every secret `***`."""
        secrets = self.secrets
        return hide(" ".join(_masked(part, secrets) for part in self.parts), secrets)

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"Command({self.masked()!r})"

    def argv(self) -> list[str]:
        """The words, unquoted, for a process started without a shell (the local docker)."""
        out = []
        for part in self.parts:
            if isinstance(part, Secret):
                out.append(part.value)
            elif isinstance(part, str | int):
                out.append(str(part))
            else:
                raise TypeError(f"{self.masked()!r}: a shell fragment has no argv")
        return out

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value the command carries, in its line or on its stdin (there with
        the line break that ends it, and without: as a host would print it back)."""
        found = []
        for value in _secrets(self):
            found += [value] if value == value.strip("\n") else [value, value.strip("\n")]
        return tuple(found)


Part = str | int | Raw | Secret | Command


def _render(part: Part) -> str:
    if isinstance(part, Raw):
        return part.text
    if isinstance(part, Secret):
        return sh(part.value)
    if isinstance(part, Command):
        return part.render()
    return sh(part)


def _masked(part: Part, secrets: tuple[str, ...]) -> str:
    """A word is masked before it is quoted: quoting a secret that holds a quote would
    change its letters, and the quoted word would no longer contain it."""
    if isinstance(part, Raw):
        return part.text
    if isinstance(part, Secret):
        return MASK
    if isinstance(part, Command):
        return " ".join(_masked(p, secrets) for p in part.parts)
    return sh(hide(str(part), secrets))


def _secrets(command: Command) -> Iterator[str]:
    for part in command.parts:
        if isinstance(part, Secret):
            yield part.value
        elif isinstance(part, Command):
            yield from _secrets(part)
    if command.secret_stdin is not None:
        yield command.secret_stdin.value


def hide(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret of `SCAN_MIN` characters or more, as it is and as `sh` quotes
    it, replaced by `***` (the longest first), until none is left: a word that merely holds a
    secret's value is masked too."""
    values = sorted({form for value in secrets if len(value) >= SCAN_MIN
                     for form in (value, sh(value))}, key=len, reverse=True)
    changed = True
    while changed:  # each replacement shortens the text: this ends
        changed = False
        for value in values:
            if value in text:
                text, changed = text.replace(value, MASK), True
    return text
