"""Ctrl-C stops a send cleanly on event loops with signal handlers (POSIX) and without them (Windows' loops)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import TypeVarTuple

from mailer.cli import _stopped_by_signals

Ts = TypeVarTuple("Ts")


class LoopWithoutSignalHandlers(asyncio.SelectorEventLoop):
    """What asyncio's Windows loops do: no add_signal_handler."""

    def add_signal_handler(self, sig: int, callback: Callable[[*Ts], object], *args: *Ts) -> None:
        raise NotImplementedError


async def _interrupted() -> bool:
    stop = asyncio.Event()
    with _stopped_by_signals(stop):
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(stop.wait(), timeout=5)
    return stop.is_set()


def test_ctrl_c_sets_stop_with_loop_signal_handlers() -> None:
    before = signal.getsignal(signal.SIGINT)
    assert asyncio.run(_interrupted())
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_sets_stop_on_a_loop_without_signal_handlers_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    with asyncio.Runner(loop_factory=LoopWithoutSignalHandlers) as runner:
        assert runner.run(_interrupted())
    assert signal.getsignal(signal.SIGINT) is before
