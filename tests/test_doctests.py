"""Every docstring example (``>>>``) in src/qfleet runs as a doctest and gives what it shows.

Examples that need an account, a running 2300, a network service or the user's files are
marked ``# doctest: +SKIP`` in the docstring itself (only those lines).
"""

from __future__ import annotations

import asyncio
import doctest
import importlib
from pathlib import Path

import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp
from pennylane.tape import QuantumScript

import qfleet

SRC = Path(qfleet.__file__).parent
MODULES = sorted(
    ".".join(("qfleet", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
    for path in SRC.rglob("*.py")
    if ">>>" in path.read_text(encoding="utf-8")
)


def test_modules_found():
    assert len(MODULES) >= 30 and "qfleet.sampling.plan" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "home"))  # the job store lives here
    monkeypatch.chdir(tmp_path)
    from qfleet.sampling import SAMPLING_MEASUREMENTS, Capabilities, Samples, SamplingPlan

    names = {name: getattr(qfleet, name) for name in qfleet.__all__}  # from qfleet import *
    names |= {
        "qml": qml, "np": np, "pnp": pnp, "qf": qfleet, "qfleet": qfleet, "asyncio": asyncio,
        "QuantumScript": QuantumScript, "Capabilities": Capabilities,
        "SAMPLING_MEASUREMENTS": SAMPLING_MEASUREMENTS, "Samples": Samples,
        "SamplingPlan": SamplingPlan,
    }
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, extraglobs=names, report=True,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 0 and result.failed == 0, result
