"""The device's turns: one fine-tune at a time, in the sweep's order, and no turn waits for
ever on one that failed."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from flows.device import TurnOrder, device_turn

log = logging.getLogger("test_device")


def _turn(
    name: str, events: list[str], hold_s: float, fail: bool = False, analyse_s: float = 0
) -> str:
    if fail:
        raise RuntimeError(f"{name} failed before its turn")
    with device_turn(name, log):
        events.append(f"{name} takes")
        time.sleep(hold_s)
        events.append(f"{name} lets go")
    events.append(f"{name} analyses")
    time.sleep(analyse_s)
    events.append(f"{name} done")
    return name


def test_turns_follow_the_order_even_when_a_later_thread_starts_first() -> None:
    # Before: two threads raced for a plain lock, and the 50% fine-tune of a sweep could
    # train before the 25% one.
    order, events = TurnOrder(), []
    with ThreadPoolExecutor(2) as pool:
        second = pool.submit(contextvars.copy_context().run, order.run, 1, _turn, "b", events, 0)
        time.sleep(0.2)  # "b" is waiting for its turn now
        first = pool.submit(
            contextvars.copy_context().run, order.run, 0, _turn, "a", events, 0.2, False, 0.5
        )
        assert (first.result(), second.result()) == ("a", "b")
    assert events.index("a takes") < events.index("a lets go") < events.index("b takes")
    # the overlap: "b" held the device while "a" was still analysing
    assert events.index("b takes") < events.index("a done")


def test_a_turn_that_failed_before_the_device_does_not_block_the_next() -> None:
    order, events = TurnOrder(), []
    with ThreadPoolExecutor(2) as pool:
        run = contextvars.copy_context().run
        failed = pool.submit(run, order.run, 0, _turn, "a", events, 0, True)
        nxt = pool.submit(contextvars.copy_context().run, order.run, 1, _turn, "b", events, 0)
        with pytest.raises(RuntimeError, match="a failed"):
            failed.result(timeout=10)
        assert nxt.result(timeout=10) == "b"
    assert events == ["b takes", "b lets go", "b analyses", "b done"]


def test_without_a_sweep_the_device_is_one_lock() -> None:
    events: list[str] = []
    threads = [threading.Thread(target=_turn, args=(n, events, 0.1)) for n in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    takes = [e for e in events if e.endswith("takes") or e.endswith("lets go")]
    assert takes[1].endswith("lets go") and takes[0][0] == takes[1][0]  # no interleaving
