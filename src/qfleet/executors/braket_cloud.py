"""BraketExecutor: Amazon Braket's cloud devices through the amazon-braket-sdk.

Each circuit of the batch's sampling plan becomes one Braket quantum task: an OpenQASM 3
program (:func:`qfleet.executors.braket.braket_program`, Braket's gate names) on a device given
by its ARN: the on-demand simulators SV1, DM1, TN1, or a QPU. Tasks are created concurrently
(at most ``max_parallel`` creations at once) with ``AwsQuantumTask.create``; their ARNs are the
job ids, so a batch is re-attached by task ARN after a crash (:meth:`BraketExecutor.attach`).
Each CreateQuantumTask carries a ``clientToken`` that qfleet chooses: under a batch's
idempotency key (a cluster batch) it derives from the key and the circuit's index, so a
resubmission after a lost reply gets back the task Braket already has, never a second one.
Results are read from the task's S3 output location (``results.json``) and parsed by the
SDK (``GateModelQuantumTaskResult``): per-shot measurements become
:class:`~qfleet.sampling.Samples`; on SV1 and DM1 a tape without shots runs with ``shots=0``
and a ``state_vector`` / ``density_matrix`` result, an exact :class:`~qfleet.sampling.State`.
TN1 and QPUs only sample: analytic tapes run with ``DEFAULT_SHOTS`` and a ShotsWarning.

Credentials: ``aws_access_key_id`` + ``aws_secret_access_key`` (+ ``aws_session_token``), a
``profile``, else boto3's own chain (environment, ``~/.aws``, SSO, instance roles). Secrets
are SecretStr: never in repr, logs, errors, pickles or the job store. ``endpoint_url`` and
``s3_endpoint_url`` point the SDK at other endpoints (a VPC endpoint, a local stand-in); the
standard ``AWS_ENDPOINT_URL_BRAKET`` / ``AWS_ENDPOINT_URL_S3`` variables work too.

Every SDK call is blocking I/O and runs in a thread (a pool of ``max_connections`` threads
per process). amazon-braket-sdk is imported only when
a batch runs (extra ``qfleet[braket]``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pennylane.tape import QuantumScript
from pydantic import BaseModel, Field, SecretStr, field_validator

from qfleet.circuits.qasm3 import BRAKET_GATES, BRAKET_NOISE, is_channel
from qfleet.errors import ConfigError, ExecutorError, QFleetError
from qfleet.executors.base import (
    SAMPLING_MEASUREMENTS,
    Capabilities,
    QuantumExecutor,
)
from qfleet.executors.braket import BraketProgram, braket_program, raw_output
from qfleet.executors.idempotency import backend_job_id, gather_or_cancel, keeps_jobs_on
from qfleet.executors.status import ExecutorStatus
from qfleet.runtime.background import keep

__all__ = [
    "DEVICES",
    "BraketAuthenticationError",
    "BraketDevice",
    "BraketDeviceError",
    "BraketDeviceStatus",
    "BraketExecutor",
    "BraketTaskError",
]

SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
DM1 = "arn:aws:braket:::device/quantum-simulator/amazon/dm1"
TN1 = "arn:aws:braket:::device/quantum-simulator/amazon/tn1"

#: Shots for tapes without any on devices that only sample (Braket's own default for QPUs).
DEFAULT_SHOTS = 1000

#: IonQ's QPUs run these gates; Braket compiles nothing else for them.
_IONQ_GATES = frozenset({"Hadamard", "PauliX", "PauliY", "PauliZ", "S", "Adjoint(S)", "T",
                         "Adjoint(T)", "SX", "Adjoint(SX)", "RX", "RY", "RZ", "CNOT", "SWAP",
                         "IsingXX", "IsingYY", "IsingZZ"})

_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
_AUTH_CODES = frozenset({
    "ExpiredTokenException", "ExpiredToken", "UnrecognizedClientException",
    "InvalidClientTokenId", "InvalidSignatureException", "SignatureDoesNotMatch",
    "AccessDeniedException", "AccessDenied", "MissingAuthenticationTokenException",
    "IncompleteSignature", "AuthFailure",
})
_TRANSIENT_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown",
    "InternalServiceException", "InternalServerError", "InternalError",
    "ServiceUnavailable", "ServiceQuotaExceededException", "RequestTimeout",
    "DeviceOfflineException",
})


# -- devices --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BraketDevice:
    """What qfleet knows of a Braket device before asking the service (for routing)."""

    name: str
    qubits: int | None
    exact: str | None = None
    """"state_vector" (SV1) or "density_matrix" (DM1): exact results with shots=0; None:
    shots only."""
    gates: frozenset[str] = frozenset(BRAKET_GATES)
    max_shots: int | None = None


#: Devices by ARN. Unknown ARNs are shots-only with Braket's gate set and no qubit limit here
#: (the service says what it refuses).
DEVICES: dict[str, BraketDevice] = {
    SV1: BraketDevice("SV1", 34, "state_vector", max_shots=100_000),
    DM1: BraketDevice("DM1", 17, "density_matrix", max_shots=100_000),
    TN1: BraketDevice("TN1", 50),
    "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1": BraketDevice("Aria-1", 25,
                                                                      gates=_IONQ_GATES),
    "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1": BraketDevice("Forte-1", 36,
                                                                       gates=_IONQ_GATES),
    "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet": BraketDevice("Garnet", 20),
    "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3": BraketDevice("Ankaa-3", 82),
}

_ARN = re.compile(r"^arn:aws[\w-]*:braket:([\w-]*)::device/[\w./-]+$")

#: What Braket's exact results give (PennyLane's state measurements); DM1 has no state vector.
_EXACT = frozenset({"expval", "var", "probs", "state", "density_matrix", "purity",
                    "vn_entropy", "mutual_info"})


def device_info(arn: str) -> BraketDevice:
    """The known facts of the device ``arn`` (see :data:`DEVICES`)."""
    known = DEVICES.get(arn)
    if known is not None:
        return known
    return BraketDevice(arn.rsplit("/", 1)[-1], None)


# -- errors ---------------------------------------------------------------------------------


class BraketAuthenticationError(ExecutorError):
    """AWS did not accept the credentials (missing, wrong, expired) or they lack permission."""


class BraketDeviceError(ExecutorError):
    """The device is unknown, offline or retired."""


class BraketTaskError(ExecutorError):
    """A quantum task failed or was cancelled; the message carries Braket's failure reason."""

    def __init__(self, message: str, *, executor: str | None = None, transient: bool = False,
                 task_arn: str | None = None):
        super().__init__(message, executor=executor, transient=transient)
        self.task_arn = task_arn


def _needs_braket_extra(exc: ImportError) -> ConfigError:
    return ConfigError(
        f"BraketExecutor needs the 'braket' extra (amazon-braket-sdk): pip install "
        f"'qfleet[braket]' ({exc})"
    )


class BraketDeviceStatus(BaseModel):
    """A device's state as Braket reports it (``GetDevice``)."""

    device_arn: str
    name: str
    provider: str
    type: str
    """"QPU" or "SIMULATOR"."""
    status: str
    """"ONLINE", "OFFLINE" or "RETIRED"."""
    queue_depth: dict[str, str] = Field(default_factory=dict)
    """Tasks waiting, per queue ("Normal", "Priority"), and "jobs"."""


# -- per-process SDK objects ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Connection:
    """What identifies one AWS session in this process. Secrets never show in repr."""

    region: str | None
    profile: str | None
    access_key_id: str | None
    secret_access_key: str | None = dataclasses.field(repr=False)
    session_token: str | None = dataclasses.field(repr=False)
    endpoint_url: str | None
    s3_endpoint_url: str | None
    max_connections: int
    max_retries: int

    def secrets(self) -> list[str]:
        return [s for s in (self.secret_access_key, self.session_token) if s]


@dataclasses.dataclass
class _Resources:
    session: Any  # braket.aws.AwsSession
    s3: Any  # boto3 S3 client
    devices: dict[str, Any] = dataclasses.field(default_factory=dict)


_registry: dict[_Connection, _Resources] = {}
_pools: dict[tuple[int, int], concurrent.futures.ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()  # not _registry_lock: that one is held while sessions are made
_registry_pid = os.getpid()
_registry_lock = threading.Lock()


def _forked() -> None:
    """Forget the parent's sessions in a forked child (the lock is held)."""
    global _registry_pid
    if _registry_pid != os.getpid():
        _registry.clear()
        _registry_pid = os.getpid()


def _resources(conn: _Connection) -> _Resources:
    """This process's AWS session and S3 client for ``conn`` (blocking on first use)."""
    with _registry_lock:
        _forked()
        found = _registry.get(conn)
        if found is None:
            found = _registry[conn] = _make_resources(conn)
        return found


def _make_resources(conn: _Connection) -> _Resources:
    import boto3
    from botocore.config import Config
    from braket.aws import AwsSession

    boto_session = boto3.Session(
        aws_access_key_id=conn.access_key_id,
        aws_secret_access_key=conn.secret_access_key,
        aws_session_token=conn.session_token,
        region_name=conn.region,
        profile_name=conn.profile,
    )
    # Throttling (429) and 5xx answers are retried by botocore with backoff and jitter.
    config = Config(max_pool_connections=conn.max_connections,
                    retries={"mode": "standard", "total_max_attempts": conn.max_retries + 1})
    braket_client = boto_session.client("braket", endpoint_url=conn.endpoint_url, config=config)
    s3 = boto_session.client("s3", endpoint_url=conn.s3_endpoint_url, config=config)
    return _Resources(AwsSession(boto_session, braket_client=braket_client, config=config), s3)


def _pool(size: int) -> concurrent.futures.ThreadPoolExecutor:
    """This process's threads for blocking SDK calls, ``size`` of them (the connection pool's
    size: asyncio's default executor has only cpu + 4 threads, too few for many tasks)."""
    key = (os.getpid(), size)  # a forked child makes its own threads
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = concurrent.futures.ThreadPoolExecutor(
                size, thread_name_prefix="qfleet-braket")
        return pool


def forget_sessions() -> None:
    """Drop this process's AWS sessions (the next batch connects and signs again)."""
    with _registry_lock:
        _registry.clear()


# -- payloads and jobs ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Payload:
    device_arn: str
    programs: tuple[BraketProgram, ...]
    density: bool


@dataclasses.dataclass
class _Job:
    payload: _Payload
    arns: tuple[str, ...]
    conn: _Connection




class _ClientToken:
    """An AwsSession whose CreateQuantumTask carries ``token`` as its ``clientToken``.

    ``AwsDevice.run`` / ``AwsQuantumTask.create`` take no token (botocore fills a random one
    per call), so a resubmission would create a second task; Braket returns the existing
    task for a token it has seen.
    """

    def __init__(self, session: Any, token: str) -> None:
        self._session = session
        self._token = token

    def create_quantum_task(self, **kwargs: Any) -> str:
        return self._session.create_quantum_task(clientToken=self._token, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class BraketExecutor(QuantumExecutor):
    """Runs tapes on an Amazon Braket device (SV1, DM1, TN1 or a QPU) in AWS's cloud.

    Example (running needs AWS credentials with Braket access, or a stand-in's endpoints):
        >>> ex = BraketExecutor(device_arn="arn:aws:braket:::device/quantum-simulator/amazon/sv1",
        ...                     s3_bucket="amazon-braket-my-results", shots=1000)
        >>> ex.capabilities.max_wires, ex.capabilities.analytic
        (34, True)
        >>> ex.run_circuit_sync(QuantumScript([qml.X(0)], [qml.expval(qml.Z(0))]))  # doctest: +SKIP
        np.float64(-1.0)
    """

    device_arn: str = SV1
    """The device's ARN (``braket.devices.Devices.Amazon.SV1`` and friends)."""
    region: str | None = None
    """AWS region of the session (None: from the ARN for QPUs, else boto3's default)."""
    s3_bucket: str | None = None
    """Bucket for the task results (None: the SDK's default, amazon-braket-<region>-<account>,
    created if missing)."""
    s3_prefix: str = "qfleet-tasks"
    """Key prefix of the task results in ``s3_bucket``."""
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    profile: str | None = None
    """A named profile of ``~/.aws/config`` (None: boto3's default chain)."""
    endpoint_url: str | None = None
    """Braket API endpoint (None: AWS's for the region, or ``AWS_ENDPOINT_URL_BRAKET``)."""
    s3_endpoint_url: str | None = None
    """S3 endpoint for the results (None: AWS's, or ``AWS_ENDPOINT_URL_S3``)."""
    max_parallel: int = Field(default=10, ge=1)
    """Most tasks of one batch being created at once."""
    max_connections: int = Field(default=100, ge=1)
    """Size of boto3's connection pool."""
    max_retries: int = Field(default=3, ge=0)
    """Retries of a throttled (HTTP 429) or failed (5xx) request, with backoff."""
    poll_interval: float = Field(default=1.0, gt=0)
    """Longest pause between two status checks of a task, in seconds."""
    run_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments of ``AwsDevice.run`` (``device_parameters``, ``tags``,
    ``reservation_arn``, ...)."""

    backend_kind = "braket"
    resubmits_idempotently = True  # clientTokens derive from the batch's key (see submit)

    @field_validator("device_arn")
    @classmethod
    def _device_arn(cls, value: str) -> str:
        value = value.strip()
        if not _ARN.match(value):
            raise ValueError(
                f"device_arn {value!r} is not a Braket device ARN; it looks like "
                f"{SV1!r} or 'arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1' "
                f"(braket.devices.Devices lists them)"
            )
        return value

    @field_validator("run_kwargs")
    @classmethod
    def _run_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(value) & {"shots", "s3_destination_folder", "task_specification",
                                     "poll_timeout_seconds", "poll_interval_seconds"})
        if taken:
            raise ValueError(
                f"run_kwargs may not set {taken}: set shots on the QNode or the executor, "
                f"s3_bucket/s3_prefix, timeout and poll_interval on the executor"
            )
        return value

    # -- properties --------------------------------------------------------------------------

    @property
    def device(self) -> BraketDevice:
        """What qfleet knows of ``device_arn`` without asking AWS."""
        return device_info(self.device_arn)

    @property
    def backend_description(self) -> str:
        return f"braket:{self.device.name}"

    @property
    def capabilities(self) -> Capabilities:
        device = self.device
        exact = device.exact
        return Capabilities(
            analytic=exact is not None,
            max_wires=device.qubits,
            measurements=SAMPLING_MEASUREMENTS,
            exact_measurements=(_EXACT - {"state"} if exact == "density_matrix" else _EXACT)
            if exact else frozenset(),
            native_gates=device.gates,
            mid_circuit_measurements=False,
            max_shots=device.max_shots,
            default_shots=None if exact else DEFAULT_SHOTS,
        )

    def supports_operation(self, op: Any) -> bool:
        # DM1 runs noise channels natively (named pragmas, else kraus on <= 2 qubits).
        if self.device.exact != "density_matrix" or not is_channel(op):
            return False
        return op.name in BRAKET_NOISE or len(op.wires) <= 2

    def _region(self) -> str | None:
        match = _ARN.match(self.device_arn)
        # A QPU lives in one region: talk to that one (the SDK would copy the session there,
        # dropping a custom endpoint).
        return (match[1] if match and match[1] else None) or self.region

    def _connection(self) -> _Connection:
        secret = self.secret("aws_secret_access_key")
        if self.aws_access_key_id and not secret:
            raise ConfigError(
                f"{self.label}: aws_access_key_id is set but aws_secret_access_key is not; give "
                f"both, set aws_secret_access_key in the config file's [executors.BraketExecutor] "
                f"(or QFLEET_BRAKETEXECUTOR_AWS_SECRET_ACCESS_KEY), or drop the key id to use "
                f"boto3's credential chain"
            )
        return _Connection(
            region=self._region(), profile=self.profile, access_key_id=self.aws_access_key_id,
            secret_access_key=secret if self.aws_access_key_id else None,
            session_token=self.secret("aws_session_token") if self.aws_access_key_id else None,
            endpoint_url=self.endpoint_url, s3_endpoint_url=self.s3_endpoint_url,
            max_connections=self.max_connections, max_retries=self.max_retries,
        )

    def _device(self, conn: _Connection) -> Any:
        """The SDK's AwsDevice (blocking: GetDevice on first use in this process)."""
        from braket.aws import AwsDevice

        res = _resources(conn)
        device = res.devices.get(self.device_arn)
        if device is None:
            device = res.devices[self.device_arn] = AwsDevice(self.device_arn, res.session)
        return device

    def device_status(self) -> BraketDeviceStatus:
        """The device's status and queue depth, fresh from Braket (blocking: one GetDevice).

        For health checks: a device that is not ONLINE takes no tasks.
        """
        conn = self._connection()
        try:
            device = self._device(conn)
            device.refresh_metadata()
            queue = device.queue_depth()
        except ImportError as exc:
            raise _needs_braket_extra(exc) from exc
        except QFleetError:
            raise
        except Exception as exc:
            raise self._error(exc, conn) from exc
        depth = {getattr(k, "value", str(k)): str(v)
                 for k, v in (queue.quantum_tasks or {}).items()}
        if queue.jobs is not None:
            depth["jobs"] = str(queue.jobs)
        return BraketDeviceStatus(
            device_arn=self.device_arn, name=device.name, provider=device.provider_name,
            type=str(getattr(device.type, "value", device.type)), status=device.status,
            queue_depth=depth,
        )

    def status(self) -> ExecutorStatus:
        """Available when the device is ONLINE; ``queue_length``: its normal-priority task
        queue (blocking: one GetDevice). Errors reaching Braket make it unavailable."""
        try:
            device = self.device_status()
        except QFleetError as exc:
            return ExecutorStatus(executor=self.label, available=False, reason=str(exc),
                                  price=self.price)
        waiting = device.queue_depth.get("Normal", "")
        return ExecutorStatus(
            executor=self.label,
            available=device.status == "ONLINE",
            reason=None if device.status == "ONLINE" else f"{device.name} is {device.status}",
            queue_length=int(waiting) if waiting.isdigit() else None,
            price=self.price,
        )

    def cost_estimate(self, shots: Sequence[int]) -> float | None:
        """The ``price`` of tasks of ``shots`` shots each (None: no price set)."""
        if self.price is None:
            return None
        return self.price.cost(tasks=len(shots), shots=sum(shots))

    # -- phase 1: caller's thread ------------------------------------------------------------

    def translate(self, circuits: tuple[QuantumScript, ...]) -> _Payload:
        density = self.device.exact == "density_matrix"
        return _Payload(self.device_arn, tuple(braket_program(c, density) for c in circuits),
                        density)

    # -- phase 2: event loop (the SDK in threads) --------------------------------------------

    async def _sdk(self, conn: _Connection, function: Callable, *args: Any,
                   task_arn: str | None = None) -> Any:
        """Run a blocking SDK call in a thread; SDK errors become qfleet errors."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(_pool(conn.max_connections), function, *args)
        except ImportError as exc:
            raise _needs_braket_extra(exc) from exc
        except QFleetError:
            raise
        except Exception as exc:
            raise self._error(exc, conn, task_arn=task_arn) from exc

    def _bucket(self, conn: _Connection) -> str:
        return self.s3_bucket or _resources(conn).session.default_bucket()

    def _create(self, conn: _Connection, program: BraketProgram, bucket: str,
                token: str) -> str:
        from braket.aws import AwsQuantumTask
        from braket.ir.openqasm import Program

        device = self._device(conn)
        # What AwsDevice.run does (this device's session, maybe another region's), with our
        # clientToken: the task is the same however often this is sent.
        task = AwsQuantumTask.create(
            _ClientToken(device.aws_session, token), self.device_arn,
            Program(source=program.source), (bucket, self.s3_prefix), program.shots,
            quiet=True, **self.run_kwargs,
        )
        return task.id

    async def submit(self, payload: _Payload) -> tuple[_Job, tuple[str, ...]]:
        conn = self._connection()
        await self._sdk(conn, self._device, conn)  # unknown device / bad credentials: fail once
        bucket = await self._sdk(conn, self._bucket, conn)
        limit = asyncio.Semaphore(self.max_parallel)
        arns: list[str | None] = [None] * len(payload.programs)
        # Under an idempotency key (a cluster batch) the tokens derive from it, so a retry
        # names the tasks Braket already has; else fresh ones (distinct work).
        tokens = [backend_job_id(i) or str(uuid.uuid4()) for i in range(len(payload.programs))]

        async def create(i: int, program: BraketProgram) -> None:
            async with limit:
                arns[i] = await self._sdk(conn, self._create, conn, program, bucket, tokens[i])

        creating = asyncio.ensure_future(asyncio.gather(
            *(create(i, p) for i, p in enumerate(payload.programs)), return_exceptions=True))
        try:
            outcomes = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # The threads go on creating: cancel whatever they created once they are done.
            creating.add_done_callback(lambda _: self._cancel_later(
                _Job(payload, tuple(a for a in arns if a), conn)))
            raise
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            # All or nothing: cancel the tasks that were created. Under an idempotency key a
            # transient failure keeps them: the retry (the same tokens) takes them over.
            created = tuple(a for a in arns if a)
            keep = all(keeps_jobs_on(f) for f in failures)
            if created and not keep:
                await asyncio.shield(self.cancel(_Job(payload, created, conn)))
            raise failures[0]
        done = tuple(a for a in arns if a)
        return _Job(payload, done, conn), done

    def _cancel_later(self, job: _Job) -> None:
        keep(self.cancel(job))

    @property
    def reattachable(self) -> bool:
        return True  # Braket keeps the tasks: any process re-attaches by ARN

    def attach(self, payload: _Payload, job_ids: Sequence[str]) -> _Job:
        """The job for task ARNs from an earlier submission of the same tapes."""
        self.check_job_ids(job_ids, len(payload.programs), "Braket task ARNs")
        return _Job(payload, tuple(job_ids), self._connection())

    def _task(self, conn: _Connection, arn: str) -> Any:
        from braket.aws import AwsQuantumTask

        return AwsQuantumTask(arn, _resources(conn).session, quiet=True)

    @staticmethod
    def _state(task: Any) -> tuple[str, dict]:
        metadata = task.metadata(use_cached_value=False)  # one GetQuantumTask
        return metadata["status"], metadata

    def _download(self, conn: _Connection, metadata: dict) -> Any:
        from braket.aws import AwsQuantumTask
        from braket.tasks import GateModelQuantumTaskResult

        key = f"{metadata['outputS3Directory']}/{AwsQuantumTask.RESULTS_FILENAME}"
        body = _resources(conn).s3.get_object(Bucket=metadata["outputS3Bucket"], Key=key)
        return GateModelQuantumTaskResult.from_string(body["Body"].read().decode("utf-8"))

    async def _wait_one(self, job: _Job, index: int) -> Any:
        arn, conn = job.arns[index], job.conn
        task = await self._sdk(conn, self._task, conn, arn, task_arn=arn)
        delay = 0.05
        while True:
            status, metadata = await self._sdk(conn, self._state, task, task_arn=arn)
            if status == "COMPLETED":
                break
            if status in ("FAILED", "CANCELLED"):
                reason = metadata.get("failureReason") or "no failure reason given"
                what = "was cancelled" if status == "CANCELLED" else f"failed: {reason}"
                raise BraketTaskError(f"Braket task {arn} on {self.device.name} {what}",
                                      executor=self.label, task_arn=arn)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.poll_interval)
        result = await self._sdk(conn, self._download, conn, metadata, task_arn=arn)
        return raw_output(job.payload.programs[index], result, job.payload.density)

    async def collect(self, job: _Job) -> list[Any]:
        """One Samples or State per circuit."""
        return await gather_or_cancel(
            [self._wait_one(job, i) for i in range(len(job.arns))], lambda: self.cancel(job))

    def _cancel_one(self, conn: _Connection, arn: str) -> None:
        try:
            session = _resources(conn).session
            if session.get_quantum_task(arn)["status"] not in _TERMINAL:
                # AwsSession's call, not AwsQuantumTask.cancel(): that one wants an event
                # loop in the calling thread (for its own result future).
                session.cancel_quantum_task(arn)
        except Exception:  # already final, or the service is gone: nothing left to stop
            pass

    async def cancel(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        pool = _pool(job.conn.max_connections)
        await asyncio.gather(
            *(loop.run_in_executor(pool, self._cancel_one, job.conn, arn) for arn in job.arns))

    def run_metadata(self, payload: Any) -> dict[str, Any]:
        return {"cost": self.cost_estimate([p.shots for p in payload.programs])}

    # -- errors ------------------------------------------------------------------------------

    def _auth_hint(self, conn: _Connection) -> str:
        if conn.access_key_id:
            return (
                "Renew or correct the access key: BraketExecutor(aws_access_key_id=..., "
                "aws_secret_access_key=..., aws_session_token=...) or [executors.BraketExecutor] "
                "in the config file; temporary (session) credentials expire and must be fetched "
                "again (aws sts get-session-token, aws sso login)."
            )
        return (
            "Sign in for boto3's credential chain (aws configure, aws sso login, or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN), or give "
            "BraketExecutor(profile=...) or aws_access_key_id/aws_secret_access_key; the identity "
            "needs the AmazonBraketFullAccess policy (or braket:* and s3 access to the bucket)."
        )

    def _error(self, exc: BaseException, conn: _Connection,
               task_arn: str | None = None) -> ExecutorError:
        """An SDK exception as a qfleet error (auth, device, transient or not), secrets
        removed."""
        import botocore.exceptions as boto_errors

        secrets = conn.secrets()

        def clean(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, "**********")
            return " ".join(text.split())

        where = f"Braket task {task_arn}: " if task_arn else ""
        if isinstance(exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError
                      | boto_errors.NoRegionError):
            return BraketAuthenticationError(f"{where}{clean(str(exc))}. {self._auth_hint(conn)}",
                                             executor=self.label)
        if isinstance(exc, boto_errors.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = clean(f"{code}: {error.get('Message') or exc}")
            if code in _AUTH_CODES or status in (401, 403):
                forget_sessions()  # the next batch signs again (renewed credentials)
                return BraketAuthenticationError(
                    f"{where}AWS did not accept the credentials ({message}). "
                    f"{self._auth_hint(conn)}", executor=self.label)
            if code in ("DeviceOfflineException", "DeviceRetiredException",
                        "ResourceNotFoundException") and task_arn is None:
                return BraketDeviceError(f"device {self.device_arn}: {message}",
                                         executor=self.label,
                                         transient=code == "DeviceOfflineException")
            transient = code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500)
            if status == 429 or "Throttl" in code:
                message += (f" (still throttled after {conn.max_retries} retries; raise "
                            f"max_retries, or lower max_parallel or rate)")
            return ExecutorError(f"{where}{message}", executor=self.label, transient=transient)
        if isinstance(exc, ValueError) and "not found" in str(exc):
            # AwsDevice: "Simulator '<arn>' not found in '<region>'" / "QPU '<arn>' not found"
            return BraketDeviceError(f"{clean(str(exc))}; check device_arn and region",
                                     executor=self.label)
        transient = isinstance(exc, boto_errors.EndpointConnectionError
                               | boto_errors.ConnectionClosedError
                               | boto_errors.ReadTimeoutError
                               | boto_errors.ConnectTimeoutError
                               | ConnectionError | TimeoutError)
        return ExecutorError(f"{where}{type(exc).__name__}: {clean(str(exc))}",
                             executor=self.label, transient=transient)
