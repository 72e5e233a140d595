"""Files and folders on the host: made, written, read, linked, removed; and the ways of
putting commands together (`all_of`, `each_of`, `before`, `labelled`)."""

from __future__ import annotations

from vedfin_ops.remote.quoting import sh, sh_join


def all_of(*commands: str) -> str:
    """Each command only once the one before it succeeded (`a && b`)."""
    return " && ".join(commands)


def each_of(*commands: str) -> str:
    """Every command, whatever the one before it did (`a; b`): answers read side by side."""
    return "; ".join(commands)


def before(command: str) -> str:
    """`command` as the start of another (a lock's take: `Lock.acquire(prefix=...)`): what
    follows runs only once it succeeded."""
    return f"{command} && "


def mkdir_p(*paths: str, mode: str = "750") -> str:
    return f"mkdir -p -m {sh(mode)} -- {sh_join(paths)}"


def audit_append(log: str, line: str) -> str:
    """One short `>>` write with O_APPEND: lines from concurrent writers never interleave."""
    return f"printf '%s\\n' {sh(line)} >> {sh(log)}"


def append_once(path: str, line: str) -> str:
    """`line` appended to `path` unless it is there already (a retried upload)."""
    return (f"grep -qxF -- {sh(line)} {sh(path)} 2>/dev/null || "
            f"printf '%s\\n' {sh(line)} >> {sh(path)}")


def tail(path: str, lines: int) -> str:
    return f"tail -n {int(lines)} -- {sh(path)} 2>/dev/null || true"


def read_file(path: str) -> str:
    return f"cat -- {sh(path)} 2>/dev/null || true"


def read_link(path: str) -> str:
    return f"readlink -- {sh(path)} 2>/dev/null || true"


def write_text(path: str, text: str) -> str:
    return f"printf '%s\\n' {sh(text)} > {sh(path)}"


def swap_symlink(target: str, link: str) -> str:
    """Point `link` at `target` atomically: a new link, then rename(2) over the old one."""
    tmp = f"{link}.new"
    return f"ln -sfn -- {sh(target)} {sh(tmp)} && mv -Tf -- {sh(tmp)} {sh(link)}"


def relink_or_remove(target: str, link: str) -> str:
    """`link` back on `target` when that folder is there, else no link at all (a host whose
    earlier shared files were never kept: the put-back then uses the live release's)."""
    return (f"if [ -d {sh(target)} ]; then {swap_symlink(target, link)}; "
            f"else rm -f -- {sh(link)}; fi")


def keep_files(source_dir: str, paths: list[str], target: str) -> str:
    """`paths` (relative to `source_dir`) copied, modes kept, into a new folder `target`
    (0700: an env file holds secrets), through a temp folder renamed into place; a folder
    already there holds the same files (its name is their hash) and is kept as it is."""
    tmp = sh(target + ".tmp")
    files = " ".join(sh(path) for path in sorted(paths))
    return (f"if [ ! -d {sh(target)} ]; then rm -rf -- {tmp} && mkdir -p -m 700 -- {tmp} && "
            f"(cd -- {sh(source_dir)} && cp -a --parents -- {files} {tmp}) && "
            f"mv -T -- {tmp} {sh(target)}; fi")


def remove_siblings(folder: str, keep: str) -> str:
    """Every entry of `folder` but `keep` removed (the shared files no link names)."""
    return (f"find {sh(folder)} -mindepth 1 -maxdepth 1 ! -name {sh(keep)} "
            f"-exec rm -rf -- {{}} + 2>/dev/null || true")


def remove_dirs(paths: list[str]) -> str:
    return f"rm -rf -- {sh_join(paths)}" if paths else "true"


def remove_files(paths: list[str]) -> str:
    return f"rm -f -- {sh_join(paths)}" if paths else "true"


def private_folder(path: str) -> str:
    """A backup folder: made if missing, 0700 either way."""
    return f"mkdir -p -- {sh(path)} && chmod 700 -- {sh(path)}"


def free_kib(path: str) -> str:
    """Prints the KiB free on `path`'s filesystem."""
    return f"df -kP {sh(path)} | awk 'NR==2{{print $4}}'"


def file_sha256(path: str) -> str:
    """Prints the file's sha256, or nothing when it cannot be read."""
    return f"sha256sum < {sh(path)} 2>/dev/null | cut -d' ' -f1"


def labelled(label: str, command: str) -> str:
    """`<label> <what command printed>` on one line: two questions in one round trip."""
    return f"printf '%s %s\\n' {sh(label)} \"$({command})\""
