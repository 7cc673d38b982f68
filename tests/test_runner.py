"""The one runner: a backend that writes only the contract (capabilities, translate, submit,
collect, cancel) gets limits, timeouts, error mapping, metadata and every way to run."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pennylane as qml
import pytest
from pennylane.exceptions import DeviceError

from qfleet.errors import ExecutorError, ExecutorTimeoutError
from qfleet.executors import Capabilities, QuantumExecutor
from qfleet.sampling import Counts


class ToySampler(QuantumExecutor):
    """Samples bitstrings from the exact probabilities of each planned circuit."""

    fail_with: str | None = None
    hang: bool = False
    seed: int = 11

    record: ClassVar[dict[str, Any]] = {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            analytic=False, native_gates=frozenset({"RX", "RY", "RZ", "CNOT"}), default_shots=4000
        )

    def translate(self, circuits):
        # Caller's thread: the exact probabilities (no tape work on the loop).
        probs = [qml.execute([c.copy(measurements=[qml.probs(wires=c.wires)], shots=None)],
                             qml.device("default.qubit"))[0] for c in circuits]
        return [(c.wires, p, c.shots.total_shots) for c, p in zip(circuits, probs, strict=True)]

    async def submit(self, payload):
        record = self.record
        if self.fail_with == "foreign":
            raise KeyError("the SDK's own bug")
        if self.fail_with == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        if self.fail_with == "device":
            raise DeviceError("the simulator's own verdict")
        record["in_flight"] = record.get("in_flight", 0) + 1
        record["most_in_flight"] = max(record.get("most_in_flight", 0), record["in_flight"])
        return asyncio.ensure_future(self._sample(payload)), ("toy-1",)

    async def _sample(self, payload) -> list[Counts]:
        try:
            await asyncio.sleep(3600 if self.hang else 0.02)
            rng = np.random.default_rng(self.seed)
            out = []
            for wires, probs, shots in payload:
                draws = rng.choice(len(probs), size=shots, p=probs)
                keys, counts = np.unique(draws, return_counts=True)
                out.append(Counts({format(int(k), f"0{len(wires)}b"): int(n)
                                   for k, n in zip(keys, counts, strict=True)}))
            return out
        finally:
            self.record["in_flight"] -= 1

    async def collect(self, job) -> Sequence[Any]:
        return await job

    async def cancel(self, job) -> None:
        self.record["cancelled"] = self.record.get("cancelled", 0) + 1
        job.cancel()

    def run_metadata(self, payload) -> dict[str, Any]:
        return {"cost": 0.5 * len(payload)}


@pytest.fixture(autouse=True)
def fresh_record():
    ToySampler.record.clear()


def tape(theta: float = 0.7) -> qml.tape.QuantumScript:
    return qml.tape.QuantumScript(
        [qml.RY(theta, 0), qml.CNOT([0, 1])],
        [qml.expval(qml.Z(0) @ qml.Z(1)), qml.expval(qml.X(1) @ qml.X(0))],
        shots=4000,
    )


def exact(theta: float = 0.7) -> tuple[float, float]:
    """default.qubit's exact <Z0 Z1>, <Z1> (the reference)."""
    script = tape(theta).copy(shots=None)
    return tuple(float(v) for v in qml.execute([script], qml.device("default.qubit"))[0])


def close(value: Any, exact: float) -> bool:
    # 4000 shots: standard error <= 1/sqrt(4000) = 0.016; 5 sigma
    return abs(float(value) - exact) < 0.08


def test_every_way_to_run_goes_through_the_one_runner():
    ex = ToySampler(name="toy")
    exact_zz, exact_x = exact()
    assert exact_zz == 1.0 and abs(exact_x - np.sin(0.7)) < 1e-12
    sync = ex.execute([tape()])
    zz, x = sync[0]
    assert float(zz) == 1.0 and close(x, exact_x)  # Z0 Z1 is exactly 1 after RY, CNOT
    meta = sync.metadata
    # ZZ and XX are measured in two circuits of 4000 shots each (the shots the backend ran);
    # the runner added the backend's run_metadata (0.5 per circuit).
    assert (meta.executor, meta.job_ids, meta.shots, meta.cost) == ("toy", ("toy-1",), (8000,), 1.0)
    assert asyncio.run(ex.run_all_circuits([tape()]))[0][0] == exact_zz
    assert close(ex.run_later([tape()]).result(timeout=30)[0][1], exact_x)

    async def two_halves():
        handle = await ex.batch_submit([tape(), tape(0.3)])
        assert (handle.executor, handle.job_ids, handle.num_circuits) == ("toy", ("toy-1",), 2)
        return await ex.batch_get_results(handle)

    both = asyncio.run(two_halves())
    assert close(both[1][1], exact(0.3)[1]) and both.metadata.num_circuits == 2
    assert ex.run_circuit_sync(tape())[0] == exact_zz


def test_max_concurrent_is_held_by_the_runner():
    ex = ToySampler(max_concurrent=1)
    futures = [ex.run_later([tape()]) for _ in range(4)]
    assert all(f.result(timeout=30)[0][0] == 1.0 for f in futures)
    assert ToySampler.record["most_in_flight"] == 1
    ToySampler.record.clear()
    unlimited = ToySampler()
    futures = [unlimited.run_later([tape()]) for _ in range(4)]
    assert all(f.result(timeout=30)[0][0] == 1.0 for f in futures)
    assert ToySampler.record["most_in_flight"] > 1  # the limit was what kept it at one


def test_the_batch_timeout_cancels_the_backend_work():
    ex = ToySampler(name="slow", hang=True, timeout=0.3)
    with pytest.raises(ExecutorTimeoutError, match=r"no results after 0\.3 s") as info:
        ex.execute([tape()])
    assert info.value.executor == "slow" and info.value.transient
    assert ToySampler.record["cancelled"] == 1


@pytest.mark.parametrize(
    ("failure", "error", "transient"),
    [
        ("foreign", ExecutorError, False),
        ("refused", ExecutorError, True),
        ("device", DeviceError, None),
    ],
)
def test_errors_are_mapped_once(failure, error, transient):
    ex = ToySampler(name="flaky", fail_with=failure)
    with pytest.raises(error) as info:
        ex.execute([tape()])
    if transient is None:  # PennyLane's own verdict keeps its type, naming the executor
        assert "raised by executor 'flaky'" in "".join(getattr(info.value, "__notes__", []))
    else:
        assert info.value.executor == "flaky" and info.value.transient is transient


def test_a_handle_that_carries_no_batch_is_refused_clearly():
    from qfleet.executors import BatchHandle

    foreign = BatchHandle(executor="toy", num_circuits=1, submitted_at=0.0, job_ids=("j-1",))
    with pytest.raises(ValueError, match=r"carries no batch \(job ids \['j-1'\]\).*reattach"):
        asyncio.run(ToySampler().batch_get_results(foreign))
