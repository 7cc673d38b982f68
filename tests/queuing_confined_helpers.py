"""An executor for tests/test_queuing_confined.py that processes other than the test's
import by name (a durable job's executor is built again where it is taken over)."""

from __future__ import annotations

from typing import Any

from qfleet.errors import ExecutorError
from qfleet.executors import LocalExecutor


class Flaky(LocalExecutor):
    """Fails its first ``fail`` submissions (per instance) transiently: a cluster fails over."""

    fail: int = 0

    async def submit(self, payload: Any) -> tuple[Any, tuple[str, ...]]:
        count = self._runtime.setdefault("count", [0])
        count[0] += 1
        if count[0] <= self.fail:
            raise ExecutorError("no reply (dropped)", executor=self.label, transient=True)
        return await super().submit(payload)
