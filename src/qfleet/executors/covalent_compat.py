"""Covalent QElectron's executor names, as thin aliases of qfleet's executors.

Code written for Covalent's QElectron runs after ``import covalent as ct`` becomes
``import qfleet as ct``:

- ``Simulator`` -> :class:`~qfleet.executors.LocalExecutor`
- ``LocalBraketQubitExecutor(backend, shots, max_jobs, run_kwargs)`` ->
  :class:`~qfleet.executors.BraketLocalExecutor`
- ``BraketQubitExecutor(device_arn, poll_timeout_seconds, poll_interval_seconds,
  max_connections, max_retries, max_jobs, aws_session, parallel, max_parallel, run_kwargs,
  shots, s3_destination_folder)`` -> :class:`~qfleet.executors.BraketExecutor`
- ``IBMQExecutor``: importable; constructing it raises :class:`RemovedExecutorError` saying
  how to write it as :class:`~qfleet.executors.QiskitExecutor`.

Shots keep Covalent's meaning under these names only: ``shots=None`` means exact results
(``exact=True``), the default (Covalent's ``-1``) means the QNode's shots, an int or a shot
vector overrides them. qfleet's own executors read ``shots=None`` as "the QNode's".
``docs/migrating-from-covalent.md`` lists every name, field and behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn

from pennylane.tape import QuantumScript
from pydantic import Field, SecretStr, model_validator

from qfleet.errors import ConfigError
from qfleet.executors.braket import BraketLocalExecutor
from qfleet.executors.braket_cloud import BraketExecutor
from qfleet.executors.local import LocalExecutor

__all__ = [
    "REMOVED",
    "BraketQubitExecutor",
    "IBMQExecutor",
    "LocalBraketQubitExecutor",
    "RemovedExecutorError",
    "Simulator",
    "removed_name",
]

GUIDE = "docs/migrating-from-covalent.md"


class RemovedExecutorError(ConfigError):
    """A QElectron name qfleet does not carry on; the message says what to write instead."""


def _covalent_shots(data: Any) -> Any:
    """Covalent's shots in qfleet's terms: None -> exact, -1 -> the QNode's (qfleet's None)."""
    if not isinstance(data, dict) or "shots" not in data:
        return data
    data = dict(data)
    if data["shots"] is None:
        data["exact"] = True
    elif isinstance(data["shots"], int) and not isinstance(data["shots"], bool) \
            and data["shots"] == -1:
        data["shots"] = None
    return data


def _exact(tapes: Sequence[QuantumScript]) -> tuple[QuantumScript, ...]:
    return tuple(t.copy(shots=None) if t.shots else t for t in tapes)


class Simulator(LocalExecutor):
    """Covalent's ``Simulator``: a local PennyLane simulator (qfleet's LocalExecutor).

    ``shots=None`` gives exact results, as in Covalent; leave shots out for the QNode's.

    Example:
        >>> Simulator(device="default.qubit", parallel="thread", shots=None).exact
        True
    """

    exact: bool = False
    """Exact results whatever the QNode's shots (Covalent's ``shots=None``)."""
    persist_data: bool = True
    """Accepted for Covalent's code; qfleet keeps no per-circuit database (see
    ``circuit.last_metadata`` and the job store)."""

    @model_validator(mode="before")
    @classmethod
    def _shots(cls, data: Any) -> Any:
        return _covalent_shots(data)

    def with_shots(self, tapes: Sequence[QuantumScript]) -> tuple[QuantumScript, ...]:
        return _exact(tapes) if self.exact else super().with_shots(tapes)


class LocalBraketQubitExecutor(BraketLocalExecutor):
    """Covalent's ``LocalBraketQubitExecutor``: Amazon Braket's local simulator.

    ``backend``: ``"default"`` or ``"braket_sv"`` (state vector), ``"braket_dm"`` (density
    matrix). ``max_jobs``: most batches in flight (Covalent's thread count; qfleet runs a
    batch's circuits together). ``run_kwargs``: not taken (``LocalSimulator.run`` options
    have qfleet fields: ``shots``, ``noise_model``, ``seed``).

    Example:
        >>> LocalBraketQubitExecutor(backend="default", shots=1000, max_jobs=4).device
        'braket_sv'
    """

    backend: str = "default"
    max_jobs: int | None = Field(default=None, gt=0)
    run_kwargs: dict[str, Any] = Field(default_factory=dict)
    exact: bool = False
    """Exact results whatever the QNode's shots (Covalent's ``shots=None``)."""
    persist_data: bool = True
    """Accepted for Covalent's code; qfleet keeps no per-circuit database (see
    ``circuit.last_metadata`` and the job store)."""

    _BACKENDS: ClassVar[dict[str, str]] = {
        "default": "braket_sv", "braket_sv": "braket_sv", "braket_dm": "braket_dm",
    }

    @model_validator(mode="before")
    @classmethod
    def _covalent_fields(cls, data: Any) -> Any:
        data = _covalent_shots(data)
        if not isinstance(data, dict):
            return data
        data = dict(data)
        backend = data.get("backend", "default")
        if backend not in cls._BACKENDS:
            raise ValueError(
                f"backend {backend!r} is not a Braket local simulator; use 'default' (or "
                f"'braket_sv') or 'braket_dm'"
            )
        data.setdefault("device", cls._BACKENDS[backend])
        if data.get("max_jobs") is not None:
            data.setdefault("max_concurrent", data["max_jobs"])
        if data.get("run_kwargs"):
            raise ValueError(
                f"run_kwargs {sorted(data['run_kwargs'])} are not passed on: set shots on the "
                f"QNode or the executor, and noise_model=/seed= on the executor (see {GUIDE})"
            )
        return data

    def with_shots(self, tapes: Sequence[QuantumScript]) -> tuple[QuantumScript, ...]:
        return _exact(tapes) if self.exact else super().with_shots(tapes)


class BraketQubitExecutor(BraketExecutor):
    """Covalent's ``BraketQubitExecutor``: a device of Amazon Braket's cloud by ARN.

    Covalent's fields map onto :class:`~qfleet.executors.BraketExecutor`:
    ``poll_timeout_seconds`` -> ``timeout``, ``poll_interval_seconds`` -> ``poll_interval``,
    ``max_jobs`` -> ``max_parallel`` (unless ``max_parallel`` is given), ``aws_session`` (an
    ``AwsSession``) -> its region, profile, Braket endpoint and credentials (secrets as
    SecretStr, so the executor pickles without them), ``s3_destination_folder`` ->
    ``s3_bucket``/``s3_prefix``. ``parallel`` is accepted: qfleet always creates a batch's
    tasks concurrently. ``max_connections``, ``max_retries``, ``run_kwargs`` keep their names.

    Example:
        >>> ex = BraketQubitExecutor(
        ...     device_arn="arn:aws:braket:::device/quantum-simulator/amazon/sv1",
        ...     poll_timeout_seconds=600, poll_interval_seconds=2, max_jobs=8, shots=None)
        >>> ex.timeout, ex.poll_interval, ex.max_parallel, ex.exact
        (600.0, 2.0, 8, True)
    """

    poll_timeout_seconds: float | None = Field(default=None, gt=0)
    poll_interval_seconds: float | None = Field(default=None, gt=0)
    max_jobs: int | None = Field(default=None, gt=0)
    parallel: bool = True
    s3_destination_folder: tuple[str, str] | None = None
    exact: bool = False
    """Exact results whatever the QNode's shots (Covalent's ``shots=None``)."""
    persist_data: bool = True
    """Accepted for Covalent's code; qfleet keeps no per-circuit database (see
    ``circuit.last_metadata`` and the job store)."""

    @model_validator(mode="before")
    @classmethod
    def _covalent_fields(cls, data: Any) -> Any:
        data = _covalent_shots(data)
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("poll_timeout_seconds") is not None:
            data.setdefault("timeout", data["poll_timeout_seconds"])
        if data.get("poll_interval_seconds") is not None:
            data.setdefault("poll_interval", data["poll_interval_seconds"])
        if data.get("max_parallel") is None:
            data.pop("max_parallel", None)  # Covalent's None: the default
            if data.get("max_jobs") is not None:
                data["max_parallel"] = data["max_jobs"]
        folder = data.get("s3_destination_folder")
        if folder:
            data.setdefault("s3_bucket", folder[0])
            data.setdefault("s3_prefix", folder[1])
        session = data.pop("aws_session", None)
        if session is not None:
            data = {**_session_fields(session), **data}
        return data

    def with_shots(self, tapes: Sequence[QuantumScript]) -> tuple[QuantumScript, ...]:
        return _exact(tapes) if self.exact else super().with_shots(tapes)


def _session_fields(session: Any) -> dict[str, Any]:
    """An ``AwsSession`` (or boto3 session) taken apart into BraketExecutor fields."""
    boto = getattr(session, "boto_session", session)
    if not hasattr(boto, "get_credentials"):
        raise ValueError(
            f"aws_session must be a braket.aws.AwsSession or a boto3.Session, got "
            f"{type(session).__name__}"
        )
    fields: dict[str, Any] = {"region": boto.region_name}
    if boto.profile_name and boto.profile_name != "default":
        fields["profile"] = boto.profile_name
    client = getattr(session, "braket_client", None)
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
    if endpoint and not endpoint.endswith(".amazonaws.com"):
        fields["endpoint_url"] = endpoint
    credentials = boto.get_credentials()
    if credentials is not None and credentials.method == "explicit":
        frozen = credentials.get_frozen_credentials()
        fields["aws_access_key_id"] = frozen.access_key
        fields["aws_secret_access_key"] = SecretStr(frozen.secret_key)
        if frozen.token:
            fields["aws_session_token"] = SecretStr(frozen.token)
    return fields


# -- removed names ----------------------------------------------------------------------------

_IBMQ_MESSAGE = (
    "IBMQExecutor ran on the retired IBM Quantum platform (qiskit-ibmq-provider: ibmqx_token, "
    "hub/group/project), which IBM has shut down. qfleet runs IBM backends on Qiskit Runtime "
    "with QiskitExecutor: write ct.executor.QiskitExecutor(device='sampler', "
    "backend='<backend, e.g. ibm_brisbane>', token='<IBM Cloud API key>', "
    "instance='<instance CRN>', shots=1024) instead of ct.executor.IBMQExecutor(backend=..., "
    "ibmqx_token=..., hub=..., group=..., project=..., shots=1024); without an account, "
    f"QiskitExecutor(device='local_sampler') runs locally. See {GUIDE}."
)


class IBMQExecutor:
    """Covalent's IBMQExecutor: the name imports, constructing it says what replaced it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RemovedExecutorError(_IBMQ_MESSAGE)


_CUSTOM = (
    "qfleet's executors derive from qf.executor.QuantumExecutor: implement capabilities, "
    "translate, submit, collect (and cancel, attach) as in qfleet/executors/base.py, and "
    f"register the class in pyproject's 'qfleet.executors' entry points. See {GUIDE}."
)

#: QElectron names qfleet does not carry on, and what to write instead.
REMOVED: dict[str, str] = {
    "BaseQExecutor": f"BaseQExecutor (Covalent's executor base class) is gone. {_CUSTOM}",
    "BaseThreadPoolQExecutor": f"BaseThreadPoolQExecutor is gone. {_CUSTOM}",
    "BaseProcessPoolQExecutor": f"BaseProcessPoolQExecutor is gone. {_CUSTOM}",
    "AsyncBaseQExecutor": f"AsyncBaseQExecutor is gone. {_CUSTOM}",
    "SyncBaseQExecutor": f"SyncBaseQExecutor is gone. {_CUSTOM}",
    "BaseQCluster": (
        "BaseQCluster is gone: qfleet's cluster is qf.executor.QCluster (QuantumCluster); a "
        "custom routing policy is its selector=f(tapes, executors) -> executor. See "
        f"{GUIDE}."
    ),
    "AsyncBaseQCluster": (
        "AsyncBaseQCluster is gone: qfleet's cluster is qf.executor.QCluster (QuantumCluster), "
        f"asynchronous already (run_later, batch_submit). See {GUIDE}."
    ),
}


def removed_name(name: str) -> NoReturn:
    """Raise the guiding AttributeError for ``name`` of the ``executor`` namespace."""
    if name in REMOVED:
        raise AttributeError(f"qfleet.executor has no {name}: {REMOVED[name]}")
    raise AttributeError(f"module 'qfleet.executor' has no attribute {name!r}")
