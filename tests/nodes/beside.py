"""Modules that run beside the single-VPS sandbox's tests (their own engines: the cluster's
nodes, the bare VPS) on the unit tests' worker: they wait for that sandbox's registry and
images and hold the registry lock (shared) while they run, so its sandbox.down waits for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import ROOT, SANDBOX_DIR

SANDBOX_WAIT_S = 30 * 60


def _sandbox_ready() -> bool:
    """The other worker's `sandbox.up` has ended (it writes up_seconds last)."""
    state = SANDBOX_DIR / "state.json"
    try:
        return json.loads(state.read_text()).get("up_seconds", 0) > 0 and \
            (SANDBOX_DIR / "dokploy.yaml").exists()
    except (OSError, ValueError):
        return False


def _wait_for_the_sandbox() -> None:
    """Under xdist the other worker brings the sandbox up (one driver per engine): wait for
    it, or for its sandbox.down's mark (tests/sandbox_sync.py)."""
    from tests.sandbox_sync import marked

    deadline = time.monotonic() + SANDBOX_WAIT_S
    while not (_sandbox_ready() or marked("sandbox-down")):
        if time.monotonic() > deadline:
            pytest.fail(f"the sandbox was not up within {SANDBOX_WAIT_S} s")
        time.sleep(5)


@contextlib.contextmanager
def beside_the_sandbox() -> Iterator[bool]:
    """The sandbox up for the module's body; yields True when the module brought it up itself
    (the other worker's sandbox.down came first: it takes it down again on the way out). Alone
    (`-n0`) the module brings the sandbox up (idempotent) and leaves it up."""
    import sandbox
    from tests.sandbox_sync import marked, registry_lock

    under_xdist = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    if under_xdist:
        _wait_for_the_sandbox()
    with contextlib.ExitStack() as stack:
        own_sandbox = False
        if under_xdist:
            stack.enter_context(registry_lock(exclusive=False))
            own_sandbox = marked("sandbox-down")
        if own_sandbox or not under_xdist:
            sandbox.up(use_existing=True, workdir=SANDBOX_DIR, shipped=ROOT / "dokploy.yaml",
                       progress=lambda _m: None)
        try:
            yield own_sandbox
        finally:
            if own_sandbox:
                sandbox.down(SANDBOX_DIR, progress=lambda _m: None)
