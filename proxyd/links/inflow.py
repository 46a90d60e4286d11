"""The gateway's requests a connection has not answered yet (SGIP, SMGP): at most `window`.

A Deliver (MO or report) is answered only once the delivery side has stored it; while
`window` of them wait, the connection stops reading (`pauseProducing`), so a gateway that
sends faster than the store answers fills TCP's buffers, not proxyd's memory. Each answer
is sent once, however often the delivery side calls it.
"""
from __future__ import annotations

from typing import Any, Callable


class Inflow:
    __slots__ = ("protocol", "window", "waiting", "paused")

    def __init__(self, protocol: Any, window: int) -> None:
        self.protocol = protocol        # has .transport (None once closed)
        self.window = max(1, window)
        self.waiting = 0
        self.paused = False

    def ack(self, answer: Callable[[int], None]) -> Callable[[int], None]:
        """Count one request; `answer(status)` wrapped to run once and to resume reading."""
        self.waiting += 1
        t = self.protocol.transport
        if self.waiting >= self.window and not self.paused and t is not None:
            self.paused = True
            t.pauseProducing()
        done = [False]

        def once(status: int) -> None:
            if done[0]:
                return
            done[0] = True
            self.waiting -= 1
            answer(status)
            t = self.protocol.transport
            if self.paused and self.waiting < self.window and t is not None:
                self.paused = False
                t.resumeProducing()

        return once
