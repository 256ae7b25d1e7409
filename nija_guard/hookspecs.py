"""The hooks of nija-guard.

Implement any subset, with any subset of each hook's arguments, and pass the
plugin to ``guard(..., plugins=[...])`` or publish it in the ``nija_guard``
entry-point group::

    from nija_guard import hookimpl

    @hookimpl
    def nija_guard_position_flushed(symbol):
        my_positions.pop(symbol, None)

Observer hooks (all but ``nija_guard_exit_veto``) are isolated: an exception
is logged and counted and never breaks the exit, leaks a lock, or turns a
filled order into an error. They run on the thread (or task) that observed
the event: the bot's own for events of its call, the guard's tracker for
settlements found in the background. ``exit`` is always the immutable
:class:`nija_guard.Exit` as it stands at that moment.
"""

from __future__ import annotations

from typing import Any

import pluggy

from ._model import Exit

hookspec = pluggy.HookspecMarker("nija_guard")


@hookspec
def nija_guard_exit_requested(exit: Exit) -> None:
    """A sell reached the guard, before any check or lock.

    :param exit: the exit as the bot asked for it (``requested_amount``).
    May not raise (an exception is logged and ignored).
    """


@hookspec
def nija_guard_exit_blocked(exit: Exit, holder: Exit | None, reason: str) -> None:
    """An exit was refused or timed out because another exit holds the close lock.

    :param exit: the refused exit.
    :param holder: the exit that holds the lock, if it is known in this process.
    :param reason: ``"in_progress"``, ``"wait_timeout"``, ``"unknown_outcome"``,
        ``"lease_lost"`` (another process took the symbol's lease before the submit)
        or ``"replace_timeout"`` (a replace could not confirm the cancel in time).
    May not raise.
    """


@hookspec
def nija_guard_balance_refreshed(
    exit: Exit, free: float, total: float, sellable: float, balance_timestamp: int | None
) -> None:
    """Holdings were fetched (or taken from a fetch that started after admission).

    :param free: free balance of the asset, as the broker reports it.
    :param total: total balance of the asset.
    :param sellable: what the clamp may use: free minus what other exits sold
        or reserve that the snapshot does not show yet (and, in ledger mode,
        at most what the bot owns).
    :param balance_timestamp: the snapshot's exchange timestamp (ms), if any.
    May not raise.
    """


@hookspec
def nija_guard_quantity_clamped(
    exit: Exit, requested_amount: float, amount: float, sellable: float, reason: str
) -> None:
    """The submitted amount differs from the requested one.

    :param requested_amount: what the bot asked to sell.
    :param amount: what will be submitted: ``floor(min(requested, sellable) / step) * step``.
    :param reason: ``"holdings"`` (clamped to what is held or owned),
        ``"precision"`` (rounded down to the market's amount step) or
        ``"policy"`` (lowered by ``nija_guard_exit_amount``).
    May not raise.
    """


@hookspec
def nija_guard_dust_detected(exit: Exit, amount: float, reason: str) -> None:
    """What is left to sell is below the market's minimum amount or cost.

    Fires once per dust position (until its holdings change); the exit
    raises :class:`nija_guard.DustPosition` every time, with no order sent.
    May not raise.
    """


@hookspec
def nija_guard_order_submitted(exit: Exit, order: dict[str, Any]) -> None:
    """The exchange acknowledged the exit's order (``exit.order_id`` is set).

    :param order: the ccxt order structure of the reply.
    May not raise.
    """


@hookspec
def nija_guard_outcome_unknown(exit: Exit, error: BaseException) -> None:
    """A submit failed in a way that may have left an order on the exchange.

    The symbol stays locked until the guard reconciles it.
    :param error: the exception the submit raised.
    May not raise.
    """


@hookspec
def nija_guard_outcome_resolved(exit: Exit, order: dict[str, Any] | None) -> None:
    """An unknown outcome was reconciled with exchange evidence: the all-clear.

    :param order: the order found on the exchange, or None when the guard
        established that none was placed (``exit.outcome`` is then ``not_placed``).
    May not raise.
    """


@hookspec
def nija_guard_order_filled(exit: Exit, order: dict[str, Any], amount: float) -> None:
    """New fills of the exit's order were observed.

    :param amount: the newly filled amount (not the cumulative one).
    May not raise.
    """


@hookspec
def nija_guard_order_settled(exit: Exit, order: dict[str, Any] | None) -> None:
    """The exit's order is final; fires exactly once per order.

    ``exit.outcome`` says how it ended, ``exit.filled`` how much sold.
    :param order: the final ccxt order structure, or None when the guard
        established that no order was placed.
    May not raise.
    """


@hookspec
def nija_guard_position_flushed(exit: Exit, symbol: str) -> None:
    """An exit fully closed ``symbol``: the guard's state for it is gone.

    Fires before the close lock is released, so a bot dropping its own
    record here never races a new exit of that symbol.
    May not raise.
    """


@hookspec
def nija_guard_exit_vetoed(exit: Exit, reason: str) -> None:
    """A policy hook refused the exit (``nija_guard_exit_veto`` or ``nija_guard_exit_amount``).

    :param reason: the plugin's reason, as :class:`nija_guard.ExitVetoed` carries it.
    Nothing was sent. May not raise.
    """


@hookspec
def nija_guard_backend_failed(exit: Exit, error: BaseException) -> None:
    """The lock backend failed or could not be reached; the exit fails closed.

    :param error: the :class:`nija_guard.BackendUnavailable` the exit raises.
    Nothing was sent. May not raise.
    """


@hookspec
def nija_guard_lease_lost(exit: Exit, key: str) -> None:
    """The backend no longer says this process holds the lease of ``key``.

    It expired (a process paused past its TTL) or the backend lost it (a Redis
    restart without persistence). Before a submit, the exit is refused with
    nothing sent; for a resting order the guard tries to take the lease again.
    May not raise.
    """


@hookspec
def nija_guard_guard_closed(account: str) -> None:
    """A guard of ``account`` was closed (``close()``, ``aclose()`` or leaving ``with``).

    Plugins with their own workers flush here. May not raise.
    """


@hookspec(firstresult=True)
def nija_guard_exit_veto(exit: Exit) -> str | None:
    """Policy: return a reason to refuse the exit (nothing is sent), or None.

    Runs after the close lock is taken, before the balance refresh and the order
    (a symbol's first exit may already have looked up resting orders). The first
    non-None result wins and the exit raises :class:`nija_guard.ExitVetoed`.
    A hook that raises vetoes the exit (the guard fails closed).
    """


@hookspec
def nija_guard_exit_amount(exit: Exit, amount: float) -> float | None:
    """Policy: return a lower amount to sell, or None to leave it.

    Runs after the clamp, before anything is sent; every implementation is
    called and the lowest result wins, rounded down to the market's step. An
    amount may only be lowered: a higher one is ignored (and logged). A result
    of 0, a negative or non-numeric one, or one below the market's minimum
    vetoes the exit (:class:`nija_guard.ExitVetoed`, nothing sent); so does a
    hook that raises.

    :param amount: what the guard would submit (``exit.amount``).
    """
