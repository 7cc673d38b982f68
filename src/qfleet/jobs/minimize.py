"""Hybrid loops that survive a crash: ``ExecutionSession.minimize`` as a durable job.

A minimization is a job of kind ``"minimize"`` in the job store. Each cost evaluation is a
job of its own (an ``estimate``, or a ``probs``/``sample`` distribution for CVaR and
classical costs) whose ``parent_id`` is the minimization, so it is re-attached by backend
job id like any durable job. The minimization's ``checkpoint`` column holds, after every
evaluation, everything needed to go on:

- ``evaluations``: for each evaluation, the optimizer's point ``x``, the parameters, the
  cost, the evaluation's job id and its backend job ids;
- ``pending``: the evaluation in flight (its index, point and job id), written *before*
  that job is submitted (together with the evaluation before it), so a crash at any moment
  leaves a known job to re-attach (or to read, when it finished), never an unknown one to
  pay for twice.

The optimizer is ``scipy.optimize.minimize`` (COBYLA by default, any method by name).
scipy's optimizers keep their state inside one call, so a resumed minimization rebuilds
that state by **replay**: it calls ``scipy.optimize.minimize`` again from the same start
with the same settings, and the cost function answers the first ``k`` calls from the
checkpoint (the stored cost, no job). This is exact for deterministic methods such as
COBYLA, Nelder-Mead or Powell: the next point such a method asks for is a function of the
start, the settings and the costs returned so far, all of which are the same as in the
first run (costs are stored as JSON floats, which round-trip exactly), so after ``k``
replayed calls it is in the state it was in after iteration ``k`` and asks for exactly
the point the crashed run was evaluating; that evaluation's job is then re-attached
instead of submitted. Every replayed point is compared with the stored one; if they
differ (another scipy version, a randomized method) the minimization is not silently
mixed up: it warns and goes on as a fresh optimizer run from the best point so far with
the evaluations left, and no stored evaluation is run again.

The store keeps data, never code: a minimization of a Python cost function, or of a
PennyLane program (its stored circuits are bound to numbers, so they do not rebuild the
parametric program), resumes when its code is supplied again,
``ExecutionJob.from_id(id).resume(cost_function=f, program=qnode)``; that code must give
the last finished evaluation's stored cost (within 1e-9) and circuit, or it is refused
with :class:`ResumeMismatchError` and nothing changes.

    >>> import qfleet as qf
    >>> qasm = ('OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    ...         'rx(t) q[0]; c = measure q;')
    >>> with qf.ExecutionSession(qasm) as es:
    ...     result = es.minimize(qf.Pauli.Z(0), {"t": 0.5}, max_iteration=40, tolerance=1e-6)
    >>> round(result.optimal_parameters["t"], 4), round(result.optimal_cost, 6)
    (3.1416, -1.0)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import numbers
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from qfleet.circuits.tape_json import unavailable_document
from qfleet.errors import QFleetError
from qfleet.jobs.distributions import (
    CostFunctionError,
    check_quantile,
    diagonal_costs,
    evaluate_cost,
    quantile_cost,
)
from qfleet.jobs.job import (
    ExecutionJob,
    JobFailedError,
    JobStatus,
    current_owner,
    dumps,
    executor_from_spec,
    new_job_id,
    owner_alive,
    track,
)
from qfleet.jobs.pauli import PauliSum, as_pauli_sum
from qfleet.jobs.store import JobStore

if TYPE_CHECKING:
    from qfleet.jobs.session import ExecutionSession

#: Methods that need a gradient or Hessian function; cost evaluations here are jobs.
_NEEDS_DERIVATIVES = {"newton-cg", "dogleg", "trust-ncg", "trust-exact", "trust-krylov"}
_METHODS = {
    "nelder-mead", "powell", "cg", "bfgs", "l-bfgs-b", "tnc", "cobyla", "cobyqa", "slsqp",
    "trust-constr",
}  # fmt: skip
_HEARTBEAT_S = 2.0
#: Program kinds whose text in the job store rebuilds the program (no code is stored).
_REBUILDABLE = {"openqasm2", "openqasm3", "qiskit"}


class MinimizeError(QFleetError, ValueError):
    """Bad arguments to ``minimize`` (cost function, parameters, method, budget)."""


class MinimizeResumeError(JobFailedError):
    """A minimization cannot be resumed from the job store (see the message for why)."""


class MinimizationDivergedWarning(UserWarning):
    """Replaying a resumed minimization asked for other points than the first run did."""


class MinimizationResult(list):
    """``[(cost, parameters), ...]``, one entry per cost evaluation, in order (what
    Classiq's ``minimize`` returns), plus the best entry and scipy's message."""

    def __init__(self, items: list[tuple[float, dict[str, Any]]], message: str = "",
                 job_id: str | None = None):
        super().__init__(items)
        self.message = message
        self.job_id = job_id

    @property
    def optimal(self) -> tuple[float, dict[str, Any]]:
        """The entry with the lowest cost."""
        if not self:
            raise MinimizeError("the minimization has no evaluations")
        return min(self, key=lambda item: item[0])

    @property
    def optimal_cost(self) -> float:
        return self.optimal[0]

    @property
    def optimal_parameters(self) -> dict[str, Any]:
        return self.optimal[1]

    def __repr__(self) -> str:
        if not self:
            return "MinimizationResult([])"
        cost, params = self.optimal
        return (f"MinimizationResult({len(self)} evaluations, optimal cost {cost:.6g} at "
                f"{params})")


# -- arguments ----------------------------------------------------------------------------


def _flatten(initial_params: Mapping[str, Any]) -> tuple[list[float], list[list[Any]]]:
    """(vector, shapes): each parameter a number (shape None) or a list of numbers."""
    if not isinstance(initial_params, Mapping) or not initial_params:
        raise MinimizeError(
            f"initial_params must be a non-empty dict of name -> number or list of numbers, "
            f"got {initial_params!r}"
        )
    x: list[float] = []
    shapes: list[list[Any]] = []
    for name, value in initial_params.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            x.append(float(value))
            shapes.append([str(name), None])
            continue
        try:
            items = [float(v) for v in np.asarray(value, dtype=float).ravel()]
        except (TypeError, ValueError) as exc:
            raise MinimizeError(
                f"initial value of {name!r} must be a number or a list of numbers, got "
                f"{value!r}"
            ) from exc
        x.extend(items)
        shapes.append([str(name), len(items)])
    if not all(math.isfinite(v) for v in x):
        raise MinimizeError(f"initial_params must be finite numbers, got {dict(initial_params)}")
    return x, shapes


def _unflatten(x: list[float], shapes: list[list[Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = 0
    for name, size in shapes:
        if size is None:
            out[name] = float(x[i])
            i += 1
        else:
            out[name] = [float(v) for v in x[i : i + size]]
            i += size
    return out


def cost_spec(cost_function: Any, quantile: float) -> dict[str, Any]:
    """JSON-able description of a cost function: a Pauli sum, or a callable."""
    if isinstance(cost_function, PauliSum) or not callable(cost_function):
        try:
            pauli = as_pauli_sum(cost_function)
        except QFleetError as exc:
            raise MinimizeError(
                f"cost_function must be an observable (qf.Pauli sum, qiskit or Classiq "
                f"SparsePauliOp) or a callable bitstring -> float: {exc}"
            ) from exc
        if pauli is None:
            raise MinimizeError(
                "minimize takes observables as qf.Pauli sums (or qiskit/Classiq "
                "SparsePauliOp), which the job store can keep as data; write the PennyLane "
                "observable as a qf.Pauli sum"
            )
        pauli.check_hermitian()
        terms = pauli.to_list()
        if quantile < 1:
            diagonal_costs(terms, [])  # raises unless I and Z only
        return {"type": "pauli", "terms": terms}
    return {"type": "callable", "name": getattr(cost_function, "__qualname__", repr(cost_function))}


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or not method:
        raise MinimizeError(f"method must be the name of a scipy.optimize.minimize method, "
                            f"got {method!r}")
    if method.lower() in _NEEDS_DERIVATIVES:
        raise MinimizeError(
            f"method {method!r} needs a gradient or Hessian function; choose a method that "
            f"needs only cost values (COBYLA, Nelder-Mead, Powell, BFGS, L-BFGS-B, SLSQP...)"
        )
    if method.lower() not in _METHODS:
        raise MinimizeError(
            f"unknown scipy.optimize.minimize method {method!r}; one of "
            f"{sorted(_METHODS)}"
        )
    return method


def submit_minimize(session: ExecutionSession, cost_function: Any,
                    initial_params: Mapping[str, Any], max_iteration: int,
                    quantile: float = 1.0, tolerance: float | None = None, *,
                    method: str = "COBYLA",
                    options: Mapping[str, Any] | None = None) -> ExecutionJob:
    """Start a durable minimization (see :meth:`ExecutionSession.minimize`)."""
    import scipy

    if isinstance(max_iteration, bool) or not isinstance(max_iteration, numbers.Integral) \
            or max_iteration < 1:
        raise MinimizeError(f"max_iteration must be an integer >= 1, got {max_iteration!r}")
    quantile = check_quantile(quantile)
    if tolerance is not None and (isinstance(tolerance, bool)
                                  or not isinstance(tolerance, numbers.Real) or tolerance <= 0):
        raise MinimizeError(f"tolerance must be a positive number or None, got {tolerance!r}")
    method = _check_method(method)
    options = dict(options or {})
    try:
        json.dumps(options)
    except TypeError as exc:
        raise MinimizeError(f"options must be JSON-able (numbers, strings): {exc}") from exc
    x0, shapes = _flatten(initial_params)
    spec = cost_spec(cost_function, quantile)
    # bad parameter names or values, or an observable beyond the program's qubits, fail
    # here rather than in the first evaluation
    circuit = session.program.bind(_unflatten(x0, shapes))
    if spec["type"] == "pauli":
        PauliSum.from_list(spec["terms"]).to_pennylane(circuit.wires)
    store = session.store
    store.check()
    job_id = new_job_id()
    settings = {
        "x0": x0, "shapes": shapes, "max_iteration": int(max_iteration), "quantile": quantile,
        "tolerance": tolerance, "method": method, "options": options,
        "seed": session.next_job_seed(), "num_shots": session.preferences.num_shots,
        "filters": session.measured_state_filters, "scipy": scipy.__version__,
    }
    row = session.job_row("minimize", job_id, executor=session.executor,
                          parameters=[_unflatten(x0, shapes)], batch=False,
                          observable=dumps(spec), num_shots=session.preferences.num_shots,
                          layout=settings)
    row.update(status="RUNNING", started_at=time.time(),
               tapes=unavailable_document("a minimization's circuits are its evaluations' jobs"),
               checkpoint=dumps({"evaluations": [], "pending": None}))
    store.insert(row)
    callable_cost = cost_function if spec["type"] == "callable" else None
    _start(store, job_id, session, callable_cost)
    return ExecutionJob(row, store)


# -- the driver -----------------------------------------------------------------------------


class _Stopped(Exception):
    """The minimization was cancelled, or another process took it over."""


class _Budget(Exception):
    """max_iteration cost evaluations are done."""


class _Diverged(Exception):
    """A replayed call asked for another point than the stored one."""


def _driver_session(store: JobStore, row: dict[str, Any], program: Any, executor: Any,
                    settings: dict[str, Any]) -> ExecutionSession:
    """The session the evaluations run in: unseeded (each evaluation's seed is derived
    from the minimization's), the row's executor, shots, session id and filters."""
    from qfleet.jobs.session import ExecutionPreferences, ExecutionSession

    prefs = ExecutionPreferences(num_shots=settings.get("num_shots"), job_name=row.get("name"))
    return ExecutionSession(program, prefs, executor=executor, store=store,
                            session_id=row.get("session_id"),
                            measured_state_filters=settings.get("filters") or [])


def _start(store: JobStore, job_id: str, session: Any, callable_cost: Callable | None) -> Any:
    row = store.get(job_id)
    assert row is not None  # just written
    settings = json.loads(row["layout"])
    driver = _Driver(store, row, _driver_session(store, row, session.program, session.executor,
                                                 settings), callable_cost)
    return driver.start()


def _how_to_resume(job_id: str, what: str) -> str:
    return (f"resume it with qf.ExecutionJob.from_id({job_id!r}).resume({what}=...), "
            f"passing the same {what.replace('_', ' ')} again")


def resume_minimization(store: JobStore, job_id: str, cost_function: Callable | None = None,
                        program: Any = None) -> Any:
    """Go on with an unfinished minimization whose process died or left (this process
    now owns it): replay its checkpoint, re-attach its evaluation in flight, continue.
    ``cost_function`` / ``program``: the code the job store does not keep (a Python cost
    function, a PennyLane program), supplied again by :meth:`ExecutionJob.resume`, which
    checks them first (:func:`check_resume_code`). Returns the tracked run (``job.py``'s
    ``track``)."""
    from qfleet.circuits.programs import load_program

    row = store.get(job_id)
    if row is None:
        raise MinimizeResumeError(f"no minimization {job_id!r} in the job store")
    _require_code(row, cost_function, program)
    spec = json.loads(row["observable"])
    settings = json.loads(row["layout"])
    program = load_program(program if program is not None else row["program"])
    executor = executor_from_spec(json.loads(row["executor"]))
    driver = _Driver(store, row, _driver_session(store, row, program, executor, settings),
                     cost_function if spec["type"] != "pauli" else None)
    return driver.start()


def _require_code(row: dict[str, Any], cost_function: Any, program: Any) -> None:
    """Raise unless the code the job store does not keep is supplied."""
    job_id = row["id"]
    spec = json.loads(row["observable"])
    if spec["type"] != "pauli" and cost_function is None:
        raise MinimizeResumeError(
            f"minimization {job_id} minimizes a Python cost function ({spec.get('name')}), "
            f"which the job store does not keep (it keeps data, never code); its finished "
            f"evaluations are in the job's checkpoint: {_how_to_resume(job_id, 'cost_function')}"
        )
    if row["program_kind"] not in _REBUILDABLE and program is None:
        raise MinimizeResumeError(
            f"minimization {job_id} runs a {row['program_kind']} program, which cannot be "
            f"rebuilt from the job store (it keeps data, never code; the stored circuits are "
            f"bound to numbers, not to the parameters): {_how_to_resume(job_id, 'program')}"
        )


class ResumeMismatchError(MinimizeResumeError):
    """The code supplied to resume a minimization does not give what the first run did."""


def check_resume_code(store: JobStore, row: dict[str, Any], cost_function: Any,
                      program: Any) -> None:
    """Refuse code that is not the minimization's own: the supplied cost function must give
    the stored cost (within 1e-9) on the stored distribution of the last finished
    evaluation, and the supplied program, bound to that evaluation's parameters, the very
    circuit that ran. Raises :class:`ResumeMismatchError` (nothing is changed then)."""
    from qfleet.circuits.programs import load_program
    from qfleet.jobs.session import job_distribution

    job_id = row["id"]
    spec = json.loads(row["observable"])
    settings = json.loads(row["layout"])
    if cost_function is not None:
        if spec["type"] == "pauli":
            given = cost_spec(cost_function, settings["quantile"])
            if given != spec:
                raise ResumeMismatchError(
                    f"minimization {job_id} minimizes the observable {spec['terms']}, which "
                    f"the job store keeps; resume it without cost_function (got "
                    f"{given.get('terms', given.get('name'))})"
                )
        elif not callable(cost_function):
            raise ResumeMismatchError(
                f"minimization {job_id} minimizes a Python cost function "
                f"({spec.get('name')}); cost_function must be that callable bitstring -> "
                f"float, got {type(cost_function).__name__}"
            )
    checkpoint = json.loads(row.get("checkpoint") or "{}")
    finished = list(checkpoint.get("evaluations") or [])
    if not finished and checkpoint.get("pending"):
        pending = store.get(checkpoint["pending"]["job"])
        if pending is not None and pending["status"] == "COMPLETED":
            finished = [{"job": pending["id"], "cost": None,
                         "parameters": _unflatten(checkpoint["pending"]["x"],
                                                  settings["shapes"])}]
    if not finished:
        return  # nothing ran yet: nothing the code could disagree with
    last = finished[-1]
    child = ExecutionJob.from_id(last["job"], store=store)
    if cost_function is not None and spec["type"] != "pauli" and last["cost"] is not None:
        distribution, exact = job_distribution(child, timeout_sec=0)
        cost = evaluate_cost(cost_function, distribution, settings["quantile"], exact=exact)
        if not abs(cost - float(last["cost"])) <= 1e-9:
            raise ResumeMismatchError(
                f"minimization {job_id}: the supplied cost function "
                f"({getattr(cost_function, '__qualname__', cost_function)}) gives {cost!r} on "
                f"evaluation {len(finished) - 1}'s stored distribution, but the stored cost is "
                f"{float(last['cost'])!r}; pass the cost function the minimization ran with"
            )
    if program is not None:
        circuit = load_program(program).bind(last["parameters"])
        ran = child.tapes[0].operations
        same = len(ran) == len(circuit.operations) and all(
            _ops_equal(a, b) for a, b in zip(ran, circuit.operations, strict=True)
        )
        if not same:
            raise ResumeMismatchError(
                f"minimization {job_id}: the supplied program, bound to evaluation "
                f"{len(finished) - 1}'s parameters {last['parameters']}, gives the circuit "
                f"{list(circuit.operations)}, but the circuit that ran is {list(ran)}; pass "
                f"the program the minimization ran"
            )


def _ops_equal(a: Any, b: Any) -> bool:
    import pennylane as qml

    return bool(qml.equal(a, b, atol=1e-9))


def resume_with_code(store: JobStore, job_id: str, cost_function: Any = None,
                     program: Any = None) -> None:
    """:meth:`ExecutionJob.resume`: check the supplied code, take the minimization over
    (from a dead owner, or from its failed state: a take-over that lacked the code, a cost
    function that raised) and go on in this process. Refuses, changing nothing, code that
    does not match, a cancelled minimization and one still running elsewhere."""
    row = store.get(job_id)
    if row is None:
        raise MinimizeResumeError(f"no minimization {job_id!r} in the job store")
    if row["kind"] != "minimize":
        raise MinimizeResumeError(f"job {job_id} is a {row['kind']} job, not a minimization; "
                                  f"only minimizations resume")
    status = JobStatus(row["status"])
    if status is JobStatus.COMPLETED:
        return  # nothing left to do; its result is stored
    if status is JobStatus.CANCELLED:
        raise MinimizeResumeError(f"minimization {job_id} was cancelled; it does not resume")
    _require_code(row, cost_function, program)
    check_resume_code(store, row, cost_function, program)
    previous = (row["owner_host"], row["owner_pid"], row["owner_started"])
    me = current_owner()
    if status is JobStatus.FAILED:
        # exactly one of several concurrent resumers wins this update
        won = store.update(job_id, {
            "status": "RUNNING", "error": None, "ended_at": None, "owner_host": me[0],
            "owner_pid": me[1], "owner_started": me[2], "heartbeat": time.time(),
            "attempts": int(row.get("attempts") or 1) + 1,
        }, where="status = 'FAILED'")
    elif previous == me or owner_alive(*previous, row["heartbeat"]):
        raise MinimizeResumeError(
            f"minimization {job_id} is still running (process {previous[1]} on "
            f"{previous[0]}); wait for it with get_minimization_result(), or resume it once "
            f"that process has stopped"
        )
    else:
        won = store.claim(job_id, previous, me)
    if not won:
        raise MinimizeResumeError(
            f"minimization {job_id} was taken over by another process while resuming; wait "
            f"for it with get_minimization_result()"
        )
    resume_minimization(store, job_id, cost_function, program)


class _Driver:
    """Runs scipy's optimizer over cost evaluations that are durable jobs (own thread)."""

    def __init__(self, store: JobStore, row: dict[str, Any], session: ExecutionSession,
                 callable_cost: Callable | None):
        self.store = store
        self.job_id = row["id"]
        self.session = session
        self.spec = json.loads(row["observable"])
        self.settings = json.loads(row["layout"])
        self.callable_cost = callable_cost
        checkpoint = json.loads(row.get("checkpoint") or '{"evaluations": [], "pending": null}')
        self.log: list[dict[str, Any]] = checkpoint["evaluations"]
        self.pending: dict[str, Any] | None = checkpoint.get("pending")
        self.owner = current_owner()
        self.replaying = bool(self.log)
        self.cursor = 0

    def start(self) -> Any:
        from qfleet.runtime.queuing import make_queuing_thread_safe

        # Inherent, so it stays: a background minimization runs the user's optimizer on a
        # thread of its own, and each evaluation's tapes are built there while the caller's
        # thread may build tapes of its own.
        make_queuing_thread_safe()
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        run = track(self.store, self.job_id, future)
        thread = threading.Thread(target=self._main, args=(future,), daemon=True,
                                  name=f"qfleet-minimize-{self.job_id[:8]}")
        thread.start()
        return run

    # -- store writes (only while this process owns the running job) -----------------------

    def _write(self, fields: dict[str, Any]) -> None:
        ok = self.store.update(self.job_id, {**fields, "heartbeat": time.time()},
                               active_only=True, owner=self.owner,
                               where="cancel_requested = 0")
        if not ok:
            raise _Stopped

    def _checkpoint(self) -> None:
        self._write({"checkpoint": dumps({"evaluations": self.log, "pending": self.pending})})

    # -- the loop ---------------------------------------------------------------------------

    def _main(self, future: concurrent.futures.Future) -> None:
        try:
            result = self._optimize()
            items = [{"cost": c, "parameters": p} for c, p in result]
            self.store.update(
                self.job_id,
                {"status": "COMPLETED", "ended_at": time.time(),
                 "results": dumps({"kind": "minimize", "items": items,
                                   "message": result.message}),
                 "checkpoint": dumps({"evaluations": self.log, "pending": None})},
                active_only=True, owner=self.owner,
            )
        except _Stopped:
            pass
        except BaseException as exc:  # the job records why; the thread ends quietly
            with contextlib.suppress(Exception):
                self.store.update(
                    self.job_id,
                    {"status": "FAILED", "ended_at": time.time(),
                     "error": f"{type(exc).__name__}: {exc}",
                     "checkpoint": dumps({"evaluations": self.log, "pending": self.pending})},
                    active_only=True, owner=self.owner,
                )
        finally:
            future.set_result(None)

    def _optimize(self) -> MinimizationResult:
        import scipy.optimize

        s = self.settings
        budget = s["max_iteration"]
        options = {"maxiter": budget, **s["options"]}
        x0 = np.array(s["x0"], dtype=float)
        message = ""
        try:
            try:
                res = scipy.optimize.minimize(self._fun, x0, method=s["method"],
                                              tol=s["tolerance"], options=options)
                message = str(res.message)
            except _Diverged as diverged:
                warnings.warn(
                    f"minimization {self.job_id}: replaying the checkpoint asked for another "
                    f"point at evaluation {diverged.args[0]} than the first run (another "
                    f"scipy version?); going on from the best point so far",
                    MinimizationDivergedWarning, stacklevel=1,
                )
                self.replaying = False
                self._drop_pending()
                best = min(self.log, key=lambda e: e["cost"])
                left = budget - len(self.log)
                if left > 0:
                    res = scipy.optimize.minimize(
                        self._fun, np.array(best["x"]), method=s["method"], tol=s["tolerance"],
                        options={**options, "maxiter": left},
                    )
                    message = str(res.message)
        except _Budget:
            message = f"stopped after max_iteration={budget} cost evaluations"
        items = [(float(e["cost"]), e["parameters"]) for e in self.log]
        return MinimizationResult(items, message, self.job_id)

    def _fun(self, xvec: Any) -> float:
        x = [float(v) for v in np.ravel(xvec)]
        if self.replaying:
            k = self.cursor
            if k < len(self.log):
                self.cursor += 1
                if self.log[k]["x"] == x:
                    return float(self.log[k]["cost"])  # replayed: no job
                raise _Diverged(k)
            self.replaying = False
        i = len(self.log)
        if i >= self.settings["max_iteration"]:
            raise _Budget
        return self._evaluate(i, x)

    def _drop_pending(self) -> None:
        if self.pending is not None:
            with contextlib.suppress(Exception):
                ExecutionJob.from_id(self.pending["job"], store=self.store).cancel()
            self.pending = None

    def _evaluate(self, i: int, x: list[float]) -> float:
        params = _unflatten(x, self.settings["shapes"])
        pending = self.pending
        if pending is not None and (pending["index"] != i or pending["x"] != x):
            self._drop_pending()  # not what this run asks for (cannot happen when replaying)
            pending = None
        if pending is None:
            pending = self.pending = {"index": i, "x": x, "job": new_job_id()}
            self._checkpoint()  # before submitting: a crash from here on re-attaches
        child_id = pending["job"]
        row = self.store.get(child_id)
        reattached = row is not None
        if row is not None:
            child = ExecutionJob(row, self.store)
        else:
            child = self._submit(child_id, params, self._seed(i))
        self._wait(child)
        cost = self._cost(child)
        self.log.append({
            "x": x, "parameters": params, "cost": cost, "job": child_id,
            "backend_job_ids": child.backend_job_ids, "resumed": reattached,
        })
        # Written with the next evaluation's pending entry (or the final result): one write
        # fewer per evaluation. A crash before then leaves this evaluation pending, and its
        # finished job gives the same cost again on resume, without running.
        self.pending = None
        return cost

    def _seed(self, i: int) -> int | None:
        seed = self.settings.get("seed")
        if seed is None:
            return None
        return int(np.random.SeedSequence([seed, i]).generate_state(1)[0])

    def _submit(self, child_id: str, params: dict[str, Any], seed: int | None) -> ExecutionJob:
        quantile = self.settings["quantile"]
        if self.spec["type"] == "pauli" and quantile == 1:
            pauli = PauliSum.from_list(self.spec["terms"])
            return self.session.submit_estimate(pauli, params, job_id=child_id,
                                                parent_id=self.job_id, seed=seed)
        return self.session.submit_distribution(
            params, all_qubits=self.spec["type"] == "pauli", job_id=child_id,
            parent_id=self.job_id, seed=seed,
        )

    def _wait(self, child: ExecutionJob) -> None:
        while True:
            status = child.poll(timeout_sec=_HEARTBEAT_S)
            if status.is_final():
                break
            try:
                self._write({})
            except _Stopped:
                with contextlib.suppress(Exception):
                    child.cancel()
                raise
        if status is not JobStatus.COMPLETED:
            raise JobFailedError(
                f"cost evaluation job {child.id} is {status.value}: {child.error or ''}"
            )

    def _cost(self, child: ExecutionJob) -> float:
        from qfleet.jobs.session import job_distribution

        if child.kind == "estimate":
            return float(child.get_estimate_result().value)
        distribution, exact = job_distribution(child)
        quantile = self.settings["quantile"]
        if self.spec["type"] == "pauli":
            keys = list(distribution)
            costs = diagonal_costs(self.spec["terms"], keys)
            return quantile_cost(costs, [distribution[k] for k in keys], quantile, exact=exact)
        if self.callable_cost is None:
            raise MinimizeResumeError(
                f"minimization {self.job_id}: the Python cost function is not available in "
                f"this process: {_how_to_resume(self.job_id, 'cost_function')}"
            )
        return evaluate_cost(self.callable_cost, distribution, quantile, exact=exact)


def saved_result_value(kind: str, data: dict[str, Any], batch: bool, job_id: str
                       ) -> tuple[Any, str]:
    """(value, value_type) of a finished ``minimize`` or ``probs`` job's results."""
    if kind == "minimize":
        items = [(float(i["cost"]), i["parameters"]) for i in data["items"]]
        return MinimizationResult(items, data.get("message", ""), job_id), "MinimizeResult"
    if kind == "probs":
        values = [dict(i["probabilities"]) for i in data["items"]]
        return (values if batch else values[0]), "Probabilities"
    raise CostFunctionError(f"job {job_id} has results of unknown kind {kind!r}")
