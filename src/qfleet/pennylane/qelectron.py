"""``@qelectron``: run a PennyLane QNode on qfleet executors, now or later."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, overload

from pennylane.workflow import QNode, construct_batch

from qfleet.executors import QuantumExecutor, RunMetadata
from qfleet.pennylane.device import QFleetDevice, as_executor
from qfleet.runtime.futures import LazyFuture

#: Device-side gradient methods; where the executor does not compute them itself, they
#: fall back to parameter-shift.
_DEVICE_GRADIENTS = {"backprop", "adjoint", "device"}


class QFuture(LazyFuture):
    """The future ``run_later`` returns: a ``concurrent.futures.Future``, also awaitable.

    The backend work starts at once; PennyLane post-processing runs once, on the thread that
    asks for the result (PennyLane is not thread-safe). ``cancel()`` cancels the backend job.

    Example:
        >>> @qelectron(executors=LocalExecutor())
        ... @qml.qnode(qml.device("default.qubit", wires=1))
        ... def circuit(x):
        ...     qml.RX(x, wires=0)
        ...     return qml.expval(qml.Z(0))
        >>> futures = [circuit.run_later(x) for x in (0.0, np.pi)]
        >>> [f.result() for f in futures]          # or: await asyncio.gather(*futures)
        [np.float64(1.0), np.float64(-1.0)]
    """

    @property
    def metadata(self) -> RunMetadata:
        """Where and how the batch ran (after completion)."""
        return self.raw.metadata


class QElectron(QNode):
    """A QNode whose device is a qfleet executor or cluster.

    Create it with :func:`qelectron`. It is still a QNode: calls, gradients, transforms,
    ``qml.set_shots`` and ``update`` work as before and keep ``run_later``.
    """

    qelectron_name: str
    description: str | None

    @property
    def executor(self) -> QuantumExecutor:
        """The executor or cluster the QNode runs on."""
        return self.device.executor

    @property
    def last_metadata(self) -> RunMetadata | None:
        """Metadata of the most recent synchronous execution."""
        return self.device.last_metadata

    def run_later(self, *args: Any, **kwargs: Any) -> QFuture:
        """Start the QNode on its executors and return a future at once.

        Tapes are built and transformed here, on the calling thread; the backend work
        runs concurrently with other calls.
        """
        tapes, postprocess = construct_batch(self, level="device")(*args, **kwargs)
        prepared = self.executor.prepare(tapes)
        # construct_batch post-processes the QNode's one-tape batch: unwrap that tape.
        return QFuture.start(
            prepared.executor.runner.run(prepared),
            lambda raw: postprocess(prepared.complete(raw))[0],
        )

    def __copy__(self) -> QElectron:
        return _adopt(QNode.__copy__(self), self)

    def update(self, **kwargs: Any) -> QElectron:
        device = kwargs.get("device")
        if device is not None and not isinstance(device, QFleetDevice):
            kwargs["device"] = QFleetDevice(
                wires=device.wires, shots=device.shots, executors=self.executor
            )
        return _adopt(QNode.update(self, **kwargs), self)

    def __repr__(self) -> str:
        return (
            f"<QElectron {self.qelectron_name!r}: executor={self.executor!r}, "
            f"interface={self.interface!r}, diff_method={self.diff_method!r}, shots={self.shots}>"
        )


def _adopt(plain: QNode, template: QElectron) -> QElectron:
    """``plain`` (a QNode PennyLane made from a QElectron) as a QElectron again."""
    electron = QElectron.__new__(QElectron)
    electron.__dict__.update(plain.__dict__)
    electron.qelectron_name = template.qelectron_name
    electron.description = template.description
    return electron


@overload
def qelectron(
    qnode: QNode,
    *,
    executors: QuantumExecutor | Sequence[QuantumExecutor] | None = None,
    selector: str | Callable = "cyclic",
    name: str | None = None,
    description: str | None = None,
) -> QElectron: ...


@overload
def qelectron(
    qnode: None = None,
    *,
    executors: QuantumExecutor | Sequence[QuantumExecutor] | None = None,
    selector: str | Callable = "cyclic",
    name: str | None = None,
    description: str | None = None,
) -> Callable[[QNode], QElectron]: ...


def qelectron(
    qnode: QNode | None = None,
    *,
    executors: QuantumExecutor | Sequence[QuantumExecutor] | None = None,
    selector: str | Callable = "cyclic",
    name: str | None = None,
    description: str | None = None,
) -> QElectron | Callable[[QNode], QElectron]:
    """Run a QNode on qfleet executors. Use as a decorator above ``@qml.qnode`` or call it.

    ``executors``: an executor, a cluster, or a list (run as a cluster with ``selector``);
    None: the executors the config file names (default: a LocalExecutor).

    Example:
        >>> @qelectron(executors=[LocalExecutor(), LocalExecutor(device="lightning.qubit")])
        ... @qml.qnode(qml.device("default.qubit", wires=2), shots=1024)
        ... def circuit(x):
        ...     qml.RX(x, wires=0)
        ...     return qml.probs(wires=[0, 1])
        >>> circuit(0.3).round(1)                      # executor 1, then 2, then 1, ...
        array([1., 0., 0., 0.])
        >>> circuit.run_later(0.3).result().round(1)   # concurrent
        array([1., 0., 0., 0.])
    """
    if qnode is None:
        return lambda q: qelectron(
            q, executors=executors, selector=selector, name=name, description=description
        )
    if not isinstance(qnode, QNode):
        raise TypeError(
            f"qelectron expects a PennyLane QNode (decorate with @qml.qnode first), got "
            f"{type(qnode).__name__}"
        )
    executor = as_executor(executors, selector)
    original = qnode.device
    device = QFleetDevice(wires=original.wires, shots=original.shots, executors=executor)
    changes: dict[str, Any] = {"device": device}
    method = qnode.diff_method
    if isinstance(method, str) and method in _DEVICE_GRADIENTS:
        offered, _ = device.native_derivatives()
        if method not in offered:
            where = f"{device.executor.label} computes {sorted(offered)}" if offered else (
                f"{device.executor.label} runs no simulator that computes derivatives itself"
            )
            warnings.warn(
                f"diff_method={method!r} needs a simulator's internals ({where}); using "
                f"'parameter-shift' instead",
                UserWarning,
                stacklevel=2,
            )
            changes["diff_method"] = "parameter-shift"
    electron = QElectron.__new__(QElectron)
    electron.__dict__.update(QNode.update(qnode, **changes).__dict__)
    # `name if name else`, not `name or`: mypy would keep None in the type of the latter.
    electron.qelectron_name = name if name else getattr(qnode, "__name__", "qelectron")
    electron.description = description
    return electron


__all__ = ["QElectron", "QFuture", "qelectron"]
