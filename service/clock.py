"""The one timestamp format of the service: ISO 8601, UTC, milliseconds, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now_iso() -> str:
    """2026-11-24T07:15:28.123Z"""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
