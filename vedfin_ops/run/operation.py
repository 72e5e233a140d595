"""What every run that changes the host shares: the lock, the audit line, and converging.

deploy, rollback, scale (pause, resume), restart, migrate, db-init, db.backup, db.restore,
cluster.drain and cluster.join are each an `Operation`: state in attributes, a method per
step, and one place (`_converge`) that decides how any failure ends. Whatever
happens inside `body()` (a failed check, a remote error, an exception of any type, Ctrl-C,
SIGTERM, SIGHUP, a dropped SSH link), the run ends in one of two states:

- the new state is live and verified, an `ok` audit line, a return value; or
- the engine is put back where it was (`put_back`), the release is marked with the reason,
  an audit line says `failed` or `interrupted`, and one `RunFailed` with a one-line message.

Kamal's `cli/app/boot.rb` has the same shape: the steps in order, the way back in one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed, VedfinError
from vedfin_ops.remote import commands
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.run.interrupts import Guard, Interrupted, signals_as_interrupts
from vedfin_ops.run.layout import Layout, audit_line
from vedfin_ops.run.lock import Lock, LockLost, now_iso, who
from vedfin_ops.run.polling import REAL, Clock

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


def safe(sink: Callable[[Any], None]) -> Callable[[Any], None]:
    """Progress output that cannot end the run: after SIGHUP the terminal is gone and a print
    raises EIO, and a broken pipe must not skip putting the host back. Signals still pass."""

    def write(message: Any) -> None:
        with contextlib.suppress(Exception):  # output is best effort, converging is not
            sink(message)

    return write


def audit(host: RemoteHost, layout: Layout, action: str, result: str, *, release: str = "",
          tag: str = "", detail: str = "") -> None:
    line = audit_line(now_iso(), who(), layout.env, action, result, release=release, tag=tag,
                      detail=host.redact(bare(detail)) if detail else "")
    host.run(commands.audit_append(layout.audit, line), what="audit")


class Operation:
    """Subclasses set `action`, implement `body()` and `put_back()`; callers use `execute()`."""

    action = "operation"

    def __init__(self, host: RemoteHost, config: Config, env: str, *, say: Say = print,
                 show: Show | None = None, clock: Clock = REAL, tag: str = "") -> None:
        self.host, self.config, self.env = host, config, env
        self.say: Say = safe(say)
        self.show: Show = safe(show or (lambda lines: None))
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
        self.notes: list[str] = []  # said after a failure's reason (and in its audit line)
        self.committed = False  # the new state is recorded: nothing after this undoes it
        self.outcome: Any = None  # what execute() returns once committed

    # -- the run -------------------------------------------------------------------------
    def execute(self) -> Any:
        """The lock, the body, and on any failure `_converge`; see the module docstring.

        The lock is taken inside the `try` whose `finally` releases it, so a signal between
        the two cannot leave it behind. Once the body has committed, an interrupt or error
        that comes later (the final message, the way out) cannot turn success into failure.
        """
        if getattr(self.host, "stopping", False):  # an earlier run's signal on this host
            self.host.stopping = False  # type: ignore[attr-defined]
        with signals_as_interrupts(on_signal=self._cancel_running, notice=self.say) as guard:
            self.guard = guard
            started = False
            try:
                self.lock.acquire(prefix=self.lock_prefix())
                started = True
                return self.body()
            except BaseException as exc:
                with guard.shielded():
                    if self.committed:
                        self.say(f"warning: {describe(exc)} after the {self.action} was "
                                 f"recorded; it stands")
                        return self.outcome
                    if not started:
                        raise
                    failure = self._converge(exc)
                raise failure from None
            finally:
                problems: list[str] = []

                def release(lock: Lock) -> None:
                    problems.append(lock.release())

                with guard.shielded(), contextlib.ExitStack() as releases:
                    # every held lock goes, each even if the one before it raised
                    for lock in reversed(self.held_locks()):
                        releases.callback(release, lock)
                problem = "; ".join(p for p in problems if p)
                if problem:
                    self.say(f"warning: {problem}")

    def commit(self, outcome: Any) -> None:
        """Called (shielded) right after the command that records the new state."""
        self.committed, self.outcome = True, outcome
        self.engine_touched = False

    def audit_ok(self, result: str, **fields: Any) -> None:
        """The success line of a committed run: losing it is a warning, not a failure."""
        if self.notes:  # what the run noted on the way (a rollout's receipt)
            fields["detail"] = "; ".join(p for p in (fields.get("detail", ""), *self.notes) if p)
        try:
            audit(self.host, self.layout, self.action, result, **fields)
        except Exception as exc:  # live and verified already
            self.say(f"warning: {self.action} done, but the audit line could not be written "
                     f"({describe(exc)})")

    def lock_prefix(self) -> str:
        """A first run on a new host makes the folders it will write into."""
        return commands.before(commands.mkdir_p(self.layout.releases))

    def body(self) -> Any:
        raise NotImplementedError

    def put_back(self) -> str:
        """Return the engine to the state before the run; says what it did."""
        raise NotImplementedError

    def held_locks(self) -> list[Lock]:
        """Every lock this run holds now: the env's, and whatever a subclass adds (the shared
        lock of a deploy or a restore, every env's lock in a cluster run)."""
        return [self.lock]

    def beat(self, *, force: bool = False) -> None:
        """Heartbeat every held lock; LockLost if one was taken away."""
        for lock in self.held_locks():
            lock.beat(force=force)

    def keep_alive(self, command: str) -> str:
        """`command` with every held lock's heartbeat kept fresh on the host while it runs."""
        for lock in self.held_locks():
            command = lock.keep_alive(command)
        return command

    def step(self, message: str) -> None:
        """A step boundary: progress for the user, a heartbeat for the lock."""
        self.say(message)
        self.beat()

    def shielded(self) -> Any:
        """Signals wait while this runs: promoting plus its audit line is all or nothing."""
        assert self.guard is not None
        return self.guard.shielded()

    def deferred(self) -> Any:
        """A step signals may not cut in half, after which the run still stops if asked."""
        assert self.guard is not None
        return self.guard.deferred()

    # -- failure -------------------------------------------------------------------------
    def _converge(self, exc: BaseException) -> RunFailed:
        interrupted = isinstance(exc, KeyboardInterrupt)
        reason = describe(exc)
        outcome = "interrupted" if interrupted else "failed"
        back = ""
        if isinstance(exc, LockLost) and not self.retake_lock():
            back = "nothing was put back: another run holds the lock now and owns the env"
        elif self.engine_touched or self.needs_put_back():
            try:
                back = self.put_back()
            except BaseException as again:
                back = (f"could not put {self.env} back: {describe(again)}; run "
                        f"`fab -H HOST rollback --env {self.env}` or deploy again")
        self.mark(outcome, reason)
        detail = "; ".join(part for part in (reason, back, *self.notes) if part)
        try:
            audit(self.host, self.layout, self.action, outcome, release=self.release,
                  tag=self.tag, detail=detail)
        except BaseException as lost:
            detail += f"; the audit line could not be written ({describe(lost)})"
        # bad input found before anything was pushed keeps its exit 2; once the host changed,
        # the run failed (exit 1) whatever the cause
        pushed = self.release_dir is not None or bool(back)
        code = exc.exit_code if isinstance(exc, VedfinError) and not pushed else 1
        return RunFailed(self.host.redact(f"{self.action} {self.env} {outcome}: {detail}"),
                         interrupted=interrupted, exit_code=code)

    def needs_put_back(self) -> bool:
        return False

    def retake_lock(self) -> bool:
        """After LockLost: when nobody took the lock (a "stale" lock removed by hand), take it
        again and put the env back under it; when another run holds it, leave the env alone."""
        try:
            return self.lock.try_acquire() is None
        except BaseException:
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
