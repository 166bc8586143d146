"""`chat-service`: monkey-patch for the chosen async library, then serve until a signal.

Monkey-patching must come before anything imports sockets, threads or Flask, so this module
imports nothing of the service at the top: `main` patches first, then builds the app.
"""

from __future__ import annotations

import os
import sys

ASYNC_MODES = ("eventlet", "gevent", "threading")


def main() -> None:
    mode = os.environ.get("CHAT_ASYNC_MODE", "eventlet").strip().lower()
    if mode not in ASYNC_MODES:
        sys.exit(f"CHAT_ASYNC_MODE must be one of {', '.join(ASYNC_MODES)}, not {mode!r}")
    if mode == "eventlet":
        import warnings

        # eventlet announces its maintenance mode on import, as plain text on stderr; the
        # owner chose it as the default knowingly (the README says so and how to use gevent).
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        import eventlet

        eventlet.monkey_patch()
    elif mode == "gevent":
        try:
            from gevent import monkey
        except ImportError:
            sys.exit("CHAT_ASYNC_MODE=gevent needs gevent: pip install 'observable-chat[gevent]'")
        monkey.patch_all()

    from service.server import serve

    serve(mode)
