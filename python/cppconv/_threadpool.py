"""cppconv's thread pool as seen by threadpoolctl.

threadpoolctl (>= 3.5) finds thread pools by scanning the loaded shared libraries and lets
packages describe their own with a ``LibController`` subclass given to
``threadpoolctl.register``.  cppconv's controller matches the ``_native`` extension module by
its exported C symbols ``cppconv_get_num_threads`` / ``cppconv_set_num_threads`` (see
bindings/native.cpp), so ``threadpoolctl.threadpool_info()`` lists it (user_api
``"cppconv"``) and ``threadpool_limits(limits=1)`` or ``threadpool_limits(1, user_api="cppconv")``
limit it.

Registration costs nothing when threadpoolctl is never used: if threadpoolctl is already
imported, :func:`install` registers at once; otherwise it waits for the import with a one-shot
import hook instead of importing threadpoolctl itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import weakref
from types import ModuleType
from typing import Any, Optional, Sequence

_registered = False


def _controller_class(threadpoolctl: ModuleType) -> Optional[type]:
    base = getattr(threadpoolctl, "LibController", None)
    if base is None or not hasattr(threadpoolctl, "register"):
        return None  # threadpoolctl < 3.5 has no plug-in API

    class CppconvController(base):  # type: ignore[misc, valid-type]
        user_api = "cppconv"
        internal_api = "cppconv"
        filename_prefixes = ("_native",)
        check_symbols = ("cppconv_get_num_threads", "cppconv_set_num_threads")

        def get_num_threads(self) -> int:
            return int(self.dynlib.cppconv_get_num_threads())

        def set_num_threads(self, num_threads: int) -> None:
            from . import _native

            n = max(1, int(num_threads))
            if n == _default_count.get(self):
                _native.reset_num_threads()  # threadpool_limits restoring what it found
            else:
                self.dynlib.cppconv_set_num_threads(n)

        def get_version(self) -> Optional[str]:
            from . import __version__

            return __version__

        def set_additional_attributes(self) -> None:
            from . import _native

            self.isa = _native.selected_isa()
            if not _native.num_threads_is_set():
                _default_count[self] = _native.get_num_threads()

    return CppconvController


# threadpool_limits restores a pool by setting the count it read when it made the controller.
# Where that count was cppconv's default (no set_num_threads), setting it again means following
# the default again (OMP_NUM_THREADS, threadpoolctl's "openmp" API), not pinning it.  Kept
# outside the controller, whose attributes threadpool_info() would list.
_default_count: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def register(threadpoolctl: ModuleType) -> bool:
    """Registers cppconv's controller with an imported threadpoolctl (once); False if too old."""
    global _registered
    if _registered:
        return True
    controller = _controller_class(threadpoolctl)
    if controller is None:
        return False
    threadpoolctl.register(controller)
    _registered = True
    return True


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when threadpoolctl is imported, registers right after it loads."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Any = None) -> Any:
        if fullname != "threadpoolctl":
            return None
        _remove_hook()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_and_register(module: ModuleType) -> None:
            exec_module(module)
            try:
                register(module)
            except Exception:  # noqa: BLE001 - never break the user's import of threadpoolctl
                pass

        loader.exec_module = exec_and_register
        return spec


_hook = _RegisterOnImport()


def _remove_hook() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def install() -> None:
    """Registers now if threadpoolctl is imported, else when it is (called by cppconv/__init__)."""
    module = sys.modules.get("threadpoolctl")
    if module is not None:
        register(module)
    elif _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
