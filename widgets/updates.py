"""Widget updates from background threads, applied on the notebook's main thread.

ipywidgets and plotly's FigureWidget are not thread-safe: a panel that trains or
benchmarks in a background thread posts each update here instead of touching a
widget. In Jupyter the updates run on the kernel's event loop (the main thread) as
soon as it is free; outside a running loop (scripts, tests) they wait for `drain()`,
which each panel's `wait()` calls.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable


class MainThreadUpdates:
    def __init__(self):
        self._pending: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        try:  # made on the main thread, inside the kernel's loop when in Jupyter
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def post(self, update: Callable[[], None]) -> None:
        """Run `update` on the main thread (from any thread)."""
        self._pending.put(update)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """Apply every pending update, in order, in the calling (main) thread."""
        while True:
            try:
                update = self._pending.get_nowait()
            except queue.Empty:
                return
            update()
