"""The benchmark suite: observable-chat against a bare Flask-SocketIO chat and Node socket.io.

`make bench` (or `.venv/bin/python tests/bench/run.py`) runs it; see `suite.py`.
"""
