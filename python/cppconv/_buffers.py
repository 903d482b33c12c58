"""Large arrays handed out again once nothing else holds them: the results of in-memory calls
(OUTPUTS) and, in cppconv.dask, the chunks of a worker's tasks.

A new array of many megabytes is fresh pages: glibc maps allocations above its mmap threshold
(32 MiB at most, and every size under Dask's nanny, whose ``MALLOC_TRIM_THRESHOLD_`` turns the
dynamic threshold off) anew each time, and the kernel zeroes every page on its first touch
(what that costs a large convolution: docs/tuning.md, "Fresh outputs").
Arrays are views of byte buffers kept here; a buffer is handed out again only when the
recycler holds the only reference to it (a view of it, a buffer export or a Dask key keeps it
busy), for any shape that fits in it and fills at least half of it."""

from __future__ import annotations

import math
import sys
import threading
import weakref
from typing import Any, Callable, List, Optional, Sequence, Set, Union

import numpy as np

from . import _native
from ._forksafe import ForkSafeLock

_RECYCLERS: weakref.WeakSet[Recycler] = weakref.WeakSet()


class Recycler:
    """Arrays of at least ``smallest`` bytes from at most ``buffers`` kept buffers (an int, or a
    function of nothing that says how many, asked at each allocation) and at most ``max_bytes``
    in all, so that a process does not keep gigabytes after its work; smaller arrays come from
    NumPy as usual."""

    def __init__(self, buffers: Union[int, Callable[[], int]], smallest: int, max_bytes: int):
        self.buffers, self.smallest, self.max_bytes = buffers, smallest, max_bytes
        self._lock = ForkSafeLock()
        # A thread inside empty(): a garbage collector's finalizer or a signal handler that calls
        # cppconv there would wait on the lock its own thread holds.  It gets NumPy's array.
        self._inside = threading.local()
        self._kept: List[np.ndarray] = []  # least recently used first
        _RECYCLERS.add(self)

    def empty(self, shape: Sequence[int], dtype: Any, nbytes: Optional[int] = None) -> np.ndarray:
        """np.empty(shape, dtype); ``nbytes``, where the caller knows it, saves working it out."""
        if nbytes is None:
            dtype = np.dtype(dtype)
            nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.smallest or nbytes > self.max_bytes or UNSHARED is None or getattr(self._inside, "now", False):
            return np.empty(shape, dtype)
        try:
            self._inside.now = True
            return self._take(nbytes, shape, np.dtype(dtype))
        finally:
            self._inside.now = False

    def _take(self, nbytes: int, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        most = self.buffers() if callable(self.buffers) else self.buffers
        with self._lock:
            kept = self._kept
            free = [i for i in range(len(kept)) if _references(kept, i) == UNSHARED]
            fits = [i for i in free if nbytes <= kept[i].nbytes <= 2 * nbytes]
            if fits:
                buffer = kept.pop(min(fits, key=lambda i: kept[i].nbytes))
            else:
                buffer = self._new_buffer(nbytes)
                # Make room for it: drop free buffers, least recently used first.
                drop: Set[int] = set()
                held = sum(b.nbytes for b in kept)
                for i in free:
                    if len(kept) - len(drop) < most and held + nbytes <= self.max_bytes:
                        break
                    drop.add(i)
                    held -= kept[i].nbytes
                kept[:] = [b for i, b in enumerate(kept) if i not in drop]
            if len(kept) < most and sum(b.nbytes for b in kept) + buffer.nbytes <= self.max_bytes:
                kept.append(buffer)
            return buffer[:nbytes].view(dtype).reshape(shape)

    @staticmethod
    def _new_buffer(nbytes: int) -> np.ndarray:
        return np.empty(nbytes, np.uint8)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


def _references(arrays: List[np.ndarray], i: int) -> int:
    return sys.getrefcount(arrays[i])


def _unshared_count() -> Optional[int]:
    """What _references counts for an array that only its list holds, on this interpreter; None
    (nothing is recycled) where it cannot tell that from an array held elsewhere too."""
    if not hasattr(sys, "getrefcount"):
        return None
    arrays = [np.empty(0)]
    alone = _references(arrays, 0)
    held = arrays[0]
    shared = _references(arrays, 0)
    del held
    return alone if shared > alone else None


UNSHARED = _unshared_count()

# In-memory calls' results of 8 MiB and more: two buffers, 256 MiB and a sixteenth of the
# machine's memory at most (the sizes and the reason: docs/tuning.md, "Fresh outputs").
OUTPUTS = Recycler(buffers=2, smallest=8 << 20,
                   max_bytes=min(256 << 20, _native.physical_memory_bytes() // 16))
# (the layers' one-step native path allocates its results there too)
_native.set_output_allocator(OUTPUTS.empty, OUTPUTS.smallest)


def release_buffers() -> None:
    """Frees the large buffers cppconv keeps for reuse.

    A call that returns a new array of 8 MiB or more takes it from two kept buffers (256 MiB
    and a sixteenth of the machine's memory at most) once nothing else holds the result it
    last returned from them: freshly mapped memory costs the kernel's zeroing of every page on
    first touch (docs/tuning.md, "Fresh outputs").  cppconv.dask's tasks keep
    their chunks alike.  Results still in use stay alive, owned by their users.

    >>> import cppconv
    >>> cppconv.release_buffers()
    """
    for recycler in list(_RECYCLERS):
        recycler.clear()
