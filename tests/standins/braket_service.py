"""Amazon Braket stand-in: the REST API the real ``amazon-braket-sdk`` (through boto3's
``braket`` client) calls, with task results written to S3 served by ``moto`` in server mode.

Test infrastructure, not product. The routes follow botocore's service model for ``braket``
(``botocore/data/braket/2019-09-01/service-2.json``, rest-json):

- ``POST /quantum-task`` (CreateQuantumTask, 201): an OpenQASM 3 ``action`` on a device, shots,
  ``outputS3Bucket``/``outputS3KeyPrefix``; idempotent by ``clientToken``.
- ``GET /quantum-task/{arn}`` (GetQuantumTask): status QUEUED -> RUNNING -> COMPLETED |
  FAILED, or CANCELLED; ``outputS3Directory``, ``failureReason``, ``queueInfo``.
- ``PUT /quantum-task/{arn}/cancel`` (CancelQuantumTask).
- ``POST /quantum-tasks`` (SearchQuantumTasks: filters on deviceArn, status, quantumTaskArn).
- ``GET /device/{arn}`` (GetDevice: capabilities JSON, status, queue depth) and
  ``POST /devices`` (SearchDevices).

Tasks run on Braket's own local simulators (amazon-braket-default-simulator: the state vector
one for SV1, TN1 and the QPUs, the density matrix one for DM1), so results are checkable; the
``results.json`` put under ``<prefix>/<task id>/`` in S3 is the simulator's
``GateModelTaskResult`` with the task's ARN, as Braket writes it.

Requests must carry a SigV4 ``Authorization`` header naming the stand-in's access key id
(the signature itself is not checked); others get 403 ``UnrecognizedClientException``.

Test controls (no auth) under ``/__standin__``: ``GET stats`` (tasks, requests); ``POST reset``;
``POST faults`` with any of ``{"http_errors": [{"method": "POST", "path": "regex", "codes":
[429, 429]}]}`` (the next matching requests get ThrottlingException or another error),
``{"fail_jobs": [{"message": ...}]}`` (the next tasks fail with this reason), ``{"hold_jobs":
true}`` (tasks stay QUEUED), ``{"job_delay": seconds}`` (tasks stay RUNNING so long),
``{"expire_credentials": true}`` (every request: 403 ExpiredTokenException),
``{"device_status": {"<arn>": "OFFLINE"}}``, ``{"queue_size": "17"}``, ``{"create_delay":
seconds}`` (CreateQuantumTask answers so late; ``stats`` reports ``peak_creates``, the most
creations in progress at once), ``{"drop_replies": {"method": "POST", "path": "regex", "rate":
0.1, "seed": 5, "skip": 0, "count": n}}`` (a matching request is carried out, then its 2xx
reply is lost: the connection closes without it; ``stats`` reports ``dropped`` and
``creates``, the tasks created, not counting a clientToken seen before).

Run (:class:`BraketStack` does this, after starting moto's server)::

    python tests/standins/braket_service.py --s3 http://127.0.0.1:<moto port> --access-key AKID

It prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from typing import Any
from urllib.parse import unquote

if __package__:
    from .http_base import CONTROL, FaultHandler, FaultState, bind, make_server
    from .http_base import serve as serve_http
    from .process import ControlChannel, read_until, stop
else:  # run as a script, or imported with tests/standins on sys.path
    from http_base import CONTROL, FaultHandler, FaultState, bind, make_server
    from http_base import serve as serve_http
    from process import ControlChannel, read_until, stop

REGION = "us-east-1"
ACCOUNT = "123456789012"
SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
DM1 = "arn:aws:braket:::device/quantum-simulator/amazon/dm1"
TN1 = "arn:aws:braket:::device/quantum-simulator/amazon/tn1"
FORTE = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"

#: The devices: arn -> (name, provider, type, qubits, simulator, shots range).
DEVICES: dict[str, dict[str, Any]] = {
    SV1: {"name": "SV1", "provider": "Amazon Braket", "type": "SIMULATOR", "qubits": 34,
          "simulator": "braket_sv", "shots": (0, 100_000)},
    DM1: {"name": "dm1", "provider": "Amazon Braket", "type": "SIMULATOR", "qubits": 17,
          "simulator": "braket_dm", "shots": (0, 100_000)},
    TN1: {"name": "TN1", "provider": "Amazon Braket", "type": "SIMULATOR", "qubits": 50,
          "simulator": "braket_sv", "shots": (1, 100_000)},
    FORTE: {"name": "Forte 1", "provider": "IonQ", "type": "QPU", "qubits": 36,
            "simulator": "braket_sv", "shots": (1, 10_000)},
}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def _now() -> str:
    # Braket's timestamps: milliseconds (its result schema allows 24 characters)
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def capabilities(arn: str) -> str:
    """The device's capabilities JSON: the local simulator's, with the device's qubits and
    shots range (a stand-in's QPU keeps the simulator schema)."""
    from braket.devices import LocalSimulator

    device = DEVICES[arn]
    props = json.loads(LocalSimulator(device["simulator"]).properties.json())
    props["paradigm"]["qubitCount"] = device["qubits"]
    props["service"]["shotsRange"] = list(device["shots"])
    return json.dumps(props)


def _complex_lists(value: Any) -> Any:
    """Complex arrays as Braket's JSON writes them: [re, im] pairs."""
    import numpy as np

    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, list):
        return [_complex_lists(v) for v in value]
    return value


class State(FaultState):
    """Everything the stand-in remembers; one condition lock guards it."""

    def __init__(self, s3_endpoint: str, access_key: str) -> None:
        super().__init__(workers=8)
        import boto3

        self.access_key = access_key
        # moto accepts any credentials; these are the stand-in's own, not the client's.
        self.s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION,
                               aws_access_key_id="standin", aws_secret_access_key="standin")
        self.simulators: dict[str, Any] = {}
        self.reset()

    def clear(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.tokens: dict[str, str] = {}
        self.expired = False
        self.device_status = {arn: "ONLINE" for arn in DEVICES}
        self.queue_size = "0"
        self.create_delay = 0.0
        self.creating = 0
        self.peak_creates = 0
        self.creates = 0

    def simulate(self, arn: str, source: str, shots: int) -> dict:
        from braket.default_simulator import DensityMatrixSimulator, StateVectorSimulator
        from braket.ir.openqasm import Program

        kind = DEVICES[arn]["simulator"]
        simulator = DensityMatrixSimulator() if kind == "braket_dm" else StateVectorSimulator()
        result = simulator.run(Program(source=source), shots=shots)
        data = json.loads(result.json(exclude={"resultTypes"}, exclude_none=True))
        for key in ("measurements", "measuredQubits"):
            if not data.get(key):
                data.pop(key, None)  # exact results: result types only (the schema wants >= 1)
        data["resultTypes"] = [
            {"type": json.loads(r.type.json()), "value": _complex_lists(r.value)}
            for r in (result.resultTypes or [])
        ]
        return data

    def run_task(self, task_id: str) -> None:
        with self.lock:
            task = self.jobs.get(task_id)
            if task is None or task["status"] != "QUEUED":
                return
            self.wait_while_held(task_id, "QUEUED")
            if task["status"] != "QUEUED":
                return
            task["status"] = "RUNNING"
            failure = self.fail_jobs.pop(0) if self.fail_jobs else None
            delay = self.job_delay
        started = time.monotonic()
        output, reason = None, None
        try:
            if failure is not None:
                reason = failure.get("message", "the task failed")
            else:
                action = json.loads(task["action"])
                output = self.simulate(task["deviceArn"], action["source"], task["shots"])
        except Exception as exc:  # the task fails; the client reads failureReason
            reason = f"{type(exc).__name__}: {exc}"
        remaining = delay - (time.monotonic() - started) if reason is None else 0.0
        with self.lock:
            if not self.linger(task, "RUNNING", remaining):  # cancelled meanwhile
                return
        if output is not None:
            output["taskMetadata"].update(id=task["quantumTaskArn"], deviceId=task["deviceArn"],
                                          shots=task["shots"], createdAt=task["createdAt"],
                                          endedAt=_now(), status="COMPLETED")
            key = f"{task['outputS3Directory']}/results.json"
            self.s3.put_object(Bucket=task["outputS3Bucket"], Key=key,
                               Body=json.dumps(output).encode())
        with self.lock:
            if task["status"] != "RUNNING":
                return
            task["status"] = "COMPLETED" if reason is None else "FAILED"
            if reason is not None:
                task["failureReason"] = reason
            task["endedAt"] = _now()
            self.lock.notify_all()


# -- HTTP -------------------------------------------------------------------------------------


class Handler(FaultHandler):
    server_version = "qfleet-braket-standin/1"
    state: State
    fault_path_match = staticmethod(re.search)

    def _send(self, status: int, body: Any = None, error: str | None = None) -> None:
        if self._reply_lost(status, unquote(self.path.split("?")[0])):
            self.close_connection = True  # the client sees the connection end, no reply
            return
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if error:
            headers["x-amzn-ErrorType"] = error
        self._write(status, data, "application/json", headers)
        if not unquote(self.path).startswith(CONTROL):
            with self.state.lock:
                self.state.requests.append((self.command, unquote(self.path.split("?")[0]),
                                            status))

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"message": message}, error=code)

    def _not_found(self, message: str) -> None:
        self._error(404, "ResourceNotFoundException", message)

    def _crashed(self, exc: Exception) -> None:
        self._error(500, "InternalServiceException", f"stand-in error: {type(exc).__name__}")

    def _injected(self, status: int, retry_after: Any) -> None:
        code = {429: "ThrottlingException", 500: "InternalServiceException",
                503: "ServiceUnavailable"}.get(status, "InjectedError")
        self._error(status, code, "Rate exceeded" if status == 429 else f"injected {status}")

    def _route(self, path: str, query: dict, body: bytes) -> None:
        path = unquote(path)
        if not self._authorized():
            return None
        if path == "/quantum-task" and self.command == "POST":
            return self._create(json.loads(body or b"{}"))
        if path == "/quantum-tasks" and self.command == "POST":
            return self._search_tasks(json.loads(body or b"{}"))
        if path == "/devices" and self.command == "POST":
            return self._search_devices(json.loads(body or b"{}"))
        if path.startswith("/device/") and self.command == "GET":
            return self._device(path[len("/device/"):])
        match = re.fullmatch(r"/quantum-task/(.+?)(/cancel)?", path)
        if match and self.command == "GET" and not match[2]:
            return self._get(match[1])
        if match and self.command == "PUT" and match[2]:
            return self._cancel(match[1])
        return self._error(404, "ResourceNotFoundException", f"no route {self.command} {path}")

    def _authorized(self) -> bool:
        state = self.state
        found = _CREDENTIAL.search(self.headers.get("Authorization", ""))
        if found is None:
            self._error(403, "MissingAuthenticationTokenException",
                        "Missing Authentication Token")
            return False
        if found[1] != state.access_key:
            self._error(403, "UnrecognizedClientException",
                        "The security token included in the request is invalid.")
            return False
        if state.expired:
            self._error(403, "ExpiredTokenException",
                        "The security token included in the request is expired")
            return False
        return True

    # -- tasks ------------------------------------------------------------------------------

    def _create(self, request: dict) -> None:
        state = self.state
        with state.lock:
            state.creating += 1
            state.peak_creates = max(state.peak_creates, state.creating)
            delay = state.create_delay
        try:
            time.sleep(delay)  # a slow CreateQuantumTask: concurrent calls overlap
            return self._create_task(request)
        finally:
            with state.lock:
                state.creating -= 1

    def _create_task(self, request: dict) -> None:
        state = self.state
        for field in ("clientToken", "deviceArn", "shots", "outputS3Bucket",
                      "outputS3KeyPrefix", "action"):
            if field not in request:
                return self._error(400, "ValidationException", f"{field} is required")
        arn = request["deviceArn"]
        device = DEVICES.get(arn)
        if device is None:
            return self._error(400, "ValidationException", f"Device {arn} does not exist")
        shots = int(request["shots"])
        low, high = device["shots"]
        if not low <= shots <= high:
            return self._error(400, "ValidationException",
                               f"Device {arn} supports shots in [{low}, {high}], got {shots}")
        action = json.loads(request["action"])
        if action.get("braketSchemaHeader", {}).get("name") != "braket.ir.openqasm.program":
            return self._error(400, "ValidationException", "action must be an OpenQASM program")
        with state.lock:
            if state.device_status[arn] != "ONLINE":
                return self._error(424, "DeviceOfflineException", f"Device {arn} is offline")
            known = state.tokens.get(request["clientToken"])
            if known is not None:  # a retried request: the same task
                return self._send(201, {"quantumTaskArn": state.jobs[known]["quantumTaskArn"]})
            task_id = str(uuid.uuid4())
            region = arn.split(":")[3] or REGION
            prefix = request["outputS3KeyPrefix"].rstrip("/")
            task = {
                "quantumTaskArn": f"arn:aws:braket:{region}:{ACCOUNT}:quantum-task/{task_id}",
                # Braket's CREATED lasts moments; queued at once, so tests see one state
                "status": "QUEUED", "deviceArn": arn, "shots": shots,
                "deviceParameters": request.get("deviceParameters") or "{}",
                "outputS3Bucket": request["outputS3Bucket"],
                "outputS3Directory": f"{prefix}/{task_id}" if prefix else task_id,
                "createdAt": _now(), "tags": request.get("tags") or {},
                "action": request["action"],
            }
            state.jobs[task_id] = task
            state.tokens[request["clientToken"]] = task_id
            state.creates += 1
        state.pool.submit(state.run_task, task_id)
        return self._send(201, {"quantumTaskArn": task["quantumTaskArn"]})

    def _task(self, arn: str) -> dict | None:
        task = self.state.jobs.get(arn.rsplit("/", 1)[-1])
        return task if task is not None and task["quantumTaskArn"] == arn else None

    @staticmethod
    def _public(task: dict, summary: bool = False) -> dict:
        keys = ["quantumTaskArn", "status", "deviceArn", "shots", "outputS3Bucket",
                "outputS3Directory", "createdAt", "endedAt", "tags"]
        if not summary:
            keys += ["deviceParameters", "failureReason"]
        return {k: task[k] for k in keys if task.get(k) is not None}

    def _get(self, arn: str) -> None:
        with self.state.lock:
            task = self._task(arn)
            if task is None:
                return self._not_found(f"Quantum task {arn} not found")
            body = self._public(task)
            if task["status"] == "QUEUED":
                body["queueInfo"] = {"queue": "QUANTUM_TASKS_QUEUE", "position": "1",
                                     "queuePriority": "Normal"}
        return self._send(200, body)

    def _cancel(self, arn: str) -> None:
        state = self.state
        with state.lock:
            task = self._task(arn)
            if task is None:
                return self._not_found(f"Quantum task {arn} not found")
            if task["status"] in TERMINAL:
                return self._error(409, "ConflictException",
                                   f"Quantum task {arn} is {task['status']}")
            task["status"] = "CANCELLED"
            task["endedAt"] = _now()
            state.lock.notify_all()
        return self._send(200, {"quantumTaskArn": arn, "cancellationStatus": "CANCELLED"})

    def _search_tasks(self, request: dict) -> None:
        with self.state.lock:
            tasks = [self._public(t, summary=True) for t in self.state.jobs.values()]
        for rule in request.get("filters", []):
            values = rule.get("values", [])
            if rule.get("operator", "EQUAL") == "EQUAL":
                tasks = [t for t in tasks if str(t.get(rule["name"])) in values]
        return self._send(200, {"quantumTasks": tasks})

    # -- devices ----------------------------------------------------------------------------

    def _device_summary(self, arn: str) -> dict:
        device = DEVICES[arn]
        return {"deviceArn": arn, "deviceName": device["name"],
                "providerName": device["provider"], "deviceType": device["type"],
                "deviceStatus": self.state.device_status[arn]}

    def _device(self, arn: str) -> None:
        if arn not in DEVICES:
            return self._not_found(f"Braket device {arn} not found")
        with self.state.lock:
            body = self._device_summary(arn)
            size = self.state.queue_size
        body["deviceCapabilities"] = capabilities(arn)
        body["deviceQueueInfo"] = [
            {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": size, "queuePriority": "Normal"},
            {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": "0", "queuePriority": "Priority"},
            {"queue": "JOBS_QUEUE", "queueSize": "0"},
        ]
        return self._send(200, body)

    def _search_devices(self, request: dict) -> None:
        with self.state.lock:
            devices = [self._device_summary(arn) for arn in DEVICES]
        for rule in request.get("filters", []):
            devices = [d for d in devices if str(d.get(rule["name"])) in rule.get("values", [])]
        return self._send(200, {"devices": devices})

    # -- controls ---------------------------------------------------------------------------

    def _stats(self) -> dict:
        tasks = [{**self._public(t), "id": t["quantumTaskArn"]}
                 for t in self.state.jobs.values()]
        return {"jobs": tasks, "requests": self.state.requests,
                "peak_creates": self.state.peak_creates, "dropped": self.state.dropped,
                "creates": self.state.creates}

    def _more_faults(self, faults: dict) -> None:
        state = self.state
        if "expire_credentials" in faults:
            state.expired = bool(faults["expire_credentials"])
        state.device_status.update(faults.get("device_status", {}))
        if "queue_size" in faults:
            state.queue_size = str(faults["queue_size"])
        if "create_delay" in faults:
            state.create_delay = float(faults["create_delay"])


def serve(s3_endpoint: str, access_key: str, port: int = 0) -> None:
    state = State(s3_endpoint, access_key)
    state.simulate(SV1, "OPENQASM 3.0;\nqubit[1] q;\nh q[0];\n", 1)  # imports before tasks
    server = make_server(bind(Handler, state), port)
    serve_http(server, sigterm=True, cleanup=lambda: state.pool.shutdown(cancel_futures=True))


# -- the stack: moto's S3 server + this stand-in, for tests ------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BraketStack(ControlChannel):
    """moto's server (S3) and the Braket stand-in, each its own process on loopback ports.

    ``executor_fields`` are what a BraketExecutor needs to talk to them (dummy credentials).
    """

    ACCESS_KEY = "AKIAQFLEETSTANDIN001"
    SECRET_KEY = "standin/secret+access+key/0123456789abcdefghij"
    SESSION_TOKEN = "standin-session-token-FwoGZXIvYXdzEJr"
    BUCKET = "amazon-braket-qfleet-tests"

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.port = 0
        self.s3 = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def executor_fields(self) -> dict[str, Any]:
        return {"endpoint_url": self.base, "s3_endpoint_url": self.s3, "region": REGION,
                "s3_bucket": self.BUCKET, "aws_access_key_id": self.ACCESS_KEY,
                "aws_secret_access_key": self.SECRET_KEY,
                "aws_session_token": self.SESSION_TOKEN, "poll_interval": 0.2}

    def config_toml(self, **fields: Any) -> str:
        """A qfleet config file whose default executor is a BraketExecutor on this stack
        (for ``qml.device("qfleet.local")`` and pl-device-test)."""
        lines = ['[qfleet]', 'executors = ["BraketExecutor"]', '[executors.BraketExecutor]']
        for key, value in {**self.executor_fields, **fields}.items():
            lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"

    def start(self) -> BraketStack:
        port = _free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.processes.append(moto)
        read_until(moto, r"Running on http://127\.0\.0\.1:\d+", 60, "moto")
        self.s3 = f"http://127.0.0.1:{port}"
        import boto3

        boto3.client("s3", endpoint_url=self.s3, region_name=REGION,
                     aws_access_key_id="test", aws_secret_access_key="test"
                     ).create_bucket(Bucket=self.BUCKET)
        standin = subprocess.Popen(
            [sys.executable, __file__, "--s3", self.s3, "--access-key", self.ACCESS_KEY],
            stdout=subprocess.PIPE, stderr=None, text=True,
        )
        self.processes.append(standin)
        self.port = int(read_until(standin, r"^PORT (\d+)", 120, "braket-standin")[1])
        return self

    def objects(self) -> list[str]:
        """Keys in the results bucket."""
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3, region_name=REGION,
                          aws_access_key_id="test", aws_secret_access_key="test")
        listing = s3.list_objects_v2(Bucket=self.BUCKET)
        return [o["Key"] for o in listing.get("Contents", [])]

    def stop(self) -> None:
        stop(*self.processes)
        self.processes.clear()

    def __enter__(self) -> BraketStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--s3", required=True, help="S3 endpoint (moto server) for results")
    parser.add_argument("--access-key", required=True, help="the access key id clients sign with")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    serve(args.s3, args.access_key, args.port)


if __name__ == "__main__":
    main()
