"""The loopback HTTP machinery every exchange fake is built on.

A fake is a :class:`LoopbackFake` subclass: it declares its routes and how to
parse, serve and reject a request (the hooks ``_prepare``, ``_handle``,
``_not_found`` and ``_fault_body``); this module gives it a threaded HTTP/1.1
server on ``127.0.0.1`` (keep-alive, as ``requests`` and ``aiohttp`` expect),
the request log, and fault injection (:data:`FAULTS`):

- ``error_before``: reply ``status``/``body`` without touching the venue;
- ``error_after``: let the venue act, then reply ``status``/``body``;
- ``drop_before`` / ``drop_after``: close the connection without a reply,
  before / after the venue acted;
- ``bad_json_after``: let the venue act, reply 200 with a truncated body;
- ``hang_after``: let the venue act, record the request, then hold the normal
  reply until :meth:`LoopbackFake.release_hung` or :meth:`LoopbackFake.stop`.

Clients are pointed at a fake with :func:`fakes.ccxt_urls.point_at`.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "FAULTS",
    "Call",
    "Fault",
    "LoopbackFake",
    "RecordedRequest",
    "Reply",
    "fmt",
    "gateway_page",
    "json_reply",
]

#: The fault kinds :meth:`LoopbackFake.inject` accepts.
FAULTS = frozenset(
    {"error_before", "error_after", "drop_before", "drop_after", "bad_json_after", "hang_after"}
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received.

    ``params`` holds the request's parameters as the fake parsed them (e.g. the
    query string and body merged, without the exchange's signature); ``body``
    the parsed JSON body as sent (a list for batch endpoints), ``None`` when the
    fake does not parse one; ``headers`` the request headers. ``signed`` says
    whether the request carried a signature (credentials). ``status`` is the
    HTTP status replied, ``None`` when the connection was dropped; ``fault`` the
    injected fault that applied, if any.
    """

    method: str
    path: str
    params: dict[str, Any]
    signed: bool
    status: int | None
    fault: str | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Fault:
    method: str
    path: str
    kind: str
    remaining: int
    status: int
    body: Mapping[str, Any] | str | None


@dataclass
class Reply:
    """An HTTP reply; ``content_type`` ``None`` is the fake's :attr:`~LoopbackFake.json_type`."""

    status: int
    body: bytes
    content_type: str | None = None


@dataclass
class Call:
    """One HTTP request as the handler read it; the fake's ``_prepare`` parses it.

    ``_prepare`` sets ``params``, and ``signature`` (or ``signed``) when the
    request carries credentials; ``json`` the parsed JSON body, if it parses one.
    """

    method: str
    path: str
    query: str
    body: str
    headers: Mapping[str, str]
    params: dict[str, Any] = field(default_factory=dict)
    signature: str | None = None
    #: Path and query exactly as sent (what some exchanges' signatures cover).
    raw_path: str = ""
    json: Any = None
    signed: bool = False

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


def fmt(value: Decimal | None, places: int = 8) -> str:
    """Fixed point with at least ``places`` decimals (more when the value has them)."""
    if value is None:
        value = Decimal(0)
    text = format(value, "f")
    whole, _, frac = text.partition(".")
    if places <= 0 and not frac.strip("0"):
        return whole
    return f"{whole}.{frac.ljust(places, '0')}"


def gateway_page(status: int) -> str:
    """The HTML a gateway in front of an exchange sends with a 5xx."""
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    title = f"{status} {reason.get(status, 'Server Error')}"
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"


#: A route's handler: the parsed request in, a :class:`Reply` out.
Handler = Callable[[Call], Reply]


class LoopbackFake:
    """An HTTP server on ``127.0.0.1`` with a request log and fault injection.

    Subclasses fill :attr:`_routes` (``(METHOD, path) -> route``, the route
    being whatever :meth:`_handle` understands) and implement :meth:`_prepare`,
    :meth:`_handle`, :meth:`_not_found` and :meth:`_fault_body`.
    """

    #: The server thread's name.
    name = "loopback-fake"
    #: The Content-Type of JSON replies (a :class:`Reply` without one).
    json_type = "application/json; charset=utf-8"
    #: The Content-Type of a fault's HTML body (a gateway page).
    html_type = "text/html; charset=UTF-8"

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        #: Tracebacks of exceptions the fake itself raised (replied as a server error).
        self.server_errors: list[str] = []
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        # hang_after: one Event per held reply, set by release_hung() or stop().
        self._hung: list[threading.Event] = []
        self._hung_changed = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[tuple[str, str], Any] = {}

    # -- subclass hooks ------------------------------------------------------------
    def _prepare(self, call: Call) -> None:
        """Parse the request into ``call.params``, ``signature`` (or ``signed``), ``json``."""
        raise NotImplementedError

    def _handle(self, call: Call, route: Any) -> Reply:
        """Serve a request for a known route (authentication and errors included)."""
        raise NotImplementedError

    def _not_found(self, call: Call) -> Reply:
        """The reply to a path the fake does not serve."""
        raise NotImplementedError

    def _fault_body(self, status: int) -> Mapping[str, Any] | str:
        """What the exchange (or its gateway) replies with ``status``."""
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> Any:
        """Listen on an ephemeral loopback port, served by a daemon thread."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self.release_hung()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the fake is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- faults and the request log ----------------------------------------------
    def inject(
        self,
        method: str,
        path: str,
        fault: str,
        *,
        times: int = 1,
        status: int = 500,
        body: Mapping[str, Any] | str | None = None,
    ) -> None:
        """Apply ``fault`` to the next ``times`` requests to ``method path``.

        ``error_before`` replies ``status``/``body`` without touching the venue;
        ``error_after`` lets the venue act, then replies ``status``/``body``;
        ``drop_before`` / ``drop_after`` close the connection without a reply,
        before / after the venue acted; ``bad_json_after`` lets the venue act and
        replies 200 with a truncated (non-JSON) body; ``hang_after`` lets the
        venue act, records the request, then holds its (normal) reply until
        :meth:`release_hung` or :meth:`stop` (see :meth:`wait_hung`). ``body``
        defaults to what the exchange or its gateway sends for ``status``.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")
        if not path.startswith("/"):
            path = "/" + path
        method = method.upper()
        if (method, path) not in self._routes:
            raise ValueError(f"the fake does not serve {method} {path}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(Fault(method, path, fault, times, status, body))

    def wait_hung(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``count`` replies are held by ``hang_after`` (in all); False on timeout."""
        with self._hung_changed:
            return self._hung_changed.wait_for(lambda: len(self._hung) >= count, timeout)

    def release_hung(self) -> None:
        """Send every reply ``hang_after`` holds now (the connection may be gone by then)."""
        with self._lock:
            held = list(self._hung)
        for event in held:
            event.set()

    def pending_faults(self) -> list[tuple[str, str, str, int]]:
        """Injected faults not yet used up: (method, path, fault, remaining)."""
        with self._lock:
            return [(f.method, f.path, f.kind, f.remaining) for f in self._faults]

    @property
    def unknown(self) -> list[RecordedRequest]:
        """Requests for paths the fake does not serve."""
        with self._lock:
            return [r for r in self.requests if (r.method, r.path) not in self._routes]

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.path == path:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, call: Call, status: int | None, fault: str | None) -> None:
        entry = RecordedRequest(
            call.method,
            call.path,
            dict(call.params),
            call.signed or call.signature is not None,
            status,
            fault,
            call.json,
            dict(call.headers),
        )
        with self._lock:
            self.requests.append(entry)

    def _fault_reply(self, fault: Fault) -> Reply:
        body = fault.body if fault.body is not None else self._fault_body(fault.status)
        if isinstance(body, str):
            return Reply(fault.status, body.encode(), self.html_type)
        return json_reply(fault.status, dict(body))

    # -- dispatch ------------------------------------------------------------------
    def _dispatch(self, call: Call) -> Reply | None:
        """Serve one request; ``None`` means: drop the connection without a reply."""
        self._prepare(call)
        route = self._routes.get((call.method, call.path))
        if route is None:
            reply = self._not_found(call)
            self._record(call, reply.status, None)
            return reply
        fault = self._take_fault(call.method, call.path)
        kind = fault.kind if fault else None
        if fault is not None and kind == "drop_before":
            self._record(call, None, kind)
            return None
        if fault is not None and kind == "error_before":
            reply = self._fault_reply(fault)
            self._record(call, reply.status, kind)
            return reply
        reply = self._handle(call, route)
        if fault is not None:
            if kind == "drop_after":
                self._record(call, None, kind)
                return None
            if kind == "hang_after":
                self._record(call, reply.status, kind)
                release = threading.Event()
                with self._hung_changed:
                    self._hung.append(release)
                    self._hung_changed.notify_all()
                release.wait()
                return reply
            if kind == "error_after":
                reply = self._fault_reply(fault)
            elif kind == "bad_json_after":
                # A reply cut short: valid JSON's first half never parses.
                reply = Reply(200, reply.body[: max(1, len(reply.body) // 2)])
        self._record(call, reply.status, kind)
        return reply


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: LoopbackFake) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut every kept-alive connection, so its handler thread ends."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (or stop() shutting a connection) is routine here.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests/aiohttp expect
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fake's record is its ``requests`` list."""

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        headers = dict(self.headers.items())
        call = Call(method, split.path, split.query, body, headers, raw_path=self.path)
        fake = self.server.fake
        reply = fake._dispatch(call)
        if reply is None:
            # No reply at all: the client sees the connection closed under it.
            self.close_connection = True
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type or fake.json_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")
