"""PennyLane's queuing patch stays confined to thread-mode local simulation (issue 11,
item 7), and durable jobs store their raw output, finished into results when asked.

The patch checks run in a fresh Python process: other tests in this process legitimately
install the patch (LocalExecutor(parallel="thread")), and it cannot be taken back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import qfleet as qf
from qfleet.executors import QiskitExecutor
from qfleet.executors.batch import BatchResult, RunMetadata
from qfleet.jobs import JobStatus
from qfleet.jobs.job import results_from_values
from qfleet.jobs.raw_json import RawCodecError, dumps, loads
from qfleet.jobs.store import JobStore, JobStoreRowError
from qfleet.sampling import Counts, Samples, State, Values

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
H = qf.Pauli.I(0) + 2 * qf.Pauli.Z(0)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    return tmp_path / "qfleet-home"


def run_python(code: str, timeout: float = 120) -> list:
    """Run ``code`` in a fresh interpreter with this test's environment; its JSON lines."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# -- the patch is not installed -----------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
QASM_AND_HELPERS = f"""
import sys
sys.path.insert(0, {HERE!r})
from queuing_confined_helpers import Flaky
QASM = {QASM!r}
"""

SCENARIOS = QASM_AND_HELPERS + """
import asyncio, json, math
import pennylane as qml
import qfleet as qf
from qfleet.executors import LocalExecutor
from qfleet.runtime.queuing import is_installed

def tape(x):
    return qml.tape.QuantumScript([qml.RX(x, 0)], [qml.expval(qml.Z(0))])

def report(name, values, expected):
    ok = all(abs(v - e) < 1e-12 for v, e in zip(values, expected, strict=True))
    print(json.dumps({"scenario": name, "ok": ok, "installed": is_installed()}), flush=True)

report("start", [], [])

# 1. run_later on a cluster that fails over: the batch is prepared again for the good
# member; the caller waits on another batch first, so that thread serves the work.
cluster = qf.QuantumCluster(executors=[Flaky(name="flaky", latency=0.01, fail=1),
                                       LocalExecutor(name="good", latency=0.05)],
                            selector="cyclic", backoff=0.001)
first, second = cluster.run_later([tape(0.1)]), cluster.run_later([tape(0.2)])
values = [float(first.result(60)[0]), float(second.result(60)[0])]
report("run_later failover", values, [math.cos(0.1), math.cos(0.2)])

# 2. least_busy late binding, four futures at once on members of one slot each
members = [LocalExecutor(name=f"m{i}", latency=0.05, max_concurrent=1) for i in range(2)]
busy = qf.QuantumCluster(executors=members, selector="least_busy")
futures = [busy.run_later([tape(0.1 * i)]) for i in range(4)]
values = [float(f.result(60)[0]) for f in futures]
report("least_busy late binding", values, [math.cos(0.1 * i) for i in range(4)])
done = {label: h.done for label, h in busy.health().items()}
print(json.dumps({"scenario": "least_busy members", "done": done}), flush=True)

# 3. a durable job run to completion and its result read
H = qf.Pauli.I(0) + 2 * qf.Pauli.Z(0)
prefs = qf.ExecutionPreferences(backend=LocalExecutor())
with qf.ExecutionSession(QASM, prefs) as es:
    job = es.submit_batch_estimate(H, [{"t": 0.5}, {"t": 0.6}])
values = [r.value for r in job.get_batch_estimate_result()]
report("durable job", values, [1 + 2 * math.cos(0.5), 1 + 2 * math.cos(0.6)])

# 4. a durable job on a cluster that fails over: its poll serves the re-preparation
failing = qf.QuantumCluster(executors=[Flaky(name="flaky2", latency=0.01, fail=1),
                                       LocalExecutor(name="good2", latency=0.01)],
                            selector="cyclic", backoff=0.001)
with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=failing)) as es:
    job = es.submit_estimate(H, {"t": 0.7})
values = [job.get_estimate_result().value]
report("durable job failover", values, [1 + 2 * math.cos(0.7)])
print(json.dumps({"scenario": "failover metadata", "executor": job.run_metadata["executor"]}),
      flush=True)

# 5. the async ExecutionJob methods, on the caller's own event loop
async def main():
    with qf.ExecutionSession(QASM, prefs) as es:
        job = es.submit_estimate(H, {"t": 0.3})
    assert (await job.poll_async(60)).value == "COMPLETED"
    again = await qf.ExecutionJob.from_id_async(job.id)
    return [(await again.result_async(60))[0].value.value]
report("async job", asyncio.run(main()), [1 + 2 * math.cos(0.3)])

# last, the check itself: thread-mode local simulation does install the patch
LocalExecutor(parallel="thread", workers=2).execute([tape(0.1 * i) for i in range(4)])
print(json.dumps({"scenario": "thread mode", "installed": is_installed()}), flush=True)
"""


def test_the_queuing_patch_is_not_installed_by_failover_late_binding_or_durable_jobs():
    lines = run_python(SCENARIOS)
    scenarios = {line["scenario"]: line for line in lines}
    for name in ("start", "run_later failover", "least_busy late binding", "durable job",
                 "durable job failover", "async job"):
        assert scenarios[name]["ok"], name
        assert scenarios[name]["installed"] is False, f"the patch was installed by: {name}"
    # late binding spread the four batches over both single-slot members
    assert sum(scenarios["least_busy members"]["done"].values()) == 4
    assert all(n > 0 for n in scenarios["least_busy members"]["done"].values())
    assert scenarios["failover metadata"]["executor"] == "good2"
    assert scenarios["thread mode"]["installed"] is True  # the check can see the patch


def test_exit_with_a_durable_jobs_tape_work_pending_hands_the_job_back(home):
    # The process submits a durable job on a cluster whose first member fails: the batch
    # waits for a thread to prepare it again for the other member, and nobody asks. Exit
    # must not hang on that; the job is handed back and taken over here.
    [line] = run_python(QASM_AND_HELPERS + """
        import json, time
        import qfleet as qf
        from qfleet.runtime.caller import pending
        cluster = qf.QuantumCluster(executors=[Flaky(name="flaky", fail=1, latency=0.01),
                                               qf.LocalExecutor(name="good")], backoff=0.001)
        H = qf.Pauli.I(0) + 2 * qf.Pauli.Z(0)
        with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=cluster)) as es:
            job = es.submit_estimate(H, {"t": 0.4})
        deadline = time.monotonic() + 60
        while not pending() and time.monotonic() < deadline:  # the failover waits for us
            time.sleep(0.01)
        print(json.dumps({"id": job.id, "pending": pending(), "status": job.status.value}))
    """.replace("\n        ", "\n"))
    assert line["pending"] == 1 and line["status"] == "RUNNING"
    job = qf.ExecutionJob.from_id(line["id"])
    row = JobStore.default().get(job.id)
    assert row["owner_pid"] is None  # handed back at exit
    assert job.get_estimate_result(60).value == pytest.approx(1 + 2 * math.cos(0.4), abs=1e-12)
    assert job.attempts == 2  # taken over by this process


# -- the raw-output codec ---------------------------------------------------------------------


def same(a, b) -> bool:
    """Equal values of the same types (dtype and shape for numpy), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype == object:
            return all(same(x, y) for x, y in zip(a.ravel(), b.ravel(), strict=True))
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and (a == b or (np.isnan(a) and np.isnan(b)))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True)) and (
            not isinstance(a, BatchResult) or a.metadata == b.metadata)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a) and all(
            type(k) is type(j) for k, j in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b


METADATA = RunMetadata(executor="x", backend="b", num_circuits=4, execution_time=0.25,
                       submitted_at=1.5e9, job_ids=("j1", "j2"), shots=(100, None, 7, None),
                       cost=0.3, compile={"seconds": 0.1, "cached": 1})


def values_of_every_kind() -> list:
    from qfleet.circuits.compile2300 import CompiledProgram
    from qfleet.circuits.cqasm import CqasmProgram
    from qfleet.protocols.p2300.messages import ExecuteResult

    program = CqasmProgram("version 3.0", (0, "a", 2.5), (1, 0, 2), 3)
    return [
        None, True, False, 0, -(2**70), 1.5, -0.0, float("nan"), float("inf"), -float("inf"),
        1 - 2j, complex(float("nan"), 1), "text", "",
        [1, (2, [3])], (), [], {"a": 1}, {0: "zero", (1, "w"): [2]}, {None: 0, 2.5: True},
        np.float64(0.5), np.float32(0.25), np.int64(-3), np.uint8(200), np.bool_(True),
        np.complex128(1j), np.complex64(1 + 1j), np.float64("nan"),
        np.arange(6, dtype=np.int8).reshape(2, 3), np.zeros((0, 3)), np.array(2.5),
        np.array([[1, 0], [0, 1]], dtype=bool), np.eye(3, dtype=np.float32).T[::2],
        np.array([1 + 2j, 3j]) / 3, np.array([1, 2], dtype=np.complex64),
        np.array(["01", "10"]), np.array([{"0": 1}, None], dtype=object),
        Samples(np.array([[0, 1], [1, 1]], dtype=np.int64)),
        Counts({"00": 7, "11": 3}),
        State(np.array([1, 0, 0, 1j]) / math.sqrt(2)),
        State(np.eye(2) / 2, density=True),
        Values((np.float64(0.1), np.array([0.5, 0.5]), {"0": np.int64(3)})),
        BatchResult([Samples(np.ones((2, 1), dtype=np.int64)), Counts({"1": 2})], METADATA),
        program,
        CompiledProgram("version 3.0", (0,), (4,), 5, initial_placement=(4,), swaps=1,
                        passes=("map:Mapper",)),
        ExecuteResult(job_id=3, results={"01": 5, "10": 2}, raw_data=["01", "10"]),
        (program, (7, {"01": 0.5}, None, 100)),  # Quantum Inspire: (program, result)
        [["0110", "1001"], {"0": 0.25, "3": 0.75}],  # Azure: Quantinuum shots, IonQ histogram
    ]


@pytest.mark.parametrize("value", values_of_every_kind(), ids=lambda v: type(v).__name__)
def test_raw_output_round_trips_exactly(value):
    text = dumps(value)
    json.loads(text)  # plain JSON (no NaN literals)
    assert same(loads(text), value)


def test_classiq_exact_values_round_trip():
    classiq = pytest.importorskip("qfleet.executors.classiq")
    observed = classiq.ObservedValues((0.5, -0.25), (("expval", 0), ("var", 0, 1)))
    assert same(loads(dumps([observed])), [observed])


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", METADATA.model_copy,
                                   np.array([object()], dtype=object), qf.LocalExecutor()])
def test_unknown_raw_output_types_are_refused(value):
    with pytest.raises(RawCodecError, match="cannot store"):
        dumps(value)


@pytest.mark.parametrize("data", [
    {"$": "obj", "cls": "os:system", "fields": {}},
    {"$": "obj", "cls": "builtins:eval", "fields": {}},
    {"$": "ndarray", "dtype": "O", "shape": [1]},
    {"$": "ndarray", "dtype": "<f8", "shape": [2], "data": "not base64!"},
    {"$": "whatever"},
])
def test_documents_the_codec_did_not_write_are_refused(data):
    with pytest.raises(RawCodecError):
        loads(json.dumps({"format": "qfleet.raw", "version": 1, "data": data}))


# -- durable jobs: raw output stored, finished when asked -----------------------------------


def direct_items(kind: str, job, executor) -> list:
    """The job's items computed from a direct run of its tapes on ``executor``."""
    row = JobStore.default().get(job.id)
    values = executor.execute(job.tapes)
    return results_from_values(kind, job.parameters, json.loads(row["layout"]), values)["items"]


def raw_of(job_id: str) -> str | None:
    return JobStore.default().get(job_id)["raw_output"]


def test_local_estimate_and_probs_equal_the_direct_run():
    local = qf.LocalExecutor()
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=local)) as es:
        estimate = es.submit_batch_estimate(H, [{"t": 0.5}, {"t": 1.1}])
        distribution = es.submit_distribution({"t": 0.9})
    for job in (estimate, distribution):
        assert job.poll(60) is JobStatus.COMPLETED
        assert raw_of(job.id) is not None  # stored raw, nobody asked yet
    values = [r.value for r in estimate.get_batch_estimate_result()]
    assert values == [i["value"] for i in direct_items("estimate", estimate, local)]
    assert values == pytest.approx([1 + 2 * math.cos(0.5), 1 + 2 * math.cos(1.1)], abs=1e-12)
    assert raw_of(estimate.id) is None  # finished once: the results are kept instead
    probabilities = distribution.result_value()
    assert probabilities == direct_items("probs", distribution, local)[0]["probabilities"]
    assert probabilities["1"] == pytest.approx(math.sin(0.45) ** 2, abs=1e-12)


def test_results_finished_in_another_process_equal_the_direct_run():
    qiskit = QiskitExecutor(seed=11, shots=2000)
    local = qf.LocalExecutor()
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=qiskit)) as es:
        sampled = es.submit_batch_sample([{"t": 0.4}, {"t": 2.0}])
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=local)) as es:
        estimated = es.submit_batch_estimate(H, [{"t": 0.5}, {"t": 1.1}])
    for job in (sampled, estimated):
        assert job.poll(120) is JobStatus.COMPLETED and raw_of(job.id) is not None
    [other] = run_python(f"""
        import json, qfleet as qf
        sampled = qf.ExecutionJob.from_id({sampled.id!r})
        estimated = qf.ExecutionJob.from_id({estimated.id!r})
        print(json.dumps({{
            "counts": [r.counts for r in sampled.get_batch_sample_result()],
            "values": [r.value for r in estimated.get_batch_estimate_result()],
        }}))
    """)
    assert raw_of(sampled.id) is None and raw_of(estimated.id) is None  # finished there
    counts = [i["counts"] for i in direct_items("sample", sampled, QiskitExecutor(seed=11,
                                                                                    shots=2000))]
    assert other["counts"] == counts
    assert [r.counts for r in sampled.get_batch_sample_result()] == counts
    assert sum(counts[0].values()) == 2000
    assert counts[0].get("1", 0) / 2000 == pytest.approx(math.sin(0.2) ** 2, abs=0.05)
    assert other["values"] == [i["value"] for i in direct_items("estimate", estimated, local)]


def test_a_cluster_jobs_raw_output_is_finished_from_the_store():
    cluster = qf.QuantumCluster(executors=[qf.LocalExecutor(name="a"),
                                           qf.LocalExecutor(name="b")], spread=True)
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=cluster)) as es:
        job = es.submit_batch_estimate(H, [{"t": 0.1 * i} for i in range(4)])
    assert job.poll(60) is JobStatus.COMPLETED
    stored = loads(raw_of(job.id))
    assert [p["label"] for p in stored["parts"]] == ["a", "b"]
    from qfleet.jobs import job as job_module

    assert job_module._take_unfinished(job.id) is not None  # finish from the store instead
    values = [r.value for r in job.get_batch_estimate_result()]
    assert values == pytest.approx([1 + 2 * math.cos(0.1 * i) for i in range(4)], abs=1e-12)


def test_a_corrupted_raw_payload_is_a_typed_error_naming_the_job(home):
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=qf.LocalExecutor())) as es:
        job = es.submit_estimate(H, {"t": 0.5})
    assert job.poll(60) is JobStatus.COMPLETED
    from qfleet.jobs import job as job_module

    job_module._take_unfinished(job.id)  # as in another process: only the store has it
    bad = json.dumps({"format": "qfleet.raw", "version": 1,
                      "data": {"$": "obj", "cls": "os:system", "fields": {"command": "true"}}})
    with sqlite3.connect(home / "jobs.sqlite3") as conn:
        conn.execute("UPDATE jobs SET raw_output = ? WHERE id = ?", (bad, job.id))
    with pytest.raises(JobStoreRowError, match=rf"job '{job.id}'.*raw_output.*os:system.*"
                                               r"run the job again"):
        job.get_estimate_result()
    assert job.status is JobStatus.COMPLETED  # nothing is marked failed for a damaged row
    with sqlite3.connect(home / "jobs.sqlite3") as conn:
        conn.execute("UPDATE jobs SET raw_output = '[1' WHERE id = ?", (job.id,))
    with pytest.raises(JobStoreRowError, match=rf"job '{job.id}'.*raw_output"):
        job.get_estimate_result()


def test_a_store_without_the_raw_output_column_gets_it_and_keeps_its_results(home):
    from qfleet.jobs import store as store_module

    home.mkdir(parents=True)
    old_schema = store_module._SCHEMA.replace(",\n    raw_output TEXT", "")
    assert "raw_output" not in old_schema
    results = json.dumps({"kind": "estimate", "items": [
        {"parameters": {"t": 0.5}, "value": 2.75, "num_shots": None}]})
    tapes = json.dumps({"format": "qfleet.tapes", "version": 1, "tapes": []})
    with sqlite3.connect(home / "jobs.sqlite3") as conn:
        conn.executescript(old_schema)
        conn.execute(f"PRAGMA user_version = {store_module.SCHEMA_VERSION}")
        conn.execute(
            "INSERT INTO jobs (id, kind, status, created_at, executor, parameters, "
            "preferences, tapes, results) VALUES ('old', 'estimate', 'COMPLETED', 1.0, '{}', "
            "?, '{}', ?, ?)", ('[{"t": 0.5}]', tapes, results))
    job = qf.ExecutionJob.from_id("old")
    assert job.get_estimate_result().value == 2.75
    with sqlite3.connect(home / "jobs.sqlite3") as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    assert "raw_output" in columns


def test_a_runner_this_process_cannot_build_leaves_the_raw_output_for_another(home):
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=qf.LocalExecutor())) as es:
        job = es.submit_estimate(H, {"t": 0.5})
    assert job.poll(60) is JobStatus.COMPLETED
    from qfleet.jobs import job as job_module

    job_module._take_unfinished(job.id)  # as in another process: only the store has it
    runner = JobStore.default().get(job.id)["runner"]
    missing = json.dumps({"class": "qfleet_extra_not_installed:Backend", "fields": {}})
    with sqlite3.connect(home / "jobs.sqlite3") as conn:
        conn.execute("UPDATE jobs SET runner = ? WHERE id = ?", (missing, job.id))
    with pytest.raises(job_module.ResultsNotFinishableError,
                       match=rf"job {job.id} completed.*qfleet_extra_not_installed:Backend"):
        job.get_estimate_result()
    assert job.status is JobStatus.COMPLETED and raw_of(job.id) is not None  # nothing lost
    with sqlite3.connect(home / "jobs.sqlite3") as conn:
        conn.execute("UPDATE jobs SET runner = ? WHERE id = ?", (runner, job.id))
    assert job.get_estimate_result().value == pytest.approx(1 + 2 * math.cos(0.5), abs=1e-12)
