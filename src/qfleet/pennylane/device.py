"""QFleetDevice: a PennyLane device that hands batches of tapes to an executor or cluster.

Registered as the PennyLane plugin device ``qfleet.local``::

    dev = qml.device("qfleet.local", wires=2)   # LocalExecutor, or the config's executors
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pennylane.devices import Device, ExecutionConfig
from pennylane.devices.preprocess import validate_device_wires, validate_measurements
from pennylane.tape import QuantumScript
from pennylane.transforms.core import CompilePipeline

from qfleet.cluster import QuantumCluster
from qfleet.config import load_config
from qfleet.errors import ConfigError
from qfleet.executors import QuantumExecutor, RunMetadata, executor_classes
from qfleet.executors.base import SAMPLING_MEASUREMENTS, measurement_kind

ExecutorsLike = QuantumExecutor | Sequence[QuantumExecutor] | None


def as_executor(executors: ExecutorsLike, selector: Any = "cyclic") -> QuantumExecutor:
    """One executor from an executor, a cluster or a list (a list becomes a cluster).

    None means the executors the config file's ``[qfleet]`` section names.
    """
    if isinstance(executors, QuantumExecutor):
        return executors
    if executors is None:
        general = load_config().qfleet
        classes = executor_classes()
        missing = [name for name in general.executors if name not in classes]
        if missing:
            raise ConfigError(
                f"[qfleet] executors names unknown executor class(es) {missing}; valid: "
                f"{sorted(classes)}"
            )
        executors = [classes[name]() for name in general.executors]
        selector = general.selector
    executors = list(executors)
    if len(executors) == 1 and selector == "cyclic":
        return executors[0]
    return QuantumCluster(executors=executors, selector=selector)


class QFleetDevice(Device):
    """Runs PennyLane tapes on a qfleet executor or cluster.

    It implements no derivatives, so ``diff_method="best"`` resolves to parameter-shift and
    all tapes of one gradient arrive in one ``execute`` call: one batch, one backend job.

    Example:
        >>> dev = QFleetDevice(wires=2, executors=[LocalExecutor(), LocalExecutor()])
        >>> qml.QNode(circuit, dev)(0.3)
    """

    short_name = "qfleet.local"

    def __init__(
        self,
        wires: Any = None,
        shots: Any = None,
        executors: ExecutorsLike = None,
        selector: Any = "cyclic",
    ) -> None:
        super().__init__(wires=wires, shots=shots)
        self.executor = as_executor(executors, selector)
        self.last_metadata: RunMetadata | None = None

    @property
    def name(self) -> str:
        return self.short_name

    def __repr__(self) -> str:
        return f"<QFleetDevice wires={len(self.wires) if self.wires else None} executor={self.executor!r}>"

    def preprocess_transforms(
        self, execution_config: ExecutionConfig | None = None
    ) -> CompilePipeline:
        # Light on purpose: each executor applies its backend's own preprocessing when it
        # prepares the batch, so this only checks what every backend needs.
        caps = self.executor.capabilities
        pipeline = CompilePipeline()
        if self.wires is not None:
            pipeline.add_transform(validate_device_wires, self.wires, name=self.name)
        pipeline.add_transform(
            validate_measurements,
            # A shots-only executor still takes analytic tapes when it (or a cluster member)
            # has shots of its own; its check() raises UnsupportedCircuitError if not.
            analytic_measurements=lambda mp: measurement_kind(mp) in caps.measurements
            and (caps.analytic or measurement_kind(mp) in SAMPLING_MEASUREMENTS),
            sample_measurements=lambda mp: measurement_kind(mp) in caps.measurements & SAMPLING_MEASUREMENTS,
            name=f"{self.name} ({self.executor.label})",
        )
        return pipeline

    def execute(
        self,
        circuits: Sequence[QuantumScript],
        execution_config: ExecutionConfig | None = None,
    ) -> tuple:
        results = self.executor.execute(circuits)
        self.last_metadata = results.metadata
        return tuple(results)
