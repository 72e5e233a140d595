"""The one rule for an image tag, used by render, deploy and migrate alike.

Docker's own grammar, matched in full (`re.fullmatch`): a `^...$` with `re.match` lets a
trailing newline through, and a tag reaches stack files and shell commands.
"""

from __future__ import annotations

import re

from vedfin_ops.errors import UsageError

TAG_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
TAG_RE = re.compile(TAG_PATTERN)


def check_tag(tag: str, where: str = "--tag") -> str:
    if not isinstance(tag, str) or TAG_RE.fullmatch(tag) is None:
        raise UsageError(f"{where}: {tag!r} is not a valid image tag ({TAG_PATTERN})")
    return tag
