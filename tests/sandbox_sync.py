"""Between the two pytest workers: the cluster's tests (tests/nodes) use the sandbox's registry
while the sandbox's own tests run on the other worker.

Markers are per test run (xdist's testrun uid), so one left by an earlier run never counts; the
registry lock is an flock, so a killed run holds nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

MARKERS = Path(__file__).resolve().parent.parent / "build" / "test-markers"


def _path(name: str) -> Path:
    return MARKERS / f"{os.environ.get('PYTEST_XDIST_TESTRUNUID', 'one-process')}.{name}"


def mark(name: str) -> None:
    MARKERS.mkdir(parents=True, exist_ok=True)
    _path(name).write_text("")


def marked(name: str) -> bool:
    return _path(name).exists()


@contextlib.contextmanager
def registry_lock(*, exclusive: bool) -> Iterator[None]:
    """Shared while the nodes pull from the sandbox registry; exclusive for a test that
    stops it (it waits for the nodes' tests, at most a few minutes, or they wait for it)."""
    MARKERS.mkdir(parents=True, exist_ok=True)
    with (MARKERS / "registry.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
