"""The steps after a release is live, run by one best-effort runner.

Once `current` has moved, the deploy has succeeded: nothing after it may turn the result
into a failure or leave a step half-tried without saying so. Each step here either finishes
or becomes one `warning:` line naming what was not done and the command that does it by
hand; a step that builds on another (old images go only once the releases naming them are
gone) is skipped when that one failed. Ctrl-C and SIGTERM are not `Exception`s: they still
end the run, which the operation's own handling reports.

Steps that do not build on each other run at once, each chain (a step and those that need it)
in its own thread over the run's one SSH connection (a channel each: the handshake stays
one): they were 3.6 s one after another on the sandbox, mostly waiting on round trips. A
signal or Ctrl-C starts no further step; the run's handler cuts the commands of those under
way (each becomes its warning) and they end before the run does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass

from vedfin_ops.run.operation import Say, describe
from vedfin_ops.run.together import start, wait_out

AT_ONCE = 4  # channels at a time beside the run's own (sshd's MaxSessions is 10)


@dataclass(frozen=True)
class Step:
    name: str  # as the runner refers to it in `needs`
    run: Callable[[], object]
    failed: str = ""  # the warning's words when it raises: "old releases not pruned"
    hint: str = ""  # how to do it by hand, after the reason: "fab db.schedule"
    needs: str = ""  # a step that must have succeeded first


def warning(step: Step, exc: BaseException) -> str:
    hint = f"; {step.hint}" if step.hint else ""
    return f"warning: {step.failed or step.name + ' failed'} ({describe(exc)}{hint})"


def chains(steps: Sequence[Step]) -> list[list[Step]]:
    """The steps in chains, in their order: a step joins the chain of the one it needs."""
    out: list[list[Step]] = []
    home: dict[str, list[Step]] = {}
    for step in steps:
        chain = home.get(step.needs) if step.needs else None
        if chain is None:
            chain = []
            out.append(chain)
        chain.append(step)
        home[step.name] = chain
    return out


def run_steps(steps: Sequence[Step], say: Say,
              hold: Callable[[], ContextManager[object]] = nullcontext) -> list[str]:
    """Every step, the chains at once; returns the names of those that failed or were
    skipped, in the steps' order. `say` must be the steps' own, `one_at_a_time`; `hold`
    defers signals while the threads start (the run's `Guard.deferred`): one raised inside
    `Thread.start` would lose track of a thread already running."""
    done: set[str] = set()
    errors: list[BaseException] = []  # a step's own KeyboardInterrupt, for this thread
    stop = threading.Event()
    queue = chains(steps)
    taking = threading.Lock()

    def take_chains() -> None:
        while not stop.is_set():
            with taking:
                if not queue:
                    return
                chain = queue.pop(0)
            for step in chain:
                if stop.is_set() or (step.needs and step.needs not in done):
                    continue
                try:
                    step.run()
                except Exception as exc:  # the release is live: a step undone is a warning
                    say(warning(step, exc))
                except BaseException as exc:
                    stop.set()
                    errors.append(exc)
                    return
                else:
                    done.add(step.name)

    started, caught = start([take_chains] * max(1, min(AT_ONCE, len(queue))), "after-live",
                            hold)
    if caught is not None:  # a signal: no new step from here
        stop.set()
    # the steps under way run to their end; a signal meanwhile stops new ones
    interrupted = wait_out(started, stop.set)
    caught = caught or interrupted
    caught = caught or (errors[0] if errors else None)
    if caught is not None:
        raise caught
    return [step.name for step in steps if step.name not in done]
