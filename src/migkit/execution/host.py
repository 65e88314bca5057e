"""Host work around an apply: the per-node lock file and GPU resets with their known blockers."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator, Sequence

from migkit.errors import ApplyError, ResetFailed
from migkit.models import GpuState
from migkit.nvml.node import NodeLike

__all__ = ["DEFAULT_LOCK_DIR", "LOCK_DIR_ENV", "lock_path", "node_lock", "reset_blockers", "reset_gpus"]


LOCK_DIR_ENV = "MIGKIT_LOCK_DIR"
DEFAULT_LOCK_DIR = "/run/migkit"


def lock_path(node: NodeLike) -> str:
    """One lock per node: beside a simulated node's state file (``<state>.apply.lock``), else
    ``apply.lock`` in a private directory: ``$MIGKIT_LOCK_DIR``, by default ``/run/migkit``
    (created 0700 by the user running the apply, root on a real node)."""
    if node.state_file:
        return f"{node.state_file}.apply.lock"
    return os.path.join(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR, "apply.lock")


def _private_directory(directory: str) -> None:
    """Create ``directory`` 0700, or accept it only if it is a real directory owned by this
    user that nobody else can write to (so that no other user can pre-create or hold the
    lock in it). ``mkdir`` is atomic, so there is no window between the check and the use."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise ApplyError(
            f"cannot create the lock directory {directory}: {err.strerror}; nothing was changed "
            f"(run as root, or set {LOCK_DIR_ENV})"
        ) from None
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise ApplyError(f"lock directory {directory} is not a directory; nothing was changed")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ApplyError(
            f"lock directory {directory} is owned by uid {info.st_uid} with mode "
            f"{stat.S_IMODE(info.st_mode):04o}; it must belong to uid {os.geteuid()} and be "
            "writable by it alone; nothing was changed"
        )


def _open_lock(path: str) -> int:
    """Open (or create, 0600) the lock file without following a symbolic link, and refuse
    anything but a plain file with one name: a link planted there would otherwise make the
    apply truncate its target."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ApplyError(
                f"refusing the lock file {path}: it is a symbolic link; nothing was changed"
            ) from None
        raise ApplyError(f"cannot open the lock file {path}: {err.strerror}; nothing was changed") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(info.st_mode) else "a file with other names (hard links)"
        raise ApplyError(f"refusing the lock file {path}: it is {what}; nothing was changed")
    return fd


@contextlib.contextmanager
def node_lock(path: str, *, private_directory: bool = False) -> Iterator[None]:
    """Exclusive apply lock; a second apply on the node fails at once with a clear message.

    With ``private_directory`` (the real node's lock), the lock's directory is created 0700
    or checked to be this user's alone first. The holder's pid is written into the file; the
    file itself stays (removing it would let a waiting apply lock a file nobody else sees)."""
    if private_directory:
        _private_directory(os.path.dirname(path) or ".")
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise ApplyError(
                f"another migkit apply is running on this node (lock {path} held by pid {holder}); "
                f"nothing was changed"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def reset_blockers(proc: str = "/proc") -> list[str]:
    """Known reasons a GPU reset fails on a real node (nvidia-smi -r answers "in use"), found up front.

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
