"""One way to run a check, for smoke, preflight (the capacity gate's item among them) and
verify's checklist: a check is a function that returns its detail (`warning: ...` marks a
warning) or raises `Failed` (a wrong answer) or `Transient` (worth another try). Anything else
it raises is a failed check named `check crashed`, never an exception out of the suite: a
crashing check must not skip what follows it (verify's rollback, the audit line)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vedfin_ops.run.polling import REAL, Clock


class Transient(Exception):
    """Worth another try: the server may be restarting."""


class Failed(Exception):
    """A wrong answer: retrying will not change it."""


class NotYet(Failed):
    """An edge that has not caught up yet: a failure, except while a deploy waits for an edge
    that just started routing a domain (verify's wait retries it)."""


class CertificateNotYet(NotYet):
    """Traefik's self-signed default certificate, which it serves for a name until it has a
    router and an issued certificate for it (an unverifiable certificate in an HTTP check is
    also one: the HTTP client cannot tell which)."""


class NotRoutedYet(NotYet):
    """Traefik's own 404 for a host it has no router for: its swarm provider has not polled
    the engine since the app's labels appeared (every 15 s by default)."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float
    warning: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail,
                "seconds": round(self.seconds, 3), "warning": self.warning}


def short(exc: object) -> str:
    """Outside text in a one-line detail: at most 160 characters."""
    text = str(exc)
    return text if len(text) < 160 else text[:157] + "..."


def run_check(name: str, fn: Callable[[], str], *, attempts: int = 1,
              backoff: float = 0.5, clock: Clock = REAL) -> Check:
    """Run `fn` up to `attempts` times while it raises Transient (waiting backoff, 2x, 4x...
    on the injectable clock, so a test of the retries waits no real time)."""
    started = clock.now()
    detail = ""
    for attempt in range(max(1, attempts)):
        try:
            detail = fn()
            warning = detail.startswith("warning:")
            return Check(name, True, detail, clock.now() - started, warning)
        except Failed as exc:
            return Check(name, False, str(exc), clock.now() - started)
        except Transient as exc:
            detail = f"{exc} (after {attempt + 1} tries)"
            if attempt + 1 < attempts:
                clock.sleep(backoff * (2 ** attempt))
        except Exception as exc:  # a check that crashes is a failed check
            return Check(name, False, f"check crashed: {type(exc).__name__}: {short(exc)}",
                         clock.now() - started)
    return Check(name, False, detail, clock.now() - started)
