from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import nija_guard
from nija_guard.testing import HookRecorder, PaperExchange

# Tests never load plugins installed in the environment.
os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")

# Small timings keep fault tests quick; correctness never depends on them.
FAST = {
    "poll_interval": 0.02,
    "poll_max_interval": 0.1,
    "max_polls_per_second": 1000.0,
    "absent_after": 0.05,
    "reconcile_timeout": 2.0,
    "confirm_timeout": 2.0,
    "load_entrypoints": False,
}


# The same recorder users get from the pytest plugin (hook_recorder fixture).
Recorder = HookRecorder


@pytest.fixture
def paper() -> PaperExchange:
    return PaperExchange(balances={"BTC": 1, "ETH": 10, "USDT": 100_000})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_guard(recorder: Recorder) -> Iterator[Any]:
    made: list[Any] = []

    def make(client: Any, **options: Any) -> Any:
        opts = {**FAST, "plugins": [recorder], **options}
        proxy = nija_guard.guard(client, **opts)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.nija_guard.close()


@pytest.fixture
def ex(paper: PaperExchange, make_guard: Any) -> Any:
    """A guarded paper exchange with a hook recorder."""
    return make_guard(paper)


def assert_no_leaks(proxy: Any) -> None:
    """No close lock held, no lease held, nothing tracked."""
    g = proxy.nija_guard
    assert g.locked_symbols() == []
    assert g.backend.leases(g.account + "/") == []
    assert g.status()["in_flight"] == []


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Wait for the guard's tracker; the bound is generous, the condition exact."""
    done = threading.Event()
    deadline = timeout
    step = 0.005
    waited = 0.0
    while not predicate():
        if waited >= deadline:
            raise AssertionError("condition not reached")
        done.wait(step)
        waited += step


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Tests never reach the network: refuse (and remember) a non-loopback connect."""
    refused: list[Any] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                refused.append(address)
                raise ConnectionRefusedError(f"test refuses non-loopback connect to {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield refused
    assert refused == [], f"something tried to reach the network: {refused}"


class Clock:
    """A settable clock for a venue, so timestamps and time filters are deterministic."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()
