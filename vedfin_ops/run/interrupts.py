"""Ctrl-C, SIGTERM and SIGHUP end a run the same way: as `Interrupted`, then converged.

A CI runner cancelling a job sends SIGTERM; a closed terminal sends SIGHUP. Python's default
for both is to die on the spot, skipping the rollback, the audit line and the lock release.
Here each becomes `Interrupted` (a KeyboardInterrupt, so no `except Exception` swallows it)
raised in the main thread, after `on_signal` has closed the SSH channel the run was waiting
on (Fabric otherwise waits for the remote command to finish before letting go).

While the run puts the host back (`shielded`), further signals are noted, not raised: a
second Ctrl-C must not leave production half rolled back. `kill -9` still ends it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    def __init__(self, signame: str = "SIGINT") -> None:
        super().__init__(signame)
        self.signame = signame

    @property
    def reason(self) -> str:
        return "interrupted (Ctrl-C)" if self.signame == "SIGINT" else \
            f"interrupted ({self.signame})"


class Guard:
    def __init__(self, on_signal: Callable[[], None] | None,
                 notice: Callable[[str], None] | None,
                 busy: str = "putting the host back") -> None:
        self.on_signal, self.notice = on_signal, notice
        self.busy = busy  # what a second signal is told the run is still doing
        self.shield_depth = 0
        self.tripped = False  # one interrupt was raised: the run is converging from here on
        self.received: list[str] = []

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if self.shield_depth or self.tripped:
            # a second Ctrl-C, even one landing before the handler got to shield itself,
            # must not cut the put-back short
            if self.notice is not None:
                self.notice(f"{name} received: still {self.busy}, one moment "
                            f"(kill -9 would leave it half done)")
            return
        self.tripped = True
        if self.on_signal is not None:
            self.on_signal()
        raise Interrupted(name)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        self.shield_depth += 1
        try:
            yield
        finally:
            self.shield_depth -= 1


    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Shielded, but a signal that arrived meanwhile is raised once the block is done:
        for a step that must not be cut in half, in a run that must still stop after it."""
        seen = len(self.received)
        with self.shielded():
            yield
        if len(self.received) > seen and not self.tripped and not self.shield_depth:
            self.tripped = True
            if self.on_signal is not None:
                self.on_signal()
            raise Interrupted(self.received[-1])


@contextmanager
def signals_as_interrupts(on_signal: Callable[[], None] | None = None,
                          notice: Callable[[str], None] | None = None,
                          busy: str = "putting the host back") -> Iterator[Guard]:
    """Install the handlers for the duration (main thread only; elsewhere a no-op guard)."""
    guard = Guard(on_signal, notice, busy)
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous: dict[signal.Signals, Any] = {}
    for sig in HANDLED:
        previous[sig] = signal.signal(sig, guard.handle)
    try:
        yield guard
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
