"""What the browser tests need besides the server: Chromium, a watch on each page, a TCP proxy.

`PageWatch` records every request, WebSocket, console error and uncaught exception of a page so
a test can assert that nothing left the origin and nothing went wrong. `TcpProxy` sits between
the browser and the server and can cut every connection and refuse new ones, which is what a
dropped network looks like to the page, while the server keeps running; it can also swallow
the server's replies, so that a message arrives but its ack is lost.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.sync_api import ConsoleMessage, Page, Request, WebSocket

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download does not work here: Debian's Chromium, quiet and offline.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# What Chromium itself prints when a request fails at the network level (the page cannot
# silence these): expected while a test has cut the connection on purpose.
NETWORK_FAILURE = re.compile(
    r"^(Failed to load resource: net::ERR_\w+"
    r"|WebSocket connection to '[^']+' failed.*)$",
    re.DOTALL,
)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def http_status_failure(*statuses: int) -> re.Pattern[str]:
    """Chromium's console line for a fetch answered with one of `statuses` (an expected refusal)."""
    alternatives = "|".join(str(status) for status in statuses)
    return re.compile(
        rf"^Failed to load resource: the server responded with a status of ({alternatives}) "
    )


@dataclass
class PageWatch:
    """Everything a page requested and every error it reported, for assertions at the end."""

    page: Page
    requests: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("request", self._on_request)
        self.page.on("websocket", self._on_websocket)
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("dialog", self._on_dialog)

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _on_websocket(self, websocket: WebSocket) -> None:
        self.websockets.append(websocket.url)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _on_dialog(self, dialog: object) -> None:
        self.dialogs.append(getattr(dialog, "message", "?"))
        with contextlib.suppress(Exception):
            dialog.dismiss()  # type: ignore[attr-defined]

    def allow(self, pattern: re.Pattern[str]) -> None:
        """Accept console errors matching `pattern` (only where the test provokes them)."""
        self.allowed.append(pattern)

    def unexpected_console_errors(self) -> list[str]:
        return [
            text
            for text in self.console_errors
            if not any(pattern.search(text) for pattern in self.allowed)
        ]

    def foreign_requests(self, origin: str) -> list[str]:
        return [
            url
            for url in self.requests + self.websockets
            if not url.startswith(("data:", "blob:")) and origin_of(url) != origin
        ]

    def assert_clean(self, origin: str) -> None:
        assert self.requests, "the page made no request at all: the watch is not attached"
        assert self.foreign_requests(origin) == [], "requests left the page's origin"
        assert self.page_errors == [], "uncaught exceptions in the page"
        assert self.unexpected_console_errors() == [], "console errors"
        assert self.dialogs == [], "the page opened a dialog (alert/confirm/prompt)"


class TcpProxy:
    """A loopback TCP relay to `target_port` that a test can cut and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._blocked = threading.Event()
        self._swallow_replies = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._blocked.is_set():
                self._hang_up(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                self._hang_up(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink, replies in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, sink, replies), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if replies and self._swallow_replies.is_set():
                    continue
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._hang_up(source)
            self._hang_up(sink)

    def _hang_up(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def cut(self) -> None:
        """Drop every open connection and hang up on new ones, as a dead network would."""
        self._blocked.set()
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            self._hang_up(sock)

    def swallow_replies(self) -> None:
        """Keep forwarding what the browser sends but drop what the server answers (lost acks)."""
        self._swallow_replies.set()

    def restore(self) -> None:
        self._swallow_replies.clear()
        self._blocked.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self.listener.close()
        self._thread.join(timeout=5)
