"""AzureExecutor: Azure Quantum targets through the azure-quantum SDK (3.13).

Tapes go to Azure Quantum as text circuits, one Azure job per circuit of the batch's
sampling plan (:class:`qfleet.sampling.SamplingPlan`: broadcasting expanded, mid-circuit
measurements deferred, observables diagonalized, gates decomposed into the target's):

- Quantinuum targets (``quantinuum.*``): OpenQASM 2 (``honeywell.openqasm.v1``); results are
  per-shot bitstrings per classical register (register bit 0 rightmost), handed to the plan
  as :class:`~qfleet.sampling.Samples`, so shot vectors and ``qml.sample`` come back exactly
  as sampled.
- IonQ targets (``ionq.*``): IonQ's JSON circuit (``ionq.circuit.v1``, :mod:`qfleet.circuits.ionq`);
  results are a histogram of probabilities. The simulator's exact probabilities are sampled to
  ``shots`` counts (as hardware would, and as the SDK's own qiskit backend does); hardware
  histograms (counts / shots) are turned back into the counts (:class:`~qfleet.sampling.Counts`).

Azure Quantum only samples: tapes without shots run with ``DEFAULT_SHOTS`` (the plan warns
once). Everything the SDK does is blocking I/O; it runs on daemon threads
(:func:`~qfleet.runtime.daemon.in_daemon_thread`, so a pending job never keeps a finished
script alive):
submission (storage SAS URI, input blob upload, job creation), polling, result download,
cancellation.

Authentication (the first that is set): ``credentials`` (a service principal), a workspace
``connection_string`` (API key), else azure-identity's standard credential chain
(``DefaultAzureCredential``: environment variables, managed identity, an ``az login``
session, ...) with ``resource_id``. The SDK's workspace (token cache, HTTP connections) is kept
per process and per account; secrets never appear in ``repr``, logs, errors or pickles.

azure-quantum is imported only when a batch runs (extra ``qfleet[azure]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pennylane.tape import QuantumScript
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from qfleet.circuits.ionq import IONQ_GATES
from qfleet.circuits.qasm import QASM2_GATES
from qfleet.config.secrets import scrub
from qfleet.errors import ConfigError, ExecutorError, QFleetError
from qfleet.executors.base import (
    SAMPLING_MEASUREMENTS,
    Capabilities,
    QuantumExecutor,
)
from qfleet.executors.faults import rejected_status, unreachable
from qfleet.executors.idempotency import backend_job_id, gather_or_cancel, keeps_jobs_on
from qfleet.executors.status import ExecutorStatus
from qfleet.runtime.background import keep, per_loop
from qfleet.runtime.daemon import in_daemon_thread
from qfleet.sampling import Counts, RawOutput, Samples

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "AzureAuthenticationError",
    "AzureCredential",
    "AzureExecutor",
    "AzureJobError",
    "AzureTargetError",
]

_RESOURCE_ID = re.compile(
    r"^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"/resourceGroups/[^\s/]+/providers/Microsoft\.Quantum/Workspaces/[^\s/]+$",
    re.IGNORECASE,
)
_API_KEY = re.compile(r"ApiKey=([^;]+)", re.IGNORECASE)
_KNOWN_AUTHORITIES = {"login.microsoftonline.com", "login.chinacloudapi.cn",
                      "login.microsoftonline.us"}
_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}
#: Shots for tapes without any (Azure Quantum's own default for IonQ and Quantinuum targets).
DEFAULT_SHOTS = 500
#: Seconds a workspace's target list (``providerStatus``) is reused before it is asked again.
TARGET_STATUS_TTL = 60.0


# -- targets --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TargetFormat:
    """How qfleet talks to one provider's targets."""

    provider: str
    input_format: str
    output_format: str
    circuit: str
    """What qfleet sends: "openqasm2" or "ionq"."""
    sdk_class: str
    """The SDK's target class (``azure.quantum.target``)."""


FORMATS = {
    "quantinuum": TargetFormat("quantinuum", "honeywell.openqasm.v1",
                               "honeywell.quantum-results.v1", "openqasm2", "Quantinuum"),
    "ionq": TargetFormat("ionq", "ionq.circuit.v1", "ionq.quantum-results.v1", "ionq", "IonQ"),
}

#: Qubits of the targets Azure Quantum lists (for routing; unknown targets: no limit here).
TARGET_QUBITS = {
    "ionq.simulator": 29,
    "ionq.qpu.aria-1": 25,
    "ionq.qpu.forte-1": 36,
    "ionq.qpu.forte-enterprise-1": 36,
    "quantinuum.qpu.h2-1": 56, "quantinuum.sim.h2-1sc": 56, "quantinuum.sim.h2-1e": 56,
    "quantinuum.qpu.h2-2": 56, "quantinuum.sim.h2-2sc": 56, "quantinuum.sim.h2-2e": 56,
    "quantinuum.qpu.helios-1": 98, "quantinuum.sim.helios-1sc": 98,
    "quantinuum.sim.helios-1e": 98,
}


def target_format(target: str) -> TargetFormat | None:
    """The text-circuit format of ``target`` ("quantinuum.sim.h2-1e"), or None when qfleet has
    none for it (targets that take only QIR, or Pasqal/Rigetti formats)."""
    return FORMATS.get(target.split(".", 1)[0].lower())


# -- errors ---------------------------------------------------------------------------------


class AzureAuthenticationError(ExecutorError):
    """Microsoft Entra ID or the workspace rejected the credentials (or lacks a role)."""


class AzureTargetError(ExecutorError):
    """The target is not in the workspace, not available, or takes no format qfleet sends.
    ``usable`` lists the workspace's targets this executor can run on now."""

    def __init__(self, message: str, *, executor: str | None = None, transient: bool = False,
                 usable: Sequence[str] = ()):
        super().__init__(message, executor=executor, transient=transient)
        self.usable = tuple(usable)


class AzureJobError(ExecutorError):
    """An Azure Quantum job failed or was cancelled; the message carries the service's error."""

    def __init__(self, message: str, *, executor: str | None = None, transient: bool = False,
                 job_id: str | None = None, code: str | None = None):
        super().__init__(message, executor=executor, transient=transient)
        self.job_id = job_id
        self.code = code


def _needs_azure_extra(exc: ImportError) -> ConfigError:
    return ConfigError(
        f"AzureExecutor needs the 'azure' extra (azure-quantum): pip install 'qfleet[azure]' "
        f"({exc})"
    )


# -- configuration --------------------------------------------------------------------------


class AzureCredential(BaseModel):
    """A Microsoft Entra ID service principal with access to one Azure Quantum workspace.

    ``client_secret`` None: taken from the config file's ``[executors.AzureExecutor.credentials]``,
    else the ``AZURE_CLIENT_SECRET`` environment variable (azure-identity's own).

    Example:
        >>> workspace = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/"
        ...              "my-group/providers/Microsoft.Quantum/Workspaces/my-workspace")
        >>> AzureCredential(tenant_id="...", client_id="...", client_secret="...",
        ...                 resource_id=workspace)
        AzureCredential(tenant_id='...', client_id='...', ...)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: str = Field(min_length=1)
    """Microsoft Entra ID (Azure Active Directory) tenant ID."""
    client_id: str = Field(min_length=1)
    """Application (client) ID of the registered application."""
    client_secret: SecretStr | None = None
    """Client secret of the registered application."""
    resource_id: str
    """The workspace's resource ID (Azure portal: workspace > Overview)."""

    @field_validator("resource_id")
    @classmethod
    def _resource_id(cls, value: str) -> str:
        return _check_resource_id(value)


def _check_resource_id(value: str) -> str:
    value = value.strip()
    if not _RESOURCE_ID.match(value):
        raise ValueError(
            f"resource_id {value!r} is not an Azure Quantum workspace resource ID; it looks like "
            f"/subscriptions/<subscription GUID>/resourceGroups/<group>/providers/"
            f"Microsoft.Quantum/Workspaces/<name> (Azure portal: the workspace's Overview page)"
        )
    return value


@dataclasses.dataclass(frozen=True)
class _Connection:
    """What identifies one SDK workspace in this process. Secrets never show in repr."""

    kind: str  # "service_principal" | "connection_string" | "default"
    resource_id: str | None
    location: str | None
    tenant_id: str | None
    client_id: str | None
    secret: str | None = dataclasses.field(repr=False)
    arm_endpoint: str | None
    authority: str | None
    quantum_endpoint: str | None

    def secrets(self) -> list[str]:
        found = [self.secret] if self.secret else []
        if self.kind == "connection_string" and self.secret:
            found += _API_KEY.findall(self.secret)
        return found


def _identity_kwargs(authority: str | None) -> dict[str, Any]:
    if not authority:
        return {}
    host = re.sub(r"^https://", "", authority).split("/")[0].lower()
    # Microsoft's instance discovery knows only Microsoft's hosts: skip it for others.
    return {"authority": authority, "disable_instance_discovery": host not in _KNOWN_AUTHORITIES}


def _make_workspace(conn: _Connection):
    """A new SDK ``Workspace`` for ``conn`` (blocking: gets a token, asks ARM for the
    workspace's endpoint unless known)."""
    from azure.quantum import Workspace

    common: dict[str, Any] = {"user_agent_app_id": "qfleet"}
    if conn.arm_endpoint:
        common["arm_endpoint"] = conn.arm_endpoint
    if conn.quantum_endpoint:
        common["_quantum_endpoint"] = conn.quantum_endpoint
    if conn.kind == "connection_string":
        if not conn.quantum_endpoint:
            return Workspace.from_connection_string(conn.secret, **common)
        # The connection string names Azure's endpoint; talk to another one with its key.
        from azure.core.credentials import AzureKeyCredential
        from azure.quantum._workspace_connection_params import WorkspaceConnectionParams

        params = WorkspaceConnectionParams(connection_string=conn.secret)
        return Workspace(
            subscription_id=params.subscription_id, resource_group=params.resource_group,
            name=params.workspace_name, location=params.location,
            credential=AzureKeyCredential(params.api_key), _from_connection_string=True,
            **common,
        )
    credential: TokenCredential
    if conn.kind == "service_principal":
        from azure.identity import ClientSecretCredential

        # AzureExecutor._connection sets all three for a service principal.
        assert conn.tenant_id and conn.client_id and conn.secret
        credential = ClientSecretCredential(conn.tenant_id, conn.client_id, conn.secret,
                                            **_identity_kwargs(conn.authority))
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(**_identity_kwargs(conn.authority))
    return Workspace(resource_id=conn.resource_id, location=conn.location,
                     credential=credential, **common)


class _Registry:
    """This process's SDK workspaces and target lists, per connection."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.workspaces: dict[_Connection, Any] = {}
        self.targets: dict[_Connection, tuple[float, list]] = {}

    def workspace(self, conn: _Connection):
        with self.lock:
            ws = self.workspaces.get(conn)
            if ws is None:
                ws = _make_workspace(conn)
                self.workspaces[conn] = ws
            return ws

    def target_list(self, conn: _Connection, refresh: bool = False) -> tuple[list, float]:
        """The workspace's targets, [(provider id, TargetStatus)] from ``providerStatus``, and
        their age in seconds.

        Not ``Workspace.get_targets()``: it goes through the SDK's TargetFactory, a
        process-wide singleton holding the last workspace it was made for, which another
        thread's ``get_job`` on another workspace can swap mid-call.
        """
        with self.lock:
            cached = self.targets.get(conn)
            now = time.monotonic()
            if refresh or cached is None or now - cached[0] > TARGET_STATUS_TTL:
                targets = list(self.workspace(conn)._get_target_status())
                cached = (now, targets)
                self.targets[conn] = cached
            return cached[1], now - cached[0]

    def forget(self, conn: _Connection, close: bool = False) -> None:
        """Drop ``conn``'s workspace (the next use signs in again). ``close``: also close its
        HTTP connections (not while other batches may still be using it)."""
        with self.lock:
            ws = self.workspaces.pop(conn, None)
            self.targets.pop(conn, None)
        if ws is not None and close:
            with contextlib.suppress(Exception):  # already broken; nothing left to release
                ws.close()


_registry: _Registry | None = None
_registry_lock = threading.Lock()


def _reg() -> _Registry:
    global _registry
    with _registry_lock:
        if _registry is None or _registry.pid != os.getpid():
            _registry = _Registry()
        return _registry


def forget_workspaces() -> None:
    """Drop this process's SDK workspaces (the next batch authenticates again)."""
    global _registry
    with _registry_lock:
        old, _registry = _registry, None
    if old is not None and old.pid == os.getpid():
        for conn in list(old.workspaces):
            old.forget(conn, close=True)


# -- payloads -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Circuit:
    data: Any  # OpenQASM 2 text or IonQ JSON (dict); None when the target has no format
    shots: int
    num_wires: int


@dataclasses.dataclass(frozen=True)
class _Payload:
    target: str
    format: TargetFormat | None
    circuits: tuple[_Circuit, ...]


@dataclasses.dataclass
class _Job:
    payload: _Payload
    ids: tuple[str, ...]
    conn: _Connection
    sdk_jobs: dict[str, Any] = dataclasses.field(default_factory=dict)




class AzureExecutor(QuantumExecutor):
    """Runs tapes on an Azure Quantum target (Quantinuum or IonQ) with the azure-quantum SDK.

    Example (``workspace``: the workspace's resource ID; running needs access to it):
        >>> workspace = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/"
        ...              "my-group/providers/Microsoft.Quantum/Workspaces/my-workspace")
        >>> ex = AzureExecutor(
        ...     backend_name="quantinuum.sim.h2-1e",
        ...     credentials=AzureCredential(tenant_id="...", client_id="...",
        ...                                 client_secret="...", resource_id=workspace),
        ...     location="eastus", shots=1000)
        >>> ex = AzureExecutor(backend_name="ionq.simulator", resource_id=workspace)  # az login
        >>> @qelectron(executors=ex)
        ... @qml.qnode(qml.device("default.qubit", wires=2), shots=1000)
        ... def circuit(x):
        ...     qml.RX(x, wires=0)
        ...     return qml.probs(wires=0)
        >>> circuit(0.5)  # doctest: +SKIP
        array([0.94, 0.06])
    """

    backend_name: str = Field(min_length=1)
    """Azure Quantum target id, e.g. "quantinuum.sim.h2-1e", "ionq.simulator"."""
    credentials: AzureCredential | None = None
    """A service principal; None: ``connection_string``, else the Azure credential chain."""
    connection_string: SecretStr | None = None
    """A workspace connection string (Azure portal: workspace > Operations > Access keys);
    None: ``credentials``, else the ``AZURE_QUANTUM_CONNECTION_STRING`` variable the SDK reads."""
    resource_id: str | None = None
    """The workspace's resource ID when ``credentials`` is None (the credential chain)."""
    location: str | None = None
    """The workspace's Azure region, e.g. "eastus" (None: asked from Azure Resource Manager)."""
    job_name: str = "qfleet"
    """Name of the Azure jobs (shown in the portal and ``workspace.list_jobs()``)."""
    input_params: dict[str, Any] = Field(default_factory=dict)
    """Extra target input parameters, e.g. IonQ's ``{"noise": {"model": "aria-1"}}``."""
    seed: int | None = None
    """Seeds the sampling of IonQ simulator histograms into counts (reproducible runs)."""
    poll_interval: float = Field(default=1.0, gt=0)
    """Longest pause between job status checks, in seconds."""
    parallel_requests: int = Field(default=8, ge=1)
    """Most SDK calls (submissions, polls) in flight at once for this executor."""
    arm_endpoint: str | None = None
    """Azure Resource Manager endpoint (default: the SDK's, management.azure.com)."""
    authority: str | None = None
    """Microsoft Entra ID authority host (default: azure-identity's, or AZURE_AUTHORITY_HOST)."""
    quantum_endpoint: str | None = None
    """Data-plane endpoint of the workspace (default: from the connection string or ARM)."""

    backend_kind = "azure"
    resubmits_idempotently = True  # job ids derive from the batch's key (see submit)

    # -- validation ------------------------------------------------------------------------

    @field_validator("resource_id")
    @classmethod
    def _resource_id(cls, value: str | None) -> str | None:
        return None if value is None else _check_resource_id(value)

    @field_validator("location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        # Azure accepts "East US" and "eastus"; the SDK wants the latter.
        return None if value is None else value.replace(" ", "").lower()

    @field_validator("input_params")
    @classmethod
    def _input_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "shots" in value or "count" in value:
            raise ValueError(
                "set shots on the QNode (qml.set_shots) or AzureExecutor(shots=...), not in "
                "input_params"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AzureExecutor:
        if self.credentials is not None and self.connection_string is not None:
            raise ValueError(
                "give credentials=AzureCredential(...) or connection_string=..., not both"
            )
        if (self.credentials is not None and self.resource_id is not None
                and self.resource_id.lower() != self.credentials.resource_id.lower()):
            raise ValueError(
                "resource_id differs from credentials.resource_id; give the workspace once"
            )
        return self

    # -- properties ------------------------------------------------------------------------

    @property
    def backend_description(self) -> str:
        return self.backend_name

    @property
    def capabilities(self) -> Capabilities:
        fmt = target_format(self.backend_name)
        return Capabilities(
            analytic=False,
            max_wires=TARGET_QUBITS.get(self.backend_name),
            measurements=SAMPLING_MEASUREMENTS,
            native_gates=IONQ_GATES if fmt is not None and fmt.circuit == "ionq" else QASM2_GATES,
            mid_circuit_measurements=False,
            default_shots=DEFAULT_SHOTS,
        )

    def _client_secret(self) -> str | None:
        return (
            self.secret("credentials", "client_secret")
            or os.environ.get("AZURE_CLIENT_SECRET")
            or None
        )

    def _connection_string(self) -> str | None:
        if self.connection_string is None and self.credentials is not None:
            return None  # a service principal was given: no connection string from config
        return self.secret("connection_string")

    def _connection(self) -> _Connection:
        common = {"arm_endpoint": self.arm_endpoint, "authority": self.authority,
                  "quantum_endpoint": self.quantum_endpoint, "location": self.location}
        if self.credentials is not None:
            secret = self._client_secret()
            if not secret:
                raise ConfigError(
                    f"{self.label}: credentials has no client_secret; give "
                    f"AzureCredential(client_secret=...), set client_secret in the config "
                    f"file's [executors.AzureExecutor.credentials], or AZURE_CLIENT_SECRET"
                )
            return _Connection("service_principal", self.credentials.resource_id,
                               tenant_id=self.credentials.tenant_id,
                               client_id=self.credentials.client_id, secret=secret, **common)
        connection_string = self._connection_string() or (
            None if self.resource_id else os.environ.get("AZURE_QUANTUM_CONNECTION_STRING")
        )
        if connection_string:
            return _Connection("connection_string", None, tenant_id=None, client_id=None,
                               secret=connection_string, **common)
        if self.resource_id is None:
            raise ConfigError(
                f"{self.label} does not know the Azure Quantum workspace: give "
                f"credentials=AzureCredential(tenant_id, client_id, client_secret, resource_id), "
                f"connection_string=... (workspace > Operations > Access keys), or resource_id="
                f"'/subscriptions/.../Workspaces/<name>' to sign in with the Azure credential "
                f"chain (az login, AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, managed "
                f"identity); or set them in [executors.AzureExecutor] of the config file"
            )
        return _Connection("default", self.resource_id, tenant_id=None, client_id=None,
                           secret=None, **common)

    def workspace(self):
        """The azure-quantum ``Workspace`` this executor uses (blocking: signs in on first use).

        Handy for what qfleet does not wrap: ``workspace().list_jobs()``, quotas, ...
        """
        conn = self._connection()
        try:
            return _reg().workspace(conn)
        except ImportError as exc:
            raise _needs_azure_extra(exc) from exc
        except QFleetError:
            raise
        except Exception as exc:
            raise self._error(exc, conn) from exc

    # -- phase 1: caller's thread ------------------------------------------------------------

    def translate(self, circuits: tuple[QuantumScript, ...]) -> _Payload:
        """The plan's circuits (native gates, measuring all their wires) as Azure input."""
        from qfleet.circuits import to_openqasm2
        from qfleet.circuits.ionq import to_ionq_circuit

        fmt = target_format(self.backend_name)
        out: list[_Circuit] = []
        for circuit in circuits:
            data: str | dict[str, Any] | None
            if fmt is None:
                data = None  # _start names the targets this executor can use
            elif fmt.circuit == "openqasm2":
                data = to_openqasm2(circuit)
            else:
                data = to_ionq_circuit(circuit)
            out.append(_Circuit(data, circuit.shots.total_shots, len(circuit.wires)))
        return _Payload(self.backend_name, fmt, tuple(out))

    def decode(self, circuits: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[RawOutput]:
        """Quantinuum shot strings -> Samples; IonQ histograms -> Counts."""
        from qfleet.circuits.ionq import counts_from_probabilities, histogram_bitstrings

        rng = np.random.default_rng(self.seed)
        exact = ".simulator" in self.backend_name.lower()
        outputs: list[RawOutput] = []
        for circuit, data in zip(circuits, raw, strict=True):
            n = len(circuit.wires)
            shots = circuit.shots.total_shots
            if isinstance(data, list):  # Quantinuum: one string per shot, c[0] rightmost
                if len(data) != shots or any(len(s) != n for s in data):
                    raise ExecutorError(
                        f"{self.backend_name} returned {len(data)} shots of "
                        f"{len(data[0]) if data else 0} bits for {shots} shots of {n} bits",
                        executor=self.label,
                    )
                samples = np.array([[int(b) for b in reversed(s)] for s in data],
                                   dtype=np.int64).reshape(shots, n)
                outputs.append(Samples(samples))
            else:  # IonQ: probabilities keyed by basis-state index
                probabilities = histogram_bitstrings(data, n)
                outputs.append(Counts(counts_from_probabilities(probabilities, shots,
                                                                sample=exact, rng=rng)))
        return outputs

    # -- phase 2: event loop (the SDK in threads) --------------------------------------------

    def _io_limit(self) -> asyncio.Semaphore:
        return per_loop(self._runtime, "azure-io",
                        lambda: asyncio.Semaphore(self.parallel_requests))

    async def _sdk(self, conn: _Connection, function: Callable, *args: Any,
                   job_id: str | None = None) -> Any:
        """Run a blocking SDK call on a daemon thread; SDK errors become qfleet errors."""
        async with self._io_limit():
            try:
                return await in_daemon_thread(function, *args)
            except ImportError as exc:
                raise _needs_azure_extra(exc) from exc
            except QFleetError:
                raise
            except Exception as exc:
                raise self._error(exc, conn, job_id=job_id) from exc

    def _target(self, conn: _Connection) -> Any:
        """The SDK target for ``backend_name`` after checking it in ``providerStatus``
        (blocking)."""
        reg = _reg()
        name = self.backend_name
        refreshed = False
        while True:
            targets, age = reg.target_list(conn, refresh=refreshed)
            by_name = {status.id.lower(): (provider, status) for provider, status in targets}
            usable = sorted(
                status.id for _, status in targets
                if target_format(status.id) is not None and _availability(status) != "unavailable"
            )
            found = by_name.get(name.lower())
            target = None if found is None else found[1]
            fmt = target_format(name)
            problem = None
            if target is None:
                problem = f"target {name!r} is not in workspace {_workspace_name(conn)!r}"
            elif fmt is None:
                problem = (
                    f"target {name!r} takes only formats qfleet does not send (QIR or "
                    f"provider-specific); AzureExecutor sends OpenQASM 2 to Quantinuum and "
                    f"IonQ JSON circuits to IonQ targets"
                )
            elif _availability(target) == "unavailable":
                problem = f"target {name!r} is unavailable now (providerStatus)"
            if problem is None:
                import azure.quantum.target as sdk_targets

                assert found is not None and fmt is not None  # else problem is set
                cls = getattr(sdk_targets, fmt.sdk_class)
                return cls.from_target_status(reg.workspace(conn), found[0], target)
            if age > 0 and not refreshed:
                refreshed = True  # the cached list may be stale: ask once more
                continue
            listed = ", ".join(usable) if usable else "none"
            raise AzureTargetError(
                f"{problem}; usable targets in this workspace: {listed}",
                executor=self.label,
                transient=target is not None and target_format(name) is not None,
                usable=usable,
            )

    def _submit_one(self, target: Any, circuit: _Circuit, job_id: str, index: int,
                    total: int) -> Any:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        def submit(**blob: str) -> Any:
            return target.submit(
                circuit.data,
                name=self.job_name,
                shots=circuit.shots,
                input_params=dict(self.input_params),
                job_id=job_id,
                tags=["qfleet"],
                metadata={"qfleet": "1", "circuit": f"{index + 1}/{total}",
                          "num_qubits": str(circuit.num_wires)},
                **blob,
            )

        try:
            return submit()
        except ResourceExistsError:
            # The id was used before: an idempotent resubmission (the job ids derive from the
            # batch's key), or the SDK's own retry of a PUT whose reply was lost. The job
            # the service has is this one: take it, never a second copy.
            try:
                return target.workspace.get_job(job_id)
            except ResourceNotFoundError:  # only its input blob was stored: store it anew
                return submit(blob_name=f"inputData-{uuid.uuid4().hex[:8]}")

    async def submit(self, payload: _Payload) -> tuple[_Job, tuple[str, ...]]:
        conn = self._connection()
        # Under an idempotency key (a cluster batch) the ids derive from it, so a retry names
        # the jobs Azure already has; else the SDK's own id scheme.
        ids = tuple(backend_job_id(i) or str(uuid.uuid1()) for i in range(len(payload.circuits)))
        job = _Job(payload, ids, conn)
        submitting = asyncio.ensure_future(self._submit_all(job))
        try:
            await asyncio.shield(submitting)
        except asyncio.CancelledError:
            # The threads go on submitting: cancel whatever they created once they are done.
            submitting.add_done_callback(lambda _: self._cancel_later(job))
            raise
        return job, ids

    async def _submit_all(self, job: _Job) -> None:
        conn = job.conn
        target = await self._sdk(conn, self._target, conn)
        circuits = job.payload.circuits
        results = await asyncio.gather(
            *(self._sdk(conn, self._submit_one, target, c, job_id, i, len(circuits),
                        job_id=job_id)
              for i, (c, job_id) in enumerate(zip(circuits, job.ids, strict=True))),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for job_id, result in zip(job.ids, results, strict=True):
            if not isinstance(result, BaseException):
                job.sdk_jobs[job_id] = result
        if failures:
            # All or nothing: cancel what was (or may have been) created. A rejected sign-in
            # created nothing, and signing in again to cancel would only fail again. Under an
            # idempotency key a transient failure keeps them: the retry takes them over.
            maybe = tuple(job_id for job_id, result in zip(job.ids, results, strict=True)
                          if not isinstance(result, AzureAuthenticationError))
            keep = all(keeps_jobs_on(f) for f in failures)
            if maybe and not keep:
                await asyncio.shield(self.cancel(dataclasses.replace(job, ids=maybe)))
            raise failures[0]

    def _cancel_later(self, job: _Job) -> None:
        keep(self.cancel(job))

    @property
    def reattachable(self) -> bool:
        return True  # Azure keeps the jobs: any process re-attaches by id

    def attach(self, payload: _Payload, job_ids: Sequence[str]) -> _Job:
        """The job for Azure job ids from an earlier submission of the same tapes."""
        self.check_job_ids(job_ids, len(payload.circuits), "Azure job ids")
        return _Job(payload, tuple(job_ids), self._connection())

    def _sdk_job(self, job: _Job, job_id: str) -> Any:
        """The SDK job with fresh details (blocking: one GET jobs/{id})."""
        sdk_job = job.sdk_jobs.get(job_id)
        if sdk_job is None:
            sdk_job = _reg().workspace(job.conn).get_job(job_id)
            job.sdk_jobs[job_id] = sdk_job
        else:
            sdk_job.refresh()
        return sdk_job

    @staticmethod
    def _download(sdk_job: Any) -> Any:
        return json.loads(sdk_job.download_data(sdk_job.details.output_data_uri))

    async def _wait_one(self, job: _Job, index: int) -> Any:
        job_id = job.ids[index]
        conn = job.conn
        delay = 0.05
        while True:
            sdk_job = await self._sdk(conn, self._sdk_job, job, job_id, job_id=job_id)
            status = _status(sdk_job)
            if status in ("Succeeded", "Completed"):
                break
            if status in ("Failed", "Cancelled"):
                raise self._job_error(sdk_job, status)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.poll_interval)
        output = await self._sdk(conn, self._download, sdk_job, job_id=job_id)
        fmt = job.payload.format
        if fmt is not None and fmt.circuit == "openqasm2":
            if not isinstance(output, dict) or not isinstance(output.get("c"), list):
                raise ExecutorError(
                    f"Azure job {job_id}: expected Quantinuum results {{'c': [bitstrings]}}, "
                    f"got {str(output)[:200]}",
                    executor=self.label,
                )
            return [str(s) for s in output["c"]]
        histogram = output.get("histogram") if isinstance(output, dict) else None
        if not isinstance(histogram, dict):
            raise ExecutorError(
                f"Azure job {job_id}: expected IonQ results {{'histogram': {{...}}}}, got "
                f"{str(output)[:200]}",
                executor=self.label,
            )
        return histogram

    def _job_error(self, sdk_job: Any, status: str) -> AzureJobError:
        job_id = sdk_job.id
        if status == "Cancelled":
            return AzureJobError(f"Azure job {job_id} on {self.backend_name} was cancelled",
                                 executor=self.label, job_id=job_id)
        error = sdk_job.details.error_data
        code = getattr(error, "code", None)
        message = getattr(error, "message", None) or "no error message"
        return AzureJobError(
            f"Azure job {job_id} on {self.backend_name} failed: {code or 'Failed'}: {message}",
            executor=self.label, job_id=job_id, code=code,
        )

    async def collect(self, job: _Job) -> list[Any]:
        """One raw output per circuit: Quantinuum's shot strings or IonQ's histogram."""
        return await gather_or_cancel(
            [self._wait_one(job, i) for i in range(len(job.ids))], lambda: self.cancel(job))

    def _cancel_one(self, job: _Job, job_id: str) -> None:
        try:
            sdk_job = self._sdk_job(job, job_id)
            if not sdk_job.has_completed():
                _reg().workspace(job.conn).cancel_job(sdk_job)
        except Exception:  # never created, already final, or the service is gone
            pass

    async def cancel(self, job: _Job) -> None:
        await asyncio.gather(
            *(in_daemon_thread(self._cancel_one, job, job_id) for job_id in job.ids)
        )

    # -- errors -------------------------------------------------------------------------------

    def _auth_hint(self, conn: _Connection) -> str:
        if conn.kind == "service_principal":
            return (
                "Check the service principal: AzureExecutor(credentials=AzureCredential("
                "tenant_id, client_id, client_secret, resource_id)), [executors.AzureExecutor."
                "credentials] in the config file, or QFLEET_AZUREEXECUTOR_CREDENTIALS; an "
                "expired client secret must be renewed (Entra ID > App registrations > "
                "Certificates & secrets)."
            )
        if conn.kind == "connection_string":
            return (
                "Check the workspace connection string (Azure portal: workspace > Operations > "
                "Access keys; keys can be regenerated or disabled there): AzureExecutor("
                "connection_string=...), [executors.AzureExecutor] connection_string, or "
                "QFLEET_AZUREEXECUTOR_CONNECTION_STRING."
            )
        return (
            "Sign in for the Azure credential chain (`az login`, or AZURE_TENANT_ID/"
            "AZURE_CLIENT_ID/AZURE_CLIENT_SECRET), or give AzureExecutor(credentials=...) or "
            "connection_string=..."
        )

    def _error(self, exc: BaseException, conn: _Connection,
               job_id: str | None = None) -> ExecutorError:
        """An SDK exception as a qfleet error (auth, transient or not), secrets removed."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        chain: list[BaseException] = []
        current: BaseException | None = exc
        while current is not None and all(current is not seen for seen in chain):
            chain.append(current)
            current = current.__cause__ or current.__context__
        codes = {e.status_code for e in chain
                 if isinstance(e, HttpResponseError) and isinstance(e.status_code, int)}
        secrets = conn.secrets()

        def clean(text: str) -> str:
            return " ".join(scrub(text, secrets).split())

        where = f"Azure job {job_id}: " if job_id else ""
        down = unreachable(exc)
        if down is not None and rejected_status(codes) is None:
            # azure-identity reports an unreachable Entra ID as ClientAuthenticationError;
            # no server refused anything: transient (a cluster retries it elsewhere).
            return ExecutorError(
                f"{where}could not reach Azure ({type(down).__name__}: {clean(str(down))}); "
                f"check the network and the workspace endpoint, or retry",
                executor=self.label, transient=True,
            )
        auth = next((e for e in chain if isinstance(e, ClientAuthenticationError)), None)
        if auth is not None or 401 in codes:
            _reg().forget(conn)  # the next batch signs in again
            detail = clean(str(auth if auth is not None else exc))
            return AzureAuthenticationError(
                f"{where}Azure did not accept the credentials: {detail}. {self._auth_hint(conn)}",
                executor=self.label,
            )
        if 403 in codes:
            return AzureAuthenticationError(
                f"{where}the identity may not use workspace {_workspace_name(conn)!r}: "
                f"{clean(str(exc))}. Give it the Contributor role on the workspace (or its "
                f"resource group) and the Azure Quantum Jobs.ReadWrite permission.",
                executor=self.label,
            )
        transient = bool(codes & _TRANSIENT_HTTP) or any(
            isinstance(e, (ServiceRequestError, ServiceResponseError, ConnectionError,
                           TimeoutError)) for e in chain
        )
        if not transient:
            try:
                import requests

                transient = any(isinstance(e, (requests.ConnectionError, requests.Timeout))
                                for e in chain)
            except ImportError:  # pragma: no cover
                pass
        return ExecutorError(f"{where}{type(exc).__name__}: {clean(str(exc))}",
                             executor=self.label, transient=transient)


    # -- live status (blocking: clusters ask from a background thread) -----------------

    def status(self) -> ExecutorStatus:
        """``providerStatus`` of ``backend_name``: its availability and average queue time."""
        base = super().status()
        conn = self._connection()
        try:
            targets, _ = _reg().target_list(conn, refresh=True)
        except Exception as exc:  # no status is an unavailable target, not a crash
            error = self._error(exc, conn) if not isinstance(exc, QFleetError) else exc
            return base.model_copy(update={"available": False, "reason": f"no status: {error}"})
        found = next(
            (t for _, t in targets if t.id.lower() == self.backend_name.lower()), None
        )
        if found is None:
            reason = f"target {self.backend_name!r} is not in workspace {_workspace_name(conn)!r}"
            return base.model_copy(update={"available": False, "reason": reason})
        availability = _availability(found)
        wait = getattr(found, "average_queue_time", None)
        return base.model_copy(
            update={
                "available": availability != "unavailable",
                "reason": None if availability == "available" else availability,
                "estimated_wait": float(wait) if wait is not None else None,
            }
        )


def _availability(target: Any) -> str:
    value = getattr(target, "current_availability", None) or "Available"
    return str(getattr(value, "value", value)).lower()


def _status(sdk_job: Any) -> str:
    value = sdk_job.details.status
    return str(getattr(value, "value", value))


def _workspace_name(conn: _Connection) -> str:
    if conn.resource_id:
        return conn.resource_id.rsplit("/", 1)[-1]
    match = re.search(r"WorkspaceName=([^;]+)", conn.secret or "", re.IGNORECASE)
    return match[1] if match else "?"
