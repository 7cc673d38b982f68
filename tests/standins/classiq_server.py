"""A stand-in for Classiq's execution service, for tests (not product).

Run as its own process: ``python tests/standins/classiq_server.py [--port 0] [--token T]``;
it prints ``PORT <n>`` once it listens on 127.0.0.1. Point the real classiq SDK at it with
``CLASSIQ_HOST=http://127.0.0.1:<n>`` and ``CLASSIQ_SKIP_CHECK_HOST=1``.

It implements the REST calls the classiq 1.34 SDK makes for OpenQASM execution sessions
(``classiq/_internals/api_wrapper.py``), under ``/api/v<INTERFACE_VERSION>``:

- ``POST /execution/sessions/openqasm`` body ``OpenQasmExecutionSessionRequest`` -> ``{"id"}``
- ``POST /execution/sessions/{id}`` body ``PrimitivesInput`` (sample / estimate) ->
  ``ExecutionJobDetails``
- ``POST /execution/sessions/{id}/close`` -> 204
- ``GET /execution/jobs/{id}`` -> ``ExecutionJobDetails``
- ``GET /execution/jobs/{id}/result`` -> ``{"url"}``; ``GET <url>`` ->
  ``ExecuteGeneratedCircuitResults`` (the SDK downloads results from a presigned URL)
- ``PUT /execution/jobs/{id}/cancel``, ``PATCH /execution/jobs/{id}?name=``,
  ``GET /execution/jobs?offset&limit`` (newest first) -> ``ExecutionJobsQueryResults``
- ``POST /telemetry/otlp/v1/traces`` (accepted, ignored)

Request bodies are validated with the SDK's own ``classiq.interface`` models (HTTP 422 with
the validation error otherwise); responses are built from them too. Circuits run on qiskit's
statevector simulator: ``sample`` draws seeded shots (``random_seed`` of the request),
``estimate`` is exact with ``sample_based=False`` and shot-based otherwise. Counts are
written classical bit 0 rightmost (``counts_lsb_right=True``), as Classiq's are.

Test controls (not Classiq API): ``POST /_standin/config {"delay": s}`` (seconds a job stays
RUNNING), ``GET /_standin/state`` (jobs, sessions and requests seen).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from classiq.interface.chemistry.operator import PauliOperator
from classiq.interface.execution.primitives import PrimitivesInput
from classiq.interface.executor.execution_request import (
    ExecutionJobDetails,
    ExecutionJobsQueryResults,
)
from classiq.interface.executor.execution_result import ExecuteGeneratedCircuitResults
from classiq.interface.executor.openqasm_execution_session import OpenQasmExecutionSessionRequest
from classiq.interface.executor.result import (
    EstimationMetadata,
    EstimationResult,
    EstimationResults,
    ExecutionDetails,
    MultipleExecutionDetails,
)
from classiq.interface.interface_version import INTERFACE_VERSION
from classiq.interface.jobs import JobStatus
from pydantic import ValidationError

if __package__:
    from .http_base import JSONHandler, make_server, serve
    from .process import start_port, stop
else:  # run as a script, or imported with tests/standins on sys.path
    from http_base import JSONHandler, make_server, serve
    from process import start_port, stop

PREFIX = f"/api/v{INTERFACE_VERSION}"
DEFAULT_SHOTS = 2048
FINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


class HTTPError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


# -- the simulator --------------------------------------------------------------------------

# qiskit is not safe to drive from several threads at once (DESIGN.md: it crashed in an
# in-process server); every parse and simulation takes this lock.
QISKIT_LOCK = threading.Lock()


def _import_qiskit() -> None:
    """Import qiskit on the main thread, before any request thread touches it."""
    from qiskit import qasm2, qasm3  # noqa: F401
    from qiskit.quantum_info import SparsePauliOp, Statevector  # noqa: F401


def load_circuit(qasm: str):
    from qiskit import qasm2, qasm3

    with QISKIT_LOCK:
        if re.match(r"^(\s|//[^\n]*\n)*OPENQASM\s+3", qasm):
            return qasm3.loads(qasm)
        return qasm2.loads(qasm, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)


def _statevector(circuit):
    from qiskit.quantum_info import Statevector

    measures = [
        (circuit.find_bit(i.qubits[0]).index, circuit.find_bit(i.clbits[0]).index)
        for i in circuit.data
        if i.operation.name == "measure"
    ]
    unitary = circuit.remove_final_measurements(inplace=False)
    if any(i.operation.name == "measure" for i in unitary.data):
        raise ValueError("mid-circuit measurements are not supported by this simulator")
    return Statevector(unitary), measures


def sample(qasm: str, shots: int, seed: int | None) -> ExecutionDetails:
    circuit = load_circuit(qasm)
    with QISKIT_LOCK:
        return _sample(circuit, shots, seed)


def _sample(circuit, shots: int, seed: int | None) -> ExecutionDetails:
    state, measures = _statevector(circuit)
    num_qubits = circuit.num_qubits
    if not measures:  # nothing measured: every qubit, c[i] <- q[i]
        measures = [(q, q) for q in range(num_qubits)]
        num_clbits = num_qubits
    else:
        num_clbits = circuit.num_clbits
    probs = np.abs(state.data) ** 2
    probs = probs / probs.sum()
    rng = np.random.default_rng(seed)
    outcomes = rng.choice(len(probs), size=shots, p=probs)
    counts: dict[str, int] = {}
    for index, count in zip(*np.unique(outcomes, return_counts=True)):
        bits = ["0"] * num_clbits
        for qubit, clbit in measures:
            bits[clbit] = str((int(index) >> qubit) & 1)  # qiskit: qubit 0 is the low bit
        key = "".join(reversed(bits))  # classical bit 0 rightmost
        counts[key] = counts.get(key, 0) + int(count)
    return ExecutionDetails(
        vendor_format_result={"simulator": "qfleet-standin statevector"},
        counts=counts,
        counts_lsb_right=True,
        parsed_states={bitstring: {} for bitstring in counts},
        num_shots=shots,
    )


def _pauli_labels(operator: PauliOperator, num_qubits: int) -> list[tuple[str, complex]]:
    out = []
    for label, coeff in operator.pauli_list:
        if len(label) > num_qubits:
            raise ValueError(
                f"observable term {label!r} acts on {len(label)} qubits but the circuit has "
                f"{num_qubits}"
            )
        # Rightmost letter is qubit 0; qubits the term does not reach get identities.
        out.append((label.rjust(num_qubits, "I"), complex(coeff)))
    return out


def estimate(qasm: str, operator: PauliOperator, shots: int | None, seed: int | None,
             sample_based: bool) -> EstimationResult:
    circuit = load_circuit(qasm)
    with QISKIT_LOCK:
        return _estimate(circuit, operator, shots, seed, sample_based)


def _estimate(circuit, operator: PauliOperator, shots: int | None, seed: int | None,
              sample_based: bool) -> EstimationResult:
    from qiskit.quantum_info import SparsePauliOp

    state, _ = _statevector(circuit)
    terms = _pauli_labels(operator, circuit.num_qubits)
    if not sample_based:
        value = state.expectation_value(SparsePauliOp.from_list(terms))
        return EstimationResult(value=float(np.real(value)), metadata=EstimationMetadata())
    shots = shots or DEFAULT_SHOTS
    rng = np.random.default_rng(seed)
    total = 0.0
    for label, coeff in terms:
        if set(label) <= {"I"}:
            total += coeff.real
            continue
        rotated = state
        from qiskit import QuantumCircuit

        basis = QuantumCircuit(circuit.num_qubits)
        mask = 0
        for position, p in enumerate(label):
            qubit = circuit.num_qubits - 1 - position
            if p == "X":
                basis.h(qubit)
            elif p == "Y":
                basis.sdg(qubit)
                basis.h(qubit)
            if p != "I":
                mask |= 1 << qubit
        rotated = state.evolve(basis)
        probs = np.abs(rotated.data) ** 2
        outcomes = rng.choice(len(probs), size=shots, p=probs / probs.sum())
        parity = np.array([bin(int(o) & mask).count("1") % 2 for o in outcomes])
        total += coeff.real * float(np.mean(1 - 2 * parity))
    return EstimationResult(value=total, metadata=EstimationMetadata(shots=shots))


# -- the service ----------------------------------------------------------------------------


class Service:
    def __init__(self, token: str | None = None):
        self.token = token
        self.lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.delay = 0.05
        self.requests: list[str] = []

    def details(self, job: dict[str, Any]) -> dict[str, Any]:
        return json.loads(ExecutionJobDetails(**job["details"]).model_dump_json())

    def create_session(self, body: dict) -> dict:
        request = OpenQasmExecutionSessionRequest.model_validate(body)
        from classiq.interface.executor.openqasm_validation import validate_openqasm_source_text

        try:
            validate_openqasm_source_text(request.qasm)
            load_circuit(request.qasm)
        except Exception as exc:  # noqa: BLE001
            raise HTTPError(422, f"invalid OpenQASM: {exc}") from exc
        session_id = str(uuid.uuid4())
        with self.lock:
            self.sessions[session_id] = {"request": request, "closed": False}
        return {"id": session_id}

    def submit(self, session_id: str, body: dict) -> dict:
        primitives = PrimitivesInput.model_validate(body)
        with self.lock:
            session = self.sessions.get(session_id)
        if session is None:
            raise HTTPError(404, f"execution session {session_id} not found")
        if session["closed"]:
            raise HTTPError(400, f"execution session {session_id} is closed")
        request: OpenQasmExecutionSessionRequest = session["request"]
        preferences = request.execution_preferences
        if primitives.minimize is not None:
            raise HTTPError(422, "the stand-in does not implement minimize")
        parameter_sets = primitives.sample if primitives.sample is not None else (
            primitives.estimate.parameters if primitives.estimate is not None else None
        )
        if parameter_sets is None:
            raise HTTPError(422, "one of sample or estimate is required")
        if any(params for params in parameter_sets):
            raise HTTPError(422, "OpenQASM execution sessions take no execution parameters")
        shots = primitives.num_shots or preferences.num_shots
        backend = preferences.backend_preferences
        job_id = str(uuid.uuid4())
        job = {
            "details": {
                "id": job_id,
                "session_id": session_id,
                "name": preferences.job_name,
                "start_time": datetime.now(timezone.utc),
                "provider": str(backend.backend_service_provider),
                "backend_name": str(backend.backend_name),
                "status": JobStatus.QUEUED,
                "num_shots": shots if primitives.sample is not None else None,
            },
            "qasm": request.qasm,
            "primitives": primitives,
            "seed": primitives.random_seed if primitives.random_seed is not None else preferences.random_seed,
            "shots": shots,
            "result": None,
            "run_at": time.monotonic() + self.delay,
        }
        with self.lock:
            self.jobs[job_id] = job
            self.order.append(job_id)
        threading.Thread(target=self._run, args=(job_id,), daemon=True).start()
        return self.details(job)

    def _run(self, job_id: str) -> None:
        with self.lock:
            job = self.jobs[job_id]
            if job["details"]["status"] in FINAL:
                return
            job["details"]["status"] = JobStatus.RUNNING
        delay = job["run_at"] - time.monotonic()
        while delay > 0:
            time.sleep(min(delay, 0.05))
            with self.lock:
                if job["details"]["status"] in FINAL:
                    return
            delay = job["run_at"] - time.monotonic()
        primitives: PrimitivesInput = job["primitives"]
        try:
            if primitives.sample is not None:
                details = [
                    sample(job["qasm"], job["shots"] or DEFAULT_SHOTS, job["seed"])
                    for _ in primitives.sample
                ]
                if len(details) == 1:
                    saved = {"value_type": "ExecutionDetails", "name": "result", "value": details[0]}
                else:
                    saved = {"value_type": "MultipleExecutionDetails", "name": "result",
                             "value": MultipleExecutionDetails(details=details)}
            else:
                est = primitives.estimate
                observables = est.observables if isinstance(est.observables, list) else [est.observables]
                values = [
                    estimate(job["qasm"], op, job["shots"], job["seed"], est.sample_based)
                    for op in observables
                    for _ in est.parameters
                ]
                if len(values) == 1:
                    saved = {"value_type": "EstimationResult", "name": "result", "value": values[0]}
                else:
                    saved = {"value_type": "EstimationResults", "name": "result",
                             "value": EstimationResults(results=values)}
            result = ExecuteGeneratedCircuitResults(results=[saved])
            outcome = {"status": JobStatus.COMPLETED}
        except Exception as exc:  # noqa: BLE001 - a failed job, not a failed server
            result = None
            outcome = {"status": JobStatus.FAILED, "error": f"{type(exc).__name__}: {exc}"}
        with self.lock:
            if job["details"]["status"] in FINAL:
                return
            job["result"] = result
            job["details"].update(outcome, end_time=datetime.now(timezone.utc))

    def job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"execution job {job_id} not found")
        return job

    def cancel(self, job_id: str) -> None:
        job = self.job(job_id)
        with self.lock:
            if job["details"]["status"] in FINAL:
                raise HTTPError(400, f"job {job_id} is already {job['details']['status']}")
            job["details"]["status"] = JobStatus.CANCELLED
            job["details"]["end_time"] = datetime.now(timezone.utc)

    def rename(self, job_id: str, name: str) -> dict:
        job = self.job(job_id)
        with self.lock:
            job["details"]["name"] = name
        return self.details(job)

    def list(self, offset: int, limit: int) -> dict:
        with self.lock:
            ids = list(reversed(self.order))[offset : offset + limit]
            rows = [ExecutionJobDetails(**self.jobs[i]["details"]) for i in ids]
        return json.loads(ExecutionJobsQueryResults(results=rows).model_dump_json())

    def result_blob(self, job_id: str) -> bytes:
        job = self.job(job_id)
        if job["result"] is None:
            raise HTTPError(409, f"job {job_id} has no result ({job['details']['status']})")
        return job["result"].model_dump_json().encode()


def make_handler(service: Service):
    class Handler(JSONHandler):
        def do_DELETE(self) -> None:  # noqa: N802 - not a Classiq method: 501, as before
            self.send_error(501, f"Unsupported method ({self.command!r})")

        def _send(self, status: int, body: Any = None, raw: bytes | None = None) -> None:
            data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
            self._write(status, data)

        def _json_body(self) -> Any:
            data = self._body()
            if self.headers.get("Content-Type", "").startswith("application/json") and data:
                try:
                    return json.loads(data)
                except ValueError as exc:
                    raise HTTPError(400, f"invalid JSON: {exc}") from exc
            return data

        def _dispatch(self) -> None:
            method = self.command
            url = urlparse(self.path)
            path, query = url.path, parse_qs(url.query)
            service.requests.append(f"{method} {path}")
            try:
                body = self._json_body()
                if path.startswith("/_standin/"):
                    return self._control(method, path, body)
                if path.startswith("/blobs/") and method == "GET":
                    return self._send(200, raw=service.result_blob(path.removeprefix("/blobs/")))
                if not path.startswith(PREFIX):
                    raise HTTPError(404, f"unknown route {path}")
                if service.token is not None:
                    if self.headers.get("Authorization") != f"Bearer {service.token}":
                        raise HTTPError(401, "Unauthorized: missing or wrong access token")
                route = path.removeprefix(PREFIX)
                return self._route(method, route, query, body)
            except HTTPError as exc:
                return self._send(exc.status, {"detail": exc.detail})
            except ValidationError as exc:
                return self._send(422, {"detail": str(exc)})

        def _control(self, method: str, path: str, body: Any) -> None:
            if path == "/_standin/config" and method == "POST":
                if "delay" in body:
                    service.delay = float(body["delay"])
                return self._send(200, {"delay": service.delay})
            if path == "/_standin/state" and method == "GET":
                with service.lock:
                    state = {
                        "jobs": {i: str(j["details"]["status"]) for i, j in service.jobs.items()},
                        "sessions": {
                            i: {
                                "closed": s["closed"],
                                "preferences": json.loads(
                                    s["request"].execution_preferences.model_dump_json()
                                ),
                            }
                            for i, s in service.sessions.items()
                        },
                        "requests": list(service.requests),
                    }
                return self._send(200, state)
            raise HTTPError(404, f"unknown control route {path}")

        def _route(self, method: str, route: str, query: dict, body: Any) -> None:
            parts = [p for p in route.split("/") if p]
            if route == "/telemetry/otlp/v1/traces" and method == "POST":
                return self._send(200, {})
            if parts[:2] == ["execution", "sessions"]:
                if parts[2:] == ["openqasm"] and method == "POST":
                    return self._send(200, service.create_session(body))
                if len(parts) == 3 and method == "POST":
                    return self._send(200, service.submit(parts[2], body))
                if len(parts) == 4 and parts[3] == "close" and method == "POST":
                    with service.lock:
                        if parts[2] not in service.sessions:
                            raise HTTPError(404, f"execution session {parts[2]} not found")
                        service.sessions[parts[2]]["closed"] = True
                    return self._send(204)
            if parts[:2] == ["execution", "jobs"]:
                if len(parts) == 2 and method == "GET":
                    offset = int(query.get("offset", ["0"])[0])
                    limit = int(query.get("limit", ["50"])[0])
                    return self._send(200, service.list(offset, limit))
                if len(parts) == 3 and method == "GET":
                    return self._send(200, service.details(service.job(parts[2])))
                if len(parts) == 3 and method == "PATCH":
                    name = query.get("name", [None])[0]
                    if not name:
                        raise HTTPError(422, "query parameter 'name' is required")
                    return self._send(200, service.rename(parts[2], name))
                if len(parts) == 4 and parts[3] == "result" and method == "GET":
                    job = service.job(parts[2])
                    if job["result"] is None:
                        raise HTTPError(409, f"job {parts[2]} is {job['details']['status']}")
                    host, port = self.server.server_address[:2]
                    return self._send(200, {"url": f"http://{host}:{port}/blobs/{parts[2]}"})
                if len(parts) == 4 and parts[3] == "cancel" and method == "PUT":
                    service.cancel(parts[2])
                    return self._send(204)
            raise HTTPError(404, f"unknown route {method} {route}")

    return Handler


class Running:
    """A stand-in process (for fixtures): ``url``, ``configure(delay=)``, ``state()``, ``stop()``."""

    def __init__(self, token: str | None = None, delay: float = 0.05):
        import os

        command = [sys.executable, os.path.abspath(__file__), "--port", "0", "--delay", str(delay)]
        if token is not None:
            command += ["--token", token]
        self.process, port = start_port(command, "the Classiq stand-in")
        self.url = f"http://127.0.0.1:{port}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        response = httpx.request(method, self.url + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def configure(self, **settings: Any) -> Any:
        return self._call("POST", "/_standin/config", settings)

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_standin/state")

    def stop(self) -> None:
        stop(self.process, timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds a job stays RUNNING")
    args = parser.parse_args(argv)
    _import_qiskit()
    service = Service(token=args.token)
    service.delay = args.delay
    serve(make_server(make_handler(service), args.port), poll_interval=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
