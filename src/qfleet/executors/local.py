"""LocalExecutor: any installed PennyLane simulator ("default.qubit", "lightning.qubit", ...)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import pennylane as qml
from pennylane.devices import ExecutionConfig
from pennylane.exceptions import DeviceError
from pennylane.ops import MidMeasure
from pennylane.tape import QuantumScript
from pydantic import Field, field_validator

from qfleet.errors import ConfigError
from qfleet.executors.base import BatchResult, Capabilities, Prepared, QuantumExecutor
from qfleet.runtime.queuing import make_queuing_thread_safe
from qfleet.sampling.derivatives import NATIVE_METHODS, Derivatives

#: Exact batches on wires 0..n-1 (n at most this) run on a device made for n wires, as the
#: user's own ``qml.device(name, wires=n)``: lightning allocates its state once per device
#: rather than once per tape (0.2 vs 0.6 ms a 12-wire tape: parameter-shift's many tapes).
#: Above it the allocation is small beside the simulation, and a sized device holds its state.
SIZED_WIRES_MAX = 20
#: Sized devices kept per simulator (one per width in use).
SIZED_DEVICES_KEPT = 4


def sized_width(tapes: Sequence[QuantumScript]) -> int | None:
    """n when ``tapes`` are exact, use exactly the wires 0..n-1 (n <= SIZED_WIRES_MAX), name
    every measurement's wires and measure nothing mid-circuit: then a device of n wires gives
    the same results as one sized by each tape. Else None."""
    labels: set[Any] = set()
    for tape in tapes:
        if tape.shots or any(not m.wires for m in tape.measurements):
            return None  # sampled (the seed's stream), or results over the device's wires
        if any(isinstance(op, MidMeasure) or hasattr(op, "meas_val") for op in tape.operations):
            return None  # deferring measurements takes extra wires
        labels.update(tape.wires)
    if not labels or any(type(w) is not int for w in labels):
        return None
    n = max(labels) + 1
    return n if n == len(labels) and n <= SIZED_WIRES_MAX else None


class PennyLaneSimulator:
    """A PennyLane device plus its cached preprocessing, for one process or thread.

    Caching the pipeline is what keeps the per-call overhead near zero: the QNode already
    ran the full ``qml.execute`` workflow once, we only run the device's own transforms.
    """

    def __init__(self, device: str, options: dict[str, Any]):
        self.name, self.options = device, options
        self.device = qml.device(device, **options)
        self._sized: dict[int, Any] = {}
        self._pipelines: dict[tuple, tuple] = {}
        self._configs: dict[tuple, ExecutionConfig] = {}

    def _device_for(self, tapes: Sequence[QuantumScript]) -> tuple[Any, int | None]:
        """The device to run ``tapes`` on, and its width (None: sized by each tape)."""
        width = sized_width(tapes)
        if width is None:
            return self.device, None
        device = self._sized.get(width)
        if device is None:
            if len(self._sized) >= SIZED_DEVICES_KEPT:
                dropped = next(iter(self._sized))
                del self._sized[dropped]
                for cache in (self._pipelines, self._configs):
                    for key in [k for k in cache if k[0] == dropped]:
                        del cache[key]
            device = self._sized[width] = qml.device(self.name, wires=width, **self.options)
        return device, width

    def run(self, tapes: Sequence[QuantumScript]) -> tuple:
        device, width = self._device_for(tapes)
        config, pipeline = self._pipeline(device, width, tapes[0])
        batch, postprocess = pipeline(tuple(tapes))
        return tuple(postprocess(device.execute(batch, config)))

    def derivatives(self, tapes: Sequence[QuantumScript], request: Derivatives) -> tuple:
        """What ``request.mode`` names, per tape: the simulator's own device methods.

        The tapes went through this simulator's preprocessing for ``request.method``
        already (on the QFleetDevice, where PennyLane differentiates through it), so
        they run as they are.
        """
        tapes = tuple(tapes)
        device, width = self._device_for(tapes)
        config = self._derivative_config(device, width, tapes[0], request)
        mode = request.mode
        if mode == "execute":  # backprop: the simulation itself is traced
            return tuple(device.execute(tapes, config))
        if mode == "jacobian":
            return tuple(device.compute_derivatives(tapes, config))
        if mode == "vjp":
            return tuple(device.compute_vjp(tapes, request.vectors, config))
        if mode == "jvp":
            return tuple(device.compute_jvp(tapes, request.vectors, config))
        if mode == "execute_and_jacobian":
            pair = device.execute_and_compute_derivatives(tapes, config)
        elif mode == "execute_and_vjp":
            pair = device.execute_and_compute_vjp(tapes, request.vectors, config)
        elif mode == "execute_and_jvp":
            pair = device.execute_and_compute_jvp(tapes, request.vectors, config)
        else:
            raise ValueError(f"unknown derivative mode {mode!r}")
        return tuple(zip(*pair, strict=True))

    def preprocess(self, tapes: Sequence[QuantumScript]) -> tuple:
        """The simulator's own preprocessing of ``tapes`` (raises DeviceError on what it
        cannot run)."""
        return self._pipeline(self.device, None, tapes[0])[1](tuple(tapes))

    def offers(self, inline: bool) -> frozenset[str]:
        """The derivatives this simulator computes itself; backprop only ``inline`` (traced
        on the caller's thread, never across a process or thread boundary)."""
        methods = NATIVE_METHODS if inline else NATIVE_METHODS - {"backprop"}
        return frozenset(
            m for m in methods
            if self.device.supports_derivatives(ExecutionConfig(gradient_method=m))
        )  # fmt: skip

    def _pipeline(self, device: Any, width: int | None, tape: QuantumScript):
        # The device's config depends on the tape only through shots and mid-circuit
        # measurements (it picks the mcm method); key the cache on those (and the device).
        has_mcm = any(isinstance(op, MidMeasure) for op in tape.operations)
        key = (width, bool(tape.shots), has_mcm)
        if key not in self._pipelines:
            config = device.setup_execution_config(ExecutionConfig(gradient_method=None), tape)
            self._pipelines[key] = (config, device.preprocess_transforms(config))
        return self._pipelines[key]

    def _derivative_config(
        self, device: Any, width: int | None, tape: QuantumScript, request: Derivatives
    ) -> ExecutionConfig:
        has_mcm = any(isinstance(op, MidMeasure) for op in tape.operations)
        key = (width, request.method, request.interface, request.order, bool(tape.shots),
               has_mcm)  # fmt: skip
        config = self._configs.get(key)
        if config is None:
            config = device.setup_execution_config(
                ExecutionConfig(
                    gradient_method=request.method,
                    interface=request.interface,
                    derivative_order=request.order,
                ),
                tape,
            )
            self._configs[key] = config
        return config


def check_simulator_name(value: str) -> str:
    """``value`` if it names an installed PennyLane simulator, else a ValueError listing them."""
    installed = set(qml.plugin_devices) | {"default.qubit", "default.mixed"}
    if value not in installed or value.startswith("qfleet."):
        usable = sorted(d for d in installed if not d.startswith("qfleet."))
        raise ValueError(
            f"unknown PennyLane device {value!r}; installed simulators: {', '.join(usable)}"
        )
    return value


class _InlineRun(NamedTuple):
    results: tuple
    submitted_at: float
    seconds: float


class _DerivativeBatch(NamedTuple):
    tapes: tuple
    derivatives: Derivatives


# Per-process simulators for the process pool's workers.
_worker_simulators: dict[tuple, PennyLaneSimulator] = {}


def simulate_in_worker(
    device: str, options: tuple, tapes: tuple, derivatives: Derivatives | None = None
) -> tuple:
    """Run ``tapes`` (and compute the ``derivatives`` asked for) on this worker thread's
    cached simulator (process pools, dask workers)."""
    key = (device, options, threading.get_ident())
    if key not in _worker_simulators:
        _worker_simulators[key] = PennyLaneSimulator(device, dict(options))
    simulator = _worker_simulators[key]
    if derivatives is not None:
        return simulator.derivatives(tapes, derivatives)
    return simulator.run(tapes)


class LocalExecutor(QuantumExecutor):
    """Runs tapes on an installed PennyLane simulator.

    ``parallel`` chooses where simulation runs: None, on the calling thread (lowest
    overhead); "thread", on a pool of ``workers`` threads (for simulators that release the
    GIL, such as lightning.qubit); "process", on a pool of ``workers`` processes.
    ``latency`` adds a delay per batch, to stand in for a remote backend in demos.

    Example:
        >>> ex = LocalExecutor(device="lightning.qubit", shots=1000, seed=7)
        >>> ex.run_circuit_sync(qml.tape.QuantumScript([qml.X(0)], [qml.probs(wires=0)]))
        array([0., 1.])
    """

    device: str = "default.qubit"
    parallel: Literal["thread", "process"] | None = None
    workers: int | None = Field(default=None, gt=0)
    seed: int | None = None
    """Seed of the simulator's random numbers (shots); None: fresh entropy."""
    device_options: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for ``qml.device`` (e.g. ``{"c_dtype": "complex64"}``)."""
    latency: float = Field(default=0.0, ge=0)

    backend_kind = "local"

    @field_validator("parallel", mode="before")
    @classmethod
    def _parallel_from_bool(cls, value: Any) -> Any:
        # Covalent's Simulator took parallel=True/False.
        if value is True:
            return "thread"
        if value is False:
            return None
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_simulator_name(value)

    @property
    def backend_description(self) -> str:
        return self.device

    @property
    def capabilities(self) -> Capabilities:
        # A full simulator, plus the derivatives it computes here (asked of the simulator
        # once; capabilities are read on every batch's path).
        caps = self._runtime.get("capabilities")
        if caps is None:
            offers = self._simulator().offers(inline=self.parallel is None)
            caps = Capabilities(
                simulator=self.device,
                # Executor shots turn exact tapes into sampled ones: no exact derivatives.
                derivatives=offers if self.shots is None else frozenset(),
            )
            self._runtime["capabilities"] = caps
        return caps

    def supports_operation(self, op: Any) -> bool:
        # Ask the simulator: run its own preprocessing on a one-operator tape.
        try:
            self._simulator().preprocess((QuantumScript([op]),))
        except DeviceError:
            return False
        return True

    @property
    def _device_kwargs(self) -> dict[str, Any]:
        options = dict(self.device_options)
        if self.seed is not None:
            options.setdefault("seed", self.seed)
        return options

    def _simulator(self) -> PennyLaneSimulator:
        # One simulator per thread: PennyLane devices keep mutable state (rng, caches).
        key = ("simulator", threading.get_ident())
        sim = self._runtime.get(key)
        if sim is None:
            try:
                sim = PennyLaneSimulator(self.device, self._device_kwargs)
            except TypeError as exc:
                raise ConfigError(
                    f"{self.label}: {self.device} rejected device_options "
                    f"{sorted(self._device_kwargs)}: {exc}"
                ) from exc
            self._runtime[key] = sim
        return sim

    def _pool(self) -> concurrent.futures.Executor:
        pool = self._runtime.get("pool")
        if pool is None:
            if self.parallel == "thread":
                pool = concurrent.futures.ThreadPoolExecutor(
                    self.workers, thread_name_prefix=f"qfleet-{self.label}"
                )
            else:
                # spawn: forking a process that runs the dispatcher thread is unsafe.
                pool = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            self._runtime["pool"] = pool
        return pool

    def translate(self, tapes: tuple[QuantumScript, ...]) -> Any:
        from qfleet.sampling.resources import check_memory  # refuse what cannot fit first

        check_memory(tapes, executor=self.label, mixed=self.device == "default.mixed")
        if self.parallel is None:
            # Simulate here, on the caller's thread; the loop only adds the latency.
            submitted_at, started = time.time(), time.perf_counter()
            results = self._simulator().run(tapes)
            return _InlineRun(results, submitted_at, time.perf_counter() - started)
        if self.parallel == "thread":
            # Install per-thread recording contexts here, on the caller's thread, before any
            # worker simulates: installed from the loop thread, the snapshot of open contexts
            # would be given to the wrong thread while the caller is recording a tape.
            make_queuing_thread_safe()
        return tapes

    async def submit(self, payload: Any) -> tuple[Any, tuple[str, ...]]:
        if self.parallel is None:
            # A task, not a bare coroutine: a batch cancelled before collect awaits it
            # cancels the task (a never-awaited coroutine would warn when collected).
            return asyncio.ensure_future(asyncio.sleep(self.latency, result=payload.results)), ()
        loop = asyncio.get_running_loop()
        if self.parallel == "thread":
            work = loop.run_in_executor(self._pool(), self._run_on_worker_thread, payload)
        else:
            options = tuple(sorted(self._device_kwargs.items()))
            tapes, derivatives = (
                (payload.tapes, payload.derivatives)
                if isinstance(payload, _DerivativeBatch)
                else (payload, None)
            )
            work = loop.run_in_executor(
                self._pool(), simulate_in_worker, self.device, options, tapes, derivatives
            )
        return work, ()

    def translate_derivatives(
        self, tapes: tuple[QuantumScript, ...], derivatives: Derivatives
    ) -> Any:
        from qfleet.sampling.resources import check_memory  # as translate: refuse first

        check_memory(tapes, executor=self.label, mixed=self.device == "default.mixed")
        if self.parallel is None:
            submitted_at, started = time.time(), time.perf_counter()
            results = self._simulator().derivatives(tapes, derivatives)
            return _InlineRun(results, submitted_at, time.perf_counter() - started)
        if self.parallel == "thread":
            make_queuing_thread_safe()
        return _DerivativeBatch(tapes, derivatives)

    def _run_on_worker_thread(self, tapes: tuple | _DerivativeBatch) -> tuple:
        if isinstance(tapes, _DerivativeBatch):
            return self._simulator().derivatives(tapes.tapes, tapes.derivatives)
        return self._simulator().run(tapes)

    async def cancel(self, job: Any) -> None:
        job.cancel()  # the latency task, or a pool's future not yet running

    async def collect(self, job: Any) -> Sequence[Any]:
        results = await job
        if self.latency and self.parallel is not None:
            await asyncio.sleep(self.latency)
        return results

    def completed_inline(self, prepared: Prepared) -> BatchResult | None:
        if self.parallel is not None or self.latency or self.max_concurrent or self.rate:
            return None
        # Fast path: results were computed in translate(); no loop round trip.
        run: _InlineRun = prepared.payload
        return self.runner.inline(prepared, run.results, run.submitted_at, run.seconds)
