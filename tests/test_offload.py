"""Password hashing runs in real OS threads at the lowest priority, never on the event loop."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from chatserver import REPO

PROBE = textwrap.dedent(
    """
    import sys
    mode = sys.argv[1]
    if mode == "eventlet":
        import eventlet
        eventlet.monkey_patch()
    else:
        from gevent import monkey
        monkey.patch_all()
    import json, os, threading
    from service.offload import make_offloader

    def where():
        tid = threading.get_native_id()
        return tid, os.getpriority(os.PRIO_PROCESS, tid)

    offload = make_offloader(mode, 2)
    loop = where()
    print(json.dumps({"loop": loop, "pool": [offload(where) for _ in range(4)]}))
    """
)


@pytest.mark.parametrize("mode", ["eventlet", "gevent"])
def test_hashing_threads_yield_the_cpu_to_the_event_loop(mode: str) -> None:
    ran = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PROBE, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(ran.stdout)
    loop_tid, loop_priority = found["loop"]
    assert loop_priority == 0
    for tid, priority in found["pool"]:
        assert tid != loop_tid  # a real thread of its own, not the loop's
        assert priority == 19
