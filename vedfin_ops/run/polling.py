"""One way to wait: poll a probe until it answers, retrying transient errors, within a deadline.

The tool's polls go through `until` (the rollout watch, postgres becoming healthy, a lock
waited for, Netdata's reload, Uptime Kuma's first checks, smoke's patience with a starting
edge, a cluster drain or join converging), and the check runner's retry backoff sleeps on a
`Clock` too: a transient SSH error is retried in one place instead of ending a loop that
someone wrote by hand. The clock is injectable where the caller passes one (an operation
passes its own to the rollout watch, its locks, Netdata's reload, a restore's wait for
postgres and the cluster waits), so unit tests drive hours of engine time in microseconds;
smoke's checks, Uptime Kuma's first checks and db-init's wait for postgres take none and run
on the real clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Clock:
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


REAL = Clock()


class TimedOut(Exception):
    """The deadline passed; `last` is the probe's last answer or error, for the message."""

    def __init__(self, last: str) -> None:
        super().__init__(last)
        self.last = last


def until(probe: Callable[[], T | None], *, timeout: float, interval: float = 1.0,
          clock: Clock = REAL, transient: tuple[type[Exception], ...] = (),
          on_transient: Callable[[Exception], None] | None = None,
          describe: Callable[[], str] | None = None) -> T:
    """Call `probe` until it returns something other than None.

    `transient` errors count as "not yet" until the deadline (then the last one is the
    reason); any other error propagates at once. `describe` says where things stood when
    time ran out.
    """
    deadline = clock.now() + timeout
    last = "no answer"
    while True:
        try:
            answer = probe()
        except transient as exc:
            last = str(exc)
            if on_transient is not None:
                on_transient(exc)
        else:
            if answer is not None:
                return answer
            last = describe() if describe is not None else "not yet"
        if clock.now() >= deadline:
            raise TimedOut(last)
        clock.sleep(interval)
