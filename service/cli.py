"""`chat-service`: monkey-patch for the chosen async library, then serve until a signal.

Monkey-patching must come before anything imports sockets, threads or Flask, so this module
imports nothing of the service at the top but the settings (standard library only): `main`
reads `CHAT_ASYNC_MODE`, patches, then builds the app.

Exit status: 0 after a signal stopped the service, 1 when it failed (one `service_failed`
line, or for a setting that does not parse one plain line on stderr naming it).
"""

from __future__ import annotations

import sys

from service.settings import SettingsError, requested_async_mode


def main() -> None:
    try:
        mode = requested_async_mode()
    except SettingsError as error:
        sys.exit(f"chat-service: {error}")
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

    from service.server import run

    try:
        status = run(mode)
    except SettingsError as error:
        sys.exit(f"chat-service: {error}")
    sys.exit(status)
