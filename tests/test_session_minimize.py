"""Classiq's session and job API on qfleet backends (issue 18): minimize, estimate_cost
(CVaR), batch forms, session seeds, measured-state filters, costs, get_execution_actions
filters, and the *_async forms inside a running event loop.

The seed example is RX(t) on one qubit: <Z> = cos(t), minimal (-1) at t = pi. Exact
simulators are checked exactly; the 2300 emulator (its own ``qfleet serve-2300`` process)
within shot noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from datetime import UTC, datetime

import numpy as np
import pytest

import qfleet as qf
from qfleet.circuits.programs import ParameterError
from qfleet.executors.status import Price
from qfleet.jobs import (
    CostFunctionError,
    CostUnknownError,
    JobStatus,
    JobStore,
    MeasuredStateFilterError,
    MinimizeError,
    ResultKindError,
)
from qfleet.jobs.distributions import quantile_cost

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
TWO = (
    'OPENQASM 3.0; include "stdgates.inc"; input float a; input float b; qubit[2] q; '
    "bit[2] c; ry(a) q[0]; ry(b) q[1]; c = measure q;"
)
Z = qf.Pauli.Z(0)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    return tmp_path / "qfleet-home"


def job_seed(job) -> int | None:
    """The seed a job's executor ran with (from its row in the job store)."""
    return json.loads(JobStore.default().get(job.id)["executor"])["fields"].get("seed")


# -- minimize -----------------------------------------------------------------------------


def test_minimize_finds_pi_on_the_local_simulator():
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(job_name="vqe")) as es:
        job = es.submit_minimize(Z, {"t": 0.5}, max_iteration=60, tolerance=1e-6)
        result = job.get_minimization_result()
        assert job.kind == "minimize" and job.status is JobStatus.COMPLETED
    cost, params = result.optimal
    assert abs(params["t"] - math.pi) < 1e-3
    assert cost == pytest.approx(-1.0, abs=1e-6)
    assert 2 <= len(result) <= 60 and "COBYLA" in result.message
    for c, p in result:  # every evaluation is exact: cos(t)
        assert c == pytest.approx(math.cos(p["t"]), abs=1e-12)
    assert result[0] == (pytest.approx(math.cos(0.5), abs=1e-12), {"t": 0.5})

    # the same list from the job store, in any process; Classiq's names work too
    again = qf.ExecutionJob.from_id(job.id)
    assert list(again.get_minimization_result()) == list(result)
    assert list(again.result_value()) == list(result)
    # each evaluation is a job of its own, a child of the minimization, in the same session
    frame = qf.get_execution_actions(limit=1000)
    children = frame[frame.parent_id == job.id]
    assert len(children) == len(result) and set(children.kind) == {"estimate"}
    assert set(frame.session_id) == {es.get_session_id()}
    assert set(children.name) == {"vqe"}
    with pytest.raises(ResultKindError):
        qf.ExecutionJob.from_id(children.id.iloc[0]).get_minimization_result()
    # Classiq 1.34's name for it
    with qf.ExecutionSession(QASM) as es:
        assert list(es.variational_minimize(Z, {"t": 0.5}, 3)) == list(result[:3])


def test_minimize_methods_budget_cvar_and_classical_costs():
    with qf.ExecutionSession(QASM) as es:
        # any scipy method by name; max_iteration bounds the cost evaluations (jobs)
        nelder = es.minimize(Z, {"t": 0.5}, max_iteration=5, method="Nelder-Mead")
        assert len(nelder) == 5 and "max_iteration=5" in nelder.message
        cobyla = es.minimize(Z, {"t": 0.5}, max_iteration=4)
        assert len(cobyla) == 4

        # quantile < 1: CVaR of Z's eigenvalues over the exact distribution
        cvar = es.minimize(Z, {"t": 0.5}, max_iteration=30, quantile=0.5)
        for c, p in cvar:
            p1 = math.sin(p["t"] / 2) ** 2
            lowest = min(p1, 0.5)  # the -1 outcome first, then the +1 one up to mass 0.5
            assert c == pytest.approx((-lowest + (0.5 - lowest)) / 0.5, abs=1e-12)
        assert cvar.optimal_cost == pytest.approx(-1.0, abs=1e-12)

        # a classical cost function of the measured bitstring (the program's bits)
        classical = es.minimize(lambda bits: -1.0 if bits == "1" else 1.0, {"t": 0.5},
                                max_iteration=40, tolerance=1e-4)
        assert abs(classical.optimal_parameters["t"] - math.pi) < 1e-2

        # several parameters
        two = qf.ExecutionSession(TWO)
        vec = two.minimize(qf.Pauli.Z(0) + qf.Pauli.Z(1), {"a": 0.3, "b": 0.2},
                           max_iteration=60, tolerance=1e-4)
        assert vec.optimal_cost == pytest.approx(-2.0, abs=1e-4)

        for bad in (
            lambda: es.minimize(Z, {"t": 0.5}, max_iteration=0),
            lambda: es.minimize(Z, {"t": 0.5}, max_iteration=5, method="newton-cg"),
            lambda: es.minimize(Z, {"t": 0.5}, max_iteration=5, method="no-such"),
            lambda: es.minimize(Z, {}, max_iteration=5),
            lambda: es.minimize(Z, {"t": "x"}, max_iteration=5),
            lambda: es.minimize(Z, {"t": 0.5}, max_iteration=5, tolerance=-1),
        ):
            with pytest.raises(MinimizeError):
                bad()
        with pytest.raises(CostFunctionError, match="diagonal"):
            es.minimize(qf.Pauli.X(0), {"t": 0.5}, max_iteration=5, quantile=0.5)
        with pytest.raises(CostFunctionError, match="between 0 and 1"):
            es.minimize(Z, {"t": 0.5}, max_iteration=5, quantile=1.5)
        with pytest.raises(qf.jobs.ObservableError):
            es.minimize(qf.Pauli.Z(3), {"t": 0.5}, max_iteration=5)



def test_a_resumed_minimization_replays_its_checkpoint_exactly():
    """Cut a finished minimization back to its first k evaluations, as a crash after
    iteration k leaves it, and hand it back: the process that takes it over replays those k
    from the checkpoint (no job) and retraces the uninterrupted run exactly."""
    store = JobStore.default()
    with qf.ExecutionSession(QASM) as es:
        job = es.submit_minimize(Z, {"t": 0.5}, max_iteration=40, tolerance=1e-6)
        whole = job.get_minimization_result()
    k = 6
    log = json.loads(store.get(job.id)["checkpoint"])["evaluations"]
    jobs_before = store.count()
    store.update(job.id, {"status": "RUNNING", "ended_at": None, "results": None,
                          "checkpoint": json.dumps({"evaluations": log[:k], "pending": None}),
                          "owner_host": None, "owner_pid": None, "owner_started": None})
    resumed = qf.ExecutionJob.from_id(job.id).get_minimization_result(timeout_sec=60)
    assert list(resumed) == list(whole)
    assert store.count() - jobs_before == len(whole) - k  # only the evaluations after k ran
    again = json.loads(store.get(job.id)["checkpoint"])["evaluations"]
    assert [e["job"] for e in again[:k]] == [e["job"] for e in log[:k]]
    assert qf.ExecutionJob.from_id(job.id).attempts == 2


def test_jobs_cli_shows_a_minimization(capsys):
    from qfleet.cli import main as cli

    with qf.ExecutionSession(QASM) as es:
        job = es.submit_minimize(Z, {"t": 0.5}, max_iteration=3)
        result = job.get_minimization_result()
        probs = es.submit_distribution({"t": 0.5})
        probs.result()
    assert cli(["jobs", "result", job.id]) == 0
    out = capsys.readouterr().out
    assert "minimize" in out and f"{result[0][0]:.10g}" in out and '{"t": 0.5}' in out
    assert cli(["jobs", "result", probs.id]) == 0
    assert f"{math.sin(0.25) ** 2:.6g}" in capsys.readouterr().out
    assert cli(["jobs", "show", job.id]) == 0 and "minimize" in capsys.readouterr().out


def test_cancel_a_minimization():
    es = qf.ExecutionSession(QASM, qf.LocalExecutor(latency=0.2))
    job = es.submit_minimize(Z, {"t": 0.5}, max_iteration=50)
    store = JobStore.default()
    deadline = time.monotonic() + 60
    while not json.loads(store.get(job.id)["checkpoint"])["evaluations"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job.cancel()
    assert job.status is JobStatus.CANCELLED
    with pytest.raises(qf.jobs.JobCancelledError):
        job.get_minimization_result()
    with pytest.raises(qf.jobs.JobAlreadyFinishedError):
        job.cancel()

# -- estimate_cost ----------------------------------------------------------------------------

COSTS = {"00": 3.0, "01": -1.0, "10": 0.5, "11": 2.0}  # bitstrings c[1]c[0]


def exact_probabilities(a: float, b: float) -> dict[str, float]:
    q0 = [math.cos(a / 2) ** 2, math.sin(a / 2) ** 2]
    q1 = [math.cos(b / 2) ** 2, math.sin(b / 2) ** 2]
    return {f"{j}{i}": q1[j] * q0[i] for i in (0, 1) for j in (0, 1)}


def cvar_by_hand(probs: dict[str, float], quantile: float) -> float:
    """The mean cost of the lowest-cost states up to probability mass ``quantile``."""
    left, total = quantile, 0.0
    for bits in sorted(probs, key=COSTS.get):
        take = min(probs[bits], left)
        total += take * COSTS[bits]
        left -= take
    return total / quantile


def test_estimate_cost_is_the_cvar_of_the_exact_distribution():
    params = {"a": 0.9, "b": 2.1}
    probs = exact_probabilities(**params)
    with qf.ExecutionSession(TWO) as es:
        half = es.estimate_cost(COSTS.get, params, quantile=0.5)
        assert half == pytest.approx(cvar_by_hand(probs, 0.5), abs=1e-12)
        assert es.estimate_cost(COSTS.get, params) == pytest.approx(
            sum(p * COSTS[b] for b, p in probs.items()), abs=1e-12)
        assert es.estimate_cost(COSTS.get, params, quantile=0.2) == pytest.approx(
            cvar_by_hand(probs, 0.2), abs=1e-12)
        assert es.estimate_cost(COSTS.get, params, quantile=0.0) == -1.0  # the lowest state
        with pytest.raises(CostFunctionError):
            es.estimate_cost(lambda bits: "cheap", params)
        with pytest.raises(CostFunctionError):
            es.estimate_cost(COSTS.get, params, quantile=-0.1)


def test_sampled_quantile_cost_is_classiqs_rule():
    classiq_cost = pytest.importorskip("classiq.interface.executor.estimate_cost")
    rng = np.random.default_rng(18)
    for _ in range(50):
        n = int(rng.integers(1, 8))
        costs = rng.normal(size=n).round(1)  # ties too
        counts = rng.integers(0, 40, size=n)
        counts[0] += 1
        for q in (0.0, 0.01, 0.25, 0.5, 0.77, 1.0):
            want = (float(np.average(costs, weights=counts)) if q == 1 else
                    float(classiq_cost.estimate_quantile_cost(costs, counts, quantile=q)))
            assert quantile_cost(costs, counts, q, exact=False) == pytest.approx(want, abs=1e-12)


# -- batch forms, seeds, preferences, filters ---------------------------------------------------


def test_batch_forms_session_ids_and_preferences():
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=200)) as es:
        sid = es.get_session_id()
        batch = es.batch_sample([{"t": 0.1}, {"t": 3.0}])
        assert [r.num_shots for r in batch] == [200, 200]
        assert [r.value for r in es.batch_estimate(Z, [{"t": 0.0}, {"t": math.pi}])] == \
            pytest.approx([1.0, -1.0], abs=1e-12)
        job = es.submit_batch_sample([{"t": 0.2}])
        assert job.is_batch and job.session_id == sid
        assert es.submit_batch_estimate(Z, [{"t": 0.2}]).is_batch
        with pytest.raises(ParameterError, match="list of parameter dicts"):
            es.batch_sample({"t": 0.1})  # a dict is not a batch
        es.update_execution_preferences(qf.ExecutionPreferences(num_shots=77, job_name="n"))
        after = es.submit_sample({"t": 0.1})
        assert after.get_sample_result().num_shots == 77 and after.name == "n"
        es.update_execution_preferences(None)  # no change
        assert es.sample({"t": 0.1}).num_shots == 77
    other = qf.ExecutionSession(QASM)
    assert other.get_session_id() != sid and other.program_id == es.program_id
    assert qf.ExecutionSession(TWO).program_id != es.program_id


def test_a_session_seed_reproduces_every_job():
    def run(seed):
        with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=300,
                                                               random_seed=seed)) as es:
            jobs = [es.submit_sample({"t": 1.0}) for _ in range(3)]
            return [j.get_sample_result().counts for j in jobs], jobs

    first, jobs = run(11)
    again, _ = run(11)
    assert first == again  # job for job
    assert len({json.dumps(c, sort_keys=True) for c in first}) > 1  # each job its own seed
    assert run(12)[0] != first
    draws = random.Random(11)
    assert [job_seed(j) for j in jobs] == [11, draws.randint(0, 2**32 - 1),
                                           draws.randint(0, 2**32 - 1)]
    # a new random_seed restarts the stream: the next job repeats the first one's counts
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=300, random_seed=5)) as es:
        es.sample({"t": 1.0})
        es.update_execution_preferences(qf.ExecutionPreferences(num_shots=300, random_seed=11))
        assert es.sample({"t": 1.0}).counts == first[0]


def test_measured_state_filter_on_a_statevector_simulator():
    plus = ('OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; h q[1]; '
            "c = measure q;")
    prefs = qf.ExecutionPreferences(num_shots=4000, random_seed=3)
    with qf.ExecutionSession(plus, prefs) as es:
        es.set_measured_state_filter("c", lambda value: value % 2 == 1)  # c[0] == 1
        result = es.sample()
        assert set(result.counts) == {"01", "11"} and result.num_shots == 4000
        assert sum(result.counts.values()) == 4000  # every shot kept, none post-selected away
        assert abs(result.probability("01") - 0.5) < 5 * math.sqrt(0.25 / 4000)
        # the classical cost sees the filtered distribution (exactly 1/2 each)
        assert es.estimate_cost(lambda bits: int(bits, 2), None) == pytest.approx(2.0, abs=1e-12)
        with pytest.raises(MeasuredStateFilterError, match="before the session's first job"):
            es.set_measured_state_filter("c", lambda value: True)
        with pytest.raises(MeasuredStateFilterError, match="not to estimate"):
            es.estimate(Z)
    with qf.ExecutionSession(plus) as es:
        with pytest.raises(MeasuredStateFilterError, match="no classical register 'd'"):
            es.set_measured_state_filter("d", bool)
        with pytest.raises(MeasuredStateFilterError, match="false for every value"):
            es.set_measured_state_filter("c", lambda value: value > 3)
        es.set_measured_state_filter("c", lambda value: value == 0)
        es.set_measured_state_filter("c", lambda value: value == 3)
        assert es.sample().counts == {}  # the filters together match no state: empty

    # a PennyLane program: a filter names a wire (bitstrings list the wires in order)
    import pennylane as qml

    @qml.qnode(qml.device("default.qubit", wires=["a", "b"]))
    def pair(x):
        qml.RY(x, wires="a")
        qml.Hadamard(wires="b")
        return qml.probs()

    with qf.ExecutionSession(pair, qf.ExecutionPreferences(num_shots=1000)) as es:
        es.set_measured_state_filter("a", lambda bit: bit == 1)
        counts = es.sample({"x": 0.3}).counts
        assert set(counts) == {"10", "11"} and sum(counts.values()) == 1000
        with pytest.raises(MeasuredStateFilterError, match="no wire 'c'"):
            qf.ExecutionSession(pair).set_measured_state_filter("c", bool)


# -- costs and get_execution_actions -----------------------------------------------------------


def test_costs_and_execution_action_filters():
    priced = qf.LocalExecutor(name="priced", price=Price(per_task=0.5, per_shot=0.001))
    free = qf.LocalExecutor(name="free", device="lightning.qubit")
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=100, backend=priced,
                                                           job_name="alpha")) as es1:
        j1 = es1.submit_sample({"t": 0.1})
        j1.result()
        j2 = es1.submit_sample([{"t": 0.2}, {"t": 0.3}])
        j2.result()
        m = es1.submit_minimize(Z, {"t": 0.5}, max_iteration=3)
        m.get_minimization_result()
    middle = datetime.now(UTC)
    time.sleep(0.01)  # timestamps on either side of ``middle``
    with qf.ExecutionSession(TWO, qf.ExecutionPreferences(backend=free, job_name="beta")) as es2:
        j3 = es2.submit_estimate(Z, {"a": 0.4, "b": 0.1})
        j3.result()
    slow = qf.ExecutionSession(QASM, qf.LocalExecutor(name="slow", latency=30))
    j4 = slow.submit_sample({"t": 0.4})
    j4.cancel()

    # costs: per task plus per shot, from what ran; unknown prices are said, never 0
    assert j1.cost() == "0.6 USD"
    assert j2.cost(verbose=True).model_dump() == {
        "total_cost": pytest.approx(1.2), "currency_code": "USD", "tasks": 2, "shots": 200}
    assert m.cost(verbose=True).total_cost == pytest.approx(1.5)  # 3 exact evaluations
    with pytest.raises(CostUnknownError, match="no price"):
        j3.cost()
    assert (j1.provider, j3.provider, j3.backend_name) == ("priced", "free", "lightning.qubit")
    assert j3.program_id == es2.program_id and j1.end_time is not None

    def ids(**filters):
        frame = qf.get_execution_actions(limit=1000, filters=qf.ExecutionJobFilters(**filters))
        return set(frame.id) - set(frame.id[frame.parent_id.notna()])

    top = {j1.id, j2.id, m.id, j3.id, j4.id}
    assert ids() == top
    assert ids(id=j2.id) == {j2.id}
    assert ids(session_id=es1.get_session_id()) == {j1.id, j2.id, m.id}
    assert ids(status="CANCELLED") == {j4.id}
    assert ids(status=JobStatus.COMPLETED) == {j1.id, j2.id, m.id, j3.id}
    assert ids(name="beta") == {j3.id}
    assert ids(provider="priced") == {j1.id, j2.id, m.id}
    assert ids(backend="lightning.qubit") == {j3.id}
    assert ids(program_id=es2.program_id) == {j3.id}
    assert ids(total_cost_min=1.0) == {j2.id, m.id}
    assert ids(total_cost_max=1.0) == {j1.id}  # unknown costs match no cost range
    assert ids(total_cost_min=1.0, total_cost_max=1.3) == {j2.id}
    assert ids(start_time_min=middle) == {j3.id, j4.id}
    assert ids(start_time_max=middle) == {j1.id, j2.id, m.id}
    assert ids(end_time_max=middle) == {j1.id, j2.id, m.id}
    assert ids(end_time_min=middle, status="COMPLETED") == {j3.id}
    assert ids(name="nobody") == set()

    frame = qf.get_execution_actions(limit=1000)
    row = frame.set_index("id").loc[j3.id]
    assert math.isnan(row.total_cost) and row.currency_code is None
    newest = qf.get_execution_actions(limit=2)
    assert list(newest.id) == [j4.id, j3.id]
    assert list(qf.get_execution_actions(offset=1, limit=1).id) == [j3.id]
    with pytest.raises(ValueError):
        qf.get_execution_actions(limit=-1)
    with pytest.raises(TypeError):
        qf.get_execution_actions(filters={"name": "beta"})


# -- *_async inside a running event loop ------------------------------------------------------


def test_async_forms_work_inside_a_running_loop():
    async def main():
        assert asyncio.get_running_loop().is_running()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        es = qf.ExecutionSession(QASM, qf.ExecutionPreferences(
            num_shots=100, backend=qf.LocalExecutor(latency=0.3)))
        job = es.submit_sample({"t": 0.5})
        same = await qf.ExecutionJob.from_id_async(job.id)
        assert await same.poll_async(timeout_sec=30) is JobStatus.COMPLETED
        assert ticks > 0  # the loop ran while the job was awaited
        saved = await same.result_async(timeout_sec=30)
        assert saved[0].value.num_shots == 100
        await same.rename_async("async-name")
        assert qf.ExecutionJob.from_id(job.id).name == "async-name"
        slow = qf.ExecutionSession(QASM, qf.LocalExecutor(latency=30)).submit_sample({"t": 1})
        await slow.cancel_async()
        assert slow.status is JobStatus.CANCELLED
        minimization = qf.ExecutionSession(QASM).submit_minimize(Z, {"t": 0.5}, max_iteration=5)
        result = await minimization.get_minimization_result_async()
        assert len(result) == 5
        frame = await qf.jobs.get_execution_actions_async(
            filters=qf.ExecutionJobFilters(name="async-name"))
        assert list(frame.id) == [job.id]
        tick_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick_task

    asyncio.run(main())


# -- the 2300 emulator (shots only) --------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator():
    support = pytest.importorskip("p2300_support")
    emu = support.Emulator("minimize", ["--seed", "18"])
    emu.launch()
    try:
        yield emu.wait_ready()
    finally:
        emu.stop()


def test_minimize_and_estimate_cost_on_the_2300_emulator(emulator):
    shots = 4000
    prefs = qf.ExecutionPreferences(num_shots=shots, backend=emulator.executor())
    with qf.ExecutionSession(QASM, prefs) as es:
        with pytest.raises(MeasuredStateFilterError, match="samples"):
            es.set_measured_state_filter("c", bool)  # not a statevector simulator
        result = es.minimize(Z, {"t": 0.5}, max_iteration=25, tolerance=1e-3)
        cost, params = result.optimal
        assert abs(params["t"] - math.pi) < 0.15 and cost <= -0.98
        for c, p in result:  # each cost from shots: within 5 sigma of cos(t)
            sigma = abs(math.sin(p["t"])) / math.sqrt(shots)
            assert abs(c - math.cos(p["t"])) <= 5 * sigma + 1e-9
    with qf.ExecutionSession(TWO, prefs) as es:  # sampled CVaR, near the exact one
        params = {"a": 0.9, "b": 2.1}
        sampled = es.estimate_cost(COSTS.get, params, quantile=0.5)
        assert abs(sampled - cvar_by_hand(exact_probabilities(**params), 0.5)) < 0.2
