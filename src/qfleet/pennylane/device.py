"""QFleetDevice: a PennyLane device that hands batches of tapes to an executor or cluster.

Registered as the PennyLane plugin device ``qfleet.local``::

    dev = qml.device("qfleet.local", wires=2)   # LocalExecutor, or the config's executors
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
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
from pennylane.tape import QuantumScript, QuantumScriptBatch, QuantumScriptOrBatch
from pennylane.transforms.core import CompilePipeline, transform
from pennylane.typing import PostprocessingFn

from qfleet.cluster import QuantumCluster
from qfleet.config import executor_classes, load_config
from qfleet.errors import ConfigError
from qfleet.executors import BatchResult, QuantumExecutor, RunMetadata
from qfleet.pennylane.workarounds import remember_failed_capture_import
from qfleet.sampling import (
    SHOTS_ONLY_MEASUREMENTS,
    Capabilities,
    measurement_kind,
    needs_backend_support,
)
from qfleet.sampling.derivatives import NATIVE_METHODS, Derivatives, Mode, split_pairs

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

    Derivatives: where the executor runs a PennyLane simulator itself (LocalExecutor,
    DaskExecutor; a cluster whose members differentiate with one simulator), the device
    offers that simulator's own derivatives, and ``diff_method="best"`` resolves to what
    it resolves to on a plain QNode of that simulator: adjoint on lightning.qubit (one
    forward and backward pass per tape, the batch on one member), backprop through
    default.qubit when the simulation runs on the caller's thread. Elsewhere ``"best"`` is
    parameter-shift, and all tapes of one gradient arrive in one ``execute`` call: one
    batch, one backend job.

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
        >>> qml.workflow.get_best_diff_method(circuit)(0.3)   # as on default.qubit
        'backprop'
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
        # Per device, not per call: PennyLane asks for these on every QNode call.
        self._pipelines: dict[tuple, CompilePipeline] = {}
        self._simulators: dict[str, Device] = {}
        self._last_native: tuple | None = None
        _apply_workarounds()

    @property
    def name(self) -> str:
        return self.short_name

    @property
    def executors(self) -> list[QuantumExecutor]:
        """Covalent's ``device.executors``: ``[executor]`` (a list given to the qelectron is
        one QCluster here, as in Covalent)."""
        return [self.executor]

    def __repr__(self) -> str:
        wires = len(self.wires) if self.wires else None
        return f"<QFleetDevice wires={wires} executor={self.executor!r}>"

    def __getstate__(self) -> dict[str, Any]:
        # The caches hold PennyLane devices and pipelines: rebuilt where unpickled.
        return {**self.__dict__, "_pipelines": {}, "_simulators": {}, "_last_native": None}

    # -- derivatives ---------------------------------------------------------------------

    def native_derivatives(self) -> tuple[frozenset[str], Device | None]:
        """The derivatives the executor computes itself, and a PennyLane device of the
        simulator that computes them (for PennyLane's questions: which method "best" is,
        whether a circuit supports it, the tapes it differentiates), or (empty, None)."""
        caps = self.executor.capabilities
        if not caps.derivatives or caps.simulator is None:
            return frozenset(), None
        simulator = self._simulators.get(caps.simulator)
        if simulator is None:
            simulator = qml.device(caps.simulator, wires=self.wires)
            self._simulators[caps.simulator] = simulator
        return caps.derivatives, simulator

    def _native_config(
        self, config: ExecutionConfig, circuit: QuantumScript | None, check: bool = True
    ) -> ExecutionConfig | None:
        """``config`` resolved as the simulator resolves it, if the executor computes that
        method itself; else None (PennyLane then differentiates by parameter-shift).
        ``check``: ask the simulator whether it differentiates ``circuit`` that way."""
        method = config.gradient_method
        if not isinstance(method, str) or method not in NATIVE_METHODS | {"best"}:
            return None
        # PennyLane asks supports_derivatives, then setup_execution_config, with the same
        # objects: answer the second from the first.
        last = self._last_native
        if last is not None and last[0] is config and last[1] is circuit and last[2] >= check:
            return last[3]
        offered, simulator = self.native_derivatives()
        resolved = None
        if simulator is not None and (
            not check or simulator.supports_derivatives(config, circuit)
        ):
            resolved = simulator.setup_execution_config(config, circuit)
            if resolved.gradient_method not in offered:
                resolved = None
        if (
            resolved is None
            and method == "best"
            and simulator is not None
            and not (circuit is not None and not circuit.trainable_params)
        ):
            # Backprop is not offered off the caller's thread: adjoint, as default.qubit
            # itself resolves "best" when it simulates on workers (max_workers). Not for a
            # circuit with nothing to differentiate: default.qubit's adjoint pipeline rebinds
            # no parameters there and fails on scaled operators (TrotterProduct: IndexError
            # in bind_new_parameters), where backprop, the reference's choice, runs it.
            for fallback in sorted(offered):
                config_m = replace(config, gradient_method=fallback)
                if simulator.supports_derivatives(config_m, circuit):
                    resolved = simulator.setup_execution_config(config_m, circuit)
                    break
        self._last_native = (config, circuit, check, resolved)
        return resolved

    def supports_derivatives(
        self, execution_config: ExecutionConfig | None = None, circuit: QuantumScript | None = None
    ) -> bool:
        if execution_config is None:
            return bool(self.native_derivatives()[0])
        return self._native_config(execution_config, circuit) is not None

    def supports_vjp(
        self, execution_config: ExecutionConfig | None = None, circuit: QuantumScript | None = None
    ) -> bool:
        simulator = self._derivative_simulator(execution_config, circuit)
        return simulator is not None and simulator.supports_vjp(execution_config, circuit)

    def supports_jvp(
        self, execution_config: ExecutionConfig | None = None, circuit: QuantumScript | None = None
    ) -> bool:
        simulator = self._derivative_simulator(execution_config, circuit)
        return simulator is not None and simulator.supports_jvp(execution_config, circuit)

    def _derivative_simulator(
        self, config: ExecutionConfig | None, circuit: QuantumScript | None
    ) -> Device | None:
        if config is None or self._native_config(config, circuit) is None:
            return None
        return self.native_derivatives()[1]

    def setup_execution_config(
        self, config: ExecutionConfig | None = None, circuit: QuantumScript | None = None
    ) -> ExecutionConfig:
        config = config or ExecutionConfig()
        # PennyLane asked supports_derivatives(config, circuit) before it passes a method
        # here; only "best" still depends on the circuit.
        native = self._native_config(config, circuit, check=config.gradient_method == "best")
        if native is not None:
            return native
        if config.gradient_method == "best":
            # Device.setup_execution_config turns "best" into "device" when the device
            # supports derivatives for *some* circuit; here this circuit has none.
            resolved = super().setup_execution_config(
                replace(config, gradient_method=None), circuit
            )
            return replace(resolved, gradient_method="best")
        return super().setup_execution_config(config, circuit)

    def _request(
        self,
        config: ExecutionConfig | None,
        mode: Mode,
        vectors: Sequence[Any] | None = None,
    ) -> Derivatives:
        assert config is not None and isinstance(config.gradient_method, str)
        _, simulator = self.native_derivatives()
        assert simulator is not None  # PennyLane asked for derivatives we offered
        interface = config.interface
        return Derivatives(
            method=config.gradient_method,
            simulator=simulator.name,
            mode=mode,
            vectors=None if vectors is None else tuple(vectors),
            interface=getattr(interface, "value", interface),
            order=config.derivative_order,
        )

    def _run_derivatives(
        self, circuits: Sequence[QuantumScript], request: Derivatives
    ) -> BatchResult:
        results = self.executor.execute(circuits, derivatives=request)
        self.last_metadata = results.metadata
        if self.tracker.active:
            self.tracker.update(derivative_batches=1, derivatives=len(circuits))
            self.tracker.record()
        return results

    def compute_derivatives(
        self, circuits: QuantumScriptOrBatch, execution_config: ExecutionConfig | None = None
    ) -> tuple:
        request = self._request(execution_config, "jacobian")
        return tuple(self._run_derivatives(_batch(circuits), request))

    def execute_and_compute_derivatives(
        self, circuits: QuantumScriptOrBatch, execution_config: ExecutionConfig | None = None
    ) -> tuple:
        request = self._request(execution_config, "execute_and_jacobian")
        return split_pairs(self._run_derivatives(_batch(circuits), request))

    def compute_vjp(
        self,
        circuits: QuantumScriptOrBatch,
        cotangents: tuple,
        execution_config: ExecutionConfig | None = None,
    ) -> tuple:
        request = self._request(execution_config, "vjp", cotangents)
        return tuple(self._run_derivatives(_batch(circuits), request))

    def execute_and_compute_vjp(
        self,
        circuits: QuantumScriptOrBatch,
        cotangents: tuple,
        execution_config: ExecutionConfig | None = None,
    ) -> tuple:
        request = self._request(execution_config, "execute_and_vjp", cotangents)
        return split_pairs(self._run_derivatives(_batch(circuits), request))

    def compute_jvp(
        self,
        circuits: QuantumScriptOrBatch,
        tangents: tuple,
        execution_config: ExecutionConfig | None = None,
    ) -> tuple:
        request = self._request(execution_config, "jvp", tangents)
        return tuple(self._run_derivatives(_batch(circuits), request))

    def execute_and_compute_jvp(
        self,
        circuits: QuantumScriptOrBatch,
        tangents: tuple,
        execution_config: ExecutionConfig | None = None,
    ) -> tuple:
        request = self._request(execution_config, "execute_and_jvp", tangents)
        return split_pairs(self._run_derivatives(_batch(circuits), request))

    # -- execution -----------------------------------------------------------------------

    def preprocess_transforms(
        self, execution_config: ExecutionConfig | None = None
    ) -> CompilePipeline:
        config = execution_config or ExecutionConfig()
        caps = self.executor.capabilities
        method = config.gradient_method
        native = isinstance(method, str) and method in caps.derivatives
        mcm = config.mcm_config
        key = (caps, method if native else None, config.interface, mcm.mcm_method,
               mcm.postselect_mode)  # fmt: skip
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            if native:
                # The simulator's own pipeline: PennyLane differentiates the tapes it
                # makes (adjoint) or traces through it (backprop), as on the plain QNode,
                # and the member runs them as they are.
                simulator = self.native_derivatives()[1]
                assert simulator is not None
                pipeline = CompilePipeline()
                if self.wires is not None:  # errors name this device, not the simulator
                    pipeline.add_transform(validate_device_wires, self.wires, name=self.name)
                pipeline += simulator.preprocess_transforms(config)
            else:
                pipeline = self._own_pipeline(caps)
            self._pipelines[key] = pipeline
        # A copy: PennyLane's callers may extend what they are given.
        return CompilePipeline(pipeline)

    def _own_pipeline(self, caps: Capabilities) -> CompilePipeline:
        # Light on purpose: each executor applies its backend's own preprocessing when it
        # prepares the batch, so this only checks what every backend needs.
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
        circuits: QuantumScriptOrBatch,
        execution_config: ExecutionConfig | None = None,
    ) -> tuple:
        circuits = _batch(circuits)
        if execution_config is not None and execution_config.gradient_method == "backprop":
            # Traced: only a member that backprops through this simulator, on this thread.
            request = self._request(execution_config, "execute")
            results = self.executor.execute(circuits, derivatives=request)
        else:
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


def _batch(circuits: QuantumScriptOrBatch) -> Sequence[QuantumScript]:
    return (circuits,) if isinstance(circuits, QuantumScript) else circuits


_workarounds_applied = False


def _apply_workarounds() -> None:
    global _workarounds_applied
    if not _workarounds_applied:
        _workarounds_applied = True
        remember_failed_capture_import()
