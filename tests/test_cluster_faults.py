"""QuantumCluster load balancing and fault tolerance with in-process fault executors.

The 2300-emulator fault suite (real sockets, dropped replies) is in test_p2300_faults.py;
these tests pin the cluster's own logic with executors whose failures are scripted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pennylane as qml
import pytest

import qfleet as qf
from qfleet.cluster import ExecutorHealth
from qfleet.errors import ExecutorError
from qfleet.executors import LocalExecutor
from qfleet.runtime.progress import BatchProgress


class Scripted(LocalExecutor):
    """A LocalExecutor (with latency, so it runs on the loop) that fails on cue.

    ``fail`` lists per-submission outcomes: "ok", "transient", "permanent"; after the list,
    submissions succeed (or keep failing with ``then``).
    """

    fail: list[str] = []
    then: str = "ok"

    def _outcomes(self) -> list[int]:
        return self._runtime.setdefault("count", [0])

    async def submit(self, payload: Any) -> tuple[Any, tuple[str, ...]]:
        count = self._outcomes()
        outcome = self.fail[count[0]] if count[0] < len(self.fail) else self.then
        count[0] += 1
        if outcome == "transient":
            raise ExecutorError("no reply (dropped)", executor=self.label, transient=True)
        if outcome == "permanent":
            raise ExecutorError("invalid circuit: unknown gate", executor=self.label)
        return await super().submit(payload)

    @property
    def submissions(self) -> int:
        return self._outcomes()[0]


class Cancellable(LocalExecutor):
    """Waits for ``latency`` and records whether the backend job was cancelled."""

    async def submit(self, payload: Any) -> tuple[Any, tuple[str, ...]]:
        return asyncio.ensure_future(asyncio.sleep(self.latency, result=payload.results)), ("job-1",)

    async def collect(self, job: Any) -> Sequence[Any]:
        return await job

    async def cancel(self, job: Any) -> None:
        job.cancel()
        self.cancelled_event().set()

    def cancelled_event(self) -> threading.Event:
        return self._runtime.setdefault("cancelled", threading.Event())


def tape(x: float) -> qml.tape.QuantumScript:
    return qml.tape.QuantumScript([qml.RX(x, 0)], [qml.expval(qml.Z(0))])


def exact(x: float) -> float:
    return float(np.cos(x))


def test_transient_failure_fails_over_to_another_executor():
    flaky = Scripted(name="flaky", latency=0.001, fail=["transient"])
    good = Scripted(name="good", latency=0.001)
    cluster = qf.QuantumCluster(executors=[flaky, good], backoff=0.001)
    result = cluster.execute([tape(0.3)])
    assert result[0] == pytest.approx(exact(0.3))
    assert result.metadata.executor == "good"
    health = cluster.health()
    assert (health["flaky"].failed, health["flaky"].done) == (1, 0)
    assert (health["good"].failed, health["good"].done) == (0, 1)


def test_permanent_failure_is_not_retried_and_names_the_executor():
    bad = Scripted(name="bad", latency=0.001, then="permanent")
    good = Scripted(name="good", latency=0.001)
    cluster = qf.QuantumCluster(executors=[bad, good], backoff=0.5)
    started = time.perf_counter()
    with pytest.raises(ExecutorError, match=r"\[bad\] invalid circuit: unknown gate") as info:
        cluster.execute([tape(0.1)])
    assert not info.value.transient
    assert time.perf_counter() - started < 0.5  # no backoff sleep: not retried
    assert (bad.submissions, good.submissions) == (1, 0)
    # A bad batch says nothing about the executor: no breaker trip.
    assert cluster.health()["bad"].state == "healthy"


def test_all_executors_failing_gives_one_clear_error_quickly():
    members = [Scripted(name=f"down{i}", latency=0.001, then="transient") for i in range(3)]
    cluster = qf.QuantumCluster(executors=members, retries=4, backoff=0.001, backoff_max=0.01)
    started = time.perf_counter()
    with pytest.raises(ExecutorError, match="no reply") as info:
        cluster.execute([tape(0.2)])
    assert time.perf_counter() - started < 2
    assert any("gave up after 5 attempts" in note for note in info.value.__notes__)
    assert sum(m.submissions for m in members) == 5


def test_breaker_opens_after_consecutive_failures_then_probes_and_recovers():
    flaky = Scripted(name="flaky", latency=0.001, fail=["transient"] * 2)
    good = Scripted(name="good", latency=0.001)
    cluster = qf.QuantumCluster(
        executors=[flaky, good], breaker_threshold=2, breaker_cooldown=0.3, backoff=0.001
    )
    for x in (0.1, 0.2, 0.3, 0.4):
        assert cluster.execute([tape(x)])[0] == pytest.approx(exact(x))
    assert cluster.health()["flaky"].state == "open"
    submissions = flaky.submissions
    for x in (0.5, 0.6, 0.7):  # open: no traffic to flaky
        assert cluster.execute([tape(x)])[0] == pytest.approx(exact(x))
    assert flaky.submissions == submissions
    time.sleep(0.35)
    assert cluster.health()["flaky"].state == "half-open"
    results = [cluster.execute([tape(x)]) for x in (0.8, 0.9)]
    assert "flaky" in {r.metadata.executor for r in results}  # probed, succeeded
    assert cluster.health()["flaky"].state == "healthy"


def test_failed_probe_reopens_the_breaker():
    flaky = Scripted(name="flaky", latency=0.001, then="transient")
    good = Scripted(name="good", latency=0.001)
    cluster = qf.QuantumCluster(
        executors=[flaky, good], breaker_threshold=1, breaker_cooldown=0.2, backoff=0.001
    )
    cluster.execute([tape(0.1)])
    assert cluster.health()["flaky"].state == "open"
    time.sleep(0.25)
    cluster.execute([tape(0.2)])  # probe on flaky fails, the batch still finishes on good
    assert cluster.health()["flaky"].state == "open"


def test_health_reports_counts_and_latency():
    cluster = qf.QuantumCluster(
        executors=[LocalExecutor(name="a", latency=0.02), LocalExecutor(name="a", latency=0.02)]
    )
    for x in (0.1, 0.2, 0.3):
        cluster.execute([tape(x)])
    health = cluster.health()
    assert set(health) == {"a#0", "a#1"}  # repeated labels made unique
    assert [h.done for h in health.values()] == [2, 1]
    assert all(isinstance(h, ExecutorHealth) and h.in_flight == 0 for h in health.values())
    assert all(0.02 <= h.mean_latency < 1.0 for h in health.values())


def test_spread_splits_by_capacity_and_keeps_order():
    members = [
        LocalExecutor(name="big", latency=0.001, max_concurrent=3),
        LocalExecutor(name="small", latency=0.001, max_concurrent=1),
    ]
    cluster = qf.QuantumCluster(executors=members, spread=True)
    xs = np.linspace(0, 3, 40)
    result = cluster.execute([tape(x) for x in xs])
    assert np.allclose(result, np.cos(xs))
    assert result.metadata.executor == "big+small"
    # 3:1 free capacity -> 30 and 10 tapes, one sub-batch each
    assert cluster.health()["big"].done == 1 and cluster.health()["small"].done == 1


def test_spread_with_chunk_size_makes_sub_batches():
    members = [LocalExecutor(name=n, latency=0.001) for n in ("a", "b")]
    cluster = qf.QuantumCluster(executors=members, spread=True, chunk_size=5)
    xs = np.linspace(0, 1, 23)
    assert np.allclose(cluster.execute([tape(x) for x in xs]), np.cos(xs))
    health = cluster.health()
    assert (health["a"].done, health["b"].done) == (3, 3)  # 12 = 5+5+2, 11 = 5+5+1


def test_least_busy_drains_a_slow_executors_queue():
    def cluster(selector):
        return qf.QuantumCluster(
            executors=[
                LocalExecutor(name="fast", latency=0.01, max_concurrent=2),
                LocalExecutor(name="slow", latency=0.1, max_concurrent=2),
            ],
            selector=selector,
        )

    routed = {}
    for selector in ("cyclic", "least_busy"):
        c = cluster(selector)
        futures = [c.run_later([tape(0.05 * i)]) for i in range(24)]
        assert [f.result()[0] for f in futures] == pytest.approx([exact(0.05 * i) for i in range(24)])
        routed[selector] = c.health()["slow"].done
    assert routed["cyclic"] == 12
    assert routed["least_busy"] <= 6


def test_fastest_prefers_the_low_latency_executor_but_explores():
    c = qf.QuantumCluster(
        executors=[LocalExecutor(name="slow", latency=0.03), LocalExecutor(name="fast", latency=0.001)],
        selector="fastest",
    )
    for i in range(40):
        assert c.execute([tape(0.01 * i)])[0] == pytest.approx(exact(0.01 * i))
    health = c.health()
    assert health["fast"].done > 3 * health["slow"].done
    assert health["slow"].done >= 1  # measured at least once (exploration)


def test_cluster_timeout_bounds_the_batch_and_cancels_backend_work():
    slow = Cancellable(name="slow", latency=5)
    cluster = qf.QuantumCluster(executors=[slow], timeout=0.2, retries=0)
    started = time.perf_counter()
    with pytest.raises(qf.ExecutorTimeoutError, match="timeout"):
        cluster.execute([tape(0.1)])
    assert time.perf_counter() - started < 2
    assert slow.cancelled_event().wait(2)


def test_cancelling_run_later_cancels_the_backend_job():
    slow = Cancellable(name="slow", latency=5)
    cluster = qf.QuantumCluster(executors=[slow, Cancellable(name="slow2", latency=5)])
    future = cluster.run_later([tape(0.1)])
    time.sleep(0.1)
    assert future.cancel()
    assert slow.cancelled_event().wait(2)
    assert future.cancelled()
    deadline = time.monotonic() + 2
    while cluster.health()["slow"].in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cluster.health()["slow"].in_flight == 0


def test_progress_counts_every_tape_of_a_large_batch():
    async def run():
        progress = BatchProgress(60, "test", enabled=False)
        progress.start()
        for _ in range(6):
            progress.advance(10)
        progress.stop()
        return progress.done

    assert asyncio.run(run()) == 60


def test_rate_limit_spaces_submissions():
    limited = LocalExecutor(name="limited", latency=0.001, rate=20)
    started = time.perf_counter()
    futures = [limited.run_later([tape(0.1)]) for _ in range(30)]
    assert all(f.result()[0] == pytest.approx(exact(0.1)) for f in futures)
    # 20 per second: the 30th submission waits for the second period
    assert time.perf_counter() - started >= 0.9


def test_late_binding_with_every_breaker_open_still_answers():
    members = [Scripted(name=f"down{i}", latency=0.001, then="transient", max_concurrent=1) for i in range(2)]
    cluster = qf.QuantumCluster(
        executors=members, selector="least_busy", retries=1, backoff=0.001,
        breaker_threshold=1, breaker_cooldown=60,
    )  # fmt: skip
    for _ in range(2):  # the second batch meets two open breakers: an error, not a hang
        started = time.perf_counter()
        with pytest.raises(ExecutorError, match="no reply"):
            cluster.run_later([tape(0.1)]).result(timeout=10)
        assert time.perf_counter() - started < 5
    assert {h.state for h in cluster.health().values()} == {"open"}
