"""A real browser for the HTML report: Debian's headless Chromium loads a page and gives back
the DOM it built (scripts run, markup parsed) and a screenshot kept under build/ as a test
artifact. scripts/setup.sh installs `chromium`; a machine without it fails these tests unless
VEDFIN_ALLOW_SKIP=1."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--no-first-run", "--disable-extensions"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("VEDFIN_ALLOW_SKIP") == "1":
            pytest.skip("no chromium")
        pytest.fail("no chromium: apt-get install chromium (scripts/setup.sh does)")
    return found


def dom(page: Path) -> str:
    """The DOM after Chromium loaded `page` (and ran whatever script it would run)."""
    done = subprocess.run([chromium(), *_FLAGS, "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-500:]
    return done.stdout


def screenshot(page: Path, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    done = subprocess.run([chromium(), *_FLAGS, f"--screenshot={target}",
                           "--window-size=1280,2200", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and target.stat().st_size > 1000, done.stderr[-500:]
    return target
