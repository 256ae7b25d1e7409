"""Fixtures of the notify plugin's tests: a loopback webhook server, notifiers, guards."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import nija_guard
from nija_guard_notify import Notifier
from pytest_nija_guard import FAST_OPTIONS

# Tests never load plugins installed in the environment.
os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)

    @property
    def text(self) -> str:
        """The alert's text, whatever the payload's shape."""
        body = self.body
        return str(body.get("text", body.get("content")))


class Webhook:
    """A loopback HTTP server that records requests and answers as it is told.

    ``fail(500, 429, ...)`` scripts the next answers (then 200 again);
    ``block()`` holds every answer until the returned Event is set.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.gate: threading.Event | None = None
        self.changed = threading.Condition()
        self.answered = 0
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with webhook.changed:
                    webhook.requests.append(
                        Request("POST", self.path, dict(self.headers.items()), raw)
                    )
                    status, headers = webhook.script.pop(0) if webhook.script else (200, {})
                    gate = webhook.gate
                    webhook.changed.notify_all()
                if gate is not None:
                    gate.wait(10)
                body = b'{"ok": true}' if status < 400 else b'{"ok": false}'
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with webhook.changed:
                    webhook.answered += 1
                    webhook.changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail(self, *statuses: int, retry_after: str | None = None) -> None:
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        with self.changed:
            self.script.extend((status, headers) for status in statuses)

    def block(self) -> threading.Event:
        self.gate = threading.Event()
        return self.gate

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Request]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.requests) >= count, timeout)
            found = list(self.requests)
        assert len(found) >= count, f"expected {count} request(s), got {len(found)}"
        return found

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    yield server
    server.close()


# Loopback requests must not go through an HTTP proxy of the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def make_notifier(webhook: Webhook) -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(url: str | None = None, **options: Any) -> Notifier:
        settings: dict[str, Any] = {
            "backoff": 0.001,
            "max_backoff": 0.01,
            "min_interval": 0.0,
            "timeout": 5.0,
            "opener": NO_PROXY,
            **options,
        }
        notifier = Notifier(webhook.url + "/hook" if url is None else url, **settings)
        made.append(notifier)
        return notifier

    yield make
    if webhook.gate is not None:
        webhook.gate.set()
    for notifier in made:
        notifier.close(2.0)


@pytest.fixture
def make_guard() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(client: Any, *plugins: Any, **options: Any) -> Any:
        exchange = nija_guard.guard(client, plugins=list(plugins), **{**FAST_OPTIONS, **options})
        made.append(exchange)
        return exchange

    yield make
    for exchange in made:
        exchange.nija_guard.close()
