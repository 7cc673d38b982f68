"""Fleet routing on real 2300 emulators: live status, policies that say why, budgets that
refuse before anything is sent, hedged batches whose losing copy is cancelled on its 2300.

Two ``qfleet serve-2300`` processes of this module's own, one quick and one slow
(``--latency``); each answers ``get_dynamic`` with its request counters, which is how these
tests see what reached a backend.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

import numpy as np
import pennylane as qml
import pytest
from p2300_support import Emulator, wait_until
from pennylane.tape import QuantumScript

import qfleet as qf
from qfleet.executors import Executor2300, LocalExecutor

pytest_plugins = ["p2300_support"]

#: The emulators' qubits (serve-2300's default).
QUBITS = 8


@pytest.fixture(scope="module")
def pair():
    """(quick, slow): 2300 emulators with 0.01 s and 0.3 s per execute."""
    quick = Emulator("fleet-quick", ["--seed", "3", "--latency", "0.01"])
    slow = Emulator("fleet-slow", ["--seed", "4", "--latency", "0.3"])
    for emulator in (quick, slow):
        emulator.launch()
    try:
        yield quick.wait_ready(), slow.wait_ready()
    finally:
        for emulator in (quick, slow):
            if emulator.alive:
                emulator.proc.send_signal(signal.SIGTERM)
        for emulator in (quick, slow):
            emulator.stop()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def bell(shots=200):
    return QuantumScript(
        [qml.Hadamard(0), qml.CNOT([0, 1])], [qml.counts(wires=[0, 1])], shots=shots
    )


def executes(emulator: Emulator) -> int:
    return emulator.dynamic()["execute"]


def test_2300_status_reads_get_dynamic_and_the_configured_price(pair, isolated_config):
    quick, _ = pair
    isolated_config.write_text(
        '[executors.Executor2300]\nprice = {per_task = 0.3, per_shot = 0.001, currency = "EUR"}\n'
    )
    status = quick.executor(name="quick").status()
    assert status.available and status.reason is None
    assert status.queue_length == 0  # nobody holds the 2300's lock
    assert status.price == qf.Price(per_task=0.3, per_shot=0.001, currency="EUR")
    assert status.calibration is None  # the emulator publishes no error rates

    dead = Executor2300(address="tcp://127.0.0.1:9", subscribe_address=None, timeout=0.2)
    status = dead.status()
    assert not status.available and status.reason.startswith("no reply")


def test_queue_policy_prefers_the_quick_2300_and_says_why(pair):
    quick, slow = pair
    cluster = qf.QuantumCluster(
        executors=[slow.executor(name="slow"), quick.executor(name="quick")], selector="queue"
    )
    chosen = [cluster.execute([bell()]).metadata for _ in range(4)]
    # Neither measured yet: each is tried once (estimated completion 0), then the quick one.
    assert [m.executor for m in chosen] == ["slow", "quick", "quick", "quick"]
    routing = chosen[-1].routing
    scores = routing.scores()
    assert routing.chosen_label == "quick" and scores["quick"] < scores["slow"]
    assert scores["slow"] >= 0.3 * 0.7  # at least its measured latency per circuit
    assert routing.skipped() == {}
    assert "policy queue: chose quick" in routing.explain()
    counts = cluster.execute([bell()])[0]
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 200


def test_cost_policy_picks_the_cheaper_2300_and_budget_refuses_before_sending(pair, home):
    quick, slow = pair
    members = [
        slow.executor(name="slow", price=qf.Price(per_task=0.1)),  # cheap but slow
        quick.executor(name="quick", price=qf.Price(per_task=1.0, per_shot=0.01)),
    ]
    cluster = qf.QuantumCluster(
        executors=members, selector="cost", budget=qf.Budget(per_day=0.25, account="cost")
    )
    before = executes(slow), executes(quick)
    meta = cluster.execute([bell(shots=50)]).metadata
    assert meta.executor == "slow" and meta.cost == pytest.approx(0.1)
    assert meta.routing.scores() == {"slow": pytest.approx(0.1), "quick": np.inf}
    assert meta.routing.skipped() == {"quick": "over budget: costs 1.5 USD, at most 0.25 allowed"}
    meta = cluster.execute([bell(shots=50)]).metadata
    assert meta.executor == "slow"
    # 0.05 left: even the cheapest member is over budget now; nothing is sent.
    with pytest.raises(qf.BudgetExceededError) as info:
        cluster.execute([bell(shots=50)])
    assert info.value.cost == pytest.approx(0.1) and info.value.remaining == pytest.approx(0.05)
    assert "costs 0.1 USD on slow" in str(info.value) and "0.05 USD left" in str(info.value)
    assert "quick: over budget: costs 1.5 USD" in info.value.__notes__[0]
    assert (executes(slow), executes(quick)) == (before[0] + 2, before[1])
    # The spend is durable: a new cluster on the same account sees it.
    again = qf.QuantumCluster(
        executors=members, selector="cost", budget=qf.Budget(per_day=0.25, account="cost")
    )
    with pytest.raises(qf.BudgetExceededError):
        again.execute([bell(shots=50)])


def test_per_call_limit_routes_to_a_member_within_it(pair):
    quick, slow = pair
    cluster = qf.QuantumCluster(
        executors=[
            quick.executor(name="quick", price=qf.Price(per_shot=0.01)),
            slow.executor(name="slow", price=qf.Price(per_shot=0.001)),
        ],
        selector="queue",
        budget=qf.Budget(per_call=1.0, account="per-call"),
    )
    meta = cluster.execute([bell(shots=200)]).metadata  # quick would cost 2
    assert meta.executor == "slow"
    assert meta.routing.skipped() == {
        "quick": "over budget: costs 2 USD, at most 1 allowed"
    }


def test_every_skip_reason_is_explained(pair):
    quick, _ = pair
    offline = Executor2300(
        name="offline", address="tcp://127.0.0.1:9", subscribe_address=None, timeout=0.2
    )
    cluster = qf.QuantumCluster(
        executors=[
            offline,
            quick.executor(name="quick", price=qf.Price(per_task=5.0)),
            LocalExecutor(name="local", shots=100, price=qf.Price(per_task=0.5)),
        ],
        selector=qf.Policy(time=1.0, fidelity=1.0),
        budget=qf.Budget(per_call=1.0, account="skips"),
    )
    statuses = cluster.member_status(refresh=True)
    assert not statuses["offline"].available and statuses["quick"].available
    meta = cluster.execute([bell(shots=100)]).metadata
    assert meta.executor == "local"
    skipped = meta.routing.skipped()
    assert skipped["offline"].startswith("offline: no reply")
    assert skipped["quick"] == "over budget: costs 5 USD, at most 1 allowed"
    assert set(meta.routing.scores()) == {"offline", "quick", "local"}
    # wider than the 2300 emulator's qubits: only the simulator can run it
    wide = QuantumScript([qml.Hadamard(w) for w in range(QUBITS + 1)], [qml.counts()], shots=10)
    skipped = cluster.execute([wide]).metadata.routing.skipped()
    assert skipped["quick"].startswith("cannot run it:")


def test_fidelity_policy_prefers_published_error_rates():
    from qfleet.cluster.policy import Features, FleetState, Policy, decide
    from qfleet.executors.status import Calibration

    fleet = FleetState(["noisy", "good", "silent"], [0, 0, 0], [1000, 1000, 1000])
    fleet.update(0, calibration=Calibration(two_qubit_error=0.05, readout_error=0.02))
    fleet.update(1, calibration=Calibration(two_qubit_error=0.01, readout_error=0.03))
    fleet.publish()
    two_qubit_heavy = Features(tasks=1, shots=100, one_qubit=2, two_qubit=10, measured=2)
    readout_only = Features(tasks=1, shots=100, measured=2)
    assert decide(fleet, Policy.preset("fidelity"), two_qubit_heavy).chosen_label == "good"
    decision = decide(fleet, Policy.preset("fidelity"), readout_only)
    assert decision.chosen_label == "noisy"
    scores = decision.scores()
    np.testing.assert_allclose(
        [scores["noisy"], scores["good"]], [-2 * np.log(0.98), -2 * np.log(0.97)]
    )
    assert scores["silent"] == pytest.approx(scores["good"] + 1.0)  # ranked last


def test_hedged_batch_cancels_the_slow_copy_on_its_2300(pair):
    quick, slow = pair
    cluster = qf.QuantumCluster(
        executors=[slow.executor(name="slow"), quick.executor(name="quick")], hedge=2
    )
    x = np.linspace(0.1, 1.0, 8)  # broadcast: 8 circuits, 2.4 s on the slow 2300
    tape = QuantumScript([qml.RX(x, 0)], [qml.expval(qml.Z(0))], shots=400)
    before = slow.dynamic()
    result = cluster.execute([tape])
    assert result.metadata.executor == "quick"
    assert result.metadata.hedged == ("slow", "quick")
    np.testing.assert_allclose(result[0], np.cos(x), atol=5 / np.sqrt(400))
    # The slow 2300 got a terminate and is unlocked, with far fewer than 8 executes.
    after = wait_until(lambda: (d := slow.dynamic())["locked"] is False and d, timeout=10)
    assert after["terminate"] == before["terminate"] + 1
    assert after["execute"] - before["execute"] < 8


def _cached_run(address: str, home: str, results) -> None:
    """Another process: run one sampled circuit on the 2300 with the cache on."""
    os.environ["QFLEET_HOME"] = home
    cluster = qf.QuantumCluster(
        executors=[Executor2300(name="quick", address=address, subscribe_address=None)],
        cache=True,
    )
    cluster.member_status(refresh=True)  # the 2300's calibration epoch keys the cache
    tape = QuantumScript(
        [qml.RX(0.7, 0), qml.CNOT([0, 1])], [qml.counts(wires=[0, 1])], shots=300
    )
    result = cluster.execute([tape])
    results.put(({k: int(v) for k, v in result[0].items()}, result.metadata.cache_hit))


def test_cached_results_are_shared_across_processes_and_run_nothing(pair, home):
    quick, _ = pair
    before = executes(quick)
    context = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    results = context.Queue()
    other = context.Process(target=_cached_run, args=(quick.rep, str(home), results))
    other.start()
    counts, hit = results.get(timeout=120)
    other.join(30)
    assert other.exitcode == 0 and hit is False and sum(counts.values()) == 300
    assert executes(quick) == before + 1

    cluster = qf.QuantumCluster(
        executors=[Executor2300(name="quick", address=quick.rep, subscribe_address=None)],
        cache=True,
    )
    tape = QuantumScript(
        [qml.RX(0.7, 0), qml.CNOT([0, 1])], [qml.counts(wires=[0, 1])], shots=300
    )
    cluster.member_status(refresh=True)
    result = cluster.execute([tape])
    assert result.metadata.cache_hit and result.metadata.cost == 0
    assert dict(result[0]) == counts
    assert executes(quick) == before + 1  # the 2300 ran nothing
    # a different circuit, or the same one with other shots, is not a hit
    assert not cluster.execute([tape.copy(shots=301)]).metadata.cache_hit
    assert executes(quick) == before + 2
    # sampled results are cached only on request
    plain = qf.QuantumCluster(executors=cluster.executors)
    assert not plain.execute([tape]).metadata.cache_hit
    assert executes(quick) == before + 3


def test_fidelity_policy_reads_ibm_calibrations_and_picks_the_better_chip():
    pytest.importorskip("qiskit_ibm_runtime")
    members = [
        qf.executor.QiskitExecutor(name="sherbrooke", device="local_sampler",
                                   backend="fake_sherbrooke", seed=5),
        qf.executor.QiskitExecutor(name="manila", device="local_sampler",
                                   backend="fake_manila", seed=5),
    ]  # fmt: skip
    cluster = qf.QuantumCluster(executors=members, selector="fidelity")
    statuses = cluster.member_status(refresh=True)
    manila = statuses["manila"].calibration
    assert manila.two_qubit_error == pytest.approx(0.00995, abs=1e-5)
    assert statuses["sherbrooke"].calibration.two_qubit_error > 5 * manila.two_qubit_error
    assert statuses["manila"].queue_length == 0 and statuses["manila"].available
    result = cluster.execute([bell(shots=100)])
    routing = result.metadata.routing
    assert result.metadata.executor == "manila" and routing.chosen_label == "manila"
    scores = routing.scores()  # -log(estimated success): 1 one-qubit, 1 two-qubit gate, 2 reads
    assert scores["manila"] == pytest.approx(
        -np.log(manila.success_probability(1, 1, 2)), rel=1e-9
    )
    assert scores["manila"] < scores["sherbrooke"]
    assert set(result[0]) <= {"00", "01", "10", "11"} and sum(result[0].values()) == 100
