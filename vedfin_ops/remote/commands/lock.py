"""The lock on the host: taken whole or not at all, its heartbeat, released by token."""

from __future__ import annotations

from vedfin_ops.remote.quoting import sh


def lock_acquire(lock_dir: str, holder_json: str, token: str) -> str:
    """The lock is made whole in a temporary folder beside it (holder, token, heartbeat),
    then renamed into place: rename(2) is atomic and refuses a folder that holds files, so
    of two runs exactly one takes it, and a take cut at any step leaves no lock or a whole
    one (never one without its holder, which no later run could name). Whatever is at the
    lock's path already holds it, even an empty folder (an older version's take). A write
    that fails (a full disk) exits non-zero, leaving nothing. The loser prints `held`, how
    many seconds ago the holder last beat, and the holder, so it can tell a stale lock."""
    d = sh(lock_dir)
    return (f"{{ n=$(mktemp -d -- {sh(lock_dir + '.new.XXXXXX')}) || exit 1; "
            f"if ! {{ printf '%s\\n' {sh(holder_json)} > \"$n/holder\" && "
            f"printf '%s\\n' {sh(token)} > \"$n/token\" && touch -- \"$n/heartbeat\" && "
            f"chmod 750 -- \"$n\"; }}; then rm -rf -- \"$n\"; exit 1; fi; "
            f"if [ ! -e {d} ] && [ ! -L {d} ] && mv -T -- \"$n\" {d} 2>/dev/null; then "
            f"echo acquired; "
            f"else rm -rf -- \"$n\"; echo held; "
            f"t=$(stat -c %Y -- {d}/heartbeat {d} 2>/dev/null | head -n 1); "
            f"echo $(( $(date +%s) - ${{t:-$(date +%s)}} )); "
            f"cat -- {d}/holder 2>/dev/null || true; fi; }}")


def lock_beat(lock_dir: str, token: str) -> str:
    """Touch the heartbeat only while the lock is still ours; `lost` when it is not."""
    d = sh(lock_dir)
    return (f"if [ \"$(cat -- {d}/token 2>/dev/null)\" = {sh(token)} ]; then "
            f"touch -- {d}/heartbeat; else echo lost; fi")


def with_heartbeat(command: str, lock_dir: str, token: str, every: int) -> str:
    """Run `command` while a background loop on the host touches the heartbeat every `every`
    seconds. The loop ends with the command, with its shell, or when the lock stops being
    ours, so an abandoned run never keeps a lock looking alive; the exit status is the
    command's."""
    d = sh(lock_dir)
    loop = (f"while sleep {int(every)} && kill -0 $$ 2>/dev/null && "
            f"[ \"$(cat -- {d}/token 2>/dev/null)\" = {sh(token)} ]; do "
            f"touch -- {d}/heartbeat; done")
    return (f"( {loop} ) </dev/null >/dev/null 2>&1 & vedfin_beat=$!; {command}; "
            f"vedfin_rc=$?; kill $vedfin_beat 2>/dev/null; (exit $vedfin_rc)")


def lock_release(lock_dir: str, token: str | None = None) -> str:
    """With a token, only the lock this run took goes (a lock broken and re-taken by another
    run stays); without one, whatever holds it (the user's explicit `lock.release`)."""
    if token is None:
        return f"rm -rf -- {sh(lock_dir)}"
    d = sh(lock_dir)
    return (f"if [ \"$(cat -- {d}/token 2>/dev/null)\" = {sh(token)} ]; then rm -rf -- {d}; "
            f"fi")
