"""SIGINT and SIGTERM during an apply: stop starting new steps, never abandon one.

While :func:`deferred_interrupts` is active (it is, around every apply and restore that
changes GPUs), the two signals no longer raise ``KeyboardInterrupt`` or end the process:
they set a flag that the per-GPU workers check before each NVML step. Steps in flight
finish, the GPUs changed part-way are rolled back, the lock is released only after every
worker has stopped, and the run reports the signal (exit 128 + its number). A second
signal only repeats the message: it does not skip the rollback.

Handlers can only be installed from the main thread; a run started from another thread
keeps the process's handlers, and its :class:`StopFlag` is set only by :meth:`StopFlag.request`.
A handler the caller had installed (a service that stops after its current step) is called
with each signal received once the block ends, so the caller learns of it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["StopFlag", "deferred_interrupts"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Set once a stop is asked for; remembers the first signal."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None
        self.received: set[int] = set()

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.received.add(signum)
        self._event.set()

    def __call__(self) -> bool:
        """True once a stop has been asked for (a cheap check between steps)."""
        return self._event.is_set()


def _say(text: str) -> None:
    # os.write: safe from a signal handler, unlike buffered stream writes.
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[StopFlag]:
    """Turn SIGINT and SIGTERM into a stop request for the duration of the block."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        name = signal.Signals(signum).name
        if flag.signum is None:
            _say(
                f"migkit: {name} received: finishing the NVML steps in flight and rolling "
                "back the GPUs changed part-way; the node lock is kept until then\n"
            )
        else:
            _say(f"migkit: {name} received again: still rolling back, please wait\n")
        flag.request(signum)

    previous: dict[int, Any] = {}
    try:
        for sig in SIGNALS:
            previous[int(sig)] = signal.signal(sig, handler)
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        # A handler the caller installed itself (a service's "stop after this step") is told
        # once the apply has stopped; Python's default ones (KeyboardInterrupt, termination)
        # are not, as the run's report and exit code already say what happened.
        for signum in sorted(flag.received):
            old = previous.get(signum)
            if callable(old) and old is not signal.default_int_handler:
                old(signum, None)
