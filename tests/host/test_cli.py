"""`fab -H HOST host.prepare` as a user runs it: the key is bad input before any host is
reached, an unreachable host is one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import PRIVATE_KEY_HEAD, ROOT
from tests.host.fake_vps import public_key

FAB = [shutil.which("fab") or "fab", "-r", str(ROOT)]


def run(*args: str, tool: list[str] = FAB, cwd: Path = ROOT
        ) -> subprocess.CompletedProcess[str]:
    """In the checkout, with the shipped config (VEDFIN_CONFIG unset)."""
    env = {k: v for k, v in os.environ.items() if k != "VEDFIN_CONFIG"}
    return subprocess.run([*tool, *args], cwd=cwd, env=env, text=True, capture_output=True,
                          timeout=60, check=False)


def test_a_key_that_is_not_a_public_key_is_refused_before_the_host(tmp_path: Path) -> None:
    missing = run("-H", "root@127.0.0.1:1", "host.prepare", "--key", str(tmp_path / "none.pub"),
                  tool=FAB, cwd=ROOT)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip() == (f"error: --key {tmp_path / 'none.pub'}: cannot read it: "
                                      f"No such file or directory")
    private = tmp_path / "id"
    private.write_text(f"{PRIVATE_KEY_HEAD}\nAAAA\n")
    refused = run("-H", "root@127.0.0.1:1", "host.prepare", "--key", str(private), tool=FAB)
    assert refused.returncode == 2 and "is a private key" in refused.stderr, refused.stderr


def test_an_unreachable_host_is_one_line(tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text(public_key() + "\n")
    result = run("-H", "root@127.0.0.1:1", "host.prepare", "--plan", "--key", str(key),
                 "--accept-new-host-key", tool=FAB)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().startswith("error: cannot reach root@127.0.0.1:1"), \
        result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
