"""The steps after a release is live, run by one best-effort runner.

Once `current` has moved, the deploy has succeeded: nothing after it may turn the result
into a failure or leave a step half-tried without saying so. Each step here either finishes
or becomes one `warning:` line naming what was not done and the command that does it by
hand; a step that builds on another (old images go only once the releases naming them are
gone) is skipped when that one failed. Ctrl-C and SIGTERM are not `Exception`s: they still
end the run, which the operation's own handling reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vedfin_ops.run.operation import Say, describe


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


def run_steps(steps: Sequence[Step], say: Say) -> list[str]:
    """Every step in order; returns the names of those that failed or were skipped."""
    done: set[str] = set()
    missed: list[str] = []
    for step in steps:
        if step.needs and step.needs not in done:
            missed.append(step.name)
            continue
        try:
            step.run()
        except Exception as exc:  # the release is live: a step left undone is a warning
            say(warning(step, exc))
            missed.append(step.name)
        else:
            done.add(step.name)
    return missed
