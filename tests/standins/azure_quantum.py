"""Azure Quantum stand-in: the REST endpoints the real ``azure-quantum`` SDK (3.13) calls, with
Azurite (the official Azure Storage emulator) holding the job blobs.

Test infrastructure, not product. One https server on 127.0.0.1 (self-signed certificate,
made by the test run) plays three Azure services, so the SDK's credential path is the real one:

- **Microsoft Entra ID** (authority host): ``GET /{tenant}/v2.0/.well-known/openid-configuration``,
  ``POST /{tenant}/oauth2/v2.0/token`` (client credentials: client id + secret -> bearer token
  for the requested scope; AADSTS errors for a wrong or expired secret, unknown app or tenant).
- **Azure Resource Manager** (``arm_endpoint``): ``GET /subscriptions/{s}/resourceGroups/{rg}/
  providers/Microsoft.Quantum/workspaces/{ws}`` -> location and the data-plane ``endpointUri``
  (this server). Needs a token for ``https://management.azure.com/.default``.
- **Azure Quantum data plane** (under that workspace path; a token for
  ``https://quantum.microsoft.com/.default`` or the ``x-ms-quantum-api-key`` header):
  ``GET providerStatus``; ``POST storage/sasUri`` (creates the container in Azurite, returns a
  SAS URI); ``PUT/GET/DELETE jobs/{id}``; ``GET jobs``; ``POST jobs/{id}:cancel``.

Jobs read their input blob from Azurite, run on qiskit (Aer for Quantinuum's OpenQASM 2, the
exact state vector for IonQ's JSON circuits) and write ``rawOutputData`` in the target's real
format: Quantinuum ``{"c": ["0110", ...]}`` (per register, one string per shot, register bit
0 rightmost); IonQ ``{"histogram": {"<basis index>": probability}}`` (qubit 0 = least
significant bit; exact probabilities on ``ionq.simulator``, counts/shots on the QPUs).

Test controls (no auth) under ``/__standin__``: ``GET stats``; ``POST reset``; ``POST faults``
with any of ``{"fail_jobs": [{"code": ..., "message": ...}]}`` (the next jobs fail with these),
``{"http_errors": [{"method": "PUT", "path": "regex", "codes": [429, 503],
"retry_after": 1}]}`` (the next matching requests get these statuses), ``{"hold_jobs": true}``,
``{"job_delay": seconds}``, ``{"expire_secret": true}`` (the client secret expires: AADSTS7000222),
``{"availability": {"target id": "Unavailable"}}``, ``{"drop_replies": {"method": "PUT",
"path": "regex", "rate": 0.1, "seed": 1, "skip": 0, "count": 5}}`` (a matching request is
carried out, then the connection is closed without its 2xx reply: a reply lost after the
service accepted the work; ``skip``: spare the first matches, ``count``: drop at most so many;
``stats`` counts ``dropped`` replies and ``creates``, every PUT that created a job).

Run (the fixture in tests/test_azure_executor.py does this)::

    python tests/standins/azure_quantum.py --config stack.json

It prints ``PORT <n>`` once listening. :class:`AzureStack` below starts Azurite and this server
for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

if __package__:
    from .http_base import CONTROL, FaultHandler, FaultState, bind, make_server
    from .http_base import serve as serve_http
    from .process import ControlChannel, read_until, stop
else:  # run as a script, or imported with tests/standins on sys.path
    from http_base import CONTROL, FaultHandler, FaultState, bind, make_server
    from http_base import serve as serve_http
    from process import ControlChannel, read_until, stop

#: Azurite's well-known development account (documented, public).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
ARM_SCOPE = "https://management.azure.com/.default"
QUANTUM_SCOPE = "https://quantum.microsoft.com/.default"
TOKEN_LIFETIME = 3599

#: The workspace's providers: target id -> (input formats, output format, qubits, availability).
TARGETS: dict[str, dict[str, Any]] = {
    "quantinuum.sim.h2-1e": {"provider": "quantinuum", "qubits": 56,
                             "input": ["honeywell.openqasm.v1", "qir.v1"],
                             "output": "honeywell.quantum-results.v1"},
    "quantinuum.sim.h2-1sc": {"provider": "quantinuum", "qubits": 56,
                              "input": ["honeywell.openqasm.v1", "qir.v1"],
                              "output": "honeywell.quantum-results.v1"},
    "quantinuum.qpu.h2-1": {"provider": "quantinuum", "qubits": 56, "availability": "Unavailable",
                            "input": ["honeywell.openqasm.v1", "qir.v1"],
                            "output": "honeywell.quantum-results.v1"},
    "ionq.simulator": {"provider": "ionq", "qubits": 29, "input": ["ionq.circuit.v1", "qir.v1"],
                       "output": "ionq.quantum-results.v1"},
    "ionq.qpu.aria-1": {"provider": "ionq", "qubits": 25, "availability": "Unavailable",
                        "input": ["ionq.circuit.v1", "qir.v1"],
                        "output": "ionq.quantum-results.v1"},
    "rigetti.sim.qvm": {"provider": "rigetti", "qubits": 20, "input": ["qir.v1"],
                        "output": "microsoft.quantum-results.v2"},
}
FINAL = {"Succeeded", "Completed", "Failed", "Cancelled"}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _odata_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


# -- simulation -------------------------------------------------------------------------------


def run_openqasm(program: str, shots: int, max_qubits: int = 64) -> dict[str, list[str]]:
    """Quantinuum's result format: per classical register, one bitstring per shot
    (register bit 0 rightmost)."""
    from qiskit import qasm2
    from qiskit_aer import AerSimulator

    circuit = qasm2.loads(program, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    if circuit.num_clbits == 0:
        raise ValueError("the program measures nothing (no classical register)")
    if circuit.num_qubits > max_qubits:
        raise ValueError(f"the program needs {circuit.num_qubits} qubits; the target has "
                         f"{max_qubits}")
    memory = AerSimulator().run(circuit, shots=shots, memory=True).result().get_memory(circuit)
    out: dict[str, list[str]] = {}
    for register in circuit.cregs:
        indices = [circuit.find_bit(bit).index for bit in register]
        strings = []
        for shot in memory:
            flat = shot.replace(" ", "")  # qiskit: clbit 0 rightmost
            strings.append("".join(flat[-1 - i] for i in reversed(indices)))
        out[register.name] = strings
    return out


def _ionq_gate(name: str, rotation: float | None):
    from qiskit.circuit import library as lib

    fixed = {"x": lib.XGate, "y": lib.YGate, "z": lib.ZGate, "h": lib.HGate, "s": lib.SGate,
             "si": lib.SdgGate, "t": lib.TGate, "ti": lib.TdgGate, "v": lib.SXGate,
             "vi": lib.SXdgGate, "swap": lib.SwapGate, "not": lib.XGate, "cnot": lib.XGate}
    rotations = {"rx": lib.RXGate, "ry": lib.RYGate, "rz": lib.RZGate, "xx": lib.RXXGate,
                 "yy": lib.RYYGate, "zz": lib.RZZGate}
    if name in fixed:
        return fixed[name]()
    if name in rotations:
        if rotation is None:
            raise ValueError(f"gate {name!r} needs a rotation")
        return rotations[name](rotation)
    raise ValueError(f"gate {name!r} is not in IonQ's qis gate set")


def ionq_circuit(program: dict):
    """A qiskit circuit (no measurements) for an ``ionq.circuit.v1`` program."""
    from qiskit import QuantumCircuit

    if program.get("gateset", "qis") != "qis":
        raise ValueError(f"gateset {program.get('gateset')!r} is not supported by this stand-in")
    qubits = int(program["qubits"])
    circuit = QuantumCircuit(qubits)
    for inst in program["circuit"]:
        targets = inst.get("targets", [inst["target"]] if "target" in inst else [])
        controls = inst.get("controls", [inst["control"]] if "control" in inst else [])
        gate = _ionq_gate(inst["gate"], inst.get("rotation"))
        if gate.num_qubits != len(targets):
            raise ValueError(f"gate {inst['gate']!r} takes {gate.num_qubits} target(s): {inst}")
        if any(not 0 <= q < qubits for q in [*targets, *controls]):
            raise ValueError(f"qubit out of range in {inst}")
        if controls:
            gate = gate.control(len(controls))
        circuit.append(gate, [*controls, *targets])
    return circuit


def run_ionq(program: dict, shots: int, exact: bool) -> dict[str, dict[str, float]]:
    """IonQ's result format: ``{"histogram": {"<basis index>": probability}}``."""
    import numpy as np
    from qiskit.quantum_info import Statevector

    probabilities = Statevector(ionq_circuit(program)).probabilities()  # index: qubit 0 = LSB
    if not exact:  # hardware: counts / shots
        probabilities = np.random.default_rng().multinomial(shots, probabilities) / shots
    return {"histogram": {str(i): float(p) for i, p in enumerate(probabilities) if p > 1e-12}}


# -- state ------------------------------------------------------------------------------------


class State(FaultState):
    """Everything the stand-in remembers; one condition lock guards it."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(workers=4)
        self.config = config
        self.base = ""  # https://127.0.0.1:<port>, set once listening
        from azure.storage.blob import BlobServiceClient

        self.blobs = BlobServiceClient(config["azurite"], credential={
            "account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY})
        self.reset()

    def clear(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.creates = 0
        self.tokens: dict[str, tuple[str, float]] = {}
        self.secret_expired = False
        self.availability = {name: t.get("availability", "Available")
                             for name, t in TARGETS.items()}

    # -- blobs ------------------------------------------------------------------------------

    def container_sas(self, container: str) -> str:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        try:
            self.blobs.create_container(container)
        except ResourceExistsError:
            pass
        token = generate_container_sas(
            AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(read=True, add=True, create=True, write=True,
                                               list=True),
            expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
        )
        return f"{self.config['azurite']}/{container}?{token}"

    def blob_sas(self, container: str, blob: str) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        token = generate_blob_sas(
            AZURITE_ACCOUNT, container, blob, account_key=AZURITE_KEY,
            permission=BlobSasPermissions(read=True),
            expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
        )
        return f"{self.config['azurite']}/{container}/{blob}?{token}"

    def _blob_path(self, uri: str) -> tuple[str, str]:
        """(container, blob) of an Azurite blob URI (path style: /account/container/blob)."""
        parts = unquote(urlparse(uri).path).lstrip("/").split("/", 2)
        if len(parts) != 3 or parts[0] != AZURITE_ACCOUNT:
            raise ValueError(f"not a blob of this workspace's storage: {uri}")
        return parts[1], parts[2]

    # -- jobs -------------------------------------------------------------------------------

    def run_job(self, job_id: str) -> None:
        with self.lock:
            self.wait_while_held(job_id, "Waiting")
            job = self.jobs.get(job_id)
            if job is None or job["status"] != "Waiting":
                return
            job["status"] = "Executing"
            job["beginExecutionTime"] = _now()
            failure = self.fail_jobs.pop(0) if self.fail_jobs else None
            delay = self.job_delay
        started = time.monotonic()
        output, error = None, None
        try:
            if failure is not None:
                error = {"code": failure.get("code", "JobFailed"),
                         "message": failure.get("message", "the job failed")}
            else:
                output = self.execute(job)
        except Exception as exc:  # the job fails; the client reads errorData
            error = {"code": "InvalidInputData", "message": f"{type(exc).__name__}: {exc}"}
        remaining = delay - (time.monotonic() - started) if error is None else 0.0
        with self.lock:
            if not self.linger(job, "Executing", remaining):  # cancelled meanwhile
                return
        if output is not None:
            container = self._blob_path(job["inputDataUri"])[0]
            blob = self.blobs.get_blob_client(container, "rawOutputData")
            from azure.storage.blob import ContentSettings

            blob.upload_blob(json.dumps(output).encode(), overwrite=True,
                             content_settings=ContentSettings(content_type="application/json"))
        with self.lock:
            if job["status"] != "Executing":
                return
            if error is None:
                job["status"] = "Succeeded"
                job["outputDataUri"] = f"{self.config['azurite']}/{container}/rawOutputData"
            else:
                job["status"] = "Failed"
                job["errorData"] = error
            job["endExecutionTime"] = _now()
            self.lock.notify_all()

    def execute(self, job: dict) -> Any:
        container, blob = self._blob_path(job["inputDataUri"])
        data = self.blobs.get_blob_client(container, blob).download_blob().readall()
        shots = int((job.get("inputParams") or {}).get("shots") or 500)
        target = job["target"]
        fmt = job["inputDataFormat"]
        if fmt == "honeywell.openqasm.v1":
            return run_openqasm(data.decode(), shots, TARGETS[target]["qubits"])
        if fmt == "ionq.circuit.v1":
            program = json.loads(data)
            if int(program.get("qubits", 0)) > TARGETS[target]["qubits"]:
                raise ValueError(f"{target} has {TARGETS[target]['qubits']} qubits, the circuit "
                                 f"needs {program['qubits']}")
            return run_ionq(program, shots, exact=target == "ionq.simulator")
        raise ValueError(f"input format {fmt!r} cannot be run by this stand-in")


# -- HTTP -------------------------------------------------------------------------------------

_WORKSPACE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Quantum/"
    r"workspaces/(?P<ws>[^/]+)(?P<rest>/.*)?$",
    re.IGNORECASE,
)


class Handler(FaultHandler):
    server_version = "qfleet-azure-quantum-standin/1"
    state: State
    fault_path_match = staticmethod(re.search)

    def _send(self, status: int, body: Any = None, headers: dict | None = None) -> None:
        if self._reply_lost(status, urlparse(self.path).path):
            self.close_connection = True  # the client sees the connection end, no reply
            return
        data = b"" if body is None else json.dumps(body).encode()
        self._write(status, data, "application/json; charset=utf-8",
                    {"x-ms-request-id": str(uuid.uuid4()), **(headers or {})})
        path = urlparse(self.path).path
        if not path.startswith(CONTROL):
            with self.state.lock:
                self.state.requests.append((self.command, path, status))

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        self._send(status, _odata_error(code, message), headers)

    def _not_found(self, message: str) -> None:
        self._error(404, "NotFound", message)

    def _crashed(self, exc: Exception) -> None:
        self._error(500, "InternalError", f"stand-in error: {type(exc).__name__}: {exc}")

    def _injected(self, status: int, retry_after: Any) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        code = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "InjectedError")
        self._error(status, code, f"injected {status} (stand-in fault)", headers)

    def _route(self, path: str, query: dict, body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[1] in ("v2.0", "oauth2"):
            return self._entra(parts, body)
        match = _WORKSPACE.match(path)
        if match:
            return self._workspace(match, query, body)
        self._error(404, "NotFound", f"no route {self.command} {path}")

    # -- Microsoft Entra ID -------------------------------------------------------------------

    def _entra(self, parts: list[str], body: bytes) -> None:
        config, state = self.state.config, self.state
        tenant = parts[0]
        base = f"{state.base}/{tenant}"
        if parts[1:] == ["v2.0", ".well-known", "openid-configuration"] and self.command == "GET":
            if tenant != config["tenant_id"]:
                return self._send(400, {
                    "error": "invalid_tenant",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found. Check to "
                    f"make sure you have the correct tenant ID and are signing into the correct "
                    f"cloud.", "error_codes": [90002]})
            return self._send(200, {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                          "client_secret_basic"],
                "tenant_region_scope": "NA",
            })
        if parts[1:] == ["oauth2", "v2.0", "token"] and self.command == "POST":
            return self._token(tenant, parse_qs(body.decode()))
        self._error(404, "NotFound", f"no route {self.command} /{'/'.join(parts)}")

    def _token(self, tenant: str, form: dict) -> None:
        config, state = self.state.config, self.state
        value = lambda key: (form.get(key) or [""])[0]  # noqa: E731
        trace = f"\r\nTrace ID: {uuid.uuid4()}\r\nCorrelation ID: {uuid.uuid4()}"
        if tenant != config["tenant_id"]:
            return self._send(400, {"error": "invalid_request", "error_codes": [90002],
                                    "error_description": f"AADSTS90002: Tenant '{tenant}' not "
                                    f"found.{trace}"})
        if value("grant_type") != "client_credentials":
            return self._send(400, {"error": "unsupported_grant_type",
                                    "error_description": "AADSTS70003: The app requested an "
                                    f"unsupported grant type.{trace}"})
        client_id = value("client_id")
        if client_id != config["client_id"]:
            return self._send(400, {"error": "unauthorized_client", "error_codes": [700016],
                                    "error_description": f"AADSTS700016: Application with "
                                    f"identifier '{client_id}' was not found in the directory "
                                    f"'{tenant}'.{trace}"})
        if value("client_secret") != config["client_secret"]:
            return self._send(401, {"error": "invalid_client", "error_codes": [7000215],
                                    "error_description": "AADSTS7000215: Invalid client secret "
                                    "provided. Ensure the secret being sent in the request is "
                                    "the client secret value, not the client secret ID, for a "
                                    f"secret added to app '{client_id}'.{trace}"})
        if state.secret_expired:
            return self._send(401, {"error": "invalid_client", "error_codes": [7000222],
                                    "error_description": "AADSTS7000222: The provided client "
                                    f"secret keys for app '{client_id}' are expired. Visit the "
                                    f"Azure portal to create new keys for your app.{trace}"})
        scope = value("scope")
        if scope not in (ARM_SCOPE, QUANTUM_SCOPE):
            return self._send(400, {"error": "invalid_scope", "error_codes": [70011],
                                    "error_description": f"AADSTS70011: The provided value for "
                                    f"scope {scope} is not valid.{trace}"})
        token = secrets.token_urlsafe(32)
        with state.lock:
            state.tokens[token] = (scope, time.time() + TOKEN_LIFETIME)
        self._send(200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                         "ext_expires_in": TOKEN_LIFETIME, "access_token": token})

    def _authorized(self, scope: str, allow_api_key: bool) -> bool:
        state = self.state
        key = self.headers.get("x-ms-quantum-api-key")
        if allow_api_key and key is not None:
            if key == state.config["api_key"]:
                return True
            self._error(401, "InvalidApiKey", "The API key provided is not valid for this "
                        "workspace.")
            return False
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            self._error(401, "AuthenticationFailed", "Authentication failed. The "
                        "'Authorization' header is missing.",
                        {"WWW-Authenticate": 'Bearer authorization_uri="https://login.'
                         'microsoftonline.com/common/oauth2/authorize"'})
            return False
        with state.lock:
            granted = state.tokens.get(header[7:])
        if granted is None or granted[1] < time.time():
            self._error(401, "InvalidAuthenticationToken", "The access token is invalid or "
                        "has expired.", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            return False
        if granted[0] != scope:
            self._error(401, "InvalidAuthenticationTokenAudience", "The access token has been "
                        f"obtained for wrong audience or resource '{granted[0]}'. It should "
                        f"exactly match '{scope}'.")
            return False
        return True

    # -- ARM and the data plane ---------------------------------------------------------------

    def _workspace(self, match: re.Match, query: dict, body: bytes) -> None:
        config = self.state.config
        sub, rg, ws, rest = match["sub"], match["rg"], match["ws"], match["rest"] or ""
        known = (sub.lower(), rg.lower(), ws.lower()) == (
            config["subscription_id"].lower(), config["resource_group"].lower(),
            config["workspace"].lower())
        if not rest:  # ARM: the workspace resource
            if not self._authorized(ARM_SCOPE, allow_api_key=False):
                return None
            if not known or self.command != "GET":
                return self._error(404, "ResourceNotFound", f"The Resource 'Microsoft.Quantum/"
                                   f"workspaces/{ws}' under resource group '{rg}' was not found.")
            return self._send(200, {
                "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Quantum/"
                      f"Workspaces/{ws}",
                "name": ws, "type": "microsoft.quantum/workspaces",
                "location": config["location"],
                "properties": {"provisioningState": "Succeeded", "usable": "Yes",
                               "endpointUri": f"{self.state.base}/",
                               "storageAccount": f"/subscriptions/{sub}/resourceGroups/{rg}/"
                               f"providers/Microsoft.Storage/storageAccounts/{AZURITE_ACCOUNT}"},
            })
        if not self._authorized(QUANTUM_SCOPE, allow_api_key=True):
            return None
        if not known:
            return self._error(404, "WorkspaceNotFound", f"Workspace '{ws}' not found.")
        parts = [p for p in rest.split("/") if p]
        method = self.command
        if parts == ["providerStatus"] and method == "GET":
            return self._provider_status()
        if parts == ["storage", "sasUri"] and method == "POST":
            request = json.loads(body or b"{}")
            container = request.get("containerName")
            if not container:
                return self._error(400, "InvalidRequest", "containerName is required")
            blob = request.get("blobName")
            uri = (self.state.blob_sas(container, blob) if blob
                   else self.state.container_sas(container))
            return self._send(200, {"sasUri": uri})
        if parts == ["jobs"] and method == "GET":
            with self.state.lock:
                jobs = [dict(j) for j in self.state.jobs.values()]
            return self._send(200, {"value": jobs, "nextLink": None})
        if len(parts) == 2 and parts[0] == "jobs":
            job_id, action = (parts[1].split(":", 1) + [""])[:2]
            return self._job(job_id, action, method, body)
        return self._error(404, "NotFound", f"no route {method} {rest}")

    def _provider_status(self) -> None:
        with self.state.lock:
            availability = dict(self.state.availability)
        providers: dict[str, list[dict]] = {}
        for name, target in TARGETS.items():
            providers.setdefault(target["provider"], []).append({
                "id": name, "currentAvailability": availability[name],
                "averageQueueTime": 0, "statusPage": f"https://status.example/{name}",
            })
        value = [{"id": provider, "currentAvailability": (
                    "Available" if any(t["currentAvailability"] == "Available" for t in targets)
                    else "Unavailable"), "targets": targets}
                 for provider, targets in providers.items()]
        self._send(200, {"value": value, "nextLink": None})

    def _job(self, job_id: str, action: str, method: str, body: bytes) -> None:
        state = self.state
        if not action and method == "PUT":
            return self._create_job(job_id, json.loads(body or b"{}"))
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None:
                return self._error(404, "JobNotFound", f"Job '{job_id}' not found.")
            if not action and method == "GET":
                return self._send(200, dict(job))
            if not action and method == "DELETE":
                if job["status"] not in FINAL:
                    job["status"] = "Cancelled"
                    job["cancellationTime"] = _now()
                    state.lock.notify_all()
                return self._send(204)
            if action == "cancel" and method == "POST":
                if job["status"] in FINAL:
                    return self._error(409, "JobAlreadyFinished", f"Job '{job_id}' is "
                                       f"{job['status']}; it cannot be cancelled.")
                job["status"] = "Cancelled"
                job["cancellationTime"] = _now()
                state.lock.notify_all()
                return self._send(204)
        return self._error(404, "NotFound", f"no route {method} jobs/{job_id}:{action}")

    def _create_job(self, job_id: str, request: dict) -> None:
        state = self.state
        if request.get("id") not in (None, job_id):
            return self._error(400, "InvalidJobDefinition", "The job id in the body does not "
                               "match the URL.")
        target = request.get("target")
        if target not in TARGETS:
            return self._error(400, "InvalidJobDefinition", f"Target '{target}' is not "
                               f"available in this workspace. Available targets: "
                               f"{', '.join(TARGETS)}.")
        spec = TARGETS[target]
        fmt = request.get("inputDataFormat")
        if fmt not in spec["input"]:
            return self._error(400, "InvalidInputDataFormat", f"Target '{target}' does not "
                               f"accept input data format '{fmt}'; it accepts "
                               f"{', '.join(spec['input'])}.")
        if request.get("outputDataFormat") != spec["output"]:
            return self._error(400, "InvalidOutputDataFormat", f"Target '{target}' produces "
                               f"'{spec['output']}', not '{request.get('outputDataFormat')}'.")
        shots = (request.get("inputParams") or {}).get("shots")
        if shots is not None and (not isinstance(shots, int) or shots <= 0):
            return self._error(400, "InvalidInputParams", f"shots must be a positive integer, "
                               f"got {shots!r}")
        for key in ("containerUri", "inputDataUri", "providerId", "name"):
            if not request.get(key):
                return self._error(400, "InvalidJobDefinition", f"'{key}' is required.")
        if request["providerId"].lower() != spec["provider"]:
            return self._error(400, "InvalidJobDefinition", f"Target '{target}' belongs to "
                               f"provider '{spec['provider']}', not '{request['providerId']}'.")
        with state.lock:
            if job_id in state.jobs:
                return self._error(409, "JobAlreadyExists", f"Job '{job_id}' already exists.")
            job = {k: v for k, v in request.items() if v is not None}
            job.update(id=job_id, itemType="Job", jobType="QuantumComputing", status="Waiting",
                       creationTime=_now(), beginExecutionTime=None, endExecutionTime=None,
                       cancellationTime=None, errorData=None, outputDataUri=None)
            state.jobs[job_id] = job
            state.creates += 1
            reply = dict(job)
        state.pool.submit(state.run_job, job_id)
        self._send(200, reply)

    # -- test controls ------------------------------------------------------------------------

    def _stats(self) -> dict:
        state = self.state
        jobs = [{k: j.get(k) for k in ("id", "name", "target", "status", "inputParams",
                                        "inputDataFormat", "errorData", "metadata", "tags")}
                for j in state.jobs.values()]
        return {"jobs": jobs, "requests": state.requests, "tokens_issued": len(state.tokens),
                "dropped": state.dropped, "creates": state.creates}

    def _more_faults(self, faults: dict) -> None:
        state = self.state
        if "expire_secret" in faults:
            state.secret_expired = bool(faults["expire_secret"])
        state.availability.update(faults.get("availability", {}))


def serve(config: dict[str, Any], cert: str, key: str, port: int = 0) -> None:
    state = State(config)
    # Import qiskit and Aer before the first job.
    run_openqasm('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\ncreg c[1];\n'
                 'measure q[0] -> c[0];', 1)
    server = make_server(bind(Handler, state), port)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # Handshake in the handler's thread (first read), not in accept() on the serving thread.
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    state.base = f"https://127.0.0.1:{server.server_address[1]}"
    serve_http(server, sigterm=True,
               cleanup=lambda: state.pool.shutdown(wait=False, cancel_futures=True))


# -- launching it all (tests and benchmarks) ---------------------------------------------------


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (also its own CA): (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qfleet azure stand-in")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "standin-cert.pem", folder / "standin-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


REPO = Path(__file__).resolve().parents[2]


def azurite_command() -> list[str] | None:
    """How to start Azurite's blob service: the repo's npm install (``npm ci`` with the root
    package.json), ``$AZURITE_BLOB``, or ``azurite-blob`` on PATH. None: not installed."""
    explicit = os.environ.get("AZURITE_BLOB")
    if explicit:
        return [explicit]
    local = REPO / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return [str(local)]
    found = shutil.which("azurite-blob")
    return [found] if found else None


class AzureStack(ControlChannel):
    """Azurite + the Azure Quantum stand-in, each its own process on free loopback ports.

    ``env`` holds what the SDK's process needs to trust the stand-in's certificate
    (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``).
    """

    TENANT = "72f988bf-0000-4000-8000-00000000a2ce"
    CLIENT_ID = "0c5a3e1f-0000-4000-8000-0000000c11e7"
    CLIENT_SECRET = "standin~client~secret~0123456789abcdef"
    SUBSCRIPTION = "916dfd6d-0000-4000-8000-000000005b50"
    RESOURCE_GROUP = "qfleet-rg"
    WORKSPACE = "qfleet-ws"
    LOCATION = "eastus"
    API_KEY = "standin-workspace-api-key-0123456789"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.processes: list[subprocess.Popen] = []
        self.port = 0
        self.azurite = ""

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def resource_id(self) -> str:
        return (f"/subscriptions/{self.SUBSCRIPTION}/resourceGroups/{self.RESOURCE_GROUP}/"
                f"providers/Microsoft.Quantum/Workspaces/{self.WORKSPACE}")

    @property
    def connection_string(self) -> str:
        """A workspace connection string (its QuantumEndpoint is Azure's; point the SDK at the
        stand-in with the executor's ``quantum_endpoint``)."""
        return (f"SubscriptionId={self.SUBSCRIPTION};ResourceGroupName={self.RESOURCE_GROUP};"
                f"WorkspaceName={self.WORKSPACE};ApiKey={self.API_KEY};"
                f"QuantumEndpoint=https://{self.LOCATION}.quantum.azure.com/;")

    @property
    def env(self) -> dict[str, str]:
        return {"REQUESTS_CA_BUNDLE": str(self.cert), "SSL_CERT_FILE": str(self.cert)}

    def start(self) -> AzureStack:
        command = azurite_command()
        if command is None:
            raise FileNotFoundError(
                "Azurite is not installed: run `npm ci --no-audit --no-fund` in the repository "
                "root (package.json), or set AZURITE_BLOB to an azurite-blob executable")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_certificate(self.folder)
        storage = self.folder / "azurite"
        storage.mkdir(exist_ok=True)
        azurite = subprocess.Popen(
            [*command, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
             "--extentMemoryLimit", "256", "--skipApiVersionCheck", "--loose",
             "--disableTelemetry"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=storage,
        )
        self.processes.append(azurite)
        match = read_until(azurite, r"listens on (http://127\.0\.0\.1:\d+)", 60, "azurite")
        self.azurite = f"{match[1]}/{AZURITE_ACCOUNT}"
        config = {
            "tenant_id": self.TENANT, "client_id": self.CLIENT_ID,
            "client_secret": self.CLIENT_SECRET, "subscription_id": self.SUBSCRIPTION,
            "resource_group": self.RESOURCE_GROUP, "workspace": self.WORKSPACE,
            "location": self.LOCATION, "api_key": self.API_KEY, "azurite": self.azurite,
        }
        config_path = self.folder / "standin.json"
        config_path.write_text(json.dumps(config))
        standin = subprocess.Popen(
            [sys.executable, __file__, "--config", str(config_path), "--cert", str(self.cert),
             "--key", str(self.key)],
            stdout=subprocess.PIPE, stderr=None, text=True,
        )
        self.processes.append(standin)
        self.port = int(read_until(standin, r"^PORT (\d+)", 120, "azure-standin")[1])
        return self

    @property
    def verify(self) -> str:
        return str(self.cert)

    def stop(self) -> None:
        stop(*self.processes)
        self.processes.clear()

    def __enter__(self) -> AzureStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON: credentials, workspace, Azurite")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    serve(json.loads(Path(args.config).read_text()), args.cert, args.key, args.port)


if __name__ == "__main__":
    main()
