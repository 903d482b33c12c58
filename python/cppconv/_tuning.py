"""Autotuned plans: a layer may time the algorithms that accept its problem and keep the fastest.

The mode (:func:`set_tuning`, else the ``CPPCONV_TUNING`` environment variable, else ``"off"``):

* ``"off"``: the heuristic (each ISA's ordered algorithm list, first that accepts wins).
* ``"cached"``: a measurement from the per-user cache where there is one for the problem, else
  the heuristic.  Never times anything.
* ``"measure"``: as ``"cached"``, and where the cache has nothing, a layer's first call on an
  input shape times every candidate on that input (one untimed call, then the median of five, round-robin)
  and keeps the fastest, writing it to the cache.

The candidates are those the dispatcher itself could choose (``_native.explain``'s
``"candidates"``: the active ISA's algorithms that accept the problem and meet its precision
mode), so tuning never picks a Winograd algorithm under ``"highest"``, and a tuned layer's
results are those of forcing that algorithm: within its bound, and the same on every call for
a given thread count.

The cache is one small JSON file per key under ``<cache dir>/tuning/``, written to a temporary
file in the same folder and renamed over the old one (``os.replace``), so a reader never sees
half a file and concurrent processes at worst both write a valid entry.  The key holds the CPU
model, cppconv's ISAs, the thread count, the problem (shapes, stride, padding, dilation, groups,
padding mode, layout, activation, dtype, precision) and cppconv's version.  An unreadable or
foreign file is ignored with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ._forksafe import ForkSafeLock

MODES = ("off", "cached", "measure")
ENV_MODE = "CPPCONV_TUNING"
ENV_CACHE_DIR = "CPPCONV_CACHE_DIR"
# Entries of this format only; a change of format makes old files unused (not misread).
FORMAT = 1
# Timed calls per candidate after its untimed first call (which packs its weights).
REPEATS = 5
# A candidate replaces the heuristic's choice only when its median is this much faster: a
# smaller difference is within what a loaded machine's noise makes of equal kernels.
MARGIN = 0.03

_lock = ForkSafeLock()
_warned: Set[str] = set()


def _warn_once(key: str, message: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def check_mode(mode: Any, name: str = "mode") -> str:
    if not isinstance(mode, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(map(repr, MODES))}, got {type(mode).__name__}")
    word = mode.strip().lower()
    if word not in MODES:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    return word


def _environment_mode() -> str:
    """CPPCONV_TUNING's mode, or "off" (unset, or not a mode: a warning then, once per value)."""
    raw = os.environ.get(ENV_MODE)
    if not raw:
        return "off"
    word = raw.strip().lower()
    if word in MODES:
        return word
    _warn_once(f"env:{raw}", f"{ENV_MODE}={raw!r} is not a tuning mode ({', '.join(map(repr, MODES))}); "
                             f"cppconv uses 'off'")
    return "off"


def set_tuning(mode: Optional[str]) -> None:
    """Set whether layers tune their algorithm choice, process-wide: ``"off"``, ``"cached"``
    or ``"measure"``; None reads the ``CPPCONV_TUNING`` environment variable again (which is
    read when cppconv is imported; unset: ``"off"``).

    ``"off"`` (the default): the heuristic, each ISA's ordered algorithm list.  ``"cached"``:
    a layer (:class:`Conv1d`, :class:`Conv2d`, :class:`Conv3d`, and so a :class:`Network`'s
    convolutions) uses a choice measured earlier on this machine where the per-user cache has
    one for the problem, else the heuristic; it never times anything.  ``"measure"``: as
    ``"cached"``, and on a cache miss the layer's first call on an input shape times each
    algorithm that accepts the problem and meets its precision mode (one untimed call each,
    then the median of five each, round-robin), keeps the fastest (the heuristic's
    unless another is 3 % faster) and writes it to the cache.  The functions
    (:func:`conv2d`, ...) always use the heuristic.

    Tuning only chooses among algorithms the heuristic could have chosen, so results stay
    within the chosen algorithm's bound (README, "Guarantees"; never Winograd under
    ``"highest"``) and are the same on every call of a layer for a given thread count.  The
    cache is ``platformdirs.user_cache_dir("cppconv")`` (``~/.cache/cppconv`` on Linux), or
    the folder ``CPPCONV_CACHE_DIR`` names; its key holds the CPU model, cppconv's ISAs and
    version, the thread count and the problem.  ``layer.explain(shape)["chosen_by"]`` says
    where a layer's choice came from; ``cppconv tune`` fills the cache from the command line.

    >>> import cppconv
    >>> cppconv.set_tuning("cached"); cppconv.get_tuning()
    'cached'
    >>> cppconv.set_tuning(None)
    """
    global _mode
    _mode = _environment_mode() if mode is None else check_mode(mode)


def get_tuning() -> str:
    """The tuning mode in force: ``"off"`` (the default), ``"cached"`` or ``"measure"``
    (see :func:`set_tuning`).

    >>> import cppconv
    >>> cppconv.get_tuning() in ("off", "cached", "measure")
    True
    """
    return _mode


# ----------------------------------------------------------------------------------------
# The cache


def cache_root() -> str:
    """cppconv's per-user cache folder: CPPCONV_CACHE_DIR, else platformdirs' rule."""
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        return os.path.abspath(os.path.expanduser(override))
    try:
        import platformdirs  # not a dependency: the same rule by hand below where it is missing

        return str(platformdirs.user_cache_dir("cppconv", appauthor=False))
    except ImportError:
        pass
    home = os.path.expanduser("~")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return os.path.join(base, "cppconv", "Cache")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Caches", "cppconv")
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(home, ".cache")
    return os.path.join(base, "cppconv")


def tuning_dir() -> str:
    return os.path.join(cache_root(), "tuning")


@functools.cache
def cpu_model() -> str:
    """The CPU's model string (Linux's /proc/cpuinfo, macOS's sysctl, else platform's)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Model", "cpu model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def machine_key() -> Dict[str, Any]:
    """What a measurement depends on besides the problem and the threads."""
    from . import __version__, _native

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "isa": str(_native.selected_isa()),
        "isas": [str(i) for i in _native.available_isas()],
        "version": __version__,
    }


def full_key(problem: Dict[str, Any], threads: int) -> Dict[str, Any]:
    """A cache key: the machine, the thread count and the problem (JSON values only)."""
    return {"format": FORMAT, **machine_key(), "threads": int(threads), "problem": problem}


def _canonical(key: Dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def entry_path(key: Dict[str, Any]) -> str:
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:32]
    return os.path.join(tuning_dir(), f"{digest}.json")


def read_entry(key: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The cache's entry for `key`, or None: none there, or a file that does not hold a valid
    entry for this key (a warning then; the file stays until a measurement replaces it)."""
    path = entry_path(key)
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:
        warnings.warn(f"cppconv: ignoring the tuning cache file {path}: {type(e).__name__}: {e}", RuntimeWarning,
                      stacklevel=2)
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("algorithm"), str) and isinstance(entry.get("key"), dict)):
        warnings.warn(f"cppconv: ignoring the tuning cache file {path}: not a tuning entry", RuntimeWarning,
                      stacklevel=2)
        return None
    if _canonical(entry["key"]) != _canonical(key):
        return None  # another key of the same digest: as if absent
    return entry


def write_entry(key: Dict[str, Any], algorithm: str, timings: Dict[str, float]) -> Optional[str]:
    """Writes the entry atomically (a temporary file in the same folder, then os.replace);
    returns its path, or None (with a warning, once per folder) where the folder is not
    writable."""
    folder = tuning_dir()
    entry = {"key": key, "algorithm": algorithm, "median_s": timings,
             "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = entry_path(key)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path
    except OSError as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _warn_once(f"write:{folder}", f"cppconv: cannot write the tuning cache in {folder} ({e}); measured "
                                      f"choices last only as long as their layers")
        return None


# ----------------------------------------------------------------------------------------
# Measuring


def measure(candidates: Sequence[str], run: Callable[[str], Any],
            repeats: int = REPEATS) -> Tuple[str, Dict[str, float]]:
    """The fastest of `candidates` (the heuristic's choice first) by the median of `repeats`
    timed calls of ``run(name)`` each, after one untimed call each (which packs its weights).
    The timed calls go round-robin, one per candidate per round in a rotating order, so that a
    burst of load from elsewhere on the machine falls on all of them alike.  A candidate that
    raises ValueError (it does not accept a part of the problem) drops out.  The heuristic's
    choice stays unless another is at least MARGIN faster."""
    alive: List[str] = []
    for name in candidates:
        try:
            run(name)
        except ValueError:
            continue
        alive.append(name)
    samples: Dict[str, List[float]] = {name: [] for name in alive}
    for r in range(repeats if alive else 0):
        for name in alive[r % len(alive):] + alive[:r % len(alive)]:
            t0 = time.perf_counter()
            run(name)
            samples[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(times) for name, times in samples.items()}
    if not medians:
        return candidates[0], medians
    first = candidates[0]
    best = min(medians, key=medians.__getitem__)
    if first in medians and medians[best] > medians[first] * (1 - MARGIN):
        best = first
    return best, medians


class Choice:
    """A layer's algorithm for one input: its name, where it came from ("heuristic", "cache" or
    "measurement"), the heuristic's own, and the medians measured (seconds per call by name;
    empty unless measured now)."""

    __slots__ = ("algorithm", "chosen_by", "heuristic", "medians")

    def __init__(self, algorithm: str, chosen_by: str, heuristic: str, medians: Optional[Dict[str, float]] = None):
        self.algorithm, self.chosen_by, self.heuristic = algorithm, chosen_by, heuristic
        self.medians: Dict[str, float] = dict(medians or {})

    @property
    def forced(self) -> str:
        """The name to force, or "" where the heuristic's choice runs anyway."""
        return "" if self.algorithm == self.heuristic else self.algorithm


def decide(mode: str, key: Dict[str, Any], candidates: Sequence[str], heuristic: str,
           run: Optional[Callable[[str], Any]], force: bool = False) -> Choice:
    """The choice for a problem under `mode`: from the cache where it has a valid one (a
    candidate; `force` skips it), else measured (mode "measure" with a `run`), else the
    heuristic's."""
    if mode == "off" or len(candidates) < 2:
        return Choice(heuristic, "heuristic", heuristic)
    entry = None if force else read_entry(key)
    if entry is not None and entry["algorithm"] in candidates:
        return Choice(entry["algorithm"], "cache", heuristic)
    if mode == "measure" and run is not None:
        best, medians = measure(candidates, run)
        write_entry(key, best, medians)
        return Choice(best, "measurement", heuristic, medians)
    return Choice(heuristic, "heuristic", heuristic)


# The mode in force (set_tuning's, else the environment's), read by every layer call.
_mode: str = _environment_mode()
# Measure again even where a layer or the cache has a choice (``cppconv tune --force --model``).
_force = False
