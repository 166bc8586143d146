"""Where templates/, static/ and dashboards/ are: inside the installed wheel, or the checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`service/<name>` in an installed wheel, else `<repo>/<name>` in a source checkout."""
    packaged = PACKAGE_DIR / name
    if packaged.is_dir():
        return packaged
    return PACKAGE_DIR.parent / name
