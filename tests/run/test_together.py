"""Work beside work: both halves end before the run goes on, and the first failure is the
one reported (the main thread's, where a signal lands, before the other's)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from vedfin_ops.run.together import beside, one_at_a_time


def test_the_backup_and_the_upload_run_at_once() -> None:
    both = threading.Barrier(2, timeout=10)  # only passable when both run at once
    beside(both.wait, both.wait)


def test_a_failure_here_waits_for_the_work_beside_it_to_end() -> None:
    ended: list[str] = []

    def slow() -> None:
        time.sleep(0.3)
        ended.append("backup")

    def fail() -> None:
        raise RuntimeError("upload refused")

    with pytest.raises(RuntimeError, match="upload refused"):
        beside(fail, slow)
    assert ended == ["backup"]


def test_a_failure_beside_is_raised_once_this_side_is_done() -> None:
    ended: list[str] = []

    def fail() -> None:
        raise ValueError("backup failed")

    with pytest.raises(ValueError, match="backup failed"):
        beside(lambda: (time.sleep(0.2), ended.append("upload")), fail)
    assert ended == ["upload"]


def test_this_sides_failure_comes_first_when_both_fail() -> None:
    def fail(what: str) -> None:
        time.sleep(0.1 if what == "here" else 0)
        raise RuntimeError(what)

    with pytest.raises(RuntimeError, match=r"^here$"):
        beside(lambda: fail("here"), lambda: fail("there"))


def test_a_signal_while_waiting_lets_the_work_beside_finish_then_raises() -> None:
    from vedfin_ops.run.interrupts import Interrupted, signals_as_interrupts

    log: list[str] = []

    def slow() -> None:
        time.sleep(0.5)
        log.append("backup done")

    with pytest.raises(Interrupted), signals_as_interrupts(notice=lambda _m: None):
        beside(lambda: os.kill(os.getpid(), signal.SIGTERM), slow)
    assert log == ["backup done"]


def test_lines_from_two_threads_stay_whole() -> None:
    lines: list[str] = []
    say = one_at_a_time(lines.append)
    assert one_at_a_time(say) is say  # wrapped once, whoever wraps it again

    def talk(who: str) -> None:
        for i in range(200):
            say(f"{who} {i}")

    beside(lambda: talk("a"), lambda: talk("b"))
    assert sorted(lines) == sorted([f"a {i}" for i in range(200)] +
                                   [f"b {i}" for i in range(200)])


def test_a_notice_said_from_inside_say_does_not_wait_on_itself() -> None:
    """The run's signal handler says its notice through the run's `say`, in the thread that
    may be inside it already (a second Ctrl-C while the way back prints)."""
    lines: list[str] = []

    def sink(message: str) -> None:
        lines.append(message)
        if message == "putting the host back":
            say("interrupted again: still putting the host back")  # the handler, re-entered

    say = one_at_a_time(sink)
    beside(lambda: say("putting the host back"))
    assert lines == ["putting the host back", "interrupted again: still putting the host back"]
