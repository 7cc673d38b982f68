"""QuantumInspireExecutor: run tapes on Quantum Inspire, QuTech's cloud platform (its
2300-controlled chips and the QX emulator), through the real ``qi-compute-api-client``.

This file only translates: the sampling plan's circuits -> cQASM 3 programs for the backend
type's gate set and topology (caller's thread); a batch -> one Quantum Inspire batch job
with one job per circuit, the way Quantum Inspire's own SDKs submit (project, then per
circuit algorithm, commit, file and job, then enqueue); results -> counts or samples per
circuit (caller's thread). The plan does the rest (shots, broadcasting, diagonalization,
native gates, results).

Sign-in follows the ``quantuminspire`` SDK: ``qi login`` stores OAuth tokens per host in
``~/.quantuminspire/config.json`` (``default_host``, ``auths[host].tokens``,
``team_member_id``); an expired access token is refreshed at the host's OpenID provider and
the new tokens are stored back, as the SDK does. An explicit ``token`` (or
``QFLEET_QUANTUMINSPIREEXECUTOR_TOKEN``, or the qfleet config file) is used as a bearer
token instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pennylane.tape import QuantumScript
from pydantic import BaseModel, Field, SecretStr

from qfleet.circuits.compile2300 import CompiledProgram
from qfleet.circuits.cqasm import CqasmProgram, CqasmTarget, native_gates, to_cqasm3
from qfleet.errors import ConfigError, ExecutorError, QFleetError, UnsupportedCircuitError
from qfleet.executors.base import (
    SAMPLING_MEASUREMENTS,
    Capabilities,
    QuantumExecutor,
)
from qfleet.executors.faults import unreachable
from qfleet.executors.status import ExecutorStatus
from qfleet.runtime.background import keep
from qfleet.sampling import BatchShape, Counts, RawOutput, Samples, SamplingPlan

log = logging.getLogger("qfleet.executor.quantum_inspire")

#: Quantum Inspire's API, where ``qi login`` signs in by default.
DEFAULT_HOST = "https://api.quantum-inspire.com"

#: HTTP statuses after which trying again (here or on another member) may succeed.
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}

#: Requests one batch has in flight at once while it creates its jobs.
_PARALLEL_REQUESTS = 8


class QuantumInspireAuthenticationError(ExecutorError):
    """Quantum Inspire did not accept the token (or there is none): permanent."""


class QuantumInspireJobError(ExecutorError):
    """A Quantum Inspire job failed or was cancelled; ``job_id`` names it."""

    def __init__(self, message: str, *, executor: str | None = None, job_id: int | None = None,
                 transient: bool = False):
        super().__init__(message, executor=executor, transient=transient)
        self.job_id = job_id


class BackendTypeStatus(BaseModel):
    """A Quantum Inspire backend type as it is now (``QuantumInspireExecutor.backend_status``)."""

    id: int
    name: str
    status: str
    """offline, idle, executing, calibrating or benchmarking."""
    enabled: bool
    is_hardware: bool
    nqubits: int
    queued_jobs: int | None = None
    """Batch jobs waiting in the backend type's queue (None: the platform did not say)."""
    average_wait: float | None = None
    """Seconds a batch job waits in that queue on average (None: not said)."""
    messages: dict[str, str] = Field(default_factory=dict)

    @property
    def available(self) -> bool:
        """Whether jobs run now: enabled, idle or executing (a calibrating or benchmarking
        chip queues them for later; an offline one is refused)."""
        return self.enabled and self.status in ("idle", "executing")


def _needs_extra(exc: ImportError) -> ConfigError:
    return ConfigError(
        f"QuantumInspireExecutor needs qi-compute-api-client ({exc}); install qfleet's "
        f"quantuminspire extra: pip install 'qfleet[quantuminspire]'"
    )


def _client():
    try:
        import compute_api_client
        import qi2_shared  # noqa: F401 - the client's sign-in and paging helpers
    except ImportError as exc:
        raise _needs_extra(exc) from exc
    return compute_api_client


def _run_async(coro: Any) -> Any:
    """Run ``coro`` from synchronous code, also where a loop is running (Jupyter)."""
    try:
        from qi2_shared.utils import run_async
    except ImportError as exc:
        coro.close()
        raise _needs_extra(exc) from exc
    return run_async(coro)


def _compiler() -> Any:
    """OpenSquirrel compilation (decompose, map, route, optimise), or None where OpenSquirrel
    is not installed: then circuits must already fit the topology."""
    if importlib.util.find_spec("opensquirrel") is None:
        return None
    from qfleet.circuits.compile2300 import compile_for_target

    return compile_for_target


# -- sign-in (the quantuminspire SDK's config file) -----------------------------------------


def qi_config_path(path: str | os.PathLike | None = None) -> Path:
    """The Quantum Inspire config file ``qi login`` writes: ``path``, else
    ``~/.quantuminspire/config.json`` (read when used, so ``HOME`` may change)."""
    return Path(path) if path is not None else Path.home() / ".quantuminspire" / "config.json"


class _Session:
    """A signed-in host: the access token (refreshed when expired), the team member id.

    Per process, never pickled. Refreshing rotates the refresh token, so it happens under a
    lock and the new tokens go back into the config file, as the quantuminspire SDK does.
    """

    def __init__(self, host: str, token: str | None, config_file: Path | None,
                 member_id: int | None) -> None:
        self.host = host
        self.static_token = token
        self.config_file = config_file
        self.member_id = member_id
        self.lock = threading.Lock()
        self.tokens: Any = None  # qi2_shared TokenInfo from the config file

    def secrets(self) -> list[str]:
        found = [self.static_token] if self.static_token else []
        if self.tokens is not None:
            found += [self.tokens.access_token, self.tokens.refresh_token]
        return [s for s in found if s]

    def access_token(self) -> str:
        """A valid access token (blocking: may refresh at the OpenID provider)."""
        if self.static_token is not None:
            return self.static_token
        with self.lock:
            if self.tokens is None or self.tokens.access_expires_at <= time.time() + 5:
                self._refresh()
            return str(self.tokens.access_token)

    def _refresh(self) -> None:
        from qi2_shared.authentication import IdentityProvider
        from qi2_shared.settings import TokenInfo

        assert self.config_file is not None
        settings = _read_settings(self.config_file)
        auth = settings.auths.get(self.host)
        if auth is None:
            raise _AuthProblem(f"the Quantum Inspire config {self.config_file} has no login "
                               f"for {self.host}")
        tokens = auth.tokens
        # Another process may have refreshed already (the refresh token rotates): the file's
        # tokens are the newest.
        if tokens is not None and tokens.access_expires_at > time.time() + 5:
            self.tokens = tokens
            return
        if tokens is None:
            raise _AuthProblem(f"the Quantum Inspire config {self.config_file} holds no tokens "
                               f"for {self.host}")
        provider = IdentityProvider(auth.well_known_endpoint)
        try:
            fresh = TokenInfo(**provider.refresh_access_token(auth.client_id,
                                                              tokens.refresh_token))
        except Exception as exc:
            self.tokens = tokens  # so its values are scrubbed from the message
            raise _AuthProblem(f"refreshing the access token at {auth.well_known_endpoint} "
                               f"failed: {exc}") from exc
        # Back into the file as the SDK stores them, changing nothing else in it (the SDK's
        # own models keep fields, e.g. audience and scope, that qi2_shared's do not know).
        data = json.loads(self.config_file.read_text())
        for key, auth_data in data.get("auths", {}).items():
            if key.rstrip("/") == self.host:
                auth_data["tokens"] = json.loads(fresh.model_dump_json())
        self.config_file.write_text(json.dumps(data, indent=4))
        self.tokens = fresh


class _AuthProblem(Exception):
    """Sign-in failed before any request (no config, no tokens, refresh refused)."""


def _read_settings(path: Path) -> Any:
    from qi2_shared.settings import ApiSettings

    try:
        return ApiSettings.from_config_file(path)
    except FileNotFoundError as exc:
        raise _AuthProblem(f"there is no Quantum Inspire config at {path}") from exc
    except ValueError as exc:  # pydantic's ValidationError, JSON errors
        raise _AuthProblem(f"the Quantum Inspire config {path} is not valid: "
                           f"{str(exc).splitlines()[0]}") from exc


# -- the batch ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Payload:
    programs: tuple[CqasmProgram, ...]
    """One cQASM 3 program per plan circuit (and where its wires went)."""
    shots: tuple[int, ...]
    backend_type_id: int
    raw_data: bool

    def compile_report(self) -> dict[str, Any] | None:
        """What compiling for a sparse chip did (``metadata.compile``); None: not compiled."""
        compiled = [p for p in self.programs if isinstance(p, CompiledProgram)]
        if not compiled:
            return None
        return {
            "seconds": round(sum(p.compile_seconds for p in compiled), 6),
            "cached": sum(p.cached for p in compiled),
            "circuits": len(compiled),
            "swaps": sum(p.swaps for p in compiled),
            "added_two_qubit_gates": sum(p.added_two_qubit_gates for p in compiled),
            "passes": sorted({name for p in compiled for name in p.passes}),
        }


@dataclasses.dataclass
class _Job:
    """A submitted batch: its payload, one Quantum Inspire job per circuit, the batch job
    (None after ``attach`` until first read)."""

    payload: _Payload | None
    ids: tuple[int, ...]
    batch_id: int | None = None




class QuantumInspireExecutor(QuantumExecutor):
    """Runs tapes on Quantum Inspire (QuTech's cloud: its chips and the QX emulator).

    ``backend_type``: a backend type's name (e.g. ``"QX emulator"``, ``"Tuna-5"``) or id.
    ``host``: the API (None: the ``default_host`` of the Quantum Inspire config, else
    ``https://api.quantum-inspire.com``). ``token``: a bearer access token; None: the tokens
    ``qi login`` stored in ``qi_config`` (default ``~/.quantuminspire/config.json``),
    refreshed when they expire. ``team_member_id``: who owns the projects qfleet creates
    (None: the config's, else the token's only membership).

    Samples only: tapes without shots run with the backend type's default shots, with a
    warning; more than its ``max_number_of_shots`` is refused before anything is sent. The
    gate set, qubits and topology come from the backend type; a circuit that needs qubits
    the topology does not connect is refused (``why_not``) before anything is sent. One
    batch is one Quantum Inspire batch job, one job per circuit; ``results_of(tapes,
    job_ids)`` re-attaches to them from any process.

    Example (running needs a Quantum Inspire account: ``qi login``):
        >>> ex = QuantumInspireExecutor(backend_type="QX emulator", shots=1000)
        >>> tape = qml.tape.QuantumScript([qml.X(0)], [qml.probs(wires=0)])
        >>> ex.run_circuit_sync(tape)  # doctest: +SKIP
        array([0., 1.])
    """

    backend_type: int | str = "QX emulator"
    host: str | None = None
    token: SecretStr | None = None
    """A Quantum Inspire access token; None: ``qi login``'s tokens from ``qi_config``."""
    qi_config: str | None = None
    """The quantuminspire SDK's config file (None: ``~/.quantuminspire/config.json``)."""
    team_member_id: int | None = None
    raw_data: bool = False
    """Ask for per-shot bitstrings (otherwise samples are a shuffled histogram, which has
    the same distribution)."""
    project_name: str = "qfleet"
    poll_interval: float = Field(default=1.0, gt=0)
    """Most seconds between two looks at a running batch (polling starts faster)."""

    backend_kind: ClassVar[str] = "quantum-inspire"

    # -- where and who ------------------------------------------------------------------

    def _config_file(self) -> Path:
        return qi_config_path(self.qi_config)

    def _host(self) -> str:
        if self.host:
            return self.host.rstrip("/")
        key = ("qi-host", os.getpid())
        if key not in self._runtime:  # `qi login`'s default host, read once per process
            host = DEFAULT_HOST
            path = self._config_file()
            if path.is_file():
                with contextlib.suppress(Exception):
                    host = str(_read_settings(path).default_host).rstrip("/")
            self._runtime[key] = host
        return str(self._runtime[key])

    def _session(self) -> _Session:
        """This process's sign-in for this executor (blocking: reads the config file)."""
        token = self.secret("token")
        host = self._host()
        key = ("qi-session", os.getpid(), host, token)
        session = self._runtime.get(key)
        if session is not None:
            return session
        member_id = self.team_member_id
        config_file = None
        if token is None:
            config_file = self._config_file()
            try:
                settings = _read_settings(config_file)
                auth = settings.auths.get(host)
                if auth is None or auth.tokens is None:
                    raise _AuthProblem(f"the Quantum Inspire config {config_file} has no login "
                                       f"for {host}")
            except _AuthProblem as exc:
                raise self._auth_error(str(exc)) from None
            if member_id is None:
                member_id = auth.team_member_id
        elif member_id is None and self._config_file().is_file():
            # An explicit token for the host `qi login` chose: its member id still applies.
            with contextlib.suppress(Exception):
                settings = _read_settings(self._config_file())
                auth = settings.auths.get(host)
                member_id = auth.team_member_id if auth is not None else None
        session = self._runtime[key] = _Session(host, token, config_file, member_id)
        return session

    def _auth_error(self, problem: str, secrets: Sequence[str] = ()) -> ExecutorError:
        host = self._host()
        return QuantumInspireAuthenticationError(
            f"{_scrub(problem, secrets)}. Sign in with the quantuminspire SDK (`qi login "
            f"{host}`), or give QuantumInspireExecutor(token=...), [executors."
            f"QuantumInspireExecutor] token in the qfleet config, or "
            f"QFLEET_QUANTUMINSPIREEXECUTOR_TOKEN",
            executor=self.label,
        )

    async def _configuration(self, session: _Session) -> Any:
        """The client's Configuration with a valid access token (refreshing off the loop)."""
        client = _client()
        try:
            token = await asyncio.to_thread(session.access_token)
        except _AuthProblem as exc:
            if unreachable(exc) is not None:  # the OpenID provider did not answer: later
                raise ExecutorError(_scrub(str(exc), session.secrets()), executor=self.label,
                                    transient=True) from None
            raise self._auth_error(str(exc), session.secrets()) from None
        config = client.Configuration(host=session.host, access_token=token)
        # The client logs nothing unless asked; its debug mode would log request headers.
        config.debug = False
        return config

    # -- the backend type ----------------------------------------------------------------

    def backend_info(self, refresh: bool = False) -> Any:
        """The backend type (compute_api_client ``BackendType``), fetched once per process
        (``refresh``: again). Blocking; the backend type list needs no sign-in."""
        key = ("qi-backend", os.getpid())
        info = self._runtime.get(key)
        if info is None or refresh:
            info = self._runtime[key] = _run_async(self._fetch_backend_type())
        return info

    async def _fetch_backend_type(self) -> Any:
        client = _client()
        from qi2_shared.pagination import PageReader

        host = self._host()
        try:
            async with client.ApiClient(client.Configuration(host=host)) as api:
                types = await PageReader().get_all(
                    client.BackendTypesApi(api).read_backend_types_backend_types_get)
        except QFleetError:
            raise
        except Exception as exc:
            raise self._error(exc, ()) from exc
        wanted = self.backend_type
        for bt in types:
            if (bt.id == wanted if isinstance(wanted, int)
                    else bt.name.lower() == str(wanted).lower()):
                return bt
        names = ", ".join(f"{bt.name!r} (id {bt.id})" for bt in types) or "none"
        raise ExecutorError(
            f"Quantum Inspire at {host} has no backend type {wanted!r}; backend types: {names}",
            executor=self.label,
        )

    def _cached_info(self) -> Any:
        return self._runtime.get(("qi-backend", os.getpid()))

    def target(self, info: Any = None) -> CqasmTarget:
        """The backend type as a cQASM target (gate set; topology unless all-to-all)."""
        info = info if info is not None else self._cached_info()
        if info is None:
            return CqasmTarget()
        n = info.nqubits
        edges = {(int(a), int(b)) for a, b in info.topology}
        complete = all((a, b) in edges or (b, a) in edges
                       for a, b in itertools.combinations(range(n), 2))
        return CqasmTarget(nqubits=n, pgs=frozenset(g for g in info.gateset if g) or None,
                           topology=None if complete else frozenset(edges))

    @property
    def capabilities(self) -> Capabilities:
        info = self._cached_info()
        cached = self._runtime.get("qi-capabilities")
        if cached is None or cached[0] is not info:  # on every batch's path: build it once
            cached = self._runtime["qi-capabilities"] = (info, self._capabilities(info))
        return cached[1]

    def _capabilities(self, info: Any) -> Capabilities:
        target = self.target(info)
        return Capabilities(
            analytic=False,
            max_wires=target.nqubits,
            measurements=SAMPLING_MEASUREMENTS,
            native_gates=native_gates(target),
            mid_circuit_measurements=False,
            max_shots=info.max_number_of_shots if info is not None else None,
            default_shots=info.default_number_of_shots if info is not None else 1024,
        )

    @property
    def backend_description(self) -> str:
        info = self._cached_info()
        name = info.name if info is not None else self.backend_type
        return f"Quantum Inspire {name}"

    def backend_status(self) -> BackendTypeStatus:
        """The backend type's status now, and its queue (blocking)."""
        return _run_async(self._status())

    def status(self) -> ExecutorStatus:
        """The backend type's status (idle and executing run; calibrating, benchmarking,
        offline and disabled do not now) and queue, for clusters and ``health``."""
        base = super().status()
        info = self.backend_status()
        reason = None
        if not info.enabled:
            reason = f"{info.name} is disabled on Quantum Inspire"
        elif info.status != "idle":
            reason = f"{info.name} is {info.status}"
        note = "; ".join(m for m in info.messages.values() if m)
        return base.model_copy(update={
            "available": info.available,
            "reason": f"{reason}: {note}" if reason and note else reason,
            "queue_length": info.queued_jobs,
            "estimated_wait": info.average_wait,
        })

    async def _status(self) -> BackendTypeStatus:
        client = _client()
        info = await self._fetch_backend_type()
        self._runtime[("qi-backend", os.getpid())] = info
        queued, wait = None, None
        session = await asyncio.to_thread(self._session)
        config = await self._configuration(session)
        try:
            async with client.ApiClient(config) as api:
                queue = await client.BackendTypesApi(api) \
                    .read_backend_type_queue_backend_types_id_queue_get(info.id)
                queued = queue.number_of_jobs_in_queue
                wait = float(queue.avg_wait_time_in_queue_secs)
        except Exception as exc:
            raise self._error(exc, session.secrets()) from exc
        return BackendTypeStatus(
            id=info.id, name=info.name, status=str(getattr(info.status, "value", info.status)),
            enabled=info.enabled, is_hardware=info.is_hardware, nqubits=info.nqubits,
            queued_jobs=queued, average_wait=wait,
            messages={k: (m.content or "") for k, m in (info.messages or {}).items()},
        )

    # -- caller's thread ------------------------------------------------------------------

    def why_not_shape(self, shape: BatchShape) -> str | None:
        self.backend_info()
        reason = super().why_not_shape(shape)
        if reason is None:
            for tape in shape.tapes:
                reason = self._unconnected(tape)
                if reason:
                    break
        return reason

    def _unconnected(self, tape: QuantumScript) -> str | None:
        """Why ``tape`` needs routing on a sparse topology that qfleet cannot route here
        (OpenSquirrel not installed: wire k is qubit k, no SWAPs added), or None."""
        target = self.target()
        if target.topology is None or _compiler() is not None:
            return None
        wires = list(tape.wires)
        physical = all(isinstance(w, int) and not isinstance(w, bool)
                       and 0 <= w < (target.nqubits or 0) for w in wires)
        qubit = {w: (w if physical else i) for i, w in enumerate(wires)}
        for op in tape.operations:
            for a, b in itertools.combinations(op.wires, 2):
                if not target.connected(qubit[a], qubit[b]):
                    name = self._cached_info().name
                    return (f"{op.name} on wires {a!r} and {b!r} needs qubits {qubit[a]} and "
                            f"{qubit[b]} connected, but {name}'s topology does not connect "
                            f"them (edges {sorted(target.topology)}); install opensquirrel "
                            f"(pip install 'qfleet[quantuminspire]') to map and route, or put "
                            f"interacting wires on connected qubits")
        return None

    def plan(self, tapes: Sequence[QuantumScript], checked: bool = False) -> SamplingPlan:
        self.backend_info()  # gate set, qubits, topology, shot limits are the backend type's
        if not checked:
            for tape in tapes:
                reason = self._unconnected(tape)
                if reason:
                    raise UnsupportedCircuitError(f"{self.label} cannot run this circuit: "
                                                  f"{reason}")
        return super().plan(tapes, checked=checked)

    def translate(self, circuits: tuple[QuantumScript, ...]) -> _Payload:
        info = self.backend_info()
        target = self.target(info)
        compile_for_target = _compiler() if target.topology is not None else None
        if compile_for_target is None:
            programs = tuple(to_cqasm3(circuit, target) for circuit in circuits)
        else:
            # A sparse chip: map, route and decompose with OpenSquirrel, following the
            # backend type's own compiler passes when it publishes them.
            config = dict(info.default_compiler_config or {}) or None
            compiled = [compile_for_target(circuit, target, config) for circuit in circuits]
            log.debug("%s: compiled %d circuits for %s in %.3f s, %d SWAPs", self.label,
                      len(compiled), info.name, sum(p.compile_seconds for p in compiled),
                      sum(p.swaps for p in compiled))
            programs = tuple(compiled)
        return _Payload(
            programs=programs,
            shots=tuple(int(c.shots.total_shots or info.default_number_of_shots)
                        for c in circuits),
            backend_type_id=info.id,
            raw_data=self.raw_data and info.supports_raw_data,
        )

    def decode(self, circuits: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[RawOutput]:
        return [self._output(circuit, program, result)
                for circuit, (program, result) in zip(circuits, raw, strict=True)]

    def _output(self, circuit: QuantumScript, program: CqasmProgram, result: Any) -> RawOutput:
        job_id, counts_in, raw_data, shots_done = result
        try:
            if raw_data and len(raw_data) == circuit.shots.total_shots:
                return Samples(_samples(raw_data, program))
            counts: dict[str, int] = {}
            values = list(counts_in.values())
            as_probabilities = values and all(isinstance(v, float) for v in values) and \
                abs(sum(values) - 1) < 1e-6
            for bitstring, value in counts_in.items():
                bits = program.bits_for_wires(bitstring)
                count = round(value * shots_done) if as_probabilities else int(value)
                counts[bits] = counts.get(bits, 0) + count
            return Counts(counts)
        except ValueError as exc:
            raise ExecutorError(
                f"Quantum Inspire job {job_id} returned results that do not fit its program: "
                f"{exc}",
                executor=self.label,
            ) from exc

    # -- event loop: the compute API -------------------------------------------------------

    async def _begin(self) -> tuple[_Session, Any]:
        session = await asyncio.to_thread(self._session)
        return session, await self._configuration(session)

    async def submit(self, payload: _Payload) -> tuple[_Job, tuple[str, ...]]:
        job = _Job(payload, ())
        created: list[int] = []
        submitting = asyncio.ensure_future(self._submit_all(payload, job, created))
        try:
            await asyncio.shield(submitting)
        except BaseException:
            # All or nothing: jobs created before the failure (or the cancel) are cancelled
            # once the requests in flight are done; the batch job was never enqueued.
            def clean_up(_: Any) -> None:
                if created:
                    keep(self.cancel(_Job(None, tuple(created))))

            submitting.add_done_callback(clean_up)
            raise
        return job, tuple(str(i) for i in job.ids)

    async def _submit_all(self, payload: _Payload, job: _Job, created: list[int]) -> None:
        client = _client()
        session, config = await self._begin()
        try:
            async with client.ApiClient(config) as api:
                await self._check_available(api, payload.backend_type_id)
                language = await self._language(api)
                member = await self._member_id(api, session)
                project = await client.ProjectsApi(api).create_project_projects_post(
                    client.ProjectIn(owner_id=member, name=self.project_name,
                                     description=f"qfleet batch of {len(payload.programs)} "
                                                 f"circuits", starred=False))
                batch = await client.BatchJobsApi(api).create_batch_job_batch_jobs_post(
                    client.BatchJobIn(backend_type_id=payload.backend_type_id))
                limit = asyncio.Semaphore(_PARALLEL_REQUESTS)

                async def one(index: int) -> int:
                    async with limit:
                        name = f"{self.project_name} circuit {index + 1}/{len(payload.programs)}"
                        algorithm = await client.AlgorithmsApi(api) \
                            .create_algorithm_algorithms_post(client.AlgorithmIn(
                                project_id=project.id, type=client.AlgorithmType.QUANTUM,
                                shared=client.ShareType.PRIVATE, name=name))
                        commit = await client.CommitsApi(api).create_commit_commits_post(
                            client.CommitIn(description="qfleet", algorithm_id=algorithm.id))
                        file = await client.FilesApi(api).create_file_files_post(client.FileIn(
                            commit_id=commit.id, content=payload.programs[index].text,
                            language_id=language, compile_stage=client.CompileStage.NONE,
                            compile_properties={}, name=f"circuit_{index + 1}"))
                        created_job = await client.JobsApi(api).create_job_jobs_post(
                            client.JobIn(file_id=file.id, batch_job_id=batch.id,
                                         number_of_shots=payload.shots[index],
                                         raw_data_enabled=payload.raw_data))
                        created.append(created_job.id)
                        return int(created_job.id)

                # Every creation settles before a failure is raised, so the clean-up in
                # submit knows each job that exists.
                outcomes = await asyncio.gather(*(one(i) for i in range(len(payload.programs))),
                                                return_exceptions=True)
                failed = [o for o in outcomes if isinstance(o, BaseException)]
                if failed:
                    raise failed[0]
                ids = [int(o) for o in outcomes]  # type: ignore[arg-type]  # no exceptions
                await client.BatchJobsApi(api).enqueue_batch_job_batch_jobs_id_enqueue_patch(
                    batch.id)
        except QFleetError:
            raise
        except Exception as exc:
            raise self._error(exc, session.secrets()) from exc
        job.batch_id, job.ids = int(batch.id), tuple(ids)
        log.debug("%s: batch job %s with %d jobs", self.label, batch.id, len(ids))

    async def _check_available(self, api: Any, backend_type_id: int) -> None:
        """Refuse (transient: another member may run it) when the backend type is offline
        or disabled; also proves the token before anything is created."""
        client = _client()
        info = await client.BackendTypesApi(api).read_backend_type_backend_types_id_get(
            backend_type_id)
        status = str(getattr(info.status, "value", info.status))
        if status == "offline" or not info.enabled:
            state = "disabled" if not info.enabled else "offline"
            raise ExecutorError(
                f"Quantum Inspire backend {info.name!r} is {state}; try again later or use "
                f"another backend type",
                executor=self.label, transient=True,
            )

    async def _language(self, api: Any) -> int:
        key = ("qi-language", os.getpid())
        if key not in self._runtime:
            client = _client()
            page = await client.LanguagesApi(api).read_languages_languages_get()
            found = [lang.id for lang in page.items
                     if lang.name.lower() == "cqasm" and lang.version == "3.0"]
            if not found:
                raise ExecutorError("Quantum Inspire offers no cQASM 3.0 language",
                                    executor=self.label)
            self._runtime[key] = int(found[0])
        return int(self._runtime[key])

    async def _member_id(self, api: Any, session: _Session) -> int:
        if session.member_id is None:
            client = _client()
            page = await client.MembersApi(api).read_members_members_get()
            members = [m.id for m in page.items if m.is_active]
            if len(members) != 1:
                raise ExecutorError(
                    f"the token belongs to {len(members)} team memberships "
                    f"({', '.join(map(str, members))}); choose one with "
                    f"QuantumInspireExecutor(team_member_id=...)",
                    executor=self.label,
                )
            session.member_id = int(members[0])
        return int(session.member_id)

    @property
    def reattachable(self) -> bool:
        return True  # Quantum Inspire keeps the jobs: any process re-attaches by job id

    def attach(self, payload: _Payload, job_ids: Sequence[str]) -> _Job:
        """The batch of Quantum Inspire job ids from an earlier submission of the same tapes."""
        self.check_job_ids(job_ids, len(payload.programs), "Quantum Inspire job ids")
        try:
            ids = tuple(int(i) for i in job_ids)
        except ValueError:
            raise ExecutorError(f"Quantum Inspire job ids are integers, got {list(job_ids)}",
                                executor=self.label) from None
        return _Job(payload, ids)

    async def collect(self, job: _Job) -> list[Any]:
        """Per circuit: (its program, (job id, counts by bitstring, raw data or None, shots
        done))."""
        client = _client()
        from qi2_shared.pagination import PageReader

        delay = 0.05
        while True:
            session, config = await self._begin()
            try:
                async with client.ApiClient(config) as api:
                    jobs_api = client.JobsApi(api)
                    if job.batch_id is None:
                        first = await jobs_api.read_job_jobs_id_get(job.ids[0])
                        job.batch_id = int(first.batch_job_id)
                    rows = await PageReader().get_all(jobs_api.read_jobs_jobs_get,
                                                      batch_job_id=job.batch_id)
                    by_id = {row.id: row for row in rows}
                    missing = [i for i in job.ids if i not in by_id]
                    if missing:
                        raise QuantumInspireJobError(
                            f"Quantum Inspire batch job {job.batch_id} has no job "
                            f"{missing[0]}; were these job ids of another batch?",
                            executor=self.label, job_id=missing[0])
                    statuses = [str(by_id[i].status.value) for i in job.ids]
                    for i, status in zip(job.ids, statuses, strict=True):
                        if status in ("failed", "cancelled"):
                            raise self._job_error(by_id[i], status)
                    if all(s == "completed" for s in statuses):
                        pages = await asyncio.gather(*(
                            PageReader().get_all(client.ResultsApi(api)
                                                 .read_results_by_job_id_results_job_job_id_get,
                                                 job_id=i)
                            for i in job.ids))
                        break
            except QuantumInspireJobError:
                await asyncio.shield(self.cancel(job))  # one failed: stop the others
                raise
            except QFleetError:
                raise
            except Exception as exc:
                raise self._error(exc, session.secrets()) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.poll_interval)
        outputs = []
        assert job.payload is not None  # submit and attach give it
        for program, job_id, results in zip(job.payload.programs, job.ids, pages, strict=True):
            if not results:
                raise QuantumInspireJobError(f"Quantum Inspire job {job_id} completed without a "
                                             f"result", executor=self.label, job_id=job_id)
            result = results[0]
            outputs.append((program, (job_id, dict(result.results or {}), result.raw_data,
                                      int(result.shots_done or 0))))
        return outputs

    def run_metadata(self, payload: Any) -> dict[str, Any]:
        return {"compile": payload.compile_report()} if isinstance(payload, _Payload) else {}

    def _job_error(self, row: Any, status: str) -> QuantumInspireJobError:
        if status == "cancelled":
            return QuantumInspireJobError(
                f"Quantum Inspire job {row.id} (batch job {row.batch_job_id}) was cancelled",
                executor=self.label, job_id=row.id)
        where = f" in {row.source}" if row.source else ""
        trace = f" (trace id {row.trace_id})" if row.trace_id else ""
        return QuantumInspireJobError(
            f"Quantum Inspire job {row.id} (batch job {row.batch_job_id}) failed{where}: "
            f"{row.message or 'no message'}{trace}",
            executor=self.label, job_id=row.id)

    async def cancel(self, job: _Job) -> None:
        """Cancel the jobs that have not started (Quantum Inspire cancels only planned jobs;
        running ones finish)."""
        client = _client()
        try:
            _, config = await self._begin()
        except QFleetError:
            return  # cannot sign in: nothing can be cancelled

        async def one(api: Any, job_id: int) -> None:
            jobs_api = client.JobsApi(api)
            with contextlib.suppress(Exception):  # already final, or gone
                row = await jobs_api.read_job_jobs_id_get(job_id)
                if str(row.status.value) == "planned":
                    await jobs_api.update_job_status_jobs_id_patch(
                        job_id, client.JobPatch(status=client.JobStatus.CANCELLED,
                                                message="cancelled by qfleet"))

        with contextlib.suppress(Exception):
            async with client.ApiClient(config) as api:
                await asyncio.gather(*(one(api, i) for i in job.ids))

    # -- errors -----------------------------------------------------------------------------

    def _error(self, exc: BaseException, secrets: Sequence[str]) -> ExecutorError:
        """A client exception as a qfleet error (auth, transient or not), secrets removed."""
        client = _client()
        exceptions = client.exceptions
        if isinstance(exc, exceptions.ApiException):
            body = exc.body if isinstance(exc.body, str) else (exc.data or "")
            with contextlib.suppress(Exception):
                body = json.loads(body).get("detail", body)
            detail = _scrub(f"HTTP {exc.status} {exc.reason or ''}: {body}".strip(), secrets)
            if isinstance(exc, exceptions.UnauthorizedException):
                return self._auth_error(
                    f"Quantum Inspire at {self._host()} did not accept the access token "
                    f"({detail})", secrets)
            if isinstance(exc, exceptions.ForbiddenException):
                return QuantumInspireAuthenticationError(
                    f"Quantum Inspire refused the request ({detail}); check "
                    f"QuantumInspireExecutor(team_member_id=...) and the account's access "
                    f"to backend type {self.backend_type!r}",
                    executor=self.label)
            return ExecutorError(f"Quantum Inspire: {detail}", executor=self.label,
                                 transient=exc.status in _TRANSIENT_HTTP)
        transient = unreachable(exc) is not None
        return ExecutorError(f"Quantum Inspire: {type(exc).__name__}: "
                             f"{_scrub(str(exc), secrets)}",
                             executor=self.label, transient=transient)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "**********")
    return text


def _samples(raw: Sequence[str], program: CqasmProgram) -> np.ndarray:
    """Per-shot bitstrings (b[n-1]...b[0]) -> a (shots, wires) array in the tape's wire order."""
    n = program.num_qubits
    flat = np.frombuffer("".join(raw).encode("ascii"), dtype=np.uint8)
    if flat.size != n * len(raw) or not np.isin(flat, (48, 49)).all():
        raise ValueError(f"raw_data holds strings that are not {n}-bit bitstrings")
    bits = flat.reshape(len(raw), n) - 48
    return bits[:, [n - 1 - q for q in program.qubits]].astype(np.int64)
