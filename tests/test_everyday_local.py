"""The everyday circuits (tests/everyday.py) on LocalExecutor's simulators, exactly and with
shots, against default.qubit."""

from __future__ import annotations

import pytest

from everyday import CASES, check_case
from qfleet.executors import LocalExecutor


@pytest.mark.parametrize("device", ["default.qubit", "lightning.qubit"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_everyday_circuits_match_default_qubit(device, name):
    check_case(name, LocalExecutor(device=device))
    if name != "sparse_hamiltonian":  # default.qubit itself refuses it with shots
        check_case(name, LocalExecutor(device=device, seed=5), shots=20_000)


def test_sparse_hamiltonian_with_shots_raises_as_default_qubit_does():
    from pennylane.exceptions import DeviceError

    with pytest.raises(DeviceError, match="not accepted with finite shots"):
        check_case("sparse_hamiltonian", LocalExecutor(), shots=1000)
