"""How many threads a codec may use, and a process-local thread pool to run chunk jobs on.

Native chunk coders release the GIL around their C++ call, so plain Python threads give real parallelism without
OpenMP. The pool is created lazily and re-created when the process id changes: a Celery prefork worker inherits the
parent's pool object, but not its threads.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")

# Explicit requests above this many threads are clamped (a typo like threads=1000 should not spawn 1000 threads).
MAX_THREADS = 256


def _env_threads(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        # OMP_NUM_THREADS may be a list for nested levels ("4,2"): the first entry counts
        count = int(value.split(",")[0])
    except ValueError:
        return None
    return count if count >= 1 else None


_quota_cache: tuple[int, int | None] | None = None  # (pid, quota): read once per process


def _cgroup_cpus() -> int | None:
    """CPU limit from the cgroup quota (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), or None if unlimited."""
    global _quota_cache
    pid = os.getpid()
    if _quota_cache is None or _quota_cache[0] != pid:
        _quota_cache = (pid, _read_cgroup_cpus())
    return _quota_cache[1]


def _read_cgroup_cpus() -> int | None:
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and int(period) > 0:
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fh:
            quota_us = int(fh.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fh:
            period_us = int(fh.read())
        if quota_us > 0 and period_us > 0:
            return max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        pass
    return None


def usable_cores() -> int:
    """Cores this process may use: the CPU affinity mask, capped by the cgroup quota and by
    ``DELTAVAULT_THREADS`` (or, when that is unset, ``OMP_NUM_THREADS``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, quota)
    env = _env_threads("DELTAVAULT_THREADS") or _env_threads("OMP_NUM_THREADS")
    if env is not None:
        cores = min(cores, env)
    return max(1, cores)


def resolve_threads(threads: int | None) -> int:
    """``None`` (or 0) -> all usable cores; a positive int -> that many (at most MAX_THREADS)."""
    if threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads == 0):
        return usable_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"threads must be None or a non-negative integer, got {threads!r}")
    return min(threads, MAX_THREADS)


_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None
_pool_size = 0


def _after_fork_in_child() -> None:
    # the parent's pool threads do not exist here and its lock may have been held by one of them
    global _lock, _pool, _pool_pid, _pool_size
    _lock = threading.Lock()
    _pool, _pool_pid, _pool_size = None, None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_executor(threads: int) -> ThreadPoolExecutor:
    """The process-local pool, with at least ``threads`` workers (re-created after a fork or to grow)."""
    global _pool, _pool_pid, _pool_size
    with _lock:
        pid = os.getpid()
        if _pool is None or _pool_pid != pid or _pool_size < threads:
            old = _pool if _pool_pid == pid else None
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="modelcodecs")
            _pool_pid = pid
            _pool_size = threads
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def iter_ordered(fn: Callable[[T], R], items: Iterable[T], threads: int,
                 before_submit: Callable[[], None] | None = None) -> Iterator[R]:
    """Yield ``fn(x)`` for each item in order, running at most ``threads`` at a time on the pool (which may be
    larger). Twice that many jobs are queued, so a thread that finishes early takes the next job instead of waiting
    for a slower one ahead of it: cores need not be equally fast, and on a shared machine they are not.
    ``before_submit`` runs before each job is queued (cancellation checks); whatever it raises propagates after the
    queued jobs are cancelled or finished."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        for item in items:
            if before_submit is not None:
                before_submit()
            yield fn(item)
        return
    pool = get_executor(threads)
    gate = threading.BoundedSemaphore(threads)

    def gated(item: T) -> R:
        with gate:
            return fn(item)

    window = 2 * threads
    futures: deque = deque()  # queued or running, in order; a result leaves with its future once yielded
    try:
        for item in items[:window]:
            if before_submit is not None:
                before_submit()
            futures.append(pool.submit(gated, item))
        for k in range(len(items)):
            result = futures.popleft().result()
            if k + window < len(items):
                if before_submit is not None:
                    before_submit()
                futures.append(pool.submit(gated, items[k + window]))
            yield result
            del result
    finally:
        for future in futures:
            future.cancel()
        # do not return while jobs still write into caller-owned buffers
        for future in futures:
            if not future.cancelled():
                try:
                    future.result()
                except BaseException:  # noqa: BLE001 - the first error already propagated
                    pass
