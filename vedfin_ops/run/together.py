"""Work that runs at once over the run's one SSH connection (a channel each), and ends whole.

Two CPython traps shape this: a signal raised inside `Thread.start` loses track of a thread
already running (so threads start with signals deferred), and a `Thread.join` that a signal
cuts short marks a running thread stopped (3.11; so each thread's end is an Event, waited for
in short slices). Signals reach the main thread only: the run's handler cuts the commands
under way (`cancel_running`), so the threads end soon after and are always waited for before
the run goes on to its way back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext

from vedfin_ops.run.operation import Say

WAKE = 0.2  # seconds between the main thread's looks at a pending signal


def one_at_a_time(say: Say) -> Say:
    """`say` for threads: whole lines, never two threads' halves (`print` writes the line
    and its end apart)."""
    # reentrant: the run's signal handler says its notice through this `say`, in the main
    # thread, possibly while that thread is inside it (a second Ctrl-C during the way back)
    lock = threading.RLock()

    def said(message: str) -> None:
        with lock:
            say(message)

    said.one_at_a_time = True  # type: ignore[attr-defined]
    return said if not getattr(say, "one_at_a_time", False) else say


def start(jobs: Sequence[Callable[[], object]], name: str,
          hold: Callable[[], ContextManager[object]] = nullcontext,
          ) -> tuple[list[threading.Event], BaseException | None]:
    """Each job in a thread of its own; returns the Events set at the end of those started
    (wait on them, never on `Thread.join`) and the signal that stopped the starting, if one
    did. `hold` defers signals while the threads start (the run's `Guard.deferred`)."""
    ends = [threading.Event() for _ in jobs]

    def run(job: Callable[[], object], end: threading.Event) -> None:
        try:
            job()
        finally:
            end.set()

    started: list[threading.Event] = []
    try:
        with hold():  # a signal that came meanwhile raises at its end
            for i, (job, end) in enumerate(zip(jobs, ends, strict=True)):
                threading.Thread(target=run, args=(job, end), name=f"{name}-{i}",
                                 daemon=True).start()  # signals deferred: nothing between
                started.append(end)                   # the two lines
    except BaseException as exc:
        return started, exc
    return started, None


def wait_out(ends: Iterable[threading.Event], on_signal: Callable[[], None]
             ) -> BaseException | None:
    """Every `end` set; a signal (or Ctrl-C) meanwhile calls `on_signal` and the wait goes
    on. Returns the first such interruption, for the caller to raise once all have ended."""
    caught: BaseException | None = None
    pending = list(ends)
    while pending:
        try:
            while not pending[0].wait(WAKE):  # a short wait: a signal the kernel handed to
                pass                          # another thread is raised only when this runs
            pending.pop(0)
        except BaseException as exc:
            on_signal()
            caught = caught or exc
    return caught


def beside(here: Callable[[], object], *there: Callable[[], object],
           hold: Callable[[], ContextManager[object]] = nullcontext) -> None:
    """Each of `there` in a thread while `here` runs in this one; returns once all have
    ended, and raises the first failure: this thread's (a signal lands here) before the
    others', in their order. A failure of one does not stop the others: each is a step that
    must end whole. `hold` defers signals while the threads start (the run's
    `Guard.deferred`)."""
    errors: list[BaseException | None] = [None] * len(there)

    def job(index: int) -> Callable[[], None]:
        def run() -> None:
            try:
                there[index]()
            except BaseException as exc:
                errors[index] = exc
        return run

    started, caught = start([job(i) for i in range(len(there))], "beside", hold)
    if caught is None:
        try:
            here()
        except BaseException as exc:
            caught = exc
    interrupted = wait_out(started, lambda: None)  # the run's handler cut their commands
    failure = caught or interrupted or next((e for e in errors if e is not None), None)
    if failure is not None:
        raise failure
