"""Calling the next WSGI layer as a bound method, and keeping the layers few.

Each idle WebSocket connection keeps a green thread parked deep inside the WSGI stack (the
server's request handler, then every middleware down to the Engine.IO socket's read), and
what that stack holds stays in memory while the connection is idle. CPython 3.11 runs a call
from Python to a Python function or bound method inline, without a new C frame; calling an
*object* whose class defines `__call__` goes through C. Measured with B5's idle connections
(`tests/bench`, 3,000 connections, RSS per connection):

- the outermost layer called as an object rather than as its bound method: 64.3 KB against
  63.1-63.5 KB;
- `Flask.__call__` (which only calls `wsgi_app`) skipped, and three service layers over the
  Socket.IO middleware made two (`WSGIGuard`, `FrontDoor`): 66.4-66.8 -> 63.5 -> 59.2 KB. The
  cost comes in steps, not per frame (taking one of three layers away saved nothing, two
  saved 4 KB): probably a page of the green thread's frame stack, not measured further.

So every layer calls the next through `inline(next)`, and `test_fast_paths` holds the
number of layers.
"""

from __future__ import annotations

import types
from typing import Any


def inline(app: Any) -> Any:
    """`app` itself when CPython calls it inline (a function or a bound method); else the bound
    `__call__` of an object whose class defines it in Python; a Flask app: its `wsgi_app`
    (all `Flask.__call__` does), taken now."""
    wsgi_app = getattr(app, "wsgi_app", None)
    if wsgi_app is not None and _is_flask(app):
        return inline(wsgi_app)
    if isinstance(app, types.FunctionType | types.MethodType):
        return app
    call = next((vars(c)["__call__"] for c in type(app).__mro__ if "__call__" in vars(c)), None)
    if isinstance(call, types.FunctionType):
        return types.MethodType(call, app)
    return app


def _is_flask(app: Any) -> bool:
    from flask import Flask

    return isinstance(app, Flask)
