"""DaskExecutor: fan tapes out to a ``dask.distributed`` cluster of PennyLane simulators.

The same code runs a sweep on a laptop (a LocalCluster of worker processes that the
executor starts) and on many machines (``address`` of a running scheduler): each dask
worker simulates its chunk of tapes with a PennyLane simulator (lightning.qubit by default).

Where the work happens:

- caller's thread (``translate``): tapes are cloudpickled, one blob per tape, so neither
  the event loop nor dask's serialization ever touches a PennyLane object;
- the background loop: dask's asynchronous client submits chunks and gathers results
  (I/O only);
- dask workers (processes): unpickle, simulate, return PennyLane results.

A worker lost mid-batch is dask's to handle: the scheduler reruns its tasks elsewhere
(up to ``distributed.scheduler.allowed-failures`` times per task). Results come back in
tape order.

distributed is imported only when a batch runs (extra ``qfleet[dask]``); workers need
qfleet and the simulator installed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import itertools
import logging
import math
import multiprocessing
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pennylane.exceptions import DeviceError
from pennylane.tape import QuantumScript
from pydantic import Field, field_validator

from qfleet.errors import ConfigError, ExecutorError
from qfleet.executors.base import Capabilities, QuantumExecutor
from qfleet.executors.local import PennyLaneSimulator, check_simulator_name, simulate_in_worker
from qfleet.sampling.derivatives import Derivatives

log = logging.getLogger(__name__)

#: Tasks per worker thread when ``chunk_size`` is None: a few, so a slow or lost worker's
#: share is small, few enough that per-task overhead stays negligible.
TASKS_PER_THREAD = 2
#: Tasks per batch for seeded executors without ``chunk_size`` (reproducible anywhere).
SEEDED_TASKS = 8


# -- worker side ----------------------------------------------------------------------------

def _run_chunk(device: str, options: tuple, seed: int | None, blob: bytes) -> tuple:
    """Simulate one chunk on a dask worker (any thread of it); PennyLane results per tape."""
    import cloudpickle

    from qfleet.runtime.queuing import make_queuing_thread_safe

    # Worker threads may simulate side by side; PennyLane's recording contexts are global.
    make_queuing_thread_safe()
    tapes = cloudpickle.loads(blob)
    if seed is not None:
        # A seeded chunk gets a simulator of its own: its samples do not depend on which
        # worker ran it or what ran there before.
        return PennyLaneSimulator(device, {**dict(options), "seed": seed}).run(tapes)
    return simulate_in_worker(device, options, tapes)


def _run_derivative_chunk(device: str, options: tuple, blob: bytes) -> tuple:
    """One chunk of a derivative batch on a dask worker: per tape, what the request's
    mode names (exact: no seed)."""
    import cloudpickle

    from qfleet.runtime.queuing import make_queuing_thread_safe

    make_queuing_thread_safe()
    tapes, derivatives = cloudpickle.loads(blob)
    return simulate_in_worker(device, options, tapes, derivatives)


# -- client side (the background loop) ------------------------------------------------------


@dataclasses.dataclass
class _Connection:
    client: Any
    cluster: Any = None
    """The LocalCluster this process started (None: an existing scheduler)."""
    _threads: tuple[float, int] = (0.0, 0)

    async def threads(self) -> int:
        """Worker threads in the cluster (asked at most once a second; it may scale)."""
        checked, count = self._threads
        now = time.monotonic()
        if now - checked > 1.0 or not count:
            count = sum((await self.client.nthreads()).values())
            self._threads = (now, count)
        return max(count, 1)

    async def close(self) -> None:
        try:
            await self.client.close()
        finally:
            if self.cluster is not None:
                await self.cluster.close()


#: Per process: (loop id, cluster key) -> connection; shared by equal executors.
_connections: dict[tuple, _Connection] = {}
_connecting: dict[tuple, asyncio.Lock] = {}
#: Per process: cluster key -> worker threads last seen (sizes the next batches' chunks).
_threads_seen: dict[tuple, int] = {}
_atexit_registered = False


def _close_all() -> None:
    """Close this process's clients and LocalClusters (at exit)."""
    from qfleet.runtime import get_dispatcher

    connections = list(_connections.values())
    _connections.clear()
    if not connections:
        return

    async def close() -> None:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)

    try:
        get_dispatcher().run(close(), timeout=15)
    except Exception as exc:  # exiting anyway; dask's own finalizers stop the processes
        log.debug("closing dask connections at exit: %s", exc)


def _forget_after_fork() -> None:
    _connections.clear()
    _connecting.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@dataclasses.dataclass(frozen=True)
class _Job:
    futures: tuple
    client: Any


class DaskExecutor(QuantumExecutor):
    """Runs tapes on a dask.distributed cluster, each worker simulating with a PennyLane
    simulator.

    ``address``: a running scheduler (``"tcp://10.0.0.5:8786"``); None: start a LocalCluster
    of ``n_workers`` worker processes (one per core by default) on 127.0.0.1, shared by
    equal executors in this process and closed at exit. ``device``/``device_options``: the
    simulator each worker uses. ``chunk_size``: tapes per dask task (None: about
    two tasks per worker thread). ``seed`` makes shots reproducible: each chunk gets a
    simulator seeded from (seed, batch number, chunk index), and without ``chunk_size``
    a seeded batch is split into 8 chunks whatever the cluster's size.

    Example (``address``: running needs a Dask scheduler there):
        >>> ex = DaskExecutor(n_workers=4)                       # this machine
        >>> ex = DaskExecutor(address="tcp://scheduler:8786")    # a cluster
        >>> @qelectron(executors=ex)
        ... @qml.qnode(qml.device("default.qubit", wires=20))
        ... def circuit(x):
        ...     qml.RX(x, wires=0)
        ...     return qml.expval(qml.Z(0))
        >>> circuit(0.5)  # doctest: +SKIP
        np.float64(0.8775825618903728)
    """

    address: str | None = None
    n_workers: int | None = Field(default=None, gt=0)
    """LocalCluster only: worker processes (None: dask's default, one per core)."""
    threads_per_worker: int = Field(default=1, gt=0)
    """LocalCluster only: threads per worker process."""
    processes: bool = True
    """LocalCluster only: worker processes (True) or threads of this process (False).
    Inside a daemonic process (a worker of another dask cluster) threads are used."""
    device: str = "lightning.qubit"
    device_options: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    chunk_size: int | None = Field(default=None, gt=0)
    connect_timeout: float = Field(default=60.0, gt=0)
    """Seconds to wait for the scheduler (and a LocalCluster's start). Unless set, a
    scheduler ``address`` gets 10 s (a dead one is known in seconds); ``timeout``, when
    smaller, bounds it too."""

    @property
    def connect_limit(self) -> float:
        """The seconds connecting may take (see ``connect_timeout``)."""
        limit = self.connect_timeout
        if self.address and "connect_timeout" not in self.model_fields_set:
            limit = 10.0
        return min(limit, self.timeout) if self.timeout is not None else limit

    backend_kind: ClassVar[str] = "dask"

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_simulator_name(value)

    @property
    def backend_description(self) -> str:
        where = self.address or "local"
        return f"dask:{where}:{self.device}"

    def supports_operation(self, op: Any) -> bool:
        # The workers run the same simulator: ask a local one (caller's thread).
        try:
            self._probe().preprocess((QuantumScript([op]),))
        except DeviceError:
            return False
        return True

    def _probe(self) -> PennyLaneSimulator:
        simulator = self._runtime.get("probe")
        if simulator is None:
            try:
                simulator = PennyLaneSimulator(self.device, self._options())
            except TypeError as exc:
                raise ConfigError(
                    f"{self.label}: {self.device} rejected device_options "
                    f"{sorted(self.device_options)}: {exc}"
                ) from exc
            self._runtime["probe"] = simulator
        return simulator

    def _options(self) -> dict[str, Any]:
        return dict(self.device_options)

    @property
    def capabilities(self) -> Capabilities:
        # A full simulator on every worker; its derivatives except backprop (traced
        # values do not cross processes). Asked of a local probe once per process.
        caps = self._runtime.get("capabilities")
        if caps is None:
            offers = self._probe().offers(inline=False) if self.shots is None else frozenset()
            caps = Capabilities(simulator=self.device, derivatives=offers)
            self._runtime["capabilities"] = caps
        return caps

    # -- caller's thread -------------------------------------------------------------------

    def translate(self, tapes: tuple[QuantumScript, ...]) -> Any:
        import cloudpickle

        from qfleet.sampling.resources import check_memory  # refuse what cannot fit first

        # A remote scheduler's workers have their own memory: only the configured cap applies.
        check_memory(tapes, executor=self.label, mixed=self.device == "default.mixed",
                     local=self.address is None)

        # Pickled here, one blob per dask task (a tenth of the cost of one per tape).
        sizes = self._chunk_sizes(len(tapes))
        blobs, start = [], 0
        for size in sizes:
            blobs.append(cloudpickle.dumps(tapes[start : start + size]))
            start += size
        counter = self._runtime.setdefault("batches", itertools.count())
        return tuple(blobs), next(counter), False

    def translate_derivatives(
        self, tapes: tuple[QuantumScript, ...], derivatives: Derivatives
    ) -> Any:
        import cloudpickle

        from qfleet.sampling.resources import check_memory  # as translate: refuse first

        check_memory(tapes, executor=self.label, mixed=self.device == "default.mixed",
                     local=self.address is None)
        # Chunks as for results: each worker differentiates its tapes independently.
        blobs, start = [], 0
        for size in self._chunk_sizes(len(tapes)):
            part = (tapes[start : start + size], derivatives.part(start, start + size))
            blobs.append(cloudpickle.dumps(part))
            start += size
        return tuple(blobs), None, True

    def _chunk_sizes(self, n: int) -> list[int]:
        if self.chunk_size:
            size = self.chunk_size
        elif self.seed is not None:
            # Seeds are per chunk: the layout must not depend on the cluster's size.
            size = max(1, math.ceil(n / SEEDED_TASKS))
        else:
            # The cluster's threads as last seen by this process (they may change); before
            # the first batch, what a LocalCluster will have, or this machine's cores.
            threads = _threads_seen.get(self._cluster_key())
            if threads is None:
                if self.address:
                    threads = os.cpu_count() or 1
                else:
                    threads = (self.n_workers or os.cpu_count() or 1) * self.threads_per_worker
            size = max(1, math.ceil(n / (threads * TASKS_PER_THREAD)))
        sizes = [size] * (n // size)
        if n % size:
            sizes.append(n % size)
        return sizes

    # -- event loop ------------------------------------------------------------------------

    def _cluster_key(self) -> tuple:
        if self.address:
            return ("address", self.address)
        return ("local", self.n_workers, self.threads_per_worker, self.processes)

    async def _connection(self) -> _Connection:
        global _atexit_registered
        key = (id(asyncio.get_running_loop()), self._cluster_key())
        conn = _connections.get(key)
        if conn is not None and conn.client.status == "running":
            return conn
        lock = _connecting.setdefault(key, asyncio.Lock())
        async with lock:
            conn = _connections.get(key)
            if conn is not None and conn.client.status == "running":
                return conn
            try:
                # Client() has its own timeout; this bounds a LocalCluster's start too.
                conn = await asyncio.wait_for(self._connect(), self.connect_limit + 5)
            except TimeoutError as exc:
                where = self.address or "the LocalCluster"
                raise ExecutorError(
                    f"{where} did not answer within {self.connect_limit:g} s "
                    f"(connect_timeout/timeout); is the scheduler running and reachable?",
                    executor=self.label,
                    transient=True,
                ) from exc
            _connections[key] = conn
            if not _atexit_registered:
                atexit.register(_close_all)
                _atexit_registered = True
            return conn

    async def _connect(self) -> _Connection:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ConfigError(
                "DaskExecutor needs dask.distributed: pip install 'qfleet[dask]'"
            ) from exc
        if self.address:
            try:
                client = await Client(
                    self.address,
                    asynchronous=True,
                    set_as_default=False,
                    timeout=self.connect_limit,
                )
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(
                    f"no dask scheduler answered at {self.address}: {exc}",
                    executor=self.label,
                    transient=True,
                ) from exc
            return _Connection(client)
        processes = self.processes
        if processes and multiprocessing.current_process().daemon:
            warnings.warn(
                f"{self.label}: this is a daemonic process (a worker of another cluster), "
                f"which cannot start worker processes; the LocalCluster uses threads",
                RuntimeWarning,
                stacklevel=2,
            )
            processes = False
        cluster = await LocalCluster(
            n_workers=self.n_workers,
            threads_per_worker=self.threads_per_worker,
            processes=processes,
            # loopback for worker processes; threads talk in-process (dask's inproc
            # transport rejects a host)
            **({"host": "127.0.0.1"} if processes else {}),
            dashboard_address="127.0.0.1:0",  # loopback, any free port
            asynchronous=True,
        )
        try:
            client = await Client(cluster, asynchronous=True, set_as_default=False)
        except BaseException:
            closing = cluster.close()
            if closing is not None:  # always, for an asynchronous cluster
                await closing
            raise
        return _Connection(client, cluster)

    async def submit(self, payload: Any) -> tuple[_Job, tuple[str, ...]]:
        blobs, batch_no, derivative = payload
        conn = await self._connection()
        client = conn.client
        _threads_seen[self._cluster_key()] = await conn.threads()
        options = tuple(sorted(self._options().items()))
        token = uuid.uuid4().hex[:12]
        futures = []
        for i, blob in enumerate(blobs):
            if derivative:
                futures.append(
                    client.submit(
                        _run_derivative_chunk,
                        self.device,
                        options,
                        blob,
                        key=f"qfleet-{token}-{i}",
                        pure=False,
                    )
                )
                continue
            seed = None
            if self.seed is not None:
                sequence = np.random.SeedSequence([self.seed, batch_no, i])
                seed = int(sequence.generate_state(1)[0])
            futures.append(
                client.submit(
                    _run_chunk,
                    self.device,
                    options,
                    seed,
                    blob,
                    key=f"qfleet-{token}-{i}",
                    pure=False,
                )
            )
        return _Job(tuple(futures), client), tuple(f.key for f in futures)

    async def collect(self, job: _Job) -> Sequence[Any]:
        gathering = asyncio.ensure_future(job.client.gather(list(job.futures)))
        try:
            # Shielded: a gather cancelled half-way orphans dask's helper tasks, which then
            # log "Task exception was never retrieved". Cancel the dask futures instead and
            # let the gather end by itself.
            chunks = await asyncio.shield(gathering)
        except asyncio.CancelledError:
            await self.cancel(job)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(gathering, 10)
            raise
        except Exception as exc:
            if type(exc).__name__ == "KilledWorker":  # a task killed its workers repeatedly
                raise ExecutorError(
                    f"dask workers died running this batch ({exc}); check the workers' "
                    f"memory for the circuit size",
                    executor=self.label,
                    transient=True,
                ) from exc
            raise
        return [result for chunk in chunks for result in chunk]

    async def cancel(self, job: _Job) -> None:
        try:
            await job.client.cancel(list(job.futures))
        except Exception as exc:  # the client may already be closed
            log.debug("%s: cancelling dask futures: %s", self.label, exc)

    async def close(self) -> None:
        """Close this executor's client (and the LocalCluster it started) in this process."""
        key = (id(asyncio.get_running_loop()), self._cluster_key())
        conn = _connections.pop(key, None)
        if conn is not None:
            await conn.close()

    def close_sync(self) -> None:
        """Sync wrapper of :meth:`close`."""
        from qfleet.runtime import get_dispatcher

        get_dispatcher().run(self.close())
