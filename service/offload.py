"""Run CPU-heavy calls (password hashing) off the event loop.

A scrypt hash takes about 0.1 s of CPU. Called on eventlet's or gevent's hub it would freeze
every connection for that long, so it runs in the async library's pool of real OS threads
(hashlib releases the GIL while it hashes). Under `threading` each request has its own thread
already, so the call runs in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def make_offloader(async_mode: str) -> Callable[..., Any]:
    if async_mode == "eventlet":
        from eventlet import tpool

        def run_eventlet(fn: Callable[..., T], *args: Any) -> T:
            return tpool.execute(fn, *args)  # type: ignore[no-any-return]

        return run_eventlet
    if async_mode == "gevent":
        import gevent

        def run_gevent(fn: Callable[..., T], *args: Any) -> T:
            return gevent.get_hub().threadpool.apply(fn, args)  # type: ignore[no-any-return]

        return run_gevent

    def run_in_place(fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    return run_in_place
