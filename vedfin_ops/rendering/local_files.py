"""Writing a render to a local folder (`inv render --out DIR`)."""

from __future__ import annotations

from pathlib import Path

from vedfin_ops.config.secret_store import write_private
from vedfin_ops.errors import UsageError
from vedfin_ops.rendering.files import Rendered


def write_tree(rendered: Rendered, out: Path) -> list[Path]:
    """Write every file; env files (which may hold secrets) as 0600 from their first byte.

    A folder that cannot be written is bad input (exit 2): one line naming the path and the
    system's reason."""
    written = []
    for rel, text in sorted(rendered.items()):
        path = out / rel
        try:
            if rendered.is_secret(rel):
                write_private(path, text)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        except OSError as exc:
            where = exc.filename or path
            raise UsageError(f"--out {out}: cannot write {where}: "
                             f"{exc.strerror or exc}") from None
        written.append(path)
    return written
