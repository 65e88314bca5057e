"""Reading the files migkit is given: regular files only, each with a size cap.

A FIFO, a device (``/dev/zero``, ``/dev/urandom``) or a directory named as a config, hooks or
checkpoint file is refused at once with a clear error, never read until memory runs out or
waited on forever. A foundation module: it imports only ``errors``.
"""

from __future__ import annotations

import os
import stat

from migkit.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "MAX_HOOKS_BYTES", "read_text"]

MAX_CONFIG_BYTES = 64 << 20  # far beyond any real config; loading stays linear up to it
MAX_HOOKS_BYTES = 1 << 20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_text(path: str | os.PathLike[str], *, limit: int, what: str) -> str:
    """The UTF-8 text of the regular file at ``path``, at most ``limit`` bytes; ``what`` names
    it in messages ("the file", "hooks file").

    Raises :class:`~migkit.errors.ConfigError` naming the file: not a regular file, too large,
    not UTF-8, or unreadable (with the system's reason).
    """
    file = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"cannot read {what}: {err.strerror or err}", file=file) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ConfigError(f"{what} must be a regular file, not {kind}", file=file)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ConfigError(f"{what} is larger than {limit} bytes", file=file)
    except OSError as err:
        raise ConfigError(f"cannot read {what}: {err.strerror or err}", file=file) from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} is not UTF-8 text ({err.reason})", file=file) from None
