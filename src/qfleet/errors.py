"""Typed errors. Each message says what is wrong and how to fix it."""

from __future__ import annotations


class QFleetError(Exception):
    """Base class of every error qfleet raises on purpose."""


class ConfigError(QFleetError, ValueError):
    """A config file, section, key or value is invalid."""


class ExecutorError(QFleetError):
    """A backend failed while running a batch.

    ``executor`` names the executor that failed, ``transient`` says whether retrying
    (on the same or another executor) may succeed.
    """

    def __init__(self, message: str, *, executor: str | None = None, transient: bool = False):
        prefix = f"[{executor}] " if executor else ""
        super().__init__(prefix + message)
        self.executor = executor
        self.transient = transient

    def __reduce__(self):
        # Keeps the keyword-only fields when the error crosses a process boundary.
        message = str(self)
        if self.executor and message.startswith(f"[{self.executor}] "):
            message = message[len(self.executor) + 3 :]
        return (_rebuild_executor_error, (type(self), message, self.executor, self.transient))


def _rebuild_executor_error(cls, message, executor, transient):
    return cls(message, executor=executor, transient=transient)


class ExecutorTimeoutError(ExecutorError, TimeoutError):
    """A backend did not answer within the executor's ``timeout``."""


class UnsupportedCircuitError(QFleetError, ValueError):
    """The circuit uses something the chosen executor cannot run (wires, measurements, shots)."""
