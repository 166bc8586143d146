"""Run CPU-heavy calls (password hashing) off the event loop, a bounded number at a time.

A scrypt hash takes about 0.1 s of CPU. Called on eventlet's or gevent's hub it would freeze
every connection for that long, so it runs in the async library's pool of real OS threads
(hashlib releases the GIL while it hashes). At most `concurrency` calls run at once (default:
the number of CPUs): more would only fight the event loop's thread for the same cores, so the
rest wait their turn in their own green threads, which costs the loop nothing. The pool's
threads also run at the lowest scheduling priority (nice 19, per thread on Linux): where the
loop and a hash share a core, the kernel gives the loop the core whenever it has work, and the
hash the time the loop leaves idle. Under `threading` each request has its own thread already,
so the call runs there, at its normal priority.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
LOWEST_PRIORITY = 19  # nice value of the hashing threads


_lowered = threading.local()  # real OS threads here: a real thread-local


def yielding(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` in this pool thread, which first gives up its claim on the CPU (once)."""
    if not getattr(_lowered, "done", False):
        _lowered.done = True
        with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    return fn(*args)


def make_offloader(async_mode: str, concurrency: int | None = None) -> Callable[..., Any]:
    # Created after monkey-patching, so under eventlet/gevent this is a green semaphore.
    slots = threading.BoundedSemaphore(concurrency or os.cpu_count() or 1)
    run_in_thread: Callable[..., Any]
    if async_mode == "eventlet":
        from eventlet import tpool

        def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
            return tpool.execute(yielding, fn, *args)  # type: ignore[no-any-return]
    elif async_mode == "gevent":
        import gevent

        def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
            pool = gevent.get_hub().threadpool
            return pool.apply(yielding, (fn, *args))  # type: ignore[no-any-return]
    else:

        def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
            return fn(*args)

    def offload(fn: Callable[..., T], *args: Any) -> T:
        with slots:
            return run_in_thread(fn, *args)

    return offload
