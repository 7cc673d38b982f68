"""IBM Quantum Platform stand-in: the REST endpoints the real ``QiskitRuntimeService`` calls.

Test infrastructure, not product. Run as its own process (in-process servers crashed qiskit
in threads)::

    python tests/standins/ibm_runtime.py --port 0 [--api-key KEY]

It prints ``PORT <n>`` once listening. Point the SDK at it with::

    IAM_URL=http://127.0.0.1:<n>                    (IBM Cloud IAM: API key -> JWT)
    GLOBAL_SEARCH_URL=http://127.0.0.1:<n>          (instance search)
    GLOBAL_CATALOG_URL=http://127.0.0.1:<n>/catalog (instance plan)
    QiskitRuntimeService(token=KEY, url="http://127.0.0.1:<n>/api/v1",
                         url_resolver=lambda url, *_: url)

Endpoints (what qiskit-ibm-runtime 0.51 calls): POST /identity/token; POST
/v3/resources/search; GET /catalog/{id}; GET /api/v1/backends, /backends/{name}/configuration,
/status, /properties; GET /api/v1/instances/usage; POST /api/v1/jobs (params decoded with
RuntimeDecoder, run on Aer); GET /api/v1/jobs/{id}, /results (RuntimeEncoder), /metrics, /logs;
POST /api/v1/jobs/{id}/cancel; DELETE /api/v1/jobs/{id}; POST /api/v1/sessions; GET/PATCH
/api/v1/sessions/{id}; DELETE /api/v1/sessions/{id}/close.

Backends: ``ibm_manila`` (FakeManila's configuration and properties; runs noiseless on Aer),
``ibm_manila_noisy`` (the same, with FakeManila's noise model) and ``ibm_guadalupe``
(FakeGuadalupe's 16 qubits, noiseless: for circuits wider than Manila's 5 qubits, e.g.
PennyLane's device suite, as IBM's own backends are far wider).

Test controls (no auth) under ``/__standin__``: GET ``stats``; POST ``reset``; POST ``faults``
with any of ``{"fail_jobs": [reason, ...]}`` (the next jobs fail with these reasons),
``{"http_errors": [{"method": "POST", "path": "/api/v1/jobs", "codes": [500, 503]}]}`` (the
next matching requests get these statuses), ``{"hold_jobs": true}`` (jobs stay queued until
``false``), ``{"job_delay": seconds}`` (each job runs at least this long),
``{"expire_sessions": true}`` (every open session closes, as when its max_time runs out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
import traceback
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt

if __package__:
    from .http_base import FaultHandler, FaultState, bind, make_server, serve
else:  # run as a script, or imported with tests/standins on sys.path
    from http_base import FaultHandler, FaultState, bind, make_server, serve

CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/51a9d5c0ffee::4e3b-standin"
INSTANCE_NAME = "standin-instance"
PLAN_ID = "standin-open-plan"
JWT_SECRET = "qfleet-standin-signing-key-0123456789abcdef"
TOKEN_LIFETIME = 3600

#: name -> (the fake backend whose configuration and properties it serves, noisy)
BACKENDS = {"ibm_manila": ("manila", False), "ibm_manila_noisy": ("manila", True),
            "ibm_guadalupe": ("guadalupe", False)}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _fake_files(family: str) -> tuple[dict, dict]:
    import importlib

    module = importlib.import_module(f"qiskit_ibm_runtime.fake_provider.backends.{family}")
    folder = os.path.dirname(module.__file__ or "")
    with open(os.path.join(folder, f"conf_{family}.json")) as fh:
        conf = json.load(fh)
    with open(os.path.join(folder, f"props_{family}.json")) as fh:
        props = json.load(fh)
    return conf, props


class State(FaultState):
    """Everything the stand-in remembers; one lock guards it."""

    def __init__(self, api_key: str) -> None:
        super().__init__(workers=2)
        self.api_key = api_key
        self.files = {family: _fake_files(family) for family, _ in set(BACKENDS.values())}
        self._simulators: dict[str, Any] = {}
        self.reset()

    def clear(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.tokens_issued = 0

    # -- simulation -------------------------------------------------------------------------

    def simulator(self, backend: str):
        with self.lock:
            sim = self._simulators.get(backend)
            if sim is None:
                from qiskit_aer import AerSimulator

                if BACKENDS[backend][1]:
                    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

                    sim = AerSimulator.from_backend(FakeManilaV2())
                else:
                    sim = AerSimulator()
                self._simulators[backend] = sim
            return sim

    def run_job(self, job_id: str) -> None:
        with self.lock:
            self.wait_while_held(job_id, "Queued")
            job = self.jobs[job_id]
            if job["status"] != "Queued":
                return
            job["status"] = "Running"
            job["running_at"] = _now()
            failure = self.fail_jobs.pop(0) if self.fail_jobs else None
            delay = self.job_delay
        started = time.monotonic()
        try:
            if failure is not None:
                raise RuntimeError(failure)
            result = self.execute(job)
            text = _encode(result)
            error = None
        except Exception as exc:  # the job fails; the client reads the reason
            text, error = None, str(exc) if failure is not None else f"{type(exc).__name__}: {exc}"
            if failure is None:
                traceback.print_exc()
        remaining = delay - (time.monotonic() - started)
        with self.lock:
            if not self.linger(job, "Running", remaining):  # cancelled meanwhile
                return
            if error is None:
                job["status"], job["results"] = "Completed", text
            else:
                job["status"], job["reason"] = "Failed", error
                job["results"] = f"Job failed: {error}"
            job["finished_at"] = _now()
            self.lock.notify_all()

    def execute(self, job: dict) -> Any:
        from qiskit.primitives import BackendEstimatorV2, BackendSamplerV2

        params = job["params"]
        options = params.get("options") or {}
        seed = (options.get("simulator") or {}).get("seed_simulator")
        backend = self.simulator(job["backend"])
        prim_options = {"seed_simulator": seed} if seed is not None else {}
        if job["program"] == "sampler":
            if "default_shots" in options:
                prim_options["default_shots"] = options["default_shots"]
            primitive = BackendSamplerV2(backend=backend, options=prim_options)
        elif job["program"] == "estimator":
            if "default_precision" in options:
                prim_options["default_precision"] = options["default_precision"]
            primitive = BackendEstimatorV2(backend=backend, options=prim_options)
        else:
            raise ValueError(f"program {job['program']!r} is not available on this stand-in")
        pubs = [tuple(p) if isinstance(p, list) else p for p in params["pubs"]]
        return primitive.run(pubs).result()


def _encode(obj: Any) -> str:
    from qiskit_ibm_runtime import RuntimeEncoder

    return json.dumps(obj, cls=RuntimeEncoder)


def _decode(text: str) -> Any:
    from qiskit_ibm_runtime import RuntimeDecoder

    return json.loads(text, cls=RuntimeDecoder)


class Handler(FaultHandler):
    server_version = "qfleet-ibm-standin/1"
    state: State

    # -- replies --------------------------------------------------------------------------------

    def _send(self, status: int, body: Any = None, *, text: bool = False) -> None:
        if body is None:
            data, ctype = b"", "application/json"
        elif text:
            data, ctype = body.encode(), "text/plain"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        self._write(status, data, ctype)
        with self.state.lock:
            self.state.requests.append((self.command, urlparse(self.path).path, status))

    def _error(self, status: int, message: str, code: int = 0) -> None:
        self._send(status, {"errors": [{"message": message, "code": code}],
                            "error": {"message": message, "code": code}, "status_code": status})

    def _not_found(self, message: str) -> None:
        self._error(404, message)

    def _crashed(self, exc: Exception) -> None:
        self._error(500, f"stand-in error: {type(exc).__name__}: {exc}")

    def _injected(self, status: int, retry_after: Any) -> None:
        self._error(status, f"injected error {status}")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            self._error(401, "missing bearer token", 1001)
            return False
        try:
            jwt.decode(header[7:], JWT_SECRET, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            self._error(401, f"invalid bearer token: {exc}", 1002)
            return False
        crn = self.headers.get("Service-CRN")
        if crn is not None and crn != CRN:
            self._error(403, f"no access to instance {crn}", 1003)
            return False
        return True

    def _route(self, path: str, query: dict, body: bytes) -> None:
        if path == "/identity/token" and self.command == "POST":
            return self._iam(body)
        if path == "/v3/resources/search" and self.command == "POST":
            return self._search()
        if path.startswith("/catalog/") and self.command == "GET":
            return self._catalog()
        if path.startswith("/api/v1/"):
            if not self._authorized():
                return None
            return self._api(path[len("/api/v1"):], query, body)
        self._error(404, f"no route {self.command} {path}")

    # -- IBM Cloud ----------------------------------------------------------------------------

    def _iam(self, body: bytes) -> None:
        form = parse_qs(body.decode())
        apikey = (form.get("apikey") or [""])[0]
        if apikey != self.state.api_key:
            self._send(401, {"errorCode": "BXNIM0415E",
                             "errorMessage": "Provided API key could not be found.",
                             "context": {"requestId": uuid.uuid4().hex}})
            return
        now = int(time.time())
        claims = {"iat": now, "exp": now + TOKEN_LIFETIME, "sub": "standin-user",
                  "iss": "http://127.0.0.1/identity", "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
        with self.state.lock:
            self.state.tokens_issued += 1
        self._send(200, {"access_token": token, "refresh_token": "not-supported",
                         "token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                         "expiration": now + TOKEN_LIFETIME, "scope": "ibm openid"})

    def _search(self) -> None:
        if not self._authorized_plain():
            return
        self._send(200, {"items": [{
            "crn": CRN, "name": INSTANCE_NAME, "service_plan_unique_id": PLAN_ID,
            "tags": [], "doc": {"extensions": {"quantum_computing": {"allocation": "open"}}},
        }], "limit": 100})

    def _catalog(self) -> None:
        if not self._authorized_plain():
            return
        self._send(200, {"id": PLAN_ID, "name": "open",
                         "overview_ui": {"en": {"display_name": "Open"}},
                         "metadata": {"pricing": {"type": "free"}}})

    def _authorized_plain(self) -> bool:
        header = self.headers.get("Authorization", "")
        try:
            jwt.decode(header.removeprefix("Bearer "), JWT_SECRET, algorithms=["HS256"])
        except jwt.PyJWTError:
            self._error(401, "invalid bearer token")
            return False
        return True

    # -- Qiskit Runtime -----------------------------------------------------------------------

    def _api(self, path: str, query: dict, body: bytes) -> None:
        state = self.state
        parts = [p for p in path.split("/") if p]
        method = self.command
        if parts == ["backends"] and method == "GET":
            devices = [{"name": name, "status": {"name": "online"},
                        "qubits": state.files[family][0]["n_qubits"],
                        "processor_type": {"family": "Canary"}}
                       for name, (family, _) in BACKENDS.items()]
            return self._send(200, {"devices": devices})
        if len(parts) == 3 and parts[0] == "backends" and method == "GET":
            name, what = parts[1], parts[2]
            if name not in BACKENDS:
                return self._error(404, f"backend {name} not found", 1216)
            if what == "configuration":
                conf = json.loads(json.dumps(state.files[BACKENDS[name][0]][0]))
                conf["backend_name"] = name
                return self._send(200, conf)
            if what == "properties":
                props = json.loads(json.dumps(state.files[BACKENDS[name][0]][1]))
                props["backend_name"] = name
                return self._send(200, props)
            if what == "status":
                with state.lock:
                    queue = sum(1 for j in state.jobs.values() if j["status"] == "Queued")
                return self._send(200, {"state": True, "status": "active", "message": "available",
                                        "length_queue": queue, "backend_version": "1.1.1"})
        if parts == ["instances", "usage"] and method == "GET":
            return self._send(200, {"instance_id": CRN, "plan_id": PLAN_ID,
                                    "usage_consumed_seconds": 0, "usage_limit_reached": False})
        if parts == ["jobs"] and method == "POST":
            return self._submit(body)
        if parts == ["jobs"] and method == "GET":
            with state.lock:
                jobs = [self._job_json(j, params=False) for j in state.jobs.values()]
            return self._send(200, {"jobs": jobs, "count": len(jobs), "limit": len(jobs),
                                    "offset": 0})
        if len(parts) >= 2 and parts[0] == "jobs":
            return self._job(parts[1], parts[2:], method, query)
        if parts == ["sessions"] and method == "POST":
            return self._open_session(json.loads(body or b"{}"))
        if len(parts) >= 2 and parts[0] == "sessions":
            return self._session(parts[1], parts[2:], method, body)
        return self._error(404, f"no route {method} /api/v1{path}")

    def _submit(self, body: bytes) -> None:
        state = self.state
        request = _decode(body.decode())
        backend = request.get("backend")
        if backend not in BACKENDS:
            return self._error(400, f"backend {backend!r} not found", 1216)
        program = request.get("program_id")
        if program not in ("sampler", "estimator"):
            return self._error(404, f"program {program!r} not found", 1211)
        session_id = request.get("session_id")
        with state.lock:
            if session_id is not None:
                session = state.sessions.get(session_id)
                if session is None:
                    return self._error(400, f"session {session_id} not found", 1219)
                if not session["accepting_jobs"]:
                    return self._error(400, f"session {session_id} is closed", 1217)
                session["jobs"].append(None)
                if session["started_at"] is None:
                    session["started_at"] = _now()
            job_id = "d" + uuid.uuid4().hex[:19]
            params = request.get("params") or {}
            state.jobs[job_id] = {
                "id": job_id, "program": program, "backend": backend, "status": "Queued",
                "session_id": session_id, "params": params,
                "raw_params": json.loads(body)["params"],
                "created": _now(), "tags": request.get("tags") or [], "results": None,
                "reason": None, "num_pubs": len(params.get("pubs", [])),
            }
            if session_id is not None:
                state.sessions[session_id]["jobs"][-1] = job_id
        state.pool.submit(state.run_job, job_id)
        self._send(200, {"id": job_id, "backend": backend, "session_id": session_id})

    def _job_json(self, job: dict, params: bool = True) -> dict:
        out = {
            "id": job["id"], "backend": job["backend"], "program": {"id": job["program"]},
            "status": job["status"], "created": job["created"], "session_id": job["session_id"],
            "tags": job["tags"], "private": False, "user_id": "standin-user",
            "state": {"status": job["status"]}, "runtime": "",
        }
        if job["reason"]:
            out["state"]["reason"] = job["reason"]
            out["state"]["reason_code"] = 1517
        if params:
            out["params"] = job["raw_params"]
        return out

    def _job(self, job_id: str, rest: list[str], method: str, query: dict) -> None:
        state = self.state
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None:
                return self._error(404, f"job {job_id} not found", 1291)
            if not rest and method == "GET":
                exclude = (query.get("exclude_params") or ["false"])[0] == "true"
                return self._send(200, self._job_json(job, params=not exclude))
            if not rest and method == "DELETE":
                del state.jobs[job_id]
                return self._send(204)
            if rest == ["results"] and method == "GET":
                if job["results"] is None:
                    return self._error(404, f"job {job_id} has no results (status {job['status']})")
                return self._send(200, job["results"], text=True)
            if rest == ["cancel"] and method == "POST":
                if job["status"] not in ("Queued", "Running"):
                    return self._error(409, f"job {job_id} is {job['status']}: cannot cancel", 1292)
                job["status"] = "Cancelled"
                job["reason"] = None
                job["finished_at"] = _now()
                state.lock.notify_all()
                return self._send(204)
            if rest == ["metrics"] and method == "GET":
                return self._send(200, {"timestamps": {"created": job["created"],
                                                       "running": job.get("running_at"),
                                                       "finished": job.get("finished_at")},
                                        "usage": {"quantum_seconds": 0, "seconds": 0}})
            if rest == ["logs"] and method == "GET":
                return self._send(200, "", text=True)
        return self._error(404, f"no route {method} jobs/{job_id}/{'/'.join(rest)}")

    def _open_session(self, request: dict) -> None:
        state = self.state
        backend = request.get("backend")
        if backend not in BACKENDS:
            return self._error(400, f"backend {backend!r} not found", 1216)
        session_id = "s" + uuid.uuid4().hex[:19]
        with state.lock:
            state.sessions[session_id] = {
                "id": session_id, "backend_name": backend, "mode": request.get("mode", "dedicated"),
                "max_ttl": request.get("max_ttl") or 28800, "interactive_ttl": 60,
                "state": "open", "accepting_jobs": True, "started_at": None, "closed_at": None,
                "jobs": [], "created_at": _now(),
            }
        self._send(200, {"id": session_id, "mode": request.get("mode", "dedicated"),
                         "backend_name": backend, "max_ttl": request.get("max_ttl") or 28800})

    def _session(self, session_id: str, rest: list[str], method: str, body: bytes) -> None:
        state = self.state
        with state.lock:
            session = state.sessions.get(session_id)
            if session is None:
                return self._error(404, f"session {session_id} not found", 1219)
            if not rest and method == "GET":
                details = {k: v for k, v in session.items() if k != "jobs"}
                details["active_ttl"] = session["max_ttl"]
                details["last_job_started"] = None
                details["last_job_completed"] = None
                return self._send(200, details)
            if not rest and method == "PATCH":
                update = json.loads(body or b"{}")
                if update.get("accepting_jobs") is False:
                    session["accepting_jobs"] = False
                    session["state"] = "closed"
                    session["closed_at"] = _now()
                return self._send(204)
            if rest == ["close"] and method == "DELETE":
                session["accepting_jobs"] = False
                session["state"] = "closed"
                session["closed_at"] = _now()
                for job_id in session["jobs"]:
                    job = state.jobs.get(job_id)
                    if job and job["status"] in ("Queued", "Running"):
                        job["status"] = "Cancelled"
                state.lock.notify_all()
                return self._send(204)
        return self._error(404, f"no route {method} sessions/{session_id}/{'/'.join(rest)}")

    # -- test controls ------------------------------------------------------------------------

    def _stats(self) -> dict:
        state = self.state
        jobs = [{k: j[k] for k in ("id", "program", "backend", "status", "session_id",
                                   "num_pubs", "reason")} | {"shots": _pub_shots(j)}
                for j in state.jobs.values()]
        sessions = [{k: v for k, v in s.items()} for s in state.sessions.values()]
        return {"jobs": jobs, "sessions": sessions, "requests": state.requests,
                "tokens_issued": state.tokens_issued}

    def _more_faults(self, faults: dict) -> None:
        if faults.get("expire_sessions"):
            for session in self.state.sessions.values():
                session.update(accepting_jobs=False, state="closed", closed_at=_now())


def _pub_shots(job: dict) -> list:
    out = []
    for pub in job["params"].get("pubs", []):
        shots = pub[-1] if isinstance(pub, (list, tuple)) and len(pub) >= 3 else None
        out.append(shots if isinstance(shots, (int, float)) or shots is None else str(shots))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="standin-api-key")
    args = parser.parse_args(argv)
    state = State(args.api_key)
    # Import qiskit before serving: the first job must not pay for it.
    state.simulator("ibm_manila")
    server = make_server(bind(Handler, state), args.port)
    serve(server, cleanup=lambda: state.pool.shutdown(wait=False, cancel_futures=True))


if __name__ == "__main__":
    main()
