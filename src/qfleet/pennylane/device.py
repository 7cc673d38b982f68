"""QFleetDevice: a PennyLane device that hands batches of tapes to an executor or cluster.

Registered as the PennyLane plugin device ``qfleet.local``::

    dev = qml.device("qfleet.local", wires=2)   # LocalExecutor, or the config's executors
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pennylane as qml
from pennylane.devices import Device, ExecutionConfig
from pennylane.devices.preprocess import (
    null_postprocessing,
    validate_device_wires,
    validate_measurements,
)
from pennylane.devices.qubit.sampling import get_num_shots_and_executions
from pennylane.exceptions import DeviceError
from pennylane.tape import QuantumScript, QuantumScriptBatch
from pennylane.transforms.core import CompilePipeline, transform
from pennylane.typing import PostprocessingFn

from qfleet.cluster import QuantumCluster
from qfleet.config import executor_classes, load_config
from qfleet.errors import ConfigError
from qfleet.executors import BatchResult, QuantumExecutor, RunMetadata
from qfleet.sampling import SHOTS_ONLY_MEASUREMENTS, measurement_kind, needs_backend_support

ExecutorsLike = QuantumExecutor | Sequence[QuantumExecutor] | None


def as_executor(
    executors: ExecutorsLike, selector: Any = "cyclic", seed: int | None = None
) -> QuantumExecutor:
    """One executor from an executor, a cluster or a list (a list becomes a cluster).

    None means the executors the config file's ``[qfleet]`` section names; ``seed`` is
    given to those of them that take one (e.g. LocalExecutor). Executors passed in keep
    their own seeds.
    """
    if seed is not None and executors is not None:
        raise ConfigError(
            "seed= only applies to the executors the device builds itself; set seed on "
            "your executors instead (e.g. LocalExecutor(seed=7))"
        )
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
        seeded = {name for name in general.executors if "seed" in classes[name].model_fields}
        if seed is not None and not seeded:
            raise ConfigError(
                f"seed= was given but none of the configured executors "
                f"{general.executors} takes a seed"
            )
        executors = [
            classes[name](seed=seed) if seed is not None and name in seeded else classes[name]()
            for name in general.executors
        ]
        selector = general.selector
    executors = list(executors)
    if len(executors) == 1 and selector == "cyclic":
        return executors[0]
    return QuantumCluster(executors=executors, selector=selector)


@transform
def validate_operations(
    tape: QuantumScript, executor: QuantumExecutor, name: str = "qfleet"
) -> tuple[QuantumScriptBatch, PostprocessingFn]:
    """Reject, before anything runs, operators the executor can neither run nor decompose.

    Cheap: only matrix-less, decomposition-less operators (state preparations such as
    QubitDensityMatrix, noise channels) are put to the executor; gates are left to its
    own preprocessing.
    """
    for op in tape.operations:
        if needs_backend_support(op) and not executor.supports_operation(op):
            raise DeviceError(
                f"Operator {op} not supported on {name} and does not provide a decomposition"
            )
    return (tape,), null_postprocessing


@transform
def drop_snapshots(tape: QuantumScript) -> tuple[QuantumScriptBatch, PostprocessingFn]:
    """The tape without ``qml.Snapshot`` operations (they change no result)."""
    if not any(isinstance(op, qml.Snapshot) for op in tape.operations):
        return (tape,), null_postprocessing
    operations = [op for op in tape.operations if not isinstance(op, qml.Snapshot)]
    return (tape.copy(operations=operations),), null_postprocessing


class QFleetDevice(Device):
    """Runs PennyLane tapes on a qfleet executor or cluster.

    It implements no derivatives, so ``diff_method="best"`` resolves to parameter-shift and
    all tapes of one gradient arrive in one ``execute`` call: one batch, one backend job.

    ``seed`` seeds the executors the device builds itself (the config's, by default one
    LocalExecutor), for reproducible shots: ``qml.device("qfleet.local", wires=2, seed=7)``.

    Example:
        >>> dev = QFleetDevice(wires=2, executors=[LocalExecutor(), LocalExecutor()])
        >>> @qml.qnode(dev)
        ... def circuit(x):
        ...     qml.RX(x, wires=0)
        ...     return qml.expval(qml.Z(0))
        >>> circuit(0.3)
        np.float64(0.95533648912...)
    """

    short_name = "qfleet.local"

    def __init__(
        self,
        wires: Any = None,
        shots: Any = None,
        executors: ExecutorsLike = None,
        selector: Any = "cyclic",
        seed: int | None = None,
    ) -> None:
        super().__init__(wires=wires, shots=shots)
        self.executor = as_executor(executors, selector, seed=seed)
        self.last_metadata: RunMetadata | None = None

    @property
    def name(self) -> str:
        return self.short_name

    def __repr__(self) -> str:
        wires = len(self.wires) if self.wires else None
        return f"<QFleetDevice wires={wires} executor={self.executor!r}>"

    def preprocess_transforms(
        self, execution_config: ExecutionConfig | None = None
    ) -> CompilePipeline:
        # Light on purpose: each executor applies its backend's own preprocessing when it
        # prepares the batch, so this only checks what every backend needs.
        caps = self.executor.capabilities
        pipeline = CompilePipeline()
        name = f"{self.name} ({self.executor.label})"
        if self.wires is not None:
            pipeline.add_transform(validate_device_wires, self.wires, name=self.name)
        pipeline.add_transform(validate_operations, self.executor, name=name)
        if not caps.takes_tapes:
            # Snapshots are for simulators (qml.snapshots); a circuit backend runs without.
            pipeline.add_transform(drop_snapshots)
        # Without shots: what the executor returns exactly, or, on a shots-only executor,
        # what its own shots estimate (with a warning); sample/counts raise as on
        # default.qubit.
        exact = (
            caps.exact_measurements if caps.analytic
            else caps.measurements - SHOTS_ONLY_MEASUREMENTS
        )
        pipeline.add_transform(
            validate_measurements,
            analytic_measurements=lambda mp: measurement_kind(mp) in exact,
            sample_measurements=lambda mp: measurement_kind(mp) in caps.measurements,
            name=name,
        )
        return pipeline

    def execute(
        self,
        circuits: Sequence[QuantumScript],
        execution_config: ExecutionConfig | None = None,
    ) -> tuple:
        results = self.executor.execute(circuits)
        self.last_metadata = results.metadata
        if self.tracker.active:
            self._track(circuits, results)
        return tuple(results)

    def _track(self, circuits: Sequence[QuantumScript], results: BatchResult) -> None:
        # What default.qubit records (less its "simulations"), plus the executor that ran.
        self.tracker.update(batches=1, executor=results.metadata.executor)
        self.tracker.record()
        for circuit, result in zip(circuits, results, strict=True):
            executions, shots = get_num_shots_and_executions(circuit)
            extra = {"shots": shots} if circuit.shots else {}
            self.tracker.update(
                executions=executions,
                results=result,
                resources=circuit.specs["resources"],
                errors=circuit.specs["errors"],
                **extra,
            )
            self.tracker.record()
