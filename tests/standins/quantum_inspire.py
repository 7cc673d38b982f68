"""A stand-in for Quantum Inspire's compute API (the "compute job manager"), for tests (not
product).

Run as its own process: ``python tests/standins/quantum_inspire.py [--port 0] [--token T]
[--refresh-token R] [--seed S]``;
it prints ``PORT <n>`` once it listens on 127.0.0.1. Point the real ``qi-compute-api-client``
(``compute_api_client.Configuration(host="http://127.0.0.1:<n>")``) at it.

It serves the REST calls qi-compute-api-client 0.64 makes for running cQASM 3 programs (the
paths, query parameters and bodies of ``compute_api_client/api/*.py``; replies are the
client's own models as JSON, pages as fastapi-pagination ``{items, total, page, size,
pages}``; creations answer 201, as the client's response maps expect):

- ``GET /backend_types/`` (no sign-in), ``GET /backend_types/{id}[/queue]``,
  ``GET /languages``,
  ``GET /members``, ``GET /healthz``
- ``POST /projects``, ``/algorithms``, ``/commits``, ``/files``, ``/batch_jobs``, ``/jobs``
- ``PATCH /batch_jobs/{id}/enqueue`` (the batch runs), ``GET /batch_jobs``,
  ``GET /jobs``, ``GET /jobs/{id}``, ``PATCH /jobs/{id}`` (cancel a planned job),
  ``GET /results/job/{job_id}``
- an OpenID provider for the ``quantuminspire`` SDK's token refresh:
  ``GET /realms/qi/.well-known/openid-configuration``, ``POST /realms/qi/token``
  (``grant_type=refresh_token``, rotating the refresh token).

Everything but the backend types, health and the OpenID provider needs
``Authorization: Bearer <access token>`` (HTTP 401 ``{"detail": ...}`` otherwise, as the real
FastAPI service answers). Programs are checked with libqasm against the backend type's gate
set and topology and simulated with qxelarator (the QX emulator), seeded by job id; results
are counts keyed by bitstring, ``b[n-1]...b[0]``.

Test controls (``/__standin__/``, see :mod:`http_base`): ``stats`` (jobs, batch jobs, files,
requests, tokens issued), ``reset``, ``faults`` with ``hold_jobs`` (jobs stay planned),
``job_delay``, ``fail_jobs``, ``http_errors``, plus ``backend_status {"id", "status"}`` and
``expire_tokens`` (every access token stops working; refresh tokens still do).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import secrets
import time
import traceback
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

if __package__:
    from .http_base import FaultHandler, FaultState, bind, make_server, serve
else:  # run as a script, or imported with tests/standins on sys.path
    from http_base import FaultHandler, FaultState, bind, make_server, serve

TOKEN = "qi-standin-access-token"
REFRESH_TOKEN = "qi-standin-refresh-token"
MEMBER_ID = 7
REALM = "/realms/qi"

_ALL_GATES = ["H", "I", "X", "Y", "Z", "S", "Sdag", "T", "Tdag", "X90", "mX90", "Y90", "mY90",
              "Rx", "Ry", "Rz", "CNOT", "CZ", "CR", "SWAP", "measure_z", "prep_z", "barrier"]
_NATIVE = ["X90", "mX90", "Y90", "mY90", "Rz", "CZ", "measure_z", "prep_z", "barrier"]


def _both(edges: list[tuple[int, int]]) -> list[list[int]]:
    return [list(e) for a, b in edges for e in ((a, b), (b, a))]


def _backend_type(id_: int, name: str, nqubits: int, gateset: list[str], topology, *,
                  hardware: bool, status: str = "idle", max_shots: int = 100_000,
                  default_shots: int = 1024) -> dict[str, Any]:
    return {
        "id": id_, "name": name, "infrastructure": "QuTech" if hardware else "Cloud",
        "description": f"{name} (qfleet stand-in)", "image_id": f"standin-{id_}",
        "is_hardware": hardware, "supports_raw_data": True, "features": ["multiple_measurements"],
        "default_compiler_config": {}, "gateset": gateset, "topology": topology,
        "nqubits": nqubits, "status": status, "messages": {}, "default_number_of_shots":
        default_shots, "max_number_of_shots": max_shots, "enabled": True, "identifier":
        name.lower().replace(" ", "-"), "protocol_version": 3, "job_execution_time_limit": 300.0,
        "max_jobs_per_batch_job": 200, "batchjobs_per_queue_limit": 10,
    }


def backend_types() -> list[dict[str, Any]]:
    """The emulator (every gate, all-to-all), a 5-qubit star chip and a 7-qubit line chip
    (both X90/mX90/Y90/mY90/Rz/CZ), shaped as Quantum Inspire publishes its backends."""
    full = [[a, b] for a in range(8) for b in range(8) if a != b]
    return [
        _backend_type(1, "QX emulator", 8, _ALL_GATES, full, hardware=False),
        _backend_type(2, "Tuna-5", 5, _NATIVE, _both([(0, 2), (1, 2), (3, 2), (4, 2)]),
                      hardware=True, max_shots=4096),
        _backend_type(3, "Starmon-7", 7, _NATIVE, _both([(i, i + 1) for i in range(6)]),
                      hardware=True, max_shots=4096),
    ]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class HTTPError(Exception):
    def __init__(self, status: int, detail: Any):
        super().__init__(str(detail))
        self.status, self.detail = status, detail


class State(FaultState):
    """Everything the stand-in remembers; one lock guards it."""

    def __init__(self, token: str, refresh_token: str, seed: int) -> None:
        super().__init__(workers=2)
        self.initial_token, self.initial_refresh = token, refresh_token
        self.seed = seed
        self._simulators: dict[int, Any] = {}
        self.reset()

    def clear(self) -> None:
        self.access_tokens: dict[str, float] = {self.initial_token: math.inf}  # token -> expiry
        self.refresh_tokens: set[str] = {self.initial_refresh}
        self.tokens_issued = 0
        self.backend_types = {b["id"]: b for b in backend_types()}
        self.next_id = 1
        self.tables: dict[str, dict[int, dict]] = {
            name: {} for name in ("projects", "algorithms", "commits", "files", "batch_jobs",
                                  "results")
        }
        self.jobs: dict[int, dict] = {}

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    # -- tokens -------------------------------------------------------------------------

    def issue_tokens(self, lifetime: int = 300) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens[access] = time.time() + lifetime
        self.refresh_tokens.add(refresh)
        self.tokens_issued += 1
        return {"access_token": access, "expires_in": lifetime, "refresh_token": refresh,
                "refresh_expires_in": 1800, "token_type": "Bearer"}

    def valid(self, token: str) -> bool:
        return self.access_tokens.get(token, 0.0) > time.time()

    # -- running jobs ---------------------------------------------------------------------

    def simulator(self, backend_type_id: int):
        sim = self._simulators.get(backend_type_id)
        if sim is None:
            from qfleet.protocols.p2300.emulator import Simulator

            bt = self.backend_types[backend_type_id]
            gates = None if not bt["is_hardware"] else bt["gateset"]
            edges = None if not bt["is_hardware"] else [tuple(e) for e in bt["topology"]]
            sim = self._simulators[backend_type_id] = Simulator(bt["nqubits"], gates, edges)
        return sim

    def run_batch(self, batch_id: int) -> None:
        with self.lock:
            batch = self.tables["batch_jobs"][batch_id]
            for job_id in batch["job_ids"]:
                self.wait_while_held(job_id, "planned")
            batch["status"], batch["reserved_at"] = "running", _now()
            job_ids = list(batch["job_ids"])
        for job_id in job_ids:
            self.run_job(job_id, batch["backend_type_id"])
        with self.lock:
            batch["status"], batch["finished_at"] = "finished", _now()
            self.lock.notify_all()

    def run_job(self, job_id: int, backend_type_id: int) -> None:
        from qfleet.protocols.p2300.emulator import CircuitError
        from qfleet.protocols.p2300.messages import ExecutePayload

        with self.lock:
            job = self.jobs[job_id]
            if job["status"] != "planned":
                return  # cancelled
            job["status"] = "running"
            failure = self.fail_jobs.pop(0) if self.fail_jobs else None
            delay = self.job_delay
            program = self.tables["files"][job["file_id"]]["content"]
        started = time.monotonic()
        result, error = None, None
        try:
            if failure is not None:
                raise CircuitError(str(failure))
            payload = ExecutePayload(job_id=job_id, circuit=program,
                                     number_of_shots=job["number_of_shots"],
                                     include_raw_data=job["raw_data_enabled"])
            result = self.simulator(backend_type_id).run(payload, seed=self.seed + job_id)
        except CircuitError as exc:
            error = str(exc)
        except Exception as exc:
            traceback.print_exc()
            error = f"simulation failed: {type(exc).__name__}: {exc}"
        seconds = time.monotonic() - started
        with self.lock:
            if not self.linger(job, "running", delay - seconds):
                return
            job["finished_at"] = _now()
            if error is not None:
                job.update(status="failed", message=error, trace_id=str(uuid.uuid4()),
                           source="qxelarator")
            else:
                assert result is not None
                rid = self.new_id()
                self.tables["results"][rid] = {
                    "id": rid, "created_on": _now(), "job_id": job_id,
                    "execution_time_in_seconds": seconds,
                    "shots_requested": job["number_of_shots"],
                    "shots_done": sum(result.results.values()),
                    "results": dict(result.results), "raw_data": result.raw_data,
                }
                job["status"] = "completed"
            self.lock.notify_all()


def _page(items: list[dict], query: dict[str, list[str]]) -> dict[str, Any]:
    page = int(query.get("page", ["1"])[0])
    size = int(query.get("size", ["50"])[0])
    chunk = items[(page - 1) * size: page * size]
    return {"items": chunk, "total": len(items), "page": page, "size": size,
            "pages": math.ceil(len(items) / size) if items else 0}


_PAGING = {"page", "size", "sort_by", "latest", "q"}


def _filtered(rows: list[dict], query: dict[str, list[str]]) -> list[dict]:
    for key, values in query.items():
        if key in _PAGING:
            continue
        rows = [r for r in rows if key in r and str(r[key]).lower() == values[0].lower()]
    if query.get("sort_by", [""])[0].startswith("-"):
        rows = rows[::-1]
    return rows


class Handler(FaultHandler):
    server_version = "qfleet-qi-standin/1"
    state: State

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self._write(status, data)
        with self.state.lock:
            self.state.requests.append((self.command, urlparse(self.path).path, status))

    def _not_found(self, message: str) -> None:
        self._send(404, {"detail": message})

    def _crashed(self, exc: Exception) -> None:
        self._send(500, {"detail": f"stand-in error: {type(exc).__name__}: {exc}"})

    def _injected(self, status: int, retry_after: Any) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        self._write(status, json.dumps({"detail": f"injected error {status}"}).encode(),
                    headers=headers)

    def _stats(self) -> dict:
        state = self.state
        return {"jobs": list(state.jobs.values()),
                "batch_jobs": list(state.tables["batch_jobs"].values()),
                "files": list(state.tables["files"].values()),
                "projects": list(state.tables["projects"].values()),
                "requests": state.requests, "tokens_issued": state.tokens_issued,
                "backend_types": list(state.backend_types.values())}

    def _more_faults(self, faults: dict) -> None:
        change = faults.get("backend_status")
        if change:
            self.state.backend_types[int(change["id"])]["status"] = change["status"]
        if faults.get("expire_tokens"):
            for token in self.state.access_tokens:
                self.state.access_tokens[token] = 0.0

    # -- routing ----------------------------------------------------------------------------

    def _route(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        try:
            if path.startswith(REALM):
                return self._identity(parts[2:], body)
            if parts in (["healthz"],):
                return self._send(200, {})
            if parts == ["backend_types"] and self.command == "GET":
                with self.state.lock:
                    rows = _filtered(list(self.state.backend_types.values()), query)
                    return self._send(200, _page(rows, query))
            self._authorize()
            with self.state.lock:
                status, reply = self._service(self.command, parts, query, body)
            return self._send(status, reply)
        except HTTPError as exc:
            return self._send(exc.status, {"detail": exc.detail})

    def _authorize(self) -> None:
        header = self.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        with self.state.lock:
            if not token or not self.state.valid(token):
                raise HTTPError(401, "Could not validate credentials" if token
                                else "Not authenticated")

    def _identity(self, rest: list[str], body: bytes) -> None:
        base = f"http://127.0.0.1:{self.server.server_address[1]}{REALM}"
        if rest == [".well-known", "openid-configuration"]:
            return self._send(200, {"issuer": base, "token_endpoint": f"{base}/token",
                                    "device_authorization_endpoint": f"{base}/device",
                                    "revocation_endpoint": f"{base}/revoke"})
        if rest == ["token"] and self.command == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            with self.state.lock:
                if (form.get("grant_type") != "refresh_token"
                        or form.get("refresh_token") not in self.state.refresh_tokens):
                    return self._send(400, {"error": "invalid_grant",
                                            "error_description": "Token is not active"})
                self.state.refresh_tokens.discard(form["refresh_token"])  # rotated
                return self._send(200, self.state.issue_tokens())
        return self._not_found(f"no identity route {rest}")

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            raise HTTPError(422, f"body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise HTTPError(422, "body must be a JSON object")
        return data

    def _require(self, data: dict, *fields: str) -> None:
        missing = [f for f in fields if f not in data]
        if missing:
            raise HTTPError(422, [{"loc": ["body", f], "msg": "Field required",
                                   "type": "missing"} for f in missing])

    def _get(self, table: str, id_: str) -> dict:
        row = self.state.tables[table].get(int(id_))
        if row is None:
            raise HTTPError(404, f"{table[:-1]} {id_} not found")
        return row

    def _service(self, method: str, parts: list[str], query: dict,
                 body: bytes) -> tuple[int, Any]:
        state = self.state
        tables = state.tables
        head = parts[0] if parts else ""
        if method == "GET" and head == "backend_types" and parts[2:] == ["queue"]:
            waiting = [b for b in tables["batch_jobs"].values()
                       if b["backend_type_id"] == int(parts[1]) and b["status"] == "queued"]
            return 200, {"number_of_jobs_in_queue": len(waiting), "min_wait_time_in_queue_secs":
                         0.0, "avg_wait_time_in_queue_secs": 0.0,
                         "max_wait_time_in_queue_secs": 0.0}
        if method == "GET" and head == "backend_types" and len(parts) == 2:
            bt = state.backend_types.get(int(parts[1]))
            if bt is None:
                raise HTTPError(404, f"backend type {parts[1]} not found")
            return 200, bt
        if method == "GET" and parts == ["languages"]:
            return 200, _page([{"id": 1, "name": "cQASM", "version": "3.0"},
                               {"id": 2, "name": "Python", "version": "3.11"}], query)
        if method == "GET" and parts == ["members"]:
            return 200, _page([{"id": MEMBER_ID, "team_id": 3, "user_id": 11,
                                "role": "member", "is_active": True}], query)
        if method == "POST" and len(parts) == 1 and head in ("projects", "algorithms",
                                                            "commits", "files"):
            data = self._json(body)
            required = {"projects": ("owner_id", "name", "description"),
                        "algorithms": ("project_id", "type", "shared", "name"),
                        "commits": ("description", "algorithm_id"),
                        "files": ("commit_id", "content", "language_id", "compile_stage",
                                  "compile_properties")}[head]
            self._require(data, *required)
            if head == "projects" and data["owner_id"] != MEMBER_ID:
                raise HTTPError(403, f"member {data['owner_id']} is not yours")
            row = {**data, "id": state.new_id()}
            if head == "projects":
                row.update(created_on=_now(), starred=data.get("starred", False))
            if head == "algorithms":
                self._get("projects", data["project_id"])
                row.setdefault("link", None)
            if head == "commits":
                self._get("algorithms", data["algorithm_id"])
                row.update(created_on=_now(), hash=uuid.uuid4().hex)
            if head == "files":
                self._get("commits", data["commit_id"])
                row.update(generated=data.get("generated", False), name=data.get("name"))
            tables[head][row["id"]] = row
            return 201, row
        if method == "POST" and parts == ["batch_jobs"]:
            data = self._json(body)
            self._require(data, "backend_type_id")
            if data["backend_type_id"] not in state.backend_types:
                raise HTTPError(404, f"backend type {data['backend_type_id']} not found")
            row = {"id": state.new_id(), "created_on": _now(), "status": "planned",
                   "user_id": 11, "backend_type_id": data["backend_type_id"],
                   "backend_id": None, "queued_at": None, "reserved_at": None,
                   "finished_at": None, "job_ids": [], "aggregated_algorithm_type": "quantum"}
            tables["batch_jobs"][row["id"]] = row
            return 201, row
        if method == "PATCH" and head == "batch_jobs" and parts[2:] == ["enqueue"]:
            batch = self._get("batch_jobs", parts[1])
            if batch["status"] != "planned":
                raise HTTPError(400, f"batch job {batch['id']} is {batch['status']}, not planned")
            batch.update(status="queued", queued_at=_now())
            state.pool.submit(state.run_batch, batch["id"])
            return 200, batch
        if method == "GET" and parts == ["batch_jobs"]:
            return 200, _page(_filtered(list(tables["batch_jobs"].values()), query), query)
        if method == "POST" and parts == ["jobs"]:
            data = self._json(body)
            self._require(data, "file_id", "batch_job_id")
            file = self._get("files", data["file_id"])
            batch = self._get("batch_jobs", data["batch_job_id"])
            if batch["status"] != "planned":
                raise HTTPError(400, f"batch job {batch['id']} was already enqueued")
            bt = state.backend_types[batch["backend_type_id"]]
            shots = data.get("number_of_shots") or bt["default_number_of_shots"]
            if shots > bt["max_number_of_shots"]:
                raise HTTPError(422, f"number_of_shots {shots} exceeds the maximum "
                                     f"{bt['max_number_of_shots']} of {bt['name']}")
            job = {"id": state.new_id(), "created_on": _now(), "file_id": file["id"],
                   "algorithm_type": "quantum", "status": "planned",
                   "batch_job_id": batch["id"], "queued_at": None, "finished_at": None,
                   "number_of_shots": shots,
                   "raw_data_enabled": bool(data.get("raw_data_enabled")),
                   "session_id": str(uuid.uuid4()), "trace_id": "", "message": "",
                   "source": ""}
            state.jobs[job["id"]] = job
            batch["job_ids"].append(job["id"])
            return 201, job
        if method == "GET" and parts == ["jobs"]:
            return 200, _page(_filtered(list(state.jobs.values()), query), query)
        if head == "jobs" and len(parts) == 2:
            job = state.jobs.get(int(parts[1]))
            if job is None:
                raise HTTPError(404, f"job {parts[1]} not found")
            if method == "GET":
                return 200, job
            if method == "PATCH":
                data = self._json(body)
                self._require(data, "status")
                if data["status"] != "cancelled":
                    raise HTTPError(403, "users may only cancel jobs")
                if job["status"] != "planned":
                    raise HTTPError(400, f"job {job['id']} is {job['status']}; only planned "
                                         f"jobs can be cancelled")
                job.update(status="cancelled", message=data.get("message", ""),
                           finished_at=_now())
                state.lock.notify_all()
                return 200, job
        if method == "GET" and parts[:2] == ["results", "job"] and len(parts) == 3:
            rows = [r for r in tables["results"].values() if r["job_id"] == int(parts[2])]
            return 200, _page(rows, query)
        raise HTTPError(404, f"no route {method} /{'/'.join(parts)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--refresh-token", default=REFRESH_TOKEN)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    state = State(args.token, args.refresh_token, args.seed)
    for backend_type_id in state.backend_types:  # libqasm and qxelarator load before serving
        state.simulator(backend_type_id)
    server = make_server(bind(Handler, state), args.port)
    serve(server, sigterm=True,
          cleanup=lambda: state.pool.shutdown(wait=False, cancel_futures=True))


if __name__ == "__main__":
    main()
