"""The docstring examples of the sampling layer run (as doctests) and give what they show."""

from __future__ import annotations

import doctest

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript

import qfleet.sampling.capabilities
import qfleet.sampling.kinds
import qfleet.sampling.plan
from qfleet.sampling import SAMPLING_MEASUREMENTS, Capabilities, Samples, SamplingPlan


@pytest.mark.parametrize(
    "module",
    [qfleet.sampling.capabilities, qfleet.sampling.kinds, qfleet.sampling.plan],
    ids=lambda m: m.__name__,
)
def test_docstring_examples(module):
    names = {
        "qml": qml, "np": np, "QuantumScript": QuantumScript, "Capabilities": Capabilities,
        "SAMPLING_MEASUREMENTS": SAMPLING_MEASUREMENTS, "Samples": Samples,
        "SamplingPlan": SamplingPlan,
    }
    result = doctest.testmod(module, extraglobs=names, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
