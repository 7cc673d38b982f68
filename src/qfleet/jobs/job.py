"""ExecutionJob: a durable job that outlives the process that submitted it.

A job runs on its executor through the process's background dispatcher (the same path as
``executor.run_later``): tapes are prepared on the caller's thread, submitted and collected
on the loop; the backend's raw output is written to the job store as JSON data
(:mod:`qfleet.jobs.raw_json`) with the status COMPLETED as soon as it arrives, so it outlives
the process even if nobody asked for it. It is finished into results (PennyLane
post-processing: tape work) on the thread that first asks for them, in whatever process (the
stored tapes are prepared again for the stored runner there), and the results are kept in
the row, so that happens once.

Ownership: the submitting process owns a job (host, pid, process start time) until it is
final. When a process exits with jobs in flight it releases them; when it dies (``kill -9``)
its jobs stay owned by a dead process. Either way, the next ``poll``/``result`` from any
process takes the job over: it re-attaches by backend job id where the executor can
(``attach``: Classiq, Azure, IBM, ...), else re-runs the stored circuits on a rebuilt executor.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import enum
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qfleet.errors import QFleetError
from qfleet.jobs.store import FINAL, JobStore, Owner
from qfleet.runtime.caller import serve_while_waiting, serve_while_waiting_async

if TYPE_CHECKING:
    from pydantic import BaseModel

# -- errors -------------------------------------------------------------------------------


class JobError(QFleetError):
    """Base class of job errors."""


class JobNotFoundError(JobError, LookupError):
    """No job with this id in the job store."""


class JobNotFinishedError(JobError, TimeoutError):
    """``result(timeout_sec)`` ran out of time (``timeout_sec=0``: the job was not finished
    at the single poll). The job goes on; ask again later."""


class JobFailedError(JobError):
    """The job failed; the message carries the backend's or qfleet's error."""


class JobCancelledError(JobError):
    """The job was cancelled, so it has no results."""


class ResultsNotFinishableError(JobError):
    """The job completed, but this process cannot finish its backend's raw output into
    results (its executor cannot be built or prepared here). The raw output stays in the
    job store; ask where the executor can be built (the process that ran the job)."""


class JobAlreadyFinishedError(JobError):
    """``cancel()`` on a job that already completed, failed or was cancelled."""


class ResultKindError(JobError, TypeError):
    """``get_sample_result`` on an estimate job (or the reverse), or the single-result getter
    on a batch job."""


class JobStatus(str, enum.Enum):  # noqa: UP042 - StrEnum would change str() of members
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_final(self) -> bool:
        return self.value in FINAL

    def __str__(self) -> str:
        return self.value


# -- results ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SavedResult:
    """One saved result of a job, as in Classiq: ``name``, ``value``, ``value_type``."""

    name: str
    value: Any
    value_type: str


class SampleResult:
    """Counts of one sampled parameter set; ``.dataframe`` is a pandas table with columns
    ``bitstring``, ``counts``, ``probability`` (most frequent first).

    Bitstrings are written as the program's language writes them: OpenQASM/qiskit programs
    classical bit 0 rightmost; PennyLane programs first wire first.
    """

    def __init__(self, counts: dict[str, int], num_shots: int, parameters: dict[str, Any]):
        self.counts = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        self.num_shots = num_shots
        self.parameters = parameters

    @property
    def probabilities(self) -> dict[str, float]:
        return {b: c / self.num_shots for b, c in self.counts.items()}

    @property
    def dataframe(self):
        import pandas as pd

        return pd.DataFrame(
            {
                "bitstring": list(self.counts),
                "counts": list(self.counts.values()),
                "probability": [c / self.num_shots for c in self.counts.values()],
            }
        )

    def probability(self, bitstring: str) -> float:
        return self.counts.get(bitstring, 0) / self.num_shots

    def __repr__(self) -> str:
        shown = dict(list(self.counts.items())[:8])
        more = ", ..." if len(self.counts) > 8 else ""
        return f"SampleResult(counts={shown}{more}, num_shots={self.num_shots})"


class EstimationResult:
    """An expectation value; ``num_shots`` is None when it was computed exactly."""

    def __init__(self, value: float, num_shots: int | None, parameters: dict[str, Any]):
        self.value = float(value)
        self.num_shots = num_shots
        self.parameters = parameters

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        how = "exact" if self.num_shots is None else f"{self.num_shots} shots"
        return f"EstimationResult(value={self.value!r}, {how})"


# -- this process as an owner -------------------------------------------------------------

_HEARTBEAT_S = 2.0
_STALE_S = 60.0
"""An owner on another host is presumed dead after this long without a heartbeat."""


def _process_start(pid: int) -> str | None:
    """A token that changes when ``pid`` is reused: the process's start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
        return data[data.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return repr(psutil.Process(pid).create_time())
    except Exception:  # psutil missing or process gone
        return None


def _process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
        return data[data.rindex(")") + 2 :].split()[0]
    except (OSError, ValueError, IndexError):
        return None


_me: tuple[int, Owner] | None = None


def current_owner() -> Owner:
    global _me
    pid = os.getpid()
    if _me is None or _me[0] != pid:
        _me = (pid, (socket.gethostname(), pid, _process_start(pid)))
    return _me[1]


def owner_alive(host: str | None, pid: int | None, started: str | None,
                heartbeat: float | None) -> bool:
    """Whether the process that owns a job is still there."""
    if pid is None:
        return False  # released at exit
    if host != socket.gethostname():
        return heartbeat is not None and time.time() - heartbeat < _STALE_S
    if (host, pid, started) == current_owner():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    if _process_state(pid) in {"Z", "X"}:
        return False
    if started is not None:
        now = _process_start(pid)
        if now is not None and now != started:
            return False  # the pid was reused
    return True


# -- in-flight jobs of this process -------------------------------------------------------


@dataclasses.dataclass
class _Run:
    future: concurrent.futures.Future
    prepared: Any
    store: JobStore


_running: dict[str, _Run] = {}
_launched: set[str] = set()  # every job this process started driving (never shrinks)
_running_lock = threading.Lock()
_exiting = False


def _forget_after_fork() -> None:
    global _running, _launched, _running_lock, _me, _finish_lock
    _running = {}
    _launched = set()
    _unfinished.clear()
    _finish_lock = threading.Lock()
    _running_lock = threading.Lock()
    _me = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _release_at_exit() -> None:
    """Hand unfinished jobs back (owner cleared) so the next process takes them over at
    once instead of waiting to find this process dead."""
    global _exiting
    _exiting = True
    _finish_kept()
    with _running_lock:
        items = list(_running.items())
    if not items:
        return
    owner = current_owner()
    for job_id, run in items:
        if run.future.done():
            continue
        with contextlib.suppress(Exception):
            run.store.update(
                job_id,
                {"owner_host": None, "owner_pid": None, "owner_started": None},
                active_only=True,
                owner=owner,
            )


# threading's exit hooks run before concurrent.futures stops its workers (which the
# dispatcher needs for the store); atexit would run after.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_release_at_exit)
else:  # pragma: no cover
    import atexit

    atexit.register(_release_at_exit)


def _active_run(job_id: str) -> _Run | None:
    with _running_lock:
        run = _running.get(job_id)
    return run


# -- executor specs (configuration without secrets) ---------------------------------------


def _is_secret(cls: type[BaseModel], name: str, value: Any) -> bool:
    from pydantic import SecretStr

    from qfleet.config.secrets import is_secret_annotation

    if isinstance(value, SecretStr):
        return True
    field = cls.model_fields.get(name)
    return field is not None and is_secret_annotation(field.annotation)


def executor_spec(executor: Any) -> dict[str, Any]:
    """JSON-able configuration of ``executor``: its class and the fields that were set,
    without secrets (tokens come back from the config file or environment on rebuild) and
    without values that cannot be written as JSON (callable selectors: default again)."""
    from qfleet.executors.base import QuantumExecutor

    cls = type(executor)
    fields: dict[str, Any] = {}
    for name in sorted(executor.model_fields_set):
        value = getattr(executor, name)
        if _is_secret(cls, name, value):
            continue
        try:
            fields[name] = _jsonable(value, QuantumExecutor)
        except TypeError:
            continue
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}




def _jsonable(value: Any, executor_type: type) -> Any:
    from pydantic import BaseModel, SecretStr

    from qfleet.config.secrets import is_secret_key

    if isinstance(value, executor_type):
        return {"__executor__": executor_spec(value)}
    if isinstance(value, BaseModel):  # a nested model (AzureCredential): its fields, no secrets
        value = value.__dict__
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, executor_type) for v in value]
    if isinstance(value, dict):
        return {
            str(k): _jsonable(v, executor_type)
            for k, v in value.items()
            if not is_secret_key(k) and not isinstance(v, SecretStr)
        }
    if isinstance(value, frozenset | set):
        return sorted(_jsonable(v, executor_type) for v in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def executor_from_spec(spec: dict[str, Any]) -> Any:
    """Rebuild an executor written by :func:`executor_spec`."""
    import importlib

    module, _, qualname = spec["class"].partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise JobError(
            f"cannot rebuild executor {spec['class']} (is its extra installed?): {exc}"
        ) from exc

    def restore(value: Any) -> Any:
        if isinstance(value, dict) and "__executor__" in value:
            return executor_from_spec(value["__executor__"])
        if isinstance(value, list):
            return [restore(v) for v in value]
        if isinstance(value, dict):
            return {k: restore(v) for k, v in value.items()}
        return value

    fields = {k: restore(v) for k, v in spec["fields"].items()}
    # Credentials were left out of dict fields: take them from the config file / environment.
    from qfleet.config import executor_defaults

    for name, configured in executor_defaults(obj).items():
        if isinstance(configured, dict) and isinstance(fields.get(name), dict):
            fields[name] = {**configured, **fields[name]}
    return obj(**fields)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, complex):
        return [value.real, value.imag]
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def metadata_json(metadata: Any) -> dict[str, Any]:
    """A batch's run metadata as JSON data for the job row. A cluster's routing decision is
    an object (not JSON): its chosen member and ``explain()`` text are kept instead."""
    routing = getattr(metadata, "routing", None)
    # Python mode, then dumps(): a field JSON cannot hold becomes text (_json_default)
    # instead of failing a job whose results are already in.
    data: dict[str, Any] = metadata.model_dump(exclude={"routing"})
    if routing is not None:
        data["routing"] = {"chosen": getattr(routing, "chosen_label", None),
                           "explanation": routing.explain()}
    return data


# -- the loop side ------------------------------------------------------------------------


def results_from_values(kind: str, parameters: list[dict[str, Any]], layout: list[dict[str, Any]],
                        values: Any) -> dict[str, Any]:
    """PennyLane results (one per parameter set) -> the JSON results a job row keeps."""
    from qfleet.circuits.programs import BoundCircuit

    items = []
    for params, value, lay in zip(parameters, values, layout, strict=True):
        # An executor with a shot vector of its own returns one entry per shot bin.
        bins = list(value) if isinstance(value, (tuple, list)) else [value]
        if lay.get("exact"):  # exact probabilities ("probs", filtered "sample"): distributions
            from qfleet.jobs.distributions import exact_item

            circuit = BoundCircuit(
                [], None, None, lay["num_bits"], tuple(lay["positions"]), lay["order"]
            )
            items.append(exact_item(kind, params, bins, lay, circuit.bitstring))
            continue
        if kind == "sample":
            circuit = BoundCircuit(
                [], None, None, lay["num_bits"], tuple(lay["positions"]), lay["order"]
            )
            counts: dict[str, int] = {}
            for part in bins:
                for bits, count in dict(part).items():
                    key = circuit.bitstring(str(bits))
                    counts[key] = counts.get(key, 0) + int(count)
            items.append(
                {"parameters": params, "counts": counts, "num_shots": sum(counts.values())}
            )
        else:
            value = sum(float(v) for v in bins) / len(bins)
            items.append({"parameters": params, "value": value, "num_shots": lay.get("shots")})
    return {"kind": kind, "items": items}


# -- raw output: stored as it arrives, finished when asked --------------------------------

_UNFINISHED_KEPT = 64
"""Raw outputs this process keeps in memory with their preparation, so finishing them here
needs no second preparation (older ones are finished from the store)."""
_unfinished: collections.OrderedDict[str, tuple[JobStore, Any, Any]] = collections.OrderedDict()
_finish_lock = threading.Lock()
"""One finishing at a time per process: PennyLane's recording contexts are shared."""


def _raw_data(prepared: Any, raw: Any) -> dict[str, Any]:
    """``raw`` as data: ``{"raw": ...}``, or for a cluster one entry per part, naming the
    member (by position) whose preparation finishes it."""
    from qfleet.cluster import QuantumCluster

    cluster = prepared.executor
    if not isinstance(cluster, QuantumCluster):
        return {"raw": raw}
    return {"parts": [
        {"member": part.member, "label": part.prepared.executor.label,
         "tapes": len(part.tapes), "cached": part.cached,
         "output": None if part.output is None else _raw_data(part.prepared, part.output)}
        for part in cluster.raw_parts(raw)
    ]}


def _stored_raw(prepared: Any, raw: Any) -> str:
    """The raw output as the job store keeps it (loop side: data only, no tape work)."""
    from qfleet.jobs import raw_json

    return raw_json.dumps(_raw_data(prepared, raw))


def _prepared_again(executor: Any, tapes: tuple, data: dict[str, Any], job_id: str
                    ) -> list[tuple[Any, Any]]:
    """(preparation, raw output) per piece of stored raw output, prepared again for the
    executor that ran it; (None, results) for results a cluster took from its cache."""
    from qfleet.executors.idempotency import idempotent

    if "raw" in data:
        with idempotent(f"job:{job_id}"):  # the key the job's first launch used
            prepared = executor.prepare(tapes)
        raw = data["raw"]
        if prepared.num_outputs != len(raw):
            raise JobError(
                f"job {job_id}: {executor.label} prepares the stored tapes into "
                f"{prepared.num_outputs} circuits now, but the backend returned "
                f"{len(raw)} outputs; was the executor's configuration (config file) changed? "
                f"Restore it to finish the job, or run the job again"
            )
        return [(prepared, raw)]
    pieces: list[tuple[Any, Any]] = []
    start = 0
    for part in data["parts"]:
        chunk = tapes[start : start + part["tapes"]]
        start += part["tapes"]
        if part["output"] is None:
            pieces.append((None, part["cached"]))
            continue
        member = executor.executors[part["member"]]
        pieces.extend(_prepared_again(member, chunk, part["output"], job_id))
    return pieces


def _remember_unfinished(store: JobStore, job_id: str, prepared: Any, raw: Any) -> None:
    with _running_lock:
        _unfinished[job_id] = (store, prepared, raw)
        while len(_unfinished) > _UNFINISHED_KEPT:
            _unfinished.popitem(last=False)


def _take_unfinished(job_id: str) -> tuple[Any, Any] | None:
    with _running_lock:
        kept = _unfinished.pop(job_id, None)
    return None if kept is None else kept[1:]


def _finish_kept() -> None:
    """Finish the raw output this process still holds (exit, on the main thread: a
    caller's thread), so a job whose script never asked has results another process can
    read without building its executor again."""
    with _running_lock:
        kept = [(job_id, store) for job_id, (store, _, _) in _unfinished.items()]
    for job_id, store in kept:
        with contextlib.suppress(Exception):  # it stays finishable from the store
            ExecutionJob.from_id(job_id, store=store)._results_json()


async def _drive(store: JobStore, job_id: str, owner: Owner, prepared: Any, post: tuple,
                 handle: Any = None) -> None:
    """Submit (unless re-attached with ``handle``), wait, write the raw output. Loop thread."""
    executor = prepared.executor
    try:
        if handle is None:
            handle = await executor.runner.submit(prepared)
            await asyncio.to_thread(
                store.update,
                job_id,
                {"status": "RUNNING", "started_at": time.time(),
                 "backend_job_ids": dumps(list(handle.job_ids))},
                active_only=True,
                owner=owner,
            )
        task = asyncio.ensure_future(executor.runner.collect(handle))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=_HEARTBEAT_S)
                if done:
                    break
                still_mine = await asyncio.to_thread(
                    store.update, job_id, {"heartbeat": time.time()}, active_only=True,
                    owner=owner, where="cancel_requested = 0",
                )
                if not still_mine:  # cancelled or taken over elsewhere
                    raise asyncio.CancelledError
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        raw = task.result()
        # Data only (no tape work): results are finished on the thread that asks for them.
        stored = await asyncio.to_thread(_stored_raw, prepared, raw)
        metadata = metadata_json(raw.metadata) if hasattr(raw, "metadata") else None
        _remember_unfinished(store, job_id, prepared, raw)
        completed = await asyncio.to_thread(
            store.update,
            job_id,
            {"status": "COMPLETED", "ended_at": time.time(), "raw_output": stored,
             "run_metadata": dumps(metadata)},
            active_only=True,
            owner=owner,
        )
        if not completed:
            _take_unfinished(job_id)
    except asyncio.CancelledError:
        if not _exiting:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(
                    store.update, job_id, {"status": "CANCELLED", "ended_at": time.time()},
                    active_only=True, owner=owner,
                ))
        raise
    except BaseException as exc:
        if not _exiting:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    store.update,
                    job_id,
                    {"status": "FAILED", "ended_at": time.time(),
                     "error": f"{type(exc).__name__}: {exc}"},
                    active_only=True,
                    owner=owner,
                )
        raise


def launch(store: JobStore, job_id: str, prepared: Any, post: tuple, handle: Any = None) -> _Run:
    """Start driving a prepared job on the background loop (caller's thread).

    ``post`` = (kind, parameters, layout) for :func:`results_from_values`, which the job's
    row holds too. The raw output is stored as it arrives, so the job store holds it even
    if nobody asks for results before this process exits; it is finished into results on
    the thread that asks (:meth:`ExecutionJob.result`).
    """
    from qfleet.runtime import get_dispatcher

    owner = current_owner()
    future = get_dispatcher().submit(_drive(store, job_id, owner, prepared, post, handle))
    run = _Run(future, prepared, store)
    with _running_lock:
        _running[job_id] = run
        _launched.add(job_id)

    def forget(_):
        with _running_lock:
            if _running.get(job_id) is run:
                del _running[job_id]

    future.add_done_callback(forget)
    return run


def track(store: JobStore, job_id: str, future: concurrent.futures.Future) -> _Run:
    """Count a job driven by ``future`` (a minimization's optimizer thread) among this
    process's jobs in flight: ``poll`` waits on it, exit hands it back."""
    run = _Run(future, None, store)
    with _running_lock:
        _running[job_id] = run
        _launched.add(job_id)

    def forget(_):
        with _running_lock:
            if _running.get(job_id) is run:
                del _running[job_id]

    future.add_done_callback(forget)
    return run


# -- ExecutionJob -------------------------------------------------------------------------


def _stored_tapes(row: dict[str, Any]) -> tuple:
    """The job's tapes from its row (JSON data, never code)."""
    from qfleet.circuits.tape_json import TapeCodecError, tapes_from_json

    try:
        return tapes_from_json(row["tapes"])
    except TapeCodecError as exc:
        raise JobError(f"job {row['id']} cannot be resumed: {exc}") from exc


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None


class ExecutionJob:
    """A job in the durable job store.

    Example:
        >>> program = ('OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; '
        ...            'bit[1] c; rx(t) q[0]; c = measure q;')
        >>> prefs = ExecutionPreferences(num_shots=1000, random_seed=7)
        >>> with ExecutionSession(program, prefs) as es:
        ...     job = es.submit_sample({"t": 0.5})
        >>> same = ExecutionJob.from_id(job.id)       # in any process
        >>> same.result(timeout_sec=30)[0].value.dataframe
          bitstring  counts  probability
        0         0     941        0.941
        1         1      59        0.059
    """

    def __init__(self, row: dict[str, Any], store: JobStore):
        self._row = row
        self._store = store

    # -- lookup --------------------------------------------------------------------------

    @classmethod
    def from_id(cls, id: str, *, store: JobStore | None = None) -> ExecutionJob:
        """The job ``id``; raises JobNotFoundError if the job store has none."""
        store = store or JobStore.default()
        if not isinstance(id, str) or not id:
            raise JobNotFoundError(f"a job id is a non-empty string, got {id!r}")
        try:
            id.encode("utf-8")
        except UnicodeEncodeError:
            raise JobNotFoundError(
                f"no job {id!r}: a job id is text without lone surrogates (ids look like "
                f"{new_job_id()!r}); list jobs with `qfleet jobs list`"
            ) from None
        row = store.get(id)
        if row is None:
            raise JobNotFoundError(
                f"no job {id!r} in the job store {store.path}; list jobs with "
                f"qf.get_execution_jobs() or `qfleet jobs list`"
            )
        return cls(row, store)

    def _refresh(self) -> dict[str, Any]:
        row = self._store.get(self.id)
        if row is None:
            raise JobNotFoundError(
                f"job {self.id!r} is no longer in the job store {self._store.path}"
            )
        self._row = row
        return row

    # -- properties ----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._row["id"]

    @property
    def name(self) -> str | None:
        return self._row.get("name")

    @property
    def kind(self) -> str:
        """"sample", "estimate", "probs" (exact probabilities) or "minimize"."""
        return self._row["kind"]

    @property
    def status(self) -> JobStatus:
        """The current status (read from the job store)."""
        with contextlib.suppress(JobNotFoundError):
            self._refresh()
        return JobStatus(self._row["status"])

    @property
    def start_time(self) -> datetime:
        return datetime.fromtimestamp(self._row["created_at"], tz=UTC)  # NOT NULL in the store

    created_at = start_time

    @property
    def end_time(self) -> datetime | None:
        return _ts(self._row.get("ended_at"))

    @property
    def backend(self) -> str | None:
        return self._row.get("backend")

    @property
    def num_shots(self) -> int | None:
        return self._row.get("num_shots")

    @property
    def error(self) -> str | None:
        return self._row.get("error")

    def _full(self) -> dict[str, Any]:
        """The whole row (jobs from get_execution_jobs carry only the listed columns)."""
        return self._row if "tapes" in self._row else self._refresh()

    @property
    def parameters(self) -> list[dict[str, Any]]:
        """The parameter sets, one dict per set."""
        return json.loads(self._full()["parameters"])

    @property
    def is_batch(self) -> bool:
        return bool(self._row.get("batch"))

    @property
    def backend_job_ids(self) -> list[str]:
        return json.loads(self._row.get("backend_job_ids") or "[]")

    @property
    def program(self) -> str | None:
        """The program's text (OpenQASM, Python source, ...)."""
        return self._full().get("program")

    @property
    def attempts(self) -> int:
        return int(self._row.get("attempts") or 1)

    @property
    def tapes(self) -> tuple:
        """The job's bound circuits (PennyLane tapes, one per parameter set), decoded from
        the store's JSON data; :class:`JobError` when the store has none for it."""
        return _stored_tapes(self._full())

    @property
    def run_metadata(self) -> dict[str, Any]:
        """How the job's batch ran, as its executor reported it (JSON data; {} until it
        finished): ``executor``, ``backend``, ``job_ids``, ``execution_time``, ``cost``
        (the batch's price; for a cluster what its budget was charged), ``cache_hit``,
        ``compile``, and for a cluster with a policy ``routing`` (``chosen``,
        ``explanation``)."""
        text = self._full().get("run_metadata")
        data = json.loads(text) if text else None
        return data if isinstance(data, dict) else {}

    def __repr__(self) -> str:
        name = f"name={self.name!r}, " if self.name else ""
        return f"ExecutionJob({name}id={self.id!r}, status={self._row['status']})"

    # -- waiting -------------------------------------------------------------------------

    def poll(self, timeout_sec: float | None = None) -> JobStatus:
        """Wait until the job is final or ``timeout_sec`` passed (None: no limit; 0: look
        once) and return its status. Takes over a job whose owner died."""
        deadline = _deadline(timeout_sec)
        delay = 0.02
        while True:
            status, run, wait = self._look(deadline)
            if status is not None:
                return status
            if run is not None:
                # The job's batch may need tape work (a cluster's failover): done here.
                serve_while_waiting(run.future, wait)
            else:
                time.sleep(min(delay, wait))
                delay = min(delay * 1.5, 0.5)

    def _look(self, deadline: float | None) -> tuple[JobStatus | None, _Run | None, float]:
        """One look at the job (caller's thread: a take-over prepares tapes): its status
        if final or out of time, else the run to wait on (None: none in this process) and
        for how long at most."""
        row = self._refresh()
        status = JobStatus(row["status"])
        if status.is_final():
            return status, None, 0.0
        run = _active_run(self.id) or self._take_over_if_orphaned(row)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return JobStatus(self._refresh()["status"]), None, 0.0
        return None, run, 0.5 if remaining is None else min(0.5, remaining)

    def _take_over_if_orphaned(self, row: dict[str, Any]) -> _Run | None:
        previous = (row["owner_host"], row["owner_pid"], row["owner_started"])
        if previous == current_owner():
            with _running_lock:
                ended = self.id in _launched and self.id not in _running
            if not ended:
                return None  # being launched right now
            # else: ours, but its driver ended without recording a final status
        elif owner_alive(*previous, row["heartbeat"]):
            return None
        if not self._store.claim(self.id, previous, current_owner()):
            return _active_run(self.id)  # someone else took it (or it finished)
        self._refresh()
        try:
            return self._restart()
        except Exception as exc:
            self._store.update(
                self.id,
                {"status": "FAILED", "ended_at": time.time(),
                 "error": f"could not resume the job: {type(exc).__name__}: {exc}"},
                active_only=True,
                owner=current_owner(),
            )
            return None

    def _restart(self) -> _Run:
        """Re-attach by backend job id where the runner can, else re-run (caller's thread)."""
        row = self._row
        if row["kind"] == "minimize":  # replay its checkpoint, re-attach its evaluation
            from qfleet.jobs.minimize import resume_minimization

            return resume_minimization(self._store, self.id)
        tapes = _stored_tapes(row)
        job_ids = json.loads(row["backend_job_ids"] or "[]")
        runner_spec = json.loads(row["runner"]) if row.get("runner") else None
        if job_ids and runner_spec is not None:
            runner = executor_from_spec(runner_spec)
            if runner.can_attach:
                handle = runner.reattach(tapes, job_ids, submitted_at=row.get("started_at"))
                return launch(self._store, self.id, handle.prepared, self._post(), handle)
        from qfleet.executors.idempotency import idempotent

        executor = executor_from_spec(json.loads(row["executor"]))
        with idempotent(f"job:{self.id}"):  # the key the job's first launch used
            prepared = executor.prepare(tapes)
        self._store.update(
            self.id,
            {"status": "QUEUED", "backend_job_ids": "[]",
             "runner": dumps(executor_spec(prepared.executor))},
            active_only=True,
            owner=current_owner(),
        )
        return launch(self._store, self.id, prepared, self._post())

    def _post(self) -> tuple:
        row = self._row
        return (row["kind"], json.loads(row["parameters"]), json.loads(row["layout"] or "[]"))

    # -- results -------------------------------------------------------------------------

    def result(self, timeout_sec: float | None = None) -> list[SavedResult]:
        """The job's saved results, waiting up to ``timeout_sec`` (None: as long as it takes).

        ``timeout_sec=0`` polls once. Raises JobNotFinishedError if the job is not finished
        in time (it goes on), JobFailedError / JobCancelledError for failed / cancelled jobs.
        """
        return self._result_of(self.poll(timeout_sec), timeout_sec)

    def _result_of(self, status: JobStatus, timeout_sec: float | None) -> list[SavedResult]:
        if status is JobStatus.COMPLETED:
            return self._saved_results()  # finished here on first ask (tape work)
        if status is JobStatus.FAILED:
            raise JobFailedError(f"job {self.id} failed: {self.error}")
        if status is JobStatus.CANCELLED:
            raise JobCancelledError(f"job {self.id} was cancelled; it has no results")
        waited = "at one poll" if timeout_sec == 0 else f"after {timeout_sec} s"
        raise JobNotFinishedError(
            f"job {self.id} is {status.value} {waited}; call result() again later, or "
            f"result(timeout_sec=None) to wait until it finishes"
        )

    def _results_json(self) -> dict[str, Any]:
        text = self._row.get("results") or self._refresh().get("results")
        if not text:
            text = self._finish()
        return json.loads(text)

    def _finish(self) -> str:
        """Finish the stored raw output into results on this thread (tape work) and keep
        them in the row; the results text."""
        with _finish_lock:
            row = self._refresh()
            if row.get("results"):
                return row["results"]  # finished meanwhile (another thread or process)
            if row["status"] != "COMPLETED" or not row.get("raw_output"):
                raise JobFailedError(f"job {self.id} completed without results")
            kind, parameters, layout = self._post()
            kept = _take_unfinished(self.id)
            pieces = [kept] if kept is not None else self._prepared_again(row)
            try:
                values: list[Any] = []
                for prepared, raw in pieces:
                    values.extend(raw if prepared is None else prepared.complete(raw))
                results = dumps(results_from_values(kind, parameters, layout, values))
            except Exception as exc:  # the output does not make results: as a failed run
                error = f"{type(exc).__name__}: {exc}"
                self._store.update(self.id, {"status": "FAILED", "error": error},
                                   where="status = 'COMPLETED' AND results IS NULL")
                self._refresh()
                raise JobFailedError(f"job {self.id} failed: {error}") from exc
            # Raw output is large (samples); once finished, the results are what is kept.
            self._store.update(self.id, {"results": results, "raw_output": None},
                               where="results IS NULL")
            return self._refresh().get("results") or results

    def _prepared_again(self, row: dict[str, Any]) -> list[tuple[Any, Any]]:
        """The stored raw output with the stored tapes prepared again for the runner."""
        from qfleet.jobs import raw_json

        try:
            data = raw_json.loads(row["raw_output"])
            if not isinstance(data, dict) or not ({"raw"} <= data.keys() or "parts" in data):
                raise raw_json.RawCodecError("it holds neither 'raw' nor 'parts'")
        except raw_json.RawCodecError as exc:
            raise self._store.row_error(
                self.id, f"column raw_output: the backend's output cannot be read: {exc}; "
                f"run the job again to get its results"
            ) from exc
        spec = json.loads(row.get("runner") or row["executor"])
        try:
            return _prepared_again(executor_from_spec(spec), _stored_tapes(row), data, self.id)
        except Exception as exc:  # nothing is lost: another process may finish it
            raise ResultsNotFinishableError(
                f"job {self.id} completed, but its backend's output cannot be finished into "
                f"results in this process: {type(exc).__name__}: {exc}. Ask for the results "
                f"where its executor {spec.get('class')} can be built with its configuration "
                f"(e.g. the process that ran the job), or run the job again"
            ) from exc

    def _saved_results(self) -> list[SavedResult]:
        data = self._results_json()
        if data["kind"] in ("minimize", "probs"):
            from qfleet.jobs.minimize import saved_result_value

            value, value_type = saved_result_value(data["kind"], data, self.is_batch, self.id)
            return [SavedResult("result", value, value_type)]
        if data["kind"] == "sample":
            samples = [
                SampleResult(i["counts"], i["num_shots"], i["parameters"]) for i in data["items"]
            ]
            if self.is_batch:
                return [SavedResult("result", samples, "MultipleExecutionDetails")]
            return [SavedResult("result", samples[0], "ExecutionDetails")]
        estimates = [
            EstimationResult(i["value"], i["num_shots"], i["parameters"]) for i in data["items"]
        ]
        if self.is_batch:
            return [SavedResult("result", estimates, "EstimationResults")]
        return [SavedResult("result", estimates[0], "EstimationResult")]

    def _values(self, kind: str, timeout_sec: float | None) -> list[Any]:
        if self.kind != kind:
            other = "get_sample_result" if self.kind == "sample" else "get_estimate_result"
            raise ResultKindError(f"job {self.id} is a {self.kind} job; use {other}()")
        value = self.result(timeout_sec)[0].value
        return value if isinstance(value, list) else [value]

    def get_sample_result(self, timeout_sec: float | None = None) -> SampleResult:
        """The sample result of a single-parameter-set sample job (waits for it)."""
        values = self._values("sample", timeout_sec)
        if self.is_batch:
            raise ResultKindError(
                f"job {self.id} sampled {len(values)} parameter sets; use get_batch_sample_result()"
            )
        return values[0]

    def get_batch_sample_result(self, timeout_sec: float | None = None) -> list[SampleResult]:
        return self._values("sample", timeout_sec)

    def get_estimate_result(self, timeout_sec: float | None = None) -> EstimationResult:
        """The estimate of a single-parameter-set estimate job (waits for it)."""
        values = self._values("estimate", timeout_sec)
        if self.is_batch:
            raise ResultKindError(
                f"job {self.id} estimated {len(values)} parameter sets; "
                f"use get_batch_estimate_result()"
            )
        return values[0]

    def get_batch_estimate_result(self, timeout_sec: float | None = None) -> list[EstimationResult]:
        return self._values("estimate", timeout_sec)

    # -- control -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the job: its status becomes CANCELLED at once; its backend jobs are
        cancelled by id where the executor can (Classiq), and the process running it stops
        (at once if that is this process, else within a couple of seconds). Raises
        JobAlreadyFinishedError if the job already finished."""
        backend_cancel = self._cancel_here(self._mark_cancelled())
        if backend_cancel is not None:
            from qfleet.runtime import get_dispatcher

            with contextlib.suppress(Exception):
                get_dispatcher().run(backend_cancel, timeout=_CANCEL_WAIT_S)
        self._refresh()

    def _mark_cancelled(self) -> dict[str, Any]:
        row = self._refresh()
        if JobStatus(row["status"]).is_final():
            raise JobAlreadyFinishedError(
                f"job {self.id} is already {row['status']}; only queued or running jobs "
                f"can be cancelled"
            )
        changed = self._store.update(
            self.id,
            {"status": "CANCELLED", "cancel_requested": 1, "ended_at": time.time()},
            active_only=True,
        )
        if not changed:
            row = self._refresh()
            raise JobAlreadyFinishedError(
                f"job {self.id} finished ({row['status']}) before it could be cancelled"
            )
        return row

    def _cancel_here(self, row: dict[str, Any]) -> Any:
        """Stop this process's run of the job; else the coroutine that cancels the backend's
        jobs by id (None: nothing to do). Caller's thread: re-attaching prepares tapes."""
        run = _active_run(self.id)
        if run is not None:
            run.future.cancel()
            return None
        # Another process owns it (it stops at its next heartbeat), or nobody does:
        # cancel the backend's jobs by id now where the executor can.
        job_ids = json.loads(row["backend_job_ids"] or "[]")
        if not job_ids or not row.get("runner"):
            return None
        try:
            runner = executor_from_spec(json.loads(row["runner"]))
            if not runner.can_attach:
                return None
            handle = runner.reattach(_stored_tapes(row), tuple(job_ids))
        except Exception:
            return None
        return runner.cancel(handle.job)

    def rename(self, name: str) -> None:
        """Give the job a new name."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a job name is a non-empty string, got {name!r}")
        self._store.update(self.id, {"name": name})
        self._refresh()

    # -- Classiq's job API, continued (sessions, minimization, costs, async forms) ----------

    @property
    def session_id(self) -> str | None:
        """The id of the ExecutionSession that submitted the job."""
        return self._row.get("session_id")

    @property
    def program_id(self) -> str | None:
        """A content address of the job's program (jobs of equal programs share it)."""
        return self._row.get("program_id")

    @property
    def parent_id(self) -> str | None:
        """The minimization this job is a cost evaluation of (None for other jobs)."""
        return self._row.get("parent_id")

    @property
    def provider(self) -> str | None:
        """The executor that ran the job (for a cluster: the member), by its label."""
        from qfleet.jobs.actions import provider_of

        return provider_of(self._refresh())

    @property
    def backend_name(self) -> str | None:
        """The backend the job ran on, as its executor describes it."""
        from qfleet.jobs.actions import backend_name_of

        return backend_name_of(self._row)

    def result_value(self, timeout_sec: float | None = None) -> Any:
        """The value of the job's (single) saved result: ``result(timeout_sec)[0].value``."""
        return self.result(timeout_sec)[0].value

    def get_minimization_result(self, timeout_sec: float | None = None) -> Any:
        """``[(cost, parameters), ...]`` of a minimization, one entry per cost evaluation
        (a :class:`qfleet.jobs.minimize.MinimizationResult`); waits for it, resuming it in
        this process if its own process died."""
        self._expect_minimization()
        return self.result_value(timeout_sec)

    def _expect_minimization(self) -> None:
        if self.kind != "minimize":
            raise ResultKindError(f"job {self.id} is a {self.kind} job, not a minimization")

    def cost(self, *, verbose: bool = False) -> Any:
        """What the job costs by its executor's ``price`` (a minimization: the sum over its
        evaluations): ``"1.3 USD"``, or with ``verbose`` a
        :class:`qfleet.jobs.actions.JobCost`. Raises
        :class:`qfleet.jobs.actions.CostUnknownError` when no price is known (never 0)."""
        from qfleet.jobs.actions import job_cost

        cost = job_cost(self._refresh(), self._store)
        return cost if verbose else f"{cost.total_cost:g} {cost.currency_code}"

    # The *_async forms can be awaited inside a running event loop (Jupyter) without
    # blocking it: the waiting (and store-only calls) go to a worker thread; the tape work
    # (taking over an orphaned job, finishing raw output, re-attaching to cancel) stays on
    # the caller's thread, which runs the caller's loop.

    @classmethod
    async def from_id_async(cls, id: str, *, store: JobStore | None = None) -> ExecutionJob:
        return await _off_loop(cls.from_id, id, store=store)

    async def result_async(self, timeout_sec: float | None = None) -> list[SavedResult]:
        return self._result_of(await self.poll_async(timeout_sec), timeout_sec)

    async def poll_async(self, timeout_sec: float | None = None) -> JobStatus:
        deadline = _deadline(timeout_sec)
        delay = 0.02
        while True:
            status, run, wait = self._look(deadline)
            if status is not None:
                return status
            if run is not None:
                await serve_while_waiting_async(run.future, wait)
            else:
                await asyncio.sleep(min(delay, wait))
                delay = min(delay * 1.5, 0.5)

    async def rename_async(self, name: str) -> None:
        await _off_loop(self.rename, name)

    async def cancel_async(self) -> None:
        backend_cancel = self._cancel_here(await _off_loop(self._mark_cancelled))
        if backend_cancel is not None:
            from qfleet.runtime import get_dispatcher

            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(get_dispatcher().submit(
                    backend_cancel)), _CANCEL_WAIT_S)
        await _off_loop(self._refresh)

    async def get_minimization_result_async(self, timeout_sec: float | None = None) -> Any:
        self._expect_minimization()
        return (await self.result_async(timeout_sec))[0].value

    def resume(self, *, cost_function: Any = None, program: Any = None) -> ExecutionJob:
        """Go on with a minimization whose process died (or that failed for want of code),
        supplying again the code the job store does not keep: its Python ``cost_function``
        and/or its PennyLane ``program``. The code is checked against the stored run first
        (the cost of the last finished evaluation, its circuit), then the checkpoint is
        replayed (no job re-run) and the minimization goes on in this process; returns
        this job (``.get_minimization_result()`` waits). Raises
        :class:`qfleet.jobs.minimize.ResumeMismatchError` for code that does not match."""
        from qfleet.jobs.minimize import resume_with_code

        resume_with_code(self._store, self.id, cost_function, program)
        self._refresh()
        return self


async def _off_loop(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A call that only reads or writes the job store, on a worker thread (no tape work)."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def _deadline(timeout_sec: float | None) -> float | None:
    if timeout_sec is not None and timeout_sec < 0:
        raise ValueError(f"timeout_sec must be >= 0 or None, got {timeout_sec}")
    return None if timeout_sec is None else time.monotonic() + timeout_sec


_CANCEL_WAIT_S = 30.0
"""Seconds ``cancel`` waits for a backend to confirm cancelling its jobs."""


def get_execution_jobs(offset: int = 0, limit: int = 50) -> list[ExecutionJob]:
    """Jobs in the job store, newest first (``offset`` jobs skipped, at most ``limit``)."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
    store = JobStore.default()
    return [ExecutionJob(row, store) for row in store.list(offset, limit)]


def new_job_id() -> str:
    import uuid

    return str(uuid.uuid4())

