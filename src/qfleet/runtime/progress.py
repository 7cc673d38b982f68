"""A rich progress bar for long batches, shown only on a terminal."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: A batch with more tapes than this shows progress at once; a smaller one after SLOW_AFTER s.
MANY_TAPES = 50
SLOW_AFTER = 2.0


def progress_enabled() -> bool:
    """On when stdout is a terminal and the config's ``[qfleet] progress`` is true."""
    from qfleet.config import load_config

    return sys.stdout.isatty() and load_config().qfleet.progress


class BatchProgress:
    """Counts finished tapes of one batch; draws a bar when the batch is large or slow.

    Used on the dispatcher loop: ``start()``, ``advance(n)``, ``stop()``.
    """

    def __init__(self, total: int, description: str, enabled: bool | None = None) -> None:
        self.total = total
        self.description = description
        self.enabled = progress_enabled() if enabled is None else enabled
        self.done = 0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if not self.enabled:
            return
        if self.total > MANY_TAPES:
            self._show()
        else:
            self._timer = asyncio.get_running_loop().call_later(SLOW_AFTER, self._show)

    def _show(self) -> None:
        from rich.progress import Progress

        self._bar = bar = Progress(transient=True)
        self._task = bar.add_task(self.description, total=self.total, completed=self.done)
        bar.start()

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None and self._task is not None:  # both set by _show()
            self._bar.update(self._task, completed=self.done)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
