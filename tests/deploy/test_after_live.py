"""The best-effort steps after a release is live: chains at once, a failure a warning, a
signal starts nothing new but lets the steps under way finish."""

from __future__ import annotations

import threading

import pytest

from vedfin_ops.deploy.after_live import Step, chains, run_steps
from vedfin_ops.run.together import one_at_a_time


def test_a_step_joins_the_chain_of_the_step_it_needs() -> None:
    steps = [Step("prune releases", print), Step("schedule", print),
             Step("prune images", print, needs="prune releases"), Step("off-hours", print),
             Step("off-hours settle", print, needs="off-hours")]
    assert [[s.name for s in c] for c in chains(steps)] == [
        ["prune releases", "prune images"], ["schedule"], ["off-hours", "off-hours settle"]]


def test_independent_steps_run_at_once_and_a_failure_skips_only_its_chain() -> None:
    both_started = threading.Barrier(2, timeout=10)  # only passable when two run at once
    lines: list[str] = []

    def fail() -> None:
        both_started.wait()
        raise RuntimeError("no route to host")

    steps = [Step("netdata", fail, failed="monitoring not applied", hint="fab monitoring.apply"),
             Step("uptime kuma", both_started.wait),
             Step("after netdata", lambda: lines.append("ran"), needs="netdata")]
    missed = run_steps(steps, one_at_a_time(lines.append))
    assert missed == ["netdata", "after netdata"]
    assert lines == ["warning: monitoring not applied (unexpected RuntimeError: no route to host; "
                     "fab monitoring.apply)"]


def test_ctrl_c_in_a_step_starts_no_other_and_waits_for_those_under_way() -> None:
    under_way = threading.Event()
    finished: list[str] = []

    def slow() -> None:
        under_way.set()
        threading.Event().wait(0.3)
        finished.append("slow")

    def interrupted() -> None:
        under_way.wait(10)
        raise KeyboardInterrupt

    steps = [Step("slow", slow), Step("ctrl-c", interrupted),
             Step("after ctrl-c", lambda: finished.append("never"), needs="ctrl-c")]
    with pytest.raises(KeyboardInterrupt):
        run_steps(steps, print)
    assert finished == ["slow"]


def test_a_signal_in_a_step_starts_no_other_and_waits_for_those_under_way() -> None:
    """SIGTERM sent while steps run in their threads: the main thread's handler raises, no
    step starts after it, and the run ends only once the steps under way are done."""
    import os
    import signal
    import time

    from vedfin_ops.run.interrupts import Interrupted, signals_as_interrupts

    log: list[str] = []

    def terminated() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        log.append("signalled step done")

    def slow() -> None:
        time.sleep(0.6)
        log.append("slow done")

    steps = [Step("signal", terminated), Step("slow", slow),
             Step("after slow", lambda: log.append("never"), needs="slow"),
             Step("after signal", lambda: log.append("never"), needs="signal")]
    with pytest.raises(Interrupted), signals_as_interrupts() as guard:
        run_steps(steps, print, hold=guard.deferred)
    assert sorted(log) == ["signalled step done", "slow done"]
