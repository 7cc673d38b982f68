"""Shared fixtures and reference helpers for the qfleet core tests.

Every test compares qfleet against PennyLane's own ``default.qubit`` (exact, shots=None),
against a seeded ``default.qubit``/``lightning.qubit`` run with the same seed (qfleet's
LocalExecutor must reproduce its samples exactly), or against shot-noise bounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import pennylane as qml
import pytest

from qfleet.executors import QuantumExecutor

@pytest.fixture(autouse=True)
def isolated_config(tmp_path_factory, monkeypatch):
    """No user config, job store or QFLEET_* variable leaks into a test.

    QFLEET_CONFIG points at a file that does not exist, so built-in defaults apply; tests
    that need a config write this file (or point QFLEET_CONFIG elsewhere).
    """
    for key in list(os.environ):
        if key.startswith("QFLEET_"):
            monkeypatch.delenv(key)
    home = tmp_path_factory.mktemp("qfleet-config")
    monkeypatch.setenv("QFLEET_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    # The job store, the fleet ledger and the result cache live under the user data dir: a
    # test must never read (or leave) another run's jobs, spend or cached results.
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    return home / "config.toml"


@pytest.fixture
def jax_x64():
    """jax with 64-bit floats (restored afterwards), for tight comparisons."""
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", previous)


def exact_qnode(func, wires=2, **kwargs):
    """The reference: ``func`` as a plain QNode on default.qubit."""
    return qml.QNode(func, qml.device("default.qubit", wires=wires), **kwargs)


def exact_results(tapes):
    """default.qubit's exact results for ``tapes`` (analytic copies)."""
    return qml.execute([t.copy(shots=None) for t in tapes], qml.device("default.qubit"))


def wait_until(predicate, timeout=60.0):
    """``predicate()``'s first truthy value, asked every 20 ms; AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def stored_checkpoint(job_id):
    """A minimization's checkpoint as the job store holds it ({} before the first)."""
    from qfleet.jobs import JobStore

    row = JobStore.default().get(job_id)
    return json.loads(row["checkpoint"]) if row and row.get("checkpoint") else {}


def binomial_tol(p, shots, sigmas=5.0):
    """Shot-noise bound for an estimated probability ``p`` from ``shots`` samples."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    return sigmas * np.sqrt(np.maximum(p * (1 - p), 1.0 / shots) / shots)


def assert_same_result(got, want, *, atol=1e-10, strict_types=True):
    """Same nested structure, container types, dtype kinds, shapes and values.

    ``strict_types=False`` allows a Python float where numpy's float64 is expected (two
    different simulators compared with each other).
    """
    if isinstance(want, dict):
        assert isinstance(got, dict), f"expected dict, got {type(got).__name__}"
        assert {str(k): int(v) for k, v in got.items()} == {str(k): int(v) for k, v in want.items()}
        return
    if isinstance(want, (tuple, list)):
        assert type(got) is type(want), f"expected {type(want).__name__}, got {type(got).__name__}"
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same_result(g, w, atol=atol, strict_types=strict_types)
        return
    g, w = np.asarray(got), np.asarray(want)
    if strict_types or np.ndim(want) > 0:
        assert type(got) is type(want), f"expected {type(want).__name__}, got {type(got).__name__}"
    assert g.shape == w.shape, f"shape {g.shape} != {w.shape}"
    assert g.dtype.kind == w.dtype.kind, f"dtype {g.dtype} != {w.dtype}"
    if w.dtype.kind in "iub":
        np.testing.assert_array_equal(g, w)
    else:
        np.testing.assert_allclose(g, w, atol=atol, rtol=0)


# -- a backend that fails on demand -------------------------------------------------------

#: A batch containing a gate with this parameter fails on FlakyExecutor.
FAIL_MARK = 0.666


class FlakyExecutor(QuantumExecutor):
    """Runs tapes on default.qubit, but a batch containing RX(FAIL_MARK) fails.

    ``where`` picks the phase that fails: "start" (submission) or "collect" (results).
    """

    where: str = "start"
    delay: float = 0.05

    backend_kind = "flaky"

    @staticmethod
    def _poisoned(tapes):
        return any(
            np.isclose(p, FAIL_MARK) for t in tapes for p in t.get_parameters(trainable_only=False)
        )

    def translate(self, tapes):
        # Caller's thread: simulate here; the loop phases only wait.
        return self._poisoned(tapes), qml.execute(tapes, qml.device("default.qubit"))

    async def submit(self, payload):
        poisoned, results = payload
        if poisoned and self.where == "start":
            raise RuntimeError("backend rejected the job")
        return payload, ("job-1",)

    async def collect(self, job):
        poisoned, results = job
        await asyncio.sleep(self.delay)
        if poisoned and self.where == "collect":
            raise ConnectionError("lost the backend while waiting")
        return results
