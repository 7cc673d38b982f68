"""Budgets and the result cache's store, across processes; decisions explained afterwards."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript

import qfleet as qf
from qfleet.cluster import Ledger
from qfleet.cluster.ledger import decode_results, encode_results
from qfleet.cluster.policy import Features, FleetState, Policy, decide
from qfleet.executors import LocalExecutor
from qfleet.executors.status import Calibration, ExecutorStatus


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


CALLS_PER_PROCESS = 250
PROCESSES = 4


def _spend(home: str, start: int, results) -> None:
    os.environ["QFLEET_HOME"] = home
    cluster = qf.QuantumCluster(
        executors=[
            LocalExecutor(name="cheap", price=qf.Price(per_task=1.0)),
            LocalExecutor(name="dear", price=qf.Price(per_task=2.0)),
        ],
        selector="cost",
        budget=qf.Budget(total=600, account="race"),
    )
    ok = refused = 0
    for i in range(start, start + CALLS_PER_PROCESS):
        tape = QuantumScript([qml.RX(i / 1000, 0)], [qml.expval(qml.Z(0))])
        try:
            assert cluster.execute([tape]).metadata.executor == "cheap"
            ok += 1
        except qf.BudgetExceededError as exc:
            assert exc.cost == 1.0 and exc.remaining < 1.0
            refused += 1
    results.put((ok, refused))


def test_a_budget_is_never_overshot_by_concurrent_processes(home):
    # 1000 calls of 1 USD from 4 processes against 600 USD: exactly 600 run.
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    procs = [
        context.Process(target=_spend, args=(str(home), k * CALLS_PER_PROCESS, results))
        for k in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert sum(ok for ok, _ in outcomes) == 600
    assert sum(refused for _, refused in outcomes) == PROCESSES * CALLS_PER_PROCESS - 600
    today, total = Ledger.default().spent("race")
    assert today == total == 600.0


def test_per_call_limit_refuses_with_the_cost_and_what_remains():
    cluster = qf.QuantumCluster(
        executors=[LocalExecutor(name="a", shots=1000, price=qf.Price(per_shot=0.01))],
        budget=qf.Budget(per_call=5.0, total=100.0, account="per-call"),
    )
    tape = QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0))])
    with pytest.raises(qf.BudgetExceededError) as info:
        cluster.execute([tape])
    assert (info.value.cost, info.value.remaining) == (10.0, 5.0)
    assert "costs 10 USD on a" in str(info.value) and "per call (5 USD)" in str(info.value)
    assert Ledger.default().spent("per-call") == (0.0, 0.0)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.cost, again.remaining, str(again)) == (10.0, 5.0, str(info.value))


def test_results_round_trip_the_cache_encoding_as_data():
    results = (
        np.float64(0.25),
        np.array([0.5, 0.5]),
        (np.array([1, 0, 1]), {"00": np.int64(3), "11": np.int64(4)}),
        [1.5, None],
    )
    back = decode_results(encode_results(results))
    assert type(back[0]) is np.float64 and back[0] == 0.25
    np.testing.assert_array_equal(back[1], results[1])
    np.testing.assert_array_equal(back[2][0], results[2][0])
    assert back[2][1] == {"00": 3, "11": 4} and back[3] == [1.5, None]
    with pytest.raises(TypeError):
        encode_results((object(),))


def test_exact_results_are_cached_for_backends_that_are_not_simulators_here():
    pytest.importorskip("braket.devices")
    from qfleet.executors import BraketLocalExecutor

    tape = QuantumScript([qml.RX(0.4, 0), qml.CNOT([0, 1])], [qml.expval(qml.Z(1))])
    braket = qf.QuantumCluster(executors=[BraketLocalExecutor(name="sv")])
    first, second = braket.execute([tape]), braket.execute([tape])
    assert (first.metadata.cache_hit, second.metadata.cache_hit) == (False, True)
    assert second[0] == first[0] == pytest.approx(np.cos(0.4), abs=1e-12)
    uncached = qf.QuantumCluster(executors=[BraketLocalExecutor()], cache=False)
    assert not uncached.execute([tape]).metadata.cache_hit
    # a PennyLane simulator in this process simulates again (as cheap as a lookup)
    local = qf.QuantumCluster(executors=[LocalExecutor()])
    assert not local.execute([tape]).metadata.cache_hit
    assert not local.execute([tape]).metadata.cache_hit


def test_an_old_decision_explains_the_state_it_was_made_in():
    fleet = FleetState(["a", "b", "c"], [0, 0, 0], [0, 0, 0])
    for i, (wait, latency) in enumerate([(1.0, 0.5), (0.0, 0.8), (4.0, 0.1)]):
        fleet.update(i, ExecutorStatus(executor="abc"[i], estimated_wait=wait))
        fleet.set_latency(i, latency)
    fleet.publish()
    queue = Policy.preset("queue")
    first = decide(fleet, queue, Features(tasks=2))
    want = {"a": 1.0 + 0.5 * 2, "b": 0.0 + 0.8 * 2, "c": 4.0 + 0.1 * 2}
    assert first.chosen_label == "b" and first.scores() == pytest.approx(want)
    fleet.add_load(1, 1)  # b now has a circuit ahead of the next batch
    fleet.set_latency(0, 0.25)
    second = decide(fleet, queue, Features(tasks=2))
    assert second.chosen_label == "a"
    assert second.scores() == pytest.approx({"a": 1.5, "b": 0.8 + 1.6, "c": 4.2})
    assert first.scores() == pytest.approx(want)  # unchanged by what happened since
    copy = pickle.loads(pickle.dumps(first))
    assert copy.scores() == pytest.approx(want) and copy.chosen_label == "b"
    with pytest.raises(ValueError, match="positive weight"):
        Policy()


# -- charges follow what the backends accepted ----------------------------------------------


class Flaky(LocalExecutor):
    """A LocalExecutor whose backend refuses the connection (nothing delivered), rejects the
    batch, or accepts it and then loses it."""

    fault: str = "refused"

    async def submit(self, payload):
        if self.fault == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        if self.fault == "rejected":
            raise ValueError("the backend rejected the circuit")
        return await super().submit(payload)

    async def collect(self, job):
        await super().collect(job)
        raise ConnectionResetError(104, "Connection reset by peer")  # accepted, then lost


def _budget_cluster(first: LocalExecutor, second: LocalExecutor | None = None, total=100.0):
    members = [first] if second is None else [first, second]
    return qf.QuantumCluster(
        executors=members, selector="cyclic", backoff=0.0, retries=1,
        budget=qf.Budget(total=total, account="refunds"),
    )  # fmt: skip


TAPE = QuantumScript([qml.RX(0.4, 0)], [qml.expval(qml.Z(0))])


def test_a_batch_no_backend_accepted_is_refunded():
    rejected = Flaky(name="rejects", fault="rejected", latency=0.001, price=qf.Price(per_task=3.0))
    with pytest.raises(qf.ExecutorError, match="rejected the circuit"):
        _budget_cluster(rejected).execute([TAPE])
    assert Ledger.default().spent("refunds") == (0.0, 0.0)


def test_failover_moves_the_charge_unless_the_first_member_accepted_the_batch():
    refused = Flaky(name="down", fault="refused", latency=0.001, price=qf.Price(per_task=3.0))
    good = LocalExecutor(name="good", latency=0.001, price=qf.Price(per_task=2.0))
    result = _budget_cluster(refused, good).execute([TAPE])
    assert np.isclose(result[0], np.cos(0.4)) and result.metadata.executor == "good"
    # "down" never received it: only "good" charged.
    assert result.metadata.cost == 2.0 and Ledger.default().spent("refunds") == (2.0, 2.0)

    lost = Flaky(name="lost", fault="lost", latency=0.001, price=qf.Price(per_task=3.0))
    result = _budget_cluster(lost, good).execute([TAPE])
    assert result.metadata.executor == "good"
    # "lost" accepted it (its provider may bill): both submissions stay charged.
    assert result.metadata.cost == 5.0 and Ledger.default().spent("refunds") == (7.0, 7.0)


def test_a_failover_the_budget_cannot_pay_for_is_not_taken_and_the_charge_is_refunded():
    refused = Flaky(name="down", fault="refused", latency=0.001, price=qf.Price(per_task=3.0))
    dear = LocalExecutor(name="dear", latency=0.001, price=qf.Price(per_task=9.0))
    budget = qf.Budget(total=10.0, account="refunds")
    Ledger.default().charge(budget, 1.5, member="earlier")
    # 1.5 + 3 fits on "down", which refuses the connection; "dear" is over budget, so the
    # batch fails with down's error, and down's charge is taken back.
    with pytest.raises(qf.ExecutorError, match="Connection refused") as info:
        _budget_cluster(refused, dear, total=10.0).execute([TAPE])
    assert "gave up after 2 attempts on ['down']" in "".join(info.value.__notes__)
    assert Ledger.default().spent("refunds") == (1.5, 1.5)


def test_failover_may_spend_the_charge_it_takes_back():
    refused = Flaky(name="down", fault="refused", latency=0.001, price=qf.Price(per_task=3.0))
    dearer = LocalExecutor(name="dearer", latency=0.001, price=qf.Price(per_task=7.0))
    Ledger.default().charge(qf.Budget(account="refunds"), 1.5, member="earlier")
    # 1.5 + 3 + 7 would break 10, but down's 3 moves to dearer: 1.5 + 7 fits.
    result = _budget_cluster(refused, dearer, total=10.0).execute([TAPE])
    assert result.metadata.executor == "dearer" and result.metadata.cost == 7.0
    assert Ledger.default().spent("refunds") == (8.5, 8.5)


def test_moving_a_charge_is_one_transaction():
    ledger, budget = Ledger.default(), qf.Budget(total=10.0, account="move")
    charge = ledger.charge(budget, 3.0, member="a")
    with pytest.raises(qf.BudgetExceededError):
        ledger.move(charge, budget, 12.0, member="b")
    assert ledger.spent("move") == (3.0, 3.0)  # refused: the first charge stands
    moved = ledger.move(charge, budget, 8.0, member="b")
    assert (moved.cost, moved.member, moved.remaining) == (8.0, "b", 2.0)
    assert ledger.spent("move") == (8.0, 8.0)
    ledger.refund(moved)
    assert ledger.spent("move") == (0.0, 0.0)


def test_after_a_failover_routing_explains_the_member_that_ran_it():
    down = Flaky(name="down", fault="refused", latency=0.001, price=qf.Price(per_task=1.0))
    good = LocalExecutor(name="good", latency=0.001, price=qf.Price(per_task=2.0))
    cluster = qf.QuantumCluster(executors=[down, good], selector="cost", backoff=0.0, retries=1)
    result = cluster.execute([TAPE])  # the cost policy picks "down" first: cheaper
    routing = result.metadata.routing
    assert result.metadata.executor == "good" and routing.chosen_label == "good"
    assert "down" in routing.skipped() and "good" in routing.explain()


ANSWER = threading.Event()


class SlowToAnswer(LocalExecutor):
    """Publishes a calibration epoch, but only once ``ANSWER`` is set."""

    def status(self) -> ExecutorStatus:
        ANSWER.wait(30)
        return ExecutorStatus(executor=self.label, calibration=Calibration(epoch="cal-1"))


def test_no_cache_before_the_calibration_epoch_is_known():
    ANSWER.clear()
    cluster = qf.QuantumCluster(executors=[SlowToAnswer(name="chip", shots=100, seed=3)],
                                cache=True)
    tape = QuantumScript([qml.RX(0.4, 0)], [qml.counts(wires=0)], shots=100)
    try:
        first = cluster.execute([tape])  # the status refresh has not answered yet
        assert not first.metadata.cache_hit
        assert not cluster.execute([tape]).metadata.cache_hit  # nothing was stored
    finally:
        ANSWER.set()
    cluster.member_status(refresh=True)
    stored = cluster.execute([tape])
    again = cluster.execute([tape])
    assert not stored.metadata.cache_hit and again.metadata.cache_hit
    assert dict(again[0]) == dict(stored[0])
