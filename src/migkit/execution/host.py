"""Host work around an apply: the per-node lock file and GPU resets with their known blockers."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator, Sequence

from migkit.errors import ApplyError, ResetFailed
from migkit.models import GpuState
from migkit.nvml.node import NodeLike

__all__ = ["lock_path", "node_lock", "reset_blockers", "reset_gpus"]


def lock_path(node: NodeLike) -> str:
    """One lock per node: beside a simulated node's state file, else in /run/lock."""
    if node.state_file:
        return f"{node.state_file}.apply.lock"
    for directory in ("/run/lock", "/var/lock", "/tmp"):
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            return os.path.join(directory, "migkit-apply.lock")
    return "migkit-apply.lock"


@contextlib.contextmanager
def node_lock(path: str) -> Iterator[None]:
    """Exclusive apply lock; a second apply on the node fails at once with a clear message."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ApplyError(
                f"another migkit apply is running on this node (lock {path} held by pid {holder}); "
                f"nothing was changed"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def reset_blockers(proc: str = "/proc") -> list[str]:
    """Known reasons a GPU reset fails on a real node (mig-parted-facts P19), found up front.

    The ``nvidia_drm`` module and ``nvidia-persistenced`` keep the GPUs open, so
    ``nvidia-smi -r`` fails with "in use". Returns one sentence per blocker found.
    """
    found: list[str] = []
    try:
        with open(os.path.join(proc, "modules"), encoding="utf-8") as modules:
            if any(line.split(" ", 1)[0] == "nvidia_drm" for line in modules):
                found.append("the nvidia_drm kernel module is loaded (it holds the GPUs; unload it first)")
    except OSError:
        pass
    try:
        entries = os.listdir(proc)
    except OSError:
        entries = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "comm"), encoding="utf-8") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if name.startswith("nvidia-persiste"):
            found.append(f"nvidia-persistenced is running (pid {entry}; stop it first)")
    return found


def reset_gpus(node: NodeLike, gpus: Sequence[GpuState]) -> None:
    """Reset exactly these GPUs so that a pending MIG mode takes effect.

    On real hardware a failed reset names the known blockers found on the host."""
    if not gpus:
        return
    try:
        node.reset_gpus(gpus)
    except ResetFailed as err:
        blockers = [] if node.is_simulated else reset_blockers()
        hint = ("; likely blockers: " + "; ".join(blockers)) if blockers else ""
        raise ResetFailed(f"{err}{hint}") from None
