"""The notify plugin against a loopback webhook, with the guard for real.

Fixtures (``webhook``, ``make_notifier``, ``make_guard``) are in conftest.py.
Nothing here sleeps: requests are awaited with Conditions, backoffs are tiny.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import ccxt
import pytest

import nija_guard
import nija_guard_notify
from nija_guard.testing import AsyncPaperExchange, HookRecorder, PaperExchange
from nija_guard_notify import Notifier
from pytest_nija_guard import FAST_OPTIONS

MakeNotifier = Callable[..., Notifier]
MakeGuard = Callable[..., Any]


class Veto:
    """A policy plugin refusing every exit."""

    def __init__(self, reason: str = "weekend") -> None:
        self.reason = reason

    @nija_guard.hookimpl
    def nija_guard_exit_veto(self) -> str:
        return self.reason


# -- the guard's events, for real -------------------------------------------------------
def blocked(make_guard: MakeGuard, *plugins: Any, **params: Any) -> None:
    ex = make_guard(PaperExchange(balances={"BTC": 1, "USDT": 0}), *plugins)
    ex.create_limit_sell_order("BTC/USDT", 0.2, 90_000, params)  # rests, holds the lock
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.2, params)


def dust(make_guard: MakeGuard, *plugins: Any, **params: Any) -> None:
    ex = make_guard(PaperExchange(balances={"BTC": "0.00005", "USDT": 10}), *plugins)
    with pytest.raises(nija_guard.DustPosition):
        ex.create_market_sell_order("BTC/USDT", 1, params)


def unknown(make_guard: MakeGuard, *plugins: Any, **params: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, *plugins, reconcile_timeout=0.1)
    paper.inject("create_order", ccxt.RequestTimeout("x"), after=True)
    for method in ("fetch_order", "fetch_open_orders", "fetch_my_trades"):
        paper.inject(method, ccxt.ExchangeNotAvailable("down"), times=100)
    with pytest.raises(nija_guard.OutcomeUnknown):
        ex.create_market_sell_order("BTC/USDT", 0.2, params)


def vetoed(make_guard: MakeGuard, *plugins: Any, **params: Any) -> None:
    ex = make_guard(PaperExchange(balances={"BTC": 1}), *plugins, Veto())
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("BTC/USDT", 0.2, params)


def backend_down(make_guard: MakeGuard, *plugins: Any, **params: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    # A durable backend: the memory backend makes no calls that could fail.
    path = Path(tempfile.mkdtemp(prefix="njg-notify-")) / "guard.db"
    ex = make_guard(paper, *plugins, backend=f"sqlite:///{path}")

    def down(*args: Any) -> Any:
        raise ConnectionError("redis://user:SENTINEL-BACKEND@db unreachable")

    ex.nija_guard.backend.acquire = down
    try:
        with pytest.raises(nija_guard.BackendUnavailable):
            ex.create_market_sell_order("BTC/USDT", 0.2, params)
    finally:
        del ex.nija_guard.backend.acquire
    assert "create_order" not in paper.calls


EVENTS = {
    "exit_blocked": (
        blocked,
        ["nija-guard: duplicate exit of BTC/USDT blocked (in_progress) on paper:", "limit sell"],
    ),
    "dust_detected": (
        dust,
        ["nija-guard: dust position on BTC/USDT (0.00005 left: ", "no order sent"],
    ),
    "outcome_unknown": (
        unknown,
        ["nija-guard: outcome UNKNOWN of exit ", "market sell of 0.2 BTC/USDT", "RequestTimeout"],
    ),
    "exit_vetoed": (vetoed, ["nija-guard: exit of BTC/USDT vetoed (weekend) on paper:"]),
    "backend_failed": (
        backend_down,
        ["nija-guard: lock backend failed (BackendUnavailable", "fails closed"],
    ),
}


@pytest.mark.parametrize("event", list(EVENTS))
def test_each_event_posts_one_alert(
    event: str, webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard
) -> None:
    trigger, expected = EVENTS[event]
    notifier = make_notifier()
    trigger(make_guard, notifier)
    assert notifier.flush(5)
    [request] = webhook.requests
    for fragment in expected:
        assert fragment in request.text
    assert "SENTINEL" not in request.text  # the backend's error message stays out
    assert (notifier.sent, notifier.failed, notifier.dropped) == (1, 0, 0)


def test_async_guard_alerts_too(webhook: Any, make_notifier: MakeNotifier) -> None:
    notifier = make_notifier()

    async def main() -> None:
        async with nija_guard.guard(
            AsyncPaperExchange(balances={"BTC": 1}), plugins=[notifier, Veto()], **FAST_OPTIONS
        ) as ex:
            with pytest.raises(nija_guard.ExitVetoed):
                await ex.create_market_sell_order("BTC/USDT", 0.5)

    asyncio.run(main())
    assert notifier.flush(5)
    assert "vetoed (weekend)" in webhook.requests[0].text


# -- payload shapes -----------------------------------------------------------------------
def test_slack_payload(webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard) -> None:
    notifier = make_notifier(style="slack")
    ex = make_guard(PaperExchange(balances={"BTC": 1}), notifier, Veto("<!channel> & co"))
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("BTC/USDT", 0.2)
    assert notifier.flush(5)
    [request] = webhook.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert list(request.body) == ["text"]
    assert "vetoed (&lt;!channel&gt; &amp; co)" in request.body["text"]  # Slack's escaping


def test_discord_payload_is_cut_to_2000_characters(
    webhook: Any, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(style="discord")
    exit = nija_guard.Exit(
        exit_id="e1",
        account="paper:main",
        symbol="X" * 3000 + "/USDT",
        side="sell",
        type="market",
        method="create_order",
        requested_amount=1.0,
    )
    notifier.nija_guard_exit_vetoed(exit=exit, reason="@everyone look")
    assert notifier.flush(5)
    body = webhook.requests[0].body
    assert set(body) == {"content", "allowed_mentions"}
    assert body["allowed_mentions"] == {"parse": []}  # no alert pings @everyone
    assert len(body["content"]) == 2000 and body["content"].endswith("…")
    assert body["content"].startswith("nija-guard: exit of XXX")


def test_a_plugins_reason_is_quoted_on_one_short_line(
    webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard
) -> None:
    notifier = make_notifier()
    reason = "closed\n  for the\tweekend " + "x" * 500
    ex = make_guard(PaperExchange(balances={"BTC": 1}), notifier, Veto(reason))
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("BTC/USDT", 0.2)
    assert notifier.flush(5)
    text = webhook.requests[0].text
    assert "\n" not in text and "vetoed (closed for the weekend xxx" in text
    quoted = text.split("vetoed (", 1)[1].split(") on ", 1)[0]
    assert len(quoted) == 200 and quoted.endswith("…")


@pytest.mark.parametrize("path", ["/bot{token}/sendMessage", "/bot{token}"])
def test_telegram_payload(
    path: str, webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard
) -> None:
    token = "123456:TELEGRAM-TOKEN"
    notifier = make_notifier(
        webhook.url + path.format(token=token), style="telegram", chat_id="-100042"
    )
    vetoed(make_guard, notifier)
    assert notifier.flush(5)
    [request] = webhook.requests
    assert request.path == f"/bot{token}/sendMessage"
    assert request.body["chat_id"] == "-100042"
    assert request.body["text"].startswith("nija-guard: exit of BTC/USDT vetoed (weekend)")
    assert token not in request.raw.decode()


@pytest.mark.parametrize(
    ("url", "style"),
    [
        ("https://hooks.slack.com/services/T0/B0/XYZ", "slack"),
        ("https://discord.com/api/webhooks/1/abc", "discord"),
        ("https://ptb.discordapp.com/api/webhooks/1/abc", "discord"),
        ("https://api.telegram.org/bot1:abc/sendMessage", "telegram"),
        ("https://chat.example.org/hooks/abc", "slack"),
        ("http://notdiscord.com/x", "slack"),
    ],
)
def test_auto_style_follows_the_host(url: str, style: str) -> None:
    assert Notifier(url, chat_id="1").style == style


def test_explicit_style_wins_over_the_host() -> None:
    assert Notifier("https://hooks.slack.com/services/x", style="Discord").style == "discord"


SECRET_URL = "https://hooks.slack.com/services/T0/B0/SECRETPATH"


@pytest.mark.parametrize(
    ("url", "options", "error", "match"),
    [
        (SECRET_URL, {"style": "teams"}, ValueError, "style must be one of"),
        ("ftp://hooks.example.org/SECRETPATH", {}, ValueError, "http:// or https://"),
        ("https:///SECRETPATH", {}, ValueError, "with a host"),
        ("https://hooks.example.org/SECRETPATH\n", {}, ValueError, "without whitespace"),
        ("https://api.telegram.org/botSECRETPATH/sendMessage", {}, ValueError, "chat_id"),
        ("https://api.telegram.org/SECRETPATH", {"chat_id": "1"}, ValueError, "bot<token>"),
        (SECRET_URL, {"queue_size": 0}, ValueError, "queue_size must be > 0"),
        (SECRET_URL, {"queue_size": 1.5}, TypeError, "queue_size must be an int"),
        (SECRET_URL, {"max_attempts": 0}, ValueError, "max_attempts must be > 0"),
        (SECRET_URL, {"timeout": 0}, ValueError, "timeout must be > 0"),
        (SECRET_URL, {"backoff": -1}, ValueError, "backoff must be >= 0"),
        (SECRET_URL, {"min_interval": float("nan")}, ValueError, "min_interval must be >= 0"),
        (SECRET_URL, {"chat_id": ""}, ValueError, "chat_id must be a non-empty"),
    ],
)
def test_bad_arguments_are_refused_clearly(
    url: str, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as raised:
        Notifier(url, **options)
    assert "SECRETPATH" not in str(raised.value)


# -- delivery: retries, backoff, refusal ----------------------------------------------------
def retries(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.nija_guard  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "nija_guard", {}).get("event") == "notify_retry"
    ]


def test_5xx_is_retried_until_it_succeeds(
    webhook: Any,
    make_notifier: MakeNotifier,
    make_guard: MakeGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook.fail(500, 503)
    notifier = make_notifier()
    vetoed(make_guard, notifier)
    assert notifier.flush(5)
    assert len(webhook.requests) == 3
    assert len({r.raw for r in webhook.requests}) == 1  # the same alert, three times
    assert (notifier.sent, notifier.failed) == (1, 0)
    assert [r["status"] for r in retries(caplog)] == [500, 503]


def test_gives_up_after_max_attempts(
    webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard
) -> None:
    webhook.fail(*[500] * 10)
    notifier = make_notifier(max_attempts=3)
    vetoed(make_guard, notifier)
    assert notifier.flush(5)
    assert len(webhook.requests) == 3
    assert (notifier.sent, notifier.failed) == (0, 1)


def test_backoff_grows_exponentially(
    webhook: Any,
    make_notifier: MakeNotifier,
    make_guard: MakeGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook.fail(500, 500, 500)
    notifier = make_notifier(backoff=0.004, max_backoff=0.01)
    vetoed(make_guard, notifier)
    assert notifier.flush(5)
    delays = [r["delay"] for r in retries(caplog)]
    # base 0.004, 0.008, then capped at 0.01; jitter keeps each in [base/2, base]
    for delay, base in zip(delays, [0.004, 0.008, 0.01], strict=True):
        assert base / 2 <= delay <= base


def test_429_retry_after_is_honoured(
    webhook: Any,
    make_notifier: MakeNotifier,
    make_guard: MakeGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook.fail(429, retry_after="0")
    # Without Retry-After the retry would wait about a minute and flush would time out.
    notifier = make_notifier(backoff=60.0, max_backoff=60.0)
    vetoed(make_guard, notifier)
    assert notifier.flush(5)
    assert len(webhook.requests) == 2 and notifier.sent == 1
    assert retries(caplog)[0]["delay"] == 0.0
    assert retries(caplog)[0]["status"] == 429


def test_retry_after_is_capped_by_max_backoff(
    webhook: Any,
    make_notifier: MakeNotifier,
    make_guard: MakeGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook.fail(429, retry_after="3600")
    notifier = make_notifier(max_backoff=0.01)
    vetoed(make_guard, notifier)
    assert notifier.flush(5)
    assert notifier.sent == 1
    assert retries(caplog)[0]["delay"] == 0.01


def test_4xx_is_not_retried(
    webhook: Any,
    make_notifier: MakeNotifier,
    make_guard: MakeGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook.fail(400)
    notifier = make_notifier()
    vetoed(make_guard, notifier)
    assert notifier.flush(5)  # done: nothing left to try
    assert len(webhook.requests) == 1
    assert (notifier.sent, notifier.failed) == (0, 1)
    assert retries(caplog) == []
    failed = [r for r in caplog.records if getattr(r, "nija_guard", {}).get("status") == 400]
    assert failed and failed[0].levelno == logging.ERROR


def test_network_errors_are_retried(
    make_notifier: MakeNotifier, make_guard: MakeGuard, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notifier = make_notifier(f"http://127.0.0.1:{port}/hook", max_attempts=3)
    vetoed(make_guard, notifier)
    assert notifier.flush(5)
    assert (notifier.sent, notifier.failed) == (0, 1)
    assert len(retries(caplog)) == 2
    assert "ConnectionRefusedError" in retries(caplog)[0]["error"]


# -- coalescing ---------------------------------------------------------------------------
def test_alerts_are_coalesced_per_event_account_and_symbol(
    webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard
) -> None:
    now = [1000.0]
    notifier = make_notifier(min_interval=60.0, clock=lambda: now[0])
    ex = make_guard(PaperExchange(balances={"BTC": 1, "ETH": 1}), notifier, Veto())
    for _ in range(3):
        with pytest.raises(nija_guard.ExitVetoed):
            ex.create_market_sell_order("BTC/USDT", 0.1)
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("ETH/USDT", 0.1)  # another symbol: its own alert
    other = make_guard(PaperExchange(balances={"BTC": 1}), notifier, Veto())
    with pytest.raises(nija_guard.ExitVetoed):
        other.create_market_sell_order("BTC/USDT", 0.1)  # another account: its own alert
    assert notifier.flush(5)
    assert len(webhook.requests) == 3
    assert notifier.suppressed == 2

    now[0] += 59.0  # still in the window
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("BTC/USDT", 0.1)
    assert notifier.suppressed == 3
    now[0] += 1.0  # the window is over: the next alert says what it stands for
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("BTC/USDT", 0.1)
    assert notifier.flush(5)
    assert len(webhook.requests) == 4
    assert webhook.requests[-1].text.endswith("nothing sent (+3 similar)")
    now[0] += 60.0
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("BTC/USDT", 0.1)
    assert notifier.flush(5)
    assert webhook.requests[-1].text.endswith("nothing sent")  # the count starts over


# -- never blocking the exit ------------------------------------------------------------
def test_full_queue_drops_alerts_and_never_blocks_the_exit(
    webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard
) -> None:
    gate = webhook.block()  # the webhook answers nothing until the gate opens
    notifier = make_notifier(queue_size=2)
    ex = make_guard(PaperExchange(balances={"BTC": 1}), notifier, Veto())
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("BTC/USDT", 0.1)
    webhook.wait_for(1)  # the worker holds alert 1 in a request that does not return

    outcomes: list[type[BaseException]] = []

    def bot() -> None:
        for _ in range(4):  # alerts 2 and 3 fill the queue; 4 and 5 are dropped
            try:
                ex.create_market_sell_order("BTC/USDT", 0.1)
            except nija_guard.ExitVetoed as exc:
                outcomes.append(type(exc))

    thread = threading.Thread(target=bot)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the exit waited for the webhook"
    assert not gate.is_set() and webhook.answered == 0  # the server was blocked throughout
    assert outcomes == [nija_guard.ExitVetoed] * 4
    assert notifier.dropped == 2

    gate.set()
    assert notifier.flush(5)
    assert (notifier.sent, notifier.dropped, len(webhook.requests)) == (3, 2, 3)


# -- secrets --------------------------------------------------------------------------------
def test_no_secret_reaches_a_payload_or_a_log(
    webhook: Any,
    make_notifier: MakeNotifier,
    make_guard: MakeGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="nija_guard")
    token = "987654:SENTINEL-TOKEN"
    params = {"password": "SENTINEL-PASSWORD", "memo": "SENTINEL-MEMO"}
    recorder = HookRecorder()
    webhook.fail(500, 400, 429, retry_after="0")  # retries and refusals get logged
    notifier = make_notifier(f"{webhook.url}/bot{token}/sendMessage", style="telegram", chat_id="7")
    for trigger in (blocked, dust, unknown, vetoed, backend_down):
        trigger(make_guard, notifier, recorder, **params)
    assert notifier.flush(5)
    assert notifier.sent == 4 and notifier.failed == 1
    # The exits did carry the sentinel (so the checks below can fail):
    assert recorder.named("exit_vetoed")[0]["exit"].params["memo"] == "SENTINEL-MEMO"

    assert len(webhook.requests) == 7
    for request in webhook.requests:
        assert "SENTINEL" not in request.raw.decode()
    records = [r for r in caplog.records if r.name.startswith("nija_guard.notify")]
    assert any(getattr(r, "nija_guard", {}).get("event") == "notify_retry" for r in records)
    for record in caplog.records:
        assert "SENTINEL" not in record.getMessage()
        assert "SENTINEL" not in repr(vars(record))
        assert "/bot" not in record.getMessage()
    for record in records:
        assert record.nija_guard["target"] == webhook.url  # type: ignore[attr-defined]
    assert "SENTINEL" not in repr(notifier)


# -- configuration from the environment ------------------------------------------------------
def test_from_env_configures_the_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIJA_GUARD_NOTIFY_URL", " https://api.telegram.org/bot1:abc/sendMessage\n")
    monkeypatch.setenv("NIJA_GUARD_NOTIFY_STYLE", "telegram")
    monkeypatch.setenv("NIJA_GUARD_NOTIFY_CHAT_ID", "-1001")
    notifier = Notifier.from_env()
    assert notifier.enabled
    assert (notifier.style, notifier.chat_id) == ("telegram", "-1001")


def test_from_env_without_a_url_is_inert(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NIJA_GUARD_NOTIFY_URL", "NIJA_GUARD_NOTIFY_STYLE", "NIJA_GUARD_NOTIFY_CHAT_ID"):
        monkeypatch.delenv(name, raising=False)
    assert not Notifier.from_env().enabled
    monkeypatch.setenv("NIJA_GUARD_NOTIFY_URL", "")
    assert not Notifier.from_env().enabled


def test_from_env_with_a_bad_url_is_inert_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NIJA_GUARD_NOTIFY_URL", "https://api.telegram.org/botSENTINEL/sendMessage")
    monkeypatch.delenv("NIJA_GUARD_NOTIFY_CHAT_ID", raising=False)
    monkeypatch.delenv("NIJA_GUARD_NOTIFY_STYLE", raising=False)
    notifier = Notifier.from_env()
    assert not notifier.enabled
    [record] = [r for r in caplog.records if r.name == "nija_guard.notify"]
    assert record.levelno == logging.ERROR and "chat_id" in record.getMessage()
    assert "SENTINEL" not in record.getMessage()


def test_the_entry_point_publishes_the_module_plugin() -> None:
    [entry] = [ep for ep in entry_points(group="nija_guard") if ep.name == "notify"]
    assert entry.value == "nija_guard_notify:plugin"
    assert entry.load() is nija_guard_notify.plugin
    assert isinstance(nija_guard_notify.plugin, Notifier)


def test_an_inert_notifier_does_nothing(make_guard: MakeGuard) -> None:
    before = set(threading.enumerate())
    notifier = Notifier(None)
    for trigger in (blocked, dust, vetoed):
        trigger(make_guard, notifier)
    started = [t for t in set(threading.enumerate()) - before if t.name == "nija-guard-notify"]
    assert started == []
    assert (notifier.sent, notifier.failed, notifier.dropped, notifier.suppressed) == (0, 0, 0, 0)
    assert notifier.flush(0) and notifier.close(0)
    assert repr(notifier) == "<Notifier inert>"


# -- lifecycle --------------------------------------------------------------------------
def test_close_and_flush_are_idempotent_and_later_alerts_are_dropped(
    webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard
) -> None:
    notifier = make_notifier()
    assert notifier.flush(0)  # nothing queued yet
    vetoed(make_guard, notifier)
    assert notifier.close(5)
    assert notifier.close(5)
    assert notifier.flush(0)
    assert [t for t in threading.enumerate() if t.name == "nija-guard-notify"] == []
    vetoed(make_guard, notifier)
    assert notifier.flush(0)
    assert (notifier.sent, notifier.dropped, len(webhook.requests)) == (1, 1, 1)


def test_close_gives_up_on_a_webhook_that_keeps_failing(
    webhook: Any, make_notifier: MakeNotifier, make_guard: MakeGuard
) -> None:
    webhook.fail(*[500] * 10)
    notifier = make_notifier(backoff=30.0, max_backoff=30.0)  # a retry would wait 15-30 s
    vetoed(make_guard, notifier)
    webhook.wait_for(1)
    assert not notifier.close(0.05)  # not drained in time: the retry wait is cut short
    with webhook.changed:
        webhook.changed.wait_for(lambda: webhook.answered == 1, 5)
    assert notifier.flush(5)
    assert (notifier.sent, notifier.failed) == (0, 1)
    assert len(webhook.requests) == 1
