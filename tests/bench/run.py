"""Run the benchmark suite: `.venv/bin/python tests/bench/run.py [--quick] [--help]`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
