"""secret_store: the secrets file is refused when loose, unreadable or not git-ignored, and a
URL's password never reaches a message."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vedfin_ops.config.model import Config
from vedfin_ops.config.secret_store import generate, mask_urls, read_file, resolve
from vedfin_ops.errors import UsageError
from vedfin_ops.remote.host import Host, connect

Variant = Callable[[Callable[[dict[str, Any]], Any]], Config]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def private_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def with_secrets_file(variant: Variant, path: Path) -> Config:
    return variant(lambda data: data.__setitem__("secretsFile", str(path)))


# --- reading -------------------------------------------------------------------------------

def test_a_private_file_is_read(tmp_path: Path) -> None:
    path = private_file(tmp_path / "s.env", b"# c\nA=1\nB=x=y\n")
    assert read_file(path) == {"A": "1", "B": "x=y"}
    assert read_file(tmp_path / "absent.env") == {}


def test_a_file_that_is_not_utf8_is_bad_input(tmp_path: Path) -> None:
    path = private_file(tmp_path / "s.env", b"A=caf\xe9\n")
    with pytest.raises(UsageError, match="not UTF-8") as info:
        read_file(path)
    assert str(path) in str(info.value) and "caf" not in str(info.value)
    assert not str(info.value).startswith("error:")


def test_a_folder_is_bad_input(tmp_path: Path) -> None:
    folder = tmp_path / "secrets.env"
    folder.mkdir(mode=0o700)
    with pytest.raises(UsageError, match="a folder") as info:
        read_file(folder)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004, 0o620])
def test_a_file_others_may_open_is_refused_like_a_loose_ssh_key(tmp_path: Path,
                                                                 mode: int) -> None:
    path = private_file(tmp_path / "s.env", b"A=1\n", mode)
    with pytest.raises(UsageError) as info:
        read_file(path)
    message = str(info.value)
    assert str(path) in message and f"{mode:04o}" in message
    assert f"chmod 600 {path}" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_fine(tmp_path: Path, mode: int) -> None:
    assert read_file(private_file(tmp_path / "s.env", b"A=1\n", mode)) == {"A": "1"}


def test_resolve_refuses_a_loose_file_too(tmp_path: Path, variant: Variant) -> None:
    path = private_file(tmp_path / "s.env", b"POSTGRES_PASSWORD=x\n", 0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        resolve(with_secrets_file(variant, path), "production", environ={})


def test_a_value_with_a_newline_message_has_no_prefix(variant: Variant, tmp_path: Path) -> None:
    config = with_secrets_file(variant, tmp_path / "none.env")
    with pytest.raises(UsageError) as info:
        resolve(config, "production", environ={"POSTGRES_PASSWORD": "a\nb"})
    assert str(info.value).startswith("secret POSTGRES_PASSWORD: ")


# --- generate: 0600, and never where git would pick it up ----------------------------------

def test_generate_writes_0600_outside_git(tmp_path: Path, variant: Variant) -> None:
    path = tmp_path / "out" / "secrets.env"
    result = generate(with_secrets_file(variant, path), "production")
    assert result.generated and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert set(read_file(path)) == set(result.generated)


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


@needs_git
def test_generate_refuses_a_file_git_would_commit(tmp_path: Path, variant: Variant) -> None:
    git(tmp_path, "init", "-q")
    path = tmp_path / ".vedfin" / "secrets.env"
    config = with_secrets_file(variant, path)
    with pytest.raises(UsageError) as info:
        generate(config, "production")
    message = str(info.value)
    assert "not git-ignored" in message and f"/.vedfin/secrets.env to {tmp_path}/.gitignore" \
        in message
    assert not path.exists()
    (tmp_path / ".gitignore").write_text(".vedfin/\n")
    assert generate(config, "production").generated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@needs_git
def test_generate_refuses_a_tracked_secrets_file(tmp_path: Path, variant: Variant) -> None:
    git(tmp_path, "init", "-q")
    path = private_file(tmp_path / "secrets.env", b"GEMINI_API_KEY=x\n")
    git(tmp_path, "add", "secrets.env")
    (tmp_path / ".gitignore").write_text("secrets.env\n")  # too late: it is tracked
    with pytest.raises(UsageError, match=r"tracked by git.*git rm --cached secrets.env"):
        generate(with_secrets_file(variant, path), "production")
    assert path.read_bytes() == b"GEMINI_API_KEY=x\n"


# --- URLs with passwords -------------------------------------------------------------------

@pytest.mark.parametrize(("text", "masked"), [
    ("postgresql://user:pass@host:5432/db", "postgresql://user:***@host:5432/db"),
    ("could not connect: 'redis://:s3cr3t@redis:6379/0' refused",
     "could not connect: 'redis://:***@redis:6379/0' refused"),
    ("postgres://u:p@ss:w/rd@db/x and more", "postgres://u:***@db/x and more"),
    ("no password: postgresql://user@host/db https://example.com:8443/x",
     "no password: postgresql://user@host/db https://example.com:8443/x"),
    ("two a://u:p@h b://v:q@k", "two a://u:***@h b://v:***@k"),
])
def test_mask_urls_examples(text: str, masked: str) -> None:
    assert mask_urls(text) == masked
    assert mask_urls(masked) == masked


PASSWORD = st.text(alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")),
                   min_size=1, max_size=40)
USER = st.from_regex(r"[A-Za-z0-9._~-]{0,12}", fullmatch=True)
HOST = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?(:[0-9]{1,5})?", fullmatch=True)
AROUND = st.text(alphabet=st.characters(blacklist_characters="@:", blacklist_categories=("Cs",)),
                 max_size=30)


@given(scheme=st.sampled_from(["postgresql", "postgres", "redis", "mysql+pymysql", "amqp"]),
       user=USER, password=PASSWORD, host=HOST, before=AROUND, after=AROUND)
def test_mask_urls_hides_any_password(scheme: str, user: str, password: str, host: str,
                                      before: str, after: str) -> None:
    text = f"{before} {scheme}://{user}:{password}@{host}/db {after}"
    masked = mask_urls(text)
    assert masked == f"{before} {scheme}://{user}:***@{host}/db {after}"
    assert mask_urls(masked) == masked


def test_host_redact_masks_urls(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  UserKnownHostsFile {tmp_path}/known_hosts\n")
    host = Host(connect("target", config))
    host.secrets.append("tok-123456")
    assert host.redact("DATABASE_URL=postgresql://app:p%40ss@db:5432/v token tok-123456") == \
        "DATABASE_URL=postgresql://app:***@db:5432/v token ***"
