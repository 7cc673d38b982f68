"""QiskitExecutor: IBM Qiskit Runtime (V2 primitives, sessions and batches, local testing mode).

This module only translates: the sampling plan's circuits -> qiskit circuits and PUBs
(caller's thread), raw primitive output -> Samples/Values (caller's thread; the plan makes
PennyLane results of them). Services, sessions, the primitive adapter and error mapping
live in :mod:`qfleet.executors.ibm_runtime`; blocking SDK calls run on daemon threads
(:func:`qfleet.runtime.daemon.in_daemon_thread`: a pending job never keeps a finished script
alive), never on the event loop itself.

qiskit is imported lazily: ``import qfleet`` works without the ``ibm`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pennylane.tape import QuantumScript
from pydantic import Field, SecretStr, field_validator, model_validator

from qfleet.errors import ConfigError, ExecutorError, QFleetError, UnsupportedCircuitError
from qfleet.executors.base import (
    SAMPLING_MEASUREMENTS,
    Capabilities,
    Prepared,
    QuantumExecutor,
)
from qfleet.executors.ibm_runtime import (
    ADAPTERS,
    AER_BACKEND,
    RETIRED_SIMULATORS,
    Account,
    IBMAuthenticationError,
    IBMJobError,
    close_sessions,
    is_local_backend,
    needs_ibm_extra,
    registry,
    to_executor_error,
)
from qfleet.executors.status import Calibration, ExecutorStatus
from qfleet.runtime.background import keep
from qfleet.runtime.daemon import in_daemon_thread

__all__ = ["IBMAuthenticationError", "IBMJobError", "QiskitExecutor", "close_sessions"]

#: Shots for tapes that have none (IBM backends always sample); ``options["default_shots"]``
#: overrides it.
DEFAULT_SHOTS = 1024

#: Covalent's QiskitExecutor fields that no longer exist, and what to use instead.
_LEGACY_FIELDS = {
    "ibmqx_token": "token=... (an IBM Cloud API key)",
    "ibmqx_url": "url=...",
    "cloud_instance": "instance=... (the instance's CRN or name)",
    "hub": "instance=... (the IBM Cloud instance's CRN or name); hub/group/project belonged to "
    "the IBM Quantum channel, which closed in 2025",
    "group": "instance=... (the IBM Cloud instance's CRN or name); hub/group/project belonged to "
    "the IBM Quantum channel, which closed in 2025",
    "project": "instance=... (the IBM Cloud instance's CRN or name); hub/group/project belonged "
    "to the IBM Quantum channel, which closed in 2025",
}
_MAX_TIME = re.compile(r"^\s*(\d+h)?\s*(\d+m)?\s*(\d+s)?\s*$")




@dataclasses.dataclass(frozen=True)
class _Pub:
    """One primitive unit of work. Plain qiskit objects only (goes to worker threads)."""

    circuit: Any
    shots: int | None = None
    observables: tuple | None = None
    precision: float | None = None


@dataclasses.dataclass(frozen=True)
class _Work:
    """A translated batch: PUBs, how they form Runtime jobs, and which PUBs each plan
    circuit's raw output comes from (an Estimator circuit with a shot vector: one per bin)."""

    kind: Literal["sampler", "estimator"]
    pubs: tuple[_Pub, ...]
    jobs: tuple[tuple[int, ...], ...]
    """PUB indices of each Runtime job."""
    outputs: tuple[tuple[int, ...], ...]
    """PUB indices of each plan circuit."""

    def grouped(self, units: Sequence[Sequence[int]]) -> _Work:
        """Jobs formed from ``units`` (lists of plan circuits), split by shots/precision:
        jobs whose PUBs differ in shots (Sampler) or precision (Estimator) are deprecated
        since qiskit-ibm-runtime 0.48."""
        jobs: list[tuple[int, ...]] = []
        for unit in units:
            groups: dict[Any, list[int]] = {}
            for i in (i for c in unit for i in self.outputs[c]):
                groups.setdefault((self.pubs[i].shots, self.pubs[i].precision), []).append(i)
            jobs.extend(tuple(g) for g in groups.values())
        return dataclasses.replace(self, jobs=tuple(jobs))


def _observable(mp: Any) -> Any:
    """The observable an Estimator measures for ``mp``; a measured mid-circuit value
    (``expval(m)``, deferred to a wire) is the diagonal of its eigenvalues."""
    if mp.obs is not None:
        return mp.obs
    import numpy as np
    import pennylane as qml

    return qml.Hermitian(np.diag(mp.eigvals()), wires=mp.wires)


@dataclasses.dataclass
class _Submission:
    work: _Work
    jobs: list[Any]
    local: bool


class QiskitExecutor(QuantumExecutor):
    """Runs tapes on IBM Qiskit Runtime primitives, or locally in local testing mode.

    ``device``: ``"local_sampler"`` (local testing mode, no account: Aer or a fake
    backend), ``"sampler"`` (Runtime Sampler: counts -> any sampling measurement),
    ``"estimator"`` (Runtime Estimator: expectation values directly).
    ``backend``: an IBM backend name (``"ibm_brisbane"``), or for local testing mode
    ``"aer_simulator"`` (noiseless, the default) or a fake backend (``"fake_manila"``,
    noisy). A batch of tapes (e.g. all tapes of a parameter-shift gradient) is one
    Runtime job with many PUBs when ``single_job`` is True.

    Example:
        >>> cloud = QiskitExecutor(device="estimator", backend="ibm_brisbane",
        ...                        token="...", instance="my-instance")  # IBM Cloud
        >>> ex = QiskitExecutor(backend="fake_manila", seed=7)        # local, noisy
        >>> @qelectron(executors=ex)
        ... @qml.qnode(qml.device("default.qubit", wires=2), shots=1000)
        ... def circuit(x):
        ...     qml.RX(x, wires=0)
        ...     qml.CNOT([0, 1])
        ...     return qml.probs(wires=[0, 1])
        >>> circuit(0.5)
        array([0.901, 0.01 , 0.017, 0.072])
    """

    device: Literal["local_sampler", "sampler", "estimator"] = "local_sampler"
    backend: str | None = None
    """IBM backend name; "aer_simulator" or "fake_<name>" run in local testing mode."""
    token: SecretStr | None = None
    """IBM Cloud API key; None: the config file/env, else the SDK's saved account."""
    channel: Literal["ibm_quantum_platform", "ibm_cloud", "local"] = "ibm_quantum_platform"
    instance: str | None = None
    """IBM Cloud instance CRN or name; None: the SDK picks one of the account's."""
    url: str | None = None
    """Base URL for the SDK (default https://cloud.ibm.com). A URL ending in /api/v1 is the
    Runtime API itself and is used as is (private deployments, local stand-ins)."""
    single_job: bool = True
    """One Runtime job per batch (many PUBs); False: one job per tape."""
    max_time: int | str | None = None
    """Session/batch length: seconds or "1h30m"; None: the service's maximum."""
    mode: Literal["session", "batch", "job"] = "session"
    """Execution mode; sessions and batches are shared per (account, backend, mode)."""
    local_transpile: bool = True
    """Transpile to the backend's ISA before submitting (the Runtime requires ISA
    circuits); turn off only for circuits already in the backend's ISA."""
    optimization_level: int = Field(default=1, ge=0, le=3)
    options: dict[str, Any] = Field(default_factory=dict)
    """Runtime primitive options (SamplerOptions/EstimatorOptions), validated."""
    seed: int | None = None
    """Seeds the simulator (options.simulator.seed_simulator) and the transpiler, for
    reproducible runs."""
    primitives: Literal["v2", "executor"] = "v2"
    """Primitive API: "v2" (SamplerV2/EstimatorV2, deprecated in 0.50 but what the
    Runtime REST API runs) or "executor" (the client-side executor_sampler/estimator)."""
    poll_interval: float = Field(default=1.0, gt=0)
    """Longest pause between job status checks, in seconds."""

    backend_kind = "ibm"

    @property
    def backend_description(self) -> str:
        return self.backend or self.backend_kind

    # -- validation --------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            legacy = [k for k in data if k in _LEGACY_FIELDS]
            if legacy:
                raise ValueError(
                    "Covalent's QiskitExecutor field(s) "
                    + ", ".join(f"{k!r} (use {_LEGACY_FIELDS[k]})" for k in legacy)
                    + " no longer exist in qiskit-ibm-runtime 0.51"
                )
        return data

    @field_validator("channel", mode="before")
    @classmethod
    def _channel(cls, value: Any) -> Any:
        if value == "ibm_quantum":
            raise ValueError(
                "channel 'ibm_quantum' is gone (the IBM Quantum Platform classic channel "
                "closed in 2025); use channel='ibm_quantum_platform' (the default) with an "
                "IBM Cloud API key as token and instance=<CRN or name>, or channel='local'"
            )
        return value

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str | None) -> str | None:
        if value in RETIRED_SIMULATORS:
            raise ValueError(
                f"IBM's cloud simulator {value!r} was retired in 2024; use "
                f"backend='{AER_BACKEND}' (local, noiseless), a fake backend such as "
                f"'fake_manila' (local, noisy), or a real backend name"
            )
        return value

    @field_validator("max_time")
    @classmethod
    def _max_time(cls, value: Any) -> Any:
        if isinstance(value, int) and value <= 0:
            raise ValueError("max_time must be positive seconds or a string like '1h30m'")
        if isinstance(value, str) and (not value.strip() or not _MAX_TIME.match(value)):
            raise ValueError(f"max_time {value!r}: use seconds or a string like '1h30m'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> QiskitExecutor:
        local = self.is_local
        if self.backend is None:
            if not local:
                raise ValueError(
                    f"device={self.device!r} on channel {self.channel!r} needs backend=<IBM "
                    f"backend name> (QiskitRuntimeService().backends() lists them); IBM has "
                    f"no cloud simulators any more: for local simulation use "
                    f"backend='{AER_BACKEND}' or a fake backend such as 'fake_manila'"
                )
            self.__dict__["backend"] = AER_BACKEND  # frozen model: set once, here
        elif local and not is_local_backend(self.backend):
            local_by = "device='local_sampler'" if self.device == "local_sampler" else (
                "channel='local'"
            )
            fake = "fake_" + self.backend.removeprefix("ibm_")
            raise ValueError(
                f"{local_by} runs locally without an account, so backend must be "
                f"'{AER_BACKEND}' or a fake backend (e.g. '{fake}'), "
                f"got {self.backend!r}; to run on {self.backend!r} use device='sampler' or "
                f"'estimator' with an IBM Cloud API key"
            )
        if self.options:
            self._validate_options()
        return self

    def _validate_options(self) -> None:
        try:
            adapter = ADAPTERS[self.primitives]
            adapter.validate_options(self.primitive_kind, self._primitive_options())
        except ImportError:
            return  # no 'ibm' extra here; options are checked where the executor runs

    # -- properties ----------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        """True in local testing mode (no account, no network)."""
        return (
            self.channel == "local"
            or self.device == "local_sampler"
            or is_local_backend(self.backend)
        )

    @property
    def backend_name(self) -> str:
        """The backend's name (``_consistent`` sets ``aer_simulator`` where none is given)."""
        if self.backend is None:  # pragma: no cover - the model validator rules it out
            raise ConfigError(f"{self.label}: no backend")
        return self.backend

    @property
    def primitive_kind(self) -> Literal["sampler", "estimator"]:
        return "estimator" if self.device == "estimator" else "sampler"

    @property
    def capabilities(self) -> Capabilities:
        # IBM backends only sample: tapes without shots run with default_shots (warned).
        from qfleet.circuits.qasm import QASM2_GATES

        # The backend's width once this process has fetched it (each submission checks it
        # too, before anything is sent: the first one fetches the backend).
        backend = registry().known_backend(self._account(), self.backend_name)
        common: dict[str, Any] = dict(
            analytic=False,
            max_wires=getattr(backend, "num_qubits", None),
            native_gates=QASM2_GATES,
            mid_circuit_measurements=False,
            default_shots=self.default_shots,
        )
        if self.primitive_kind == "estimator":
            return Capabilities(measurements=frozenset({"expval"}), observables=True, **common)
        return Capabilities(measurements=SAMPLING_MEASUREMENTS, **common)

    @property
    def default_shots(self) -> int:
        return int(self.options.get("default_shots") or DEFAULT_SHOTS)

    def _primitive_options(self) -> dict[str, Any]:
        options = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.options.items()}
        if self.seed is not None:
            options["simulator"] = {**options.get("simulator", {}), "seed_simulator": self.seed}
        return options


    def _account(self) -> Account | None:
        if self.is_local:
            return None
        return Account(
            channel=self.channel, token=self.secret("token"), instance=self.instance, url=self.url
        )

    def _token_hint(self) -> str:
        return (
            "Fix the IBM Cloud API key: QiskitExecutor(token=...), `token` in the config "
            "file's [executors.QiskitExecutor] section, or QFLEET_QISKITEXECUTOR_TOKEN; "
            "check `instance` too (the key's account must have access to it)."
        )

    def service(self):
        """The ``QiskitRuntimeService`` this executor uses (blocking; None when local)."""
        account = self._account()
        if account is None:
            return None
        with self._sdk_errors():
            return registry().service(account)

    @contextlib.contextmanager
    def _sdk_errors(self) -> Iterator[None]:
        """SDK exceptions become qfleet errors (token scrubbed); qfleet's own pass through."""
        try:
            yield
        except ImportError as exc:
            raise needs_ibm_extra(exc) from exc
        except QFleetError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    def close_session(self) -> None:
        """Close this executor's session or batch now (else: at interpreter exit)."""
        registry().forget_mode(self._account(), self.backend_name, self.mode)

    # -- phase 1: caller's thread --------------------------------------------------------

    def prepare(self, tapes: Sequence[QuantumScript], checked: bool = False,
                derivatives: Any = None) -> Prepared:
        prepared = super().prepare(tapes, checked=checked, derivatives=derivatives)
        assert prepared.plan is not None  # an executor (not a cluster) always plans
        if self.single_job:
            units: list[range] = [range(len(prepared.plan.circuits))]
        else:  # one Runtime job per tape: the plan knows which circuits each tape became
            units = [range(entry.start, entry.stop) for entry in prepared.plan.planned]
        return dataclasses.replace(prepared, payload=prepared.payload.grouped(units))

    def translate(self, circuits: tuple[QuantumScript, ...]) -> _Work:
        """The plan's circuits as PUBs: Sampler, one PUB per circuit (its single
        computational-basis sample of all wires); Estimator, one PUB per shot bin with the
        circuit's observables as Pauli sums."""
        try:
            import qiskit  # noqa: F401 - fail here, clearly, without the extra

            from qfleet.circuits.qiskit import observable_to_sparse_pauli, tape_to_circuit
        except ImportError as exc:
            raise needs_ibm_extra(exc) from exc

        kind = self.primitive_kind
        pubs: list[_Pub] = []
        outputs: list[tuple[int, ...]] = []
        for circuit in circuits:
            first = len(pubs)
            if kind == "estimator":
                qc = tape_to_circuit(circuit, measure=False)
                observables = tuple(
                    observable_to_sparse_pauli(_observable(mp), circuit.wires)
                    for mp in circuit.measurements
                )
                for lower, upper in circuit.shots.bins():
                    precision = 1.0 / math.sqrt(upper - lower)
                    pubs.append(_Pub(qc, observables=observables, precision=precision))
            else:
                pubs.append(_Pub(tape_to_circuit(circuit), shots=circuit.shots.total_shots))
            outputs.append(tuple(range(first, len(pubs))))
        # Jobs are formed in prepare, which knows the tapes the circuits came from.
        return _Work(kind, tuple(pubs), (), tuple(outputs))

    def decode(self, circuits: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[Any]:
        """Sampler: the BitArray's rows (clbit i = circuit.wires[i]) as Samples; Estimator:
        the expectation values in PennyLane's structure (per shot bin) as Values."""
        import numpy as np

        from qfleet.sampling import Samples, Values

        outputs: list[Any] = []
        for circuit, data in zip(circuits, raw, strict=True):
            if self.primitive_kind == "sampler":
                outputs.append(Samples(data[0]))
                continue
            bins = []
            for values in data:
                values = tuple(np.float64(v) for v in values)
                bins.append(values[0] if len(circuit.measurements) == 1 else values)
            outputs.append(Values(tuple(bins) if circuit.shots.has_partitioned_shots else bins[0]))
        return outputs

    # -- phase 2: event loop (blocking work in threads) ----------------------------------

    def _error(self, exc: BaseException, job: str | None = None) -> ExecutorError:
        return to_executor_error(
            exc,
            executor=self.label,
            secrets=[self.secret("token")] if not self.is_local else [],
            token_hint=self._token_hint(),
            job=job,
        )

    async def submit(self, payload: _Work) -> tuple[Any, tuple[str, ...]]:
        submitting = asyncio.ensure_future(in_daemon_thread(self._submit, payload))
        try:
            with self._sdk_errors():
                submission = await asyncio.shield(submitting)
        except asyncio.CancelledError:
            # The thread goes on submitting; cancel its jobs once they exist.
            submitting.add_done_callback(self._cancel_when_submitted)
            raise
        return submission, tuple(str(job.job_id()) for job in submission.jobs)

    def _cancel_when_submitted(self, submitting: asyncio.Future) -> None:
        if submitting.cancelled() or submitting.exception() is not None:
            return
        keep(self.cancel(submitting.result()))

    def _submit(self, work: _Work) -> _Submission:
        """Transpile and submit (worker thread); returns once every job exists."""
        reg = registry()
        account = self._account()
        adapter = ADAPTERS[self.primitives]
        options = self._primitive_options()
        circuits = [pub.circuit for pub in work.pubs]
        width = max((c.num_qubits for c in circuits), default=0)
        qubits = getattr(reg.backend(account, self.backend_name), "num_qubits", None)
        if qubits is not None and width > qubits:
            raise UnsupportedCircuitError(
                f"{self.label}: a circuit uses {width} qubits, backend {self.backend_name!r} "
                f"has {qubits}; choose a larger backend or use fewer wires"
            )
        if self.local_transpile:
            pm = reg.pass_manager(account, self.backend_name, self.optimization_level, self.seed)
            circuits = pm.run(circuits, num_processes=1)
        pubs: list[tuple[Any, ...]]
        if work.kind == "sampler":
            pubs = [(c, None, p.shots) for c, p in zip(circuits, work.pubs, strict=True)]
        else:
            pubs = [
                (c, [o.apply_layout(c.layout, c.num_qubits) for o in p.observables or ()], None,
                 p.precision)
                for c, p in zip(circuits, work.pubs, strict=True)
            ]
        jobs: list[Any] = []
        try:
            for indices in work.jobs:
                jobs.append(self._run_job(reg, account, adapter, options, work.kind,
                                          [pubs[i] for i in indices]))
        except BaseException:
            for job in jobs:  # all or nothing: don't leave half a batch running
                with contextlib.suppress(Exception):
                    job.cancel()
            raise
        return _Submission(work, jobs, self.is_local)

    def _run_job(self, reg, account, adapter, options, kind, pubs):
        run = adapter.run_sampler if kind == "sampler" else adapter.run_estimator
        mode = reg.mode(account, self.backend, self.mode, self.max_time)
        try:
            return run(mode, options, pubs)
        except Exception as exc:
            if self.mode == "job" or "session" not in str(exc).lower():
                raise
            # The session/batch expired or was closed on the server: open a new one, once.
            reg.forget_mode(account, self.backend, self.mode)
            mode = reg.mode(account, self.backend, self.mode, self.max_time)
            return run(mode, options, pubs)

    @property
    def can_attach(self) -> bool:
        """Runtime jobs re-attach by id; local testing mode's jobs live in the process that
        ran them, so they cannot."""
        return not self.is_local

    @property
    def reattachable(self) -> bool:
        return self.can_attach  # Runtime keeps the jobs: any process re-attaches by id

    def attach(self, payload: _Work, job_ids: Sequence[str]) -> _Submission:
        """The submission of Runtime jobs ``job_ids`` (one per job of ``payload``, in order)
        from an earlier submission of the same tapes, e.g. by a process that died. Blocking:
        one ``GET /jobs/{id}`` per job (and the service's sign-in on first use)."""
        if self.is_local:
            raise ExecutorError(
                f"{self.label} runs in local testing mode (backend {self.backend!r}): its jobs "
                f"ran inside the process that submitted them, so they cannot be re-attached "
                f"by id; run the tapes again",
                executor=self.label,
            )
        job_ids = [str(i) for i in job_ids]
        self.check_job_ids(job_ids, len(payload.jobs), "Runtime job ids")
        service = self.service()
        jobs = []
        for job_id in job_ids:
            try:
                jobs.append(service.job(job_id))
            except Exception as exc:  # unknown id, no access, server gone: say which job
                raise self._error(exc, job=job_id) from exc
        return _Submission(payload, jobs, local=False)

    async def collect(self, job: _Submission) -> list[tuple[Any, ...]]:
        work = job.work
        try:
            per_job = await asyncio.gather(
                *(self._wait(sdk_job, work.kind, job.local) for sdk_job in job.jobs)
            )
        except asyncio.CancelledError:
            raise  # the base class cancels the jobs
        except BaseException:
            await asyncio.shield(self.cancel(job))  # one job failed: stop the others
            raise
        per_pub: dict[int, Any] = {}
        for indices, data in zip(work.jobs, per_job, strict=True):
            if len(data) != len(indices):
                raise ExecutorError(
                    f"Runtime job returned {len(data)} PUB results for {len(indices)} PUBs",
                    executor=self.label,
                )
            per_pub.update(zip(indices, data, strict=True))
        # One raw output per plan circuit: its PUBs' arrays (decoded on the caller's thread).
        return [tuple(per_pub[i] for i in pubs) for pubs in work.outputs]

    async def _wait(self, sdk_job: Any, kind: str, local: bool) -> list[Any]:
        from qfleet.circuits.qiskit import CREG
        from qfleet.executors.ibm_runtime import estimator_values, sampler_samples

        job_id = str(sdk_job.job_id())
        delay = 0.05
        try:
            # Local jobs run in this process: wait for them in a thread, no polling delay.
            # Remote jobs: poll without holding a thread, backing off to poll_interval.
            while not local and not await in_daemon_thread(sdk_job.in_final_state):
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, self.poll_interval)

            def fetch() -> list[Any]:
                result = sdk_job.result()
                if kind == "sampler":
                    return sampler_samples(result, CREG)
                return estimator_values(result)

            return await in_daemon_thread(fetch)
        except (QFleetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self._error(exc, job=job_id) from exc

    async def cancel(self, job: _Submission) -> None:
        for sdk_job in job.jobs:
            try:
                if not await in_daemon_thread(sdk_job.in_final_state):
                    await in_daemon_thread(sdk_job.cancel)
            except Exception:  # already final, or the server is gone: nothing to cancel
                pass

    # -- live status (blocking: clusters ask from a background thread) -----------------

    def status(self) -> ExecutorStatus:
        """The backend's published status (operational, pending jobs) and calibration: mean
        one-qubit, two-qubit and readout errors over its target, epoch its properties'
        last update."""
        base = super().status()
        try:
            with self._sdk_errors():
                backend = registry().backend(self._account(), self.backend_name)
                published = backend.status() if hasattr(backend, "status") else None
                errors: dict[str, list[float]] = {"one": [], "two": [], "readout": []}
                target: Any = getattr(backend, "target", None) or {}
                for name in getattr(target, "operation_names", ()):
                    for qargs, props in target[name].items():
                        if qargs and props is not None and props.error is not None:
                            kind = "readout" if name == "measure" else (
                                "one" if len(qargs) == 1 else "two"
                            )
                            errors[kind].append(props.error)
                properties = backend.properties() if hasattr(backend, "properties") else None
        except QFleetError as exc:
            return base.model_copy(update={"available": False, "reason": f"no status: {exc}"})
        mean = {k: sum(v) / len(v) if v else 0.0 for k, v in errors.items()}
        calibration = Calibration(
            one_qubit_error=mean["one"], two_qubit_error=mean["two"],
            readout_error=mean["readout"],
            epoch=str(properties.last_update_date) if properties is not None else None,
        )  # fmt: skip
        update: dict[str, Any] = {"calibration": calibration}
        if published is not None:
            update.update(
                available=bool(published.operational),
                reason=None if published.operational else published.status_msg,
                queue_length=int(published.pending_jobs),
            )
        return base.model_copy(update=update)
