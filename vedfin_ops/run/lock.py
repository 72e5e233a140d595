"""Locks on the host: one deploy per env, and one writer of the shared stack at a time.

A lock is a directory holding who took it (host, pid, since, action), a random token and a
heartbeat file, made whole beside its place and renamed there (`commands.lock_acquire`: a
take cut at any step leaves no lock or a whole one). The token means a run only ever removes
the lock it took; the heartbeat and the pid let the next run tell a live holder from one that
was killed with `kill -9` (the only exit that skips the release).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from vedfin_ops.errors import CheckFailed, VedfinError
from vedfin_ops.remote import commands
from vedfin_ops.run.layout import holder_line
from vedfin_ops.run.polling import REAL, Clock, TimedOut, until

BEAT_EVERY = 15.0  # seconds between heartbeats; a holder silent for STALE_AFTER is suspect
STALE_AFTER = 300.0


class Runner(Protocol):
    def run(self, command: str, *, what: str, stdin: str | None = None, check: bool = True,
            stream: Any = None, timeout: float | None = 600) -> str: ...


class LockHeld(CheckFailed):
    """Another run holds the lock (exit 1); the message says whether it looks alive."""


class LockLost(VedfinError):
    """Our lock was removed (`lock.release`) and maybe taken by another run: stop at once and
    move nothing, since the engine is now that run's to drive. Not a CheckFailed, so a
    retrying poll never swallows it."""


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Holder:
    """What the lock says about its holder, parsed leniently: a lock written by an older
    version, or cut off mid-write, still gives a message rather than a traceback."""

    who: str = "unknown holder"
    host: str = ""
    pid: int = 0
    since: str = ""
    action: str = ""
    tag: str = ""

    @classmethod
    def parse(cls, text: str) -> Holder:
        try:
            data = json.loads(text.strip() or "{}")
        except ValueError:
            return cls(who=f"unreadable holder file ({text.strip()[:60]!r})")
        if not isinstance(data, dict):
            return cls()
        pid = data.get("pid")
        return cls(who=str(data.get("who") or "unknown holder"), host=str(data.get("host", "")),
                   pid=pid if isinstance(pid, int) else 0, since=str(data.get("since", "")),
                   action=str(data.get("action", "")), tag=str(data.get("tag", "")))

    def process_gone(self) -> bool:
        """True only when the holder ran on this machine and its process no longer exists."""
        if not self.pid or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self, silent_for: int | None) -> str:
        parts = [self.who]
        if self.action:
            parts.append(self.action + (f" {self.tag}" if self.tag and self.tag not in
                                        self.action else ""))
        if self.pid:
            parts.append(f"pid {self.pid}")
        if self.since:
            parts.append(f"since {self.since}")
        text = ", ".join(parts)
        if self.process_gone():
            return f"{text}; STALE: that process is gone"
        if silent_for is not None and silent_for > STALE_AFTER:
            return f"{text}; probably stale: no heartbeat for {silent_for}s"
        if silent_for is not None:
            return f"{text}; alive: heartbeat {silent_for}s ago"
        return text


def parse_held(out: str) -> tuple[int | None, Holder]:
    """The loser's side of `commands.lock_acquire`: `held`, seconds since the heartbeat, holder."""
    lines = out.splitlines()[1:]
    silent: int | None = None
    if lines and lines[0].strip().lstrip("-").isdigit():
        silent = int(lines[0].strip())
        lines = lines[1:]
    return silent, Holder.parse("\n".join(lines))


class Lock:
    """One lock directory on the host, held by this process while `held()` runs."""

    def __init__(self, host: Runner, path: str, label: str, *, action: str, tag: str = "",
                 hint: str = "", clock: Clock = REAL) -> None:
        self.host, self.path, self.label = host, path, label
        self.action, self.tag, self.hint, self.clock = action, tag, hint, clock
        self.token = secrets.token_hex(8)
        self.taken = False
        self._mutex = threading.RLock()  # beat (a step's thread) against release (the run's)
        self._last_beat = 0.0

    def holder_json(self) -> str:
        return holder_line(who(), socket.gethostname(), os.getpid(), now_iso(), self.action,
                           self.tag)

    def try_acquire(self, prefix: str = "") -> LockHeld | None:
        try:
            out = self.host.run(prefix + commands.lock_acquire(self.path, self.holder_json(),
                                                               self.token), what="lock")
        except BaseException:
            self.taken = True  # it may have been taken before the link went: the token decides
            raise
        if out.strip().startswith("acquired"):
            self.taken = True
            self._last_beat = self.clock.now()
            return None
        silent, holder = parse_held(out)
        return LockHeld(f"{self.label} is locked by another run: {holder.describe(silent)}"
                        + (f" ({self.hint})" if self.hint else ""))

    def acquire(self, *, wait: float = 0.0, prefix: str = "") -> None:
        """Take the lock; with `wait`, keep trying that long (the shared lock: db-init of
        another env takes seconds), else fail at once naming the holder."""
        held = self.try_acquire(prefix)
        if held is None:
            return
        if wait <= 0:
            raise held
        last = [held]

        def probe() -> bool | None:
            attempt = self.try_acquire(prefix)
            if attempt is None:
                return True
            last[0] = attempt
            return None

        try:
            until(probe, timeout=wait, interval=1.0, clock=self.clock)
        except TimedOut:
            raise last[0] from None

    def beat(self, *, force: bool = False) -> None:
        """Refresh the heartbeat, at most every BEAT_EVERY seconds (cheap to call often);
        raises LockLost when the lock is no longer ours."""
        with self._mutex:
            self._beat(force)

    def _beat(self, force: bool) -> None:
        if not self.taken or (not force and self.clock.now() - self._last_beat < BEAT_EVERY):
            return
        self._last_beat = self.clock.now()
        out = self.host.run(commands.lock_beat(self.path, self.token), what="heartbeat",
                            check=False)
        if out.strip() == "lost":
            self.taken = False  # not ours to remove any more
            raise LockLost(f"{self.label}: the lock {self.path} was released by someone else "
                           f"while this run held it; stopped")

    def keep_alive(self, command: str) -> str:
        """`command` with the heartbeat refreshed on the host while it runs (a migration can
        be silent for longer than STALE_AFTER); plain `command` when the lock is not held."""
        if not self.taken:
            return command
        return commands.with_heartbeat(command, self.path, self.token, int(BEAT_EVERY))

    def release(self) -> str:
        """Remove our lock; an error is returned, not raised (it runs on the way out of a
        failure already being reported, and the other locks must still go): the link may be
        gone. A Ctrl-C mid-run still interrupts; on the way out signals are shielded."""
        with self._mutex:
            return self._release()

    def _release(self) -> str:
        if not self.taken:
            return ""
        try:
            self.host.run(commands.lock_release(self.path, self.token), what="unlock",
                          check=False)
        except Exception as exc:  # a reason, never a second failure
            return (f"the lock {self.path} could not be released ({exc or type(exc).__name__});"
                    f" {self.hint or 'remove it when no run holds it'}")
        self.taken = False
        return ""

    @contextmanager
    def held(self, *, wait: float = 0.0, prefix: str = "") -> Iterator[Lock]:
        self.acquire(wait=wait, prefix=prefix)
        try:
            yield self
        finally:
            self.release()


def shared_lock(host: Runner, path: str, *, action: str, tag: str = "",
                clock: Clock = REAL) -> Lock:
    """The lock of the shared stack (postgres, redis, edge): deploys that change it and
    db-init take it, whichever env they run for."""
    return Lock(host, path, "the shared stack", action=action, tag=tag,
                hint="if it is stale: fab -H HOST lock.release --shared", clock=clock)
