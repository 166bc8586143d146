"""The in-memory moving windows: the same answers as `limits`' moving window, no timers, and
memory only for keys hit within their window."""

from __future__ import annotations

import threading

import pytest
from limits import parse

from service import ratelimit
from service.ratelimit import MemoryWindows, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ratelimit.time, "monotonic", fake)
    return fake


def test_a_moving_window_refuses_the_hit_over_the_limit_until_the_oldest_leaves(
    clock: Clock,
) -> None:
    windows, item = MemoryWindows(), parse("3 per 10 seconds")
    for offset in (0.0, 1.0, 2.0):
        clock.now = 1000.0 + offset
        assert windows.hit(item, "alice") is None
    clock.now = 1005.5
    assert windows.hit(item, "alice") == 5  # the first hit leaves the window at 1010
    assert windows.hit(item, "bob") is None  # keys are separate
    clock.now = 1010.01
    assert windows.hit(item, "alice") is None  # moving: one place freed, not all three
    assert windows.hit(item, "alice") == 1  # the next leaves at 1011: at least 1 s is said


def test_refused_hits_do_not_count(clock: Clock) -> None:
    windows, item = MemoryWindows(), parse("1 per second")
    assert windows.hit(item, "k") is None
    for _ in range(5):
        assert windows.hit(item, "k") == 1
    clock.now += 1.01
    assert windows.hit(item, "k") is None


def test_keys_that_left_their_window_are_forgotten(clock: Clock) -> None:
    windows, item = MemoryWindows(), parse("5 per minute")
    for n in range(1000):
        assert windows.hit(item, f"user{n}") is None
    assert len(windows) == 1000
    clock.now += 61
    for n in range(600):  # every hit sweeps up to two idle keys
        assert windows.hit(item, f"late{n}") is None
    assert len(windows) == 600


def test_the_limiter_starts_no_thread_per_hit() -> None:
    limiter = RateLimiter("memory://")
    before = threading.active_count()
    for n in range(200):
        limiter.hit("1000 per second", "message", f"user{n % 7}")
    assert threading.active_count() == before
