"""Locks that a forked child gets back unlocked.

A fork copies each lock in the state it had at that moment; one that another thread of the
parent held stays held in the child for ever, as that thread does not exist there.  Every lock
made here is replaced by a fresh one in the child (one ``os.register_at_fork`` hook for all)."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

_LOCKS: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


class ForkSafeLock:
    """A ``threading.Lock`` (acquire, release, locked, ``with``) renewed in a forked child."""

    __slots__ = ("_lock", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _LOCKS.add(self)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        # A child forked inside the block, by the thread holding it, holds a renewed lock.
        if self._lock.locked():
            self._lock.release()


def _renew_after_fork() -> None:
    for lock in list(_LOCKS):
        lock._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_after_fork)
