"""The operator's public key, which host.prepare authorizes for the deploy user.

`--key FILE` (a `.pub`, or a private key whose `.pub` is beside it); else the public half of
the identity this connection uses (`-i`, or the ssh_config entry's IdentityFile) when it is
beside it; else `~/.ssh/id_ed25519.pub`, then `id_ecdsa.pub`, then `id_rsa.pub`. Only a
public key is ever read: a file that holds a private key is refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vedfin_ops.errors import UsageError

KINDS = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
         "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
         "sk-ecdsa-sha2-nistp256@openssh.com")
DEFAULTS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


@dataclass(frozen=True)
class PublicKey:
    kind: str
    blob: str  # base64, as the file holds it
    comment: str = ""
    source: str = ""  # the file it came from (for messages)

    @property
    def line(self) -> str:
        """What goes into authorized_keys."""
        return " ".join(p for p in (self.kind, self.blob, self.comment) if p)

    @property
    def fragment(self) -> str:
        """What finds it in authorized_keys whatever its options or comment there."""
        return f"{self.kind} {self.blob}"


def parse(text: str, source: str = "the key") -> PublicKey:
    """One OpenSSH public key line (`<type> <base64> [comment]`), checked: its blob decodes
    and names the same type."""
    if "PRIVATE KEY" in text:
        raise UsageError(f"{source} is a private key: give its public half (.pub)")
    rows = [row.strip() for row in text.splitlines() if row.strip() and
            not row.strip().startswith("#")]
    if len(rows) != 1:
        raise UsageError(f"{source}: one public key line expected, found {len(rows)}")
    words = rows[0].split(None, 2)
    if len(words) < 2 or words[0] not in KINDS:
        raise UsageError(f"{source}: not an OpenSSH public key (`ssh-ed25519 AAAA... comment`)")
    try:
        raw = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{source}: its key is not base64") from None
    size = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else 0
    if raw[4:4 + size].decode("ascii", "replace") != words[0]:
        raise UsageError(f"{source}: the key's data does not say {words[0]}")
    comment = re.sub(r"[^\x20-\x7e]", "", words[2]).strip() if len(words) > 2 else ""
    return PublicKey(words[0], words[1], comment, source)


def read(path: str | os.PathLike[str]) -> PublicKey:
    file = Path(os.path.expanduser(str(path)))
    if not file.name.endswith(".pub") and file.with_name(file.name + ".pub").is_file():
        file = file.with_name(file.name + ".pub")  # a private key's path: its public half
    try:
        text = file.read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"--key {path}: cannot read it: {exc.strerror or exc}") from None
    return parse(text, str(file))


def identities(conn: Any) -> list[str]:
    """The private keys this connection offers: `-i`, then the ssh_config's IdentityFile."""
    found: list[str] = []
    given = (getattr(conn, "connect_kwargs", None) or {}).get("key_filename") or []
    for value in [given] if isinstance(given, str) else list(given):
        found.append(str(value))
    config = getattr(conn, "ssh_config", None) or {}
    found += [str(v) for v in config.get("identityfile", [])]
    return list(dict.fromkeys(found))


def public_key(conn: Any, key: str | None = None,
               home: Path | None = None) -> PublicKey:
    """See the module docstring; bad input (exit 2) when there is none."""
    if key:
        return read(key)
    candidates: Iterable[Path] = [
        *(Path(os.path.expanduser(i)).with_name(Path(i).name + ".pub")
          for i in identities(conn)),
        *((home or Path.home()) / ".ssh" / name for name in DEFAULTS)]
    for path in candidates:
        if path.is_file():
            return read(path)
    raise UsageError("host.prepare: no public key to authorize for the deploy user (none "
                     "beside this connection's identity, nor ~/.ssh/id_ed25519.pub, "
                     "id_ecdsa.pub, id_rsa.pub): give one with --key FILE.pub")
