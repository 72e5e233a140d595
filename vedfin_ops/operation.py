"""What every run that changes the engine shares: the lock, the audit line, and converging.

deploy, rollback, scale, pause and resume are each an `Operation`: state in attributes, a
method per step, and one place (`_converge`) that decides how any failure ends. Whatever
happens inside `body()` (a failed check, a remote error, an exception of any type, Ctrl-C,
SIGTERM, SIGHUP, a dropped SSH link), the run ends in one of two states:

- the new state is live and verified, an `ok` audit line, a return value; or
- the engine is put back where it was (`put_back`), the release is marked with the reason,
  an audit line says `failed` or `interrupted`, and one `RunFailed` with a one-line message.

Kamal's `cli/app/boot.rb` has the same shape: the steps in order, the way back in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from . import commands
from .config import Config
from .errors import CheckFailed, VedfinError
from .interrupts import Guard, Interrupted, signals_as_interrupts
from .lock import Lock, now_iso, who
from .polling import REAL, Clock
from .releases import Layout

Say = Callable[[str], None]
Show = Callable[[list[str]], None]


class RunFailed(CheckFailed):
    """A run that failed and was converged: exit 1 (or the cause's own exit code)."""

    def __init__(self, message: str, *, interrupted: bool = False, exit_code: int = 1) -> None:
        super().__init__(message)
        self.interrupted = interrupted
        self.exit_code = exit_code


def bare(message: str) -> str:
    """Messages carry no `error:` prefix inside the library; the CLI adds it once."""
    text = str(message).strip()
    while text.startswith("error:"):
        text = text[len("error:"):].strip()
    return " ".join(text.split()) or "no detail"


def describe(exc: BaseException) -> str:
    if isinstance(exc, Interrupted):
        return exc.reason
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, VedfinError):
        return bare(str(exc))
    return f"unexpected {type(exc).__name__}: {bare(str(exc))}"


def audit(host: Any, layout: Layout, action: str, result: str, *, release: str = "",
          tag: str = "", detail: str = "") -> None:
    line = json.dumps({"time": now_iso(), "who": who(), "env": layout.env, "action": action,
                       "release": release, "tag": tag, "result": result,
                       "detail": host.redact(bare(detail)) if detail else ""},
                      ensure_ascii=False)
    host.run(commands.audit_append(layout.audit, line), what="audit", check=False)


class Operation:
    """Subclasses set `action`, implement `body()` and `put_back()`; callers use `execute()`."""

    action = "operation"

    def __init__(self, host: Any, config: Config, env: str, *, say: Say = print,
                 show: Show | None = None, clock: Clock = REAL, tag: str = "") -> None:
        self.host, self.config, self.env = host, config, env
        self.say = say
        self.show: Show = show or (lambda lines: None)
        self.clock = clock
        self.tag = tag
        self.layout = Layout.of(config, env)
        self.lock = Lock(host, self.layout.lock, env, action=f"{self.action} {env}", tag=tag,
                         hint=f"if it is stale: fab -H HOST lock.release --env {env}",
                         clock=clock)
        self.guard: Guard | None = None
        self.release = ""  # the release this run is about (for the audit line)
        self.release_dir: str | None = None  # set once it exists on the host
        self.engine_touched = False  # set just before the first command that moves the engine
        self.notes: list[str] = []

    # -- the run -------------------------------------------------------------------------
    def execute(self) -> Any:
        with signals_as_interrupts(on_signal=self._cancel_running, notice=self.say) as guard:
            self.guard = guard
            try:
                self.lock.acquire(prefix=self.lock_prefix())
            except BaseException:
                with guard.shielded():  # the lock may be ours already: the token decides
                    self.lock.release()
                raise
            try:
                try:
                    return self.body()
                except BaseException as exc:
                    with guard.shielded():
                        failure = self._converge(exc)
                    raise failure from None
            finally:
                with guard.shielded():
                    problem = self.lock.release()
                    problem = self.release_other_locks() or problem
                if problem:
                    self.say(f"warning: {problem}")

    def lock_prefix(self) -> str:
        """A first run on a new host makes the folders it will write into."""
        return commands.mkdir_p(self.layout.releases) + " && "

    def body(self) -> Any:
        raise NotImplementedError

    def put_back(self) -> str:
        """Return the engine to the state before the run; says what it did."""
        raise NotImplementedError

    def release_other_locks(self) -> str:
        return ""

    def step(self, message: str) -> None:
        """A step boundary: progress for the user, a heartbeat for the lock."""
        self.say(message)
        self.lock.beat()

    def shielded(self) -> Any:
        """Signals wait while this runs: promoting plus its audit line is all or nothing."""
        assert self.guard is not None
        return self.guard.shielded()

    # -- failure -------------------------------------------------------------------------
    def _converge(self, exc: BaseException) -> RunFailed:
        interrupted = isinstance(exc, KeyboardInterrupt)
        reason = describe(exc)
        outcome = "interrupted" if interrupted else "failed"
        back = ""
        if self.engine_touched or self.needs_put_back():
            try:
                back = self.put_back()
            except BaseException as again:
                back = (f"could not put {self.env} back: {describe(again)}; run "
                        f"`fab -H HOST rollback --env {self.env}` or deploy again")
        self.mark(outcome, reason)
        detail = "; ".join(part for part in (reason, back) if part)
        try:
            audit(self.host, self.layout, self.action, outcome, release=self.release,
                  tag=self.tag, detail=detail)
        except BaseException as lost:
            detail += f"; the audit line could not be written ({describe(lost)})"
        code = exc.exit_code if isinstance(exc, VedfinError) else 1
        return RunFailed(self.host.redact(f"{self.action} {self.env} {outcome}: {detail}"),
                         interrupted=interrupted, exit_code=code)

    def needs_put_back(self) -> bool:
        return False

    def mark(self, outcome: str, reason: str) -> None:
        """Mark the release with how it ended; best effort (the link may be gone)."""
        if self.release_dir is None:
            return
        try:
            self.host.run(commands.mark_release(self.release_dir, outcome,
                                                self.host.redact(reason)),
                          what="mark release", check=False)
        except BaseException as exc:
            self.notes.append(f"release not marked ({describe(exc)})")

    def _cancel_running(self) -> None:
        cancel = getattr(self.host, "cancel_running", None)
        if cancel is not None:
            cancel()
