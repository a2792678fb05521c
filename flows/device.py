"""The device of this process: one fine-tune trains (and embeds its evaluation set) at a
time, and a sweep's fine-tunes take their turns in the sweep's order.

A local sweep runs two fine-tunes at once on CUDA (``flows.sweep.run_local``): while one
holds the device, the other analyses its embeddings on the CPU. Without an order the two
threads race for the device and the 50% run could train before the 25% one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

DEVICE_TURN = threading.Lock()  # uncontended when a process runs one fine-tune


class TurnOrder:
    """Turns in a fixed order: turn ``i`` begins once turn ``i - 1`` has let the device go
    or has ended (failed before it took the device, say), so no turn waits for ever."""

    def __init__(self) -> None:
        self._over: set[int] = set()
        self._changed = threading.Condition()

    def ready(self, index: int) -> bool:
        """Whether turn ``index`` may take the device now."""
        with self._changed:
            return index == 0 or index - 1 in self._over

    def wait(self, index: int) -> None:
        """Block until turn ``index`` may take the device."""
        with self._changed:
            self._changed.wait_for(lambda: index == 0 or index - 1 in self._over)

    def over(self, index: int) -> None:
        """Turn ``index`` has let the device go (or ended)."""
        with self._changed:
            self._over.add(index)
            self._changed.notify_all()

    def run(self, index: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` as turn ``index`` (in the thread that runs it)."""
        token = _TURN.set((self, index))
        try:
            return fn(*args, **kwargs)
        finally:
            self.over(index)
            _TURN.reset(token)


_TURN: ContextVar[tuple[TurnOrder, int] | None] = ContextVar("chexflow_turn", default=None)


@contextlib.contextmanager
def device_turn(name: str, logger: logging.Logger | logging.LoggerAdapter) -> Iterator[None]:
    """Hold the device for ``name`` (in its turn, if a sweep gave it one), saying so on
    ``logger`` when it has to wait."""
    turn = _TURN.get()
    if turn is not None and not turn[0].ready(turn[1]):
        logger.info("%s waits for its turn on the device, after the previous fine-tune", name)
        turn[0].wait(turn[1])
    if not DEVICE_TURN.acquire(blocking=False):
        logger.info("%s waits for the device (another fine-tune holds it)", name)
        DEVICE_TURN.acquire()
    try:
        yield
    finally:
        DEVICE_TURN.release()
        if turn is not None:
            turn[0].over(turn[1])
