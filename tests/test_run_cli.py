"""``qfleet run``: the seed programs (Classiq's and Covalent's examples in ../shared/seeds) on
the command line: counts within shot noise, the JSON document, exit codes, one-line errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pennylane as qml
import pytest
from conftest import binomial_tol

from qfleet.cli import main
from qfleet.jobs import ExecutionJob
from qfleet.run_cli import (
    EXIT_BACKEND,
    EXIT_PARAMETERS,
    EXIT_PROGRAM,
    EXIT_TIMEOUT,
    parse_observable,
)

QFLEET = str(Path(sys.executable).with_name("qfleet"))

# Seed 001 (Classiq's ExecutionSession page): an OpenQASM 2 program without measurements
H_QASM = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\nh q[0];\n'
# Seed 001: the OpenQASM 3 program with an input parameter, and its estimate I + 2 Z
RX_QASM = ('OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
           'rx(t) q[0]; c = measure q;\n')
# Seed 004 (Covalent's Qiskit executor page): the IQPEmbedding QNode, here with fixed features
QNODE_PY = textwrap.dedent("""
    import pennylane as qml

    @qml.qnode(qml.device("default.qubit", wires=2))
    def circuit(a=0.6, b=-1.57):
        qml.IQPEmbedding(features=[a, b], wires=[0, 1])
        qml.Hadamard(wires=1)
        return qml.probs(wires=range(2))
""")


@pytest.fixture
def programs(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "h.qasm").write_text(H_QASM)
    (tmp_path / "rx.qasm").write_text(RX_QASM)
    (tmp_path / "iqp.py").write_text(QNODE_PY)
    (tmp_path / "notes.txt").write_text("not a program\n")
    return tmp_path


def run(capsys, *argv):
    code = main(["run", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_hadamard_counts_within_shot_noise_as_json(programs, capsys):
    code, out, err = run(capsys, "h.qasm", "--shots", "4000", "--seed", "5", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"job_id", "name", "status", "backend", "kind", "parameters", "shots",
                        "counts", "probabilities"}
    assert doc["status"] == "COMPLETED" and doc["kind"] == "sample" and doc["shots"] == 4000
    assert doc["name"] == "h.qasm" and doc["backend"].startswith("LocalExecutor")
    assert set(doc["counts"]) == {"0", "1"} and sum(doc["counts"].values()) == 4000
    assert abs(doc["probabilities"]["1"] - 0.5) <= binomial_tol(0.5, 4000)
    assert doc["probabilities"]["1"] == doc["counts"]["1"] / 4000
    # a durable job: the store has it, with the same counts
    saved = ExecutionJob.from_id(doc["job_id"]).get_sample_result(timeout_sec=0)
    assert saved.counts == doc["counts"]


def test_parameter_table_and_plot(programs, capsys):
    code, out, err = run(capsys, "rx.qasm", "--param", "t=0.5", "--shots", "3000", "--seed",
                         "2", "--plot", "hist.png")
    assert code == 0, err
    p1 = math.sin(0.25) ** 2  # rx(0.5)|0>: P(1) = sin^2(t/2)
    row = next(line for line in out.splitlines() if line.strip().startswith("│") and
               line.split("│")[1].strip() == "1")
    count = int(row.split("│")[2])
    assert abs(count / 3000 - p1) <= binomial_tol(p1, 3000)
    assert "histogram written to hist.png" in out
    assert (programs / "hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_estimate_is_exact_on_a_simulator(programs, capsys):
    code, out, err = run(capsys, "rx.qasm", "--param", "t=0.5", "--estimate", "I0 + 2*Z0",
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "estimate" and doc["shots"] is None
    assert doc["value"] == pytest.approx(1 + 2 * math.cos(0.5), abs=1e-12)


def test_qnode_from_a_python_file(programs, capsys):
    code, out, err = run(capsys, "iqp.py:circuit", "--shots", "4000", "--seed", "9", "--json")
    assert code == 0, err
    doc = json.loads(out)
    exact = qml.QNode(lambda: (qml.IQPEmbedding([0.6, -1.57], wires=[0, 1]),
                               qml.Hadamard(1), qml.probs(wires=[0, 1]))[-1],
                      qml.device("default.qubit", wires=2))()
    got = np.array([doc["probabilities"].get(f"{i:02b}", 0.0) for i in range(4)])
    np.testing.assert_array_less(np.abs(got - exact), binomial_tol(exact, 4000))
    # parameters of the QNode by name
    code, out, err = run(capsys, "iqp.py:circuit", "--param", "a=0", "--param", "b=0",
                         "--estimate", "Z1 + Z0", "--json")
    assert code == 0, err
    # features 0: H on both wires, then H on wire 1: <Z1> = 1, <Z0> = 0
    assert json.loads(out)["value"] == pytest.approx(1.0, abs=1e-12)


def test_submit_prints_the_job_id_at_once(programs, capsys):
    code, out, err = run(capsys, "h.qasm", "--submit", "--name", "later")
    assert code == 0, err
    job = ExecutionJob.from_id(out.strip())
    assert job.name == "later"
    assert job.get_sample_result(timeout_sec=30).num_shots == 2048


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["missing.qasm"], EXIT_PROGRAM, "no file missing.qasm"),
        (["notes.txt"], EXIT_PROGRAM, "is not OpenQASM"),
        (["iqp.py"], EXIT_PROGRAM, "name the QNode in it: iqp.py:qnode_name"),
        (["iqp.py:nope"], EXIT_PROGRAM, "has no 'nope'; its QNodes: circuit"),
        (["rx.qasm"], EXIT_PARAMETERS, "missing value(s) for parameter(s) ['t']"),
        (["rx.qasm", "--param", "u=1", "--param", "t=1"], EXIT_PARAMETERS,
         "unknown parameter(s) ['u']"),
        (["rx.qasm", "--param", "t"], EXIT_PARAMETERS, "write name=value"),
        (["rx.qasm", "--param", "t=abc"], EXIT_PARAMETERS, "must be a number"),
        (["h.qasm", "--estimate", "Q0"], EXIT_PARAMETERS, "cannot read 'Q0'"),
    ],
)
def test_bad_input_one_line_errors_and_exit_codes(programs, capsys, argv, code, says):
    got, out, err = run(capsys, *argv)
    assert got == code, err
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err


def test_unreachable_backend_exit_code(programs, capsys, monkeypatch):
    # a closed port: the 2300 client gives up after its timeout and retries
    monkeypatch.setenv("QFLEET_EXECUTOR2300_ADDRESS", "tcp://127.0.0.1:9")
    monkeypatch.setenv("QFLEET_EXECUTOR2300_TIMEOUT", "0.5")
    monkeypatch.setenv("QFLEET_EXECUTOR2300_RETRIES", "0")
    code, _, err = run(capsys, "h.qasm", "--backend", "Executor2300")
    assert code == EXIT_BACKEND, err
    assert err.startswith("error: ") and "[Executor2300]" in err and "tcp://127.0.0.1:9" in err
    assert err.count("\n") == 1


def test_timeout_exit_code(programs, capsys, tmp_path, monkeypatch):
    config = tmp_path / "slow.toml"
    config.write_text("[executors.LocalExecutor]\nlatency = 1.0\n")
    monkeypatch.setenv("QFLEET_CONFIG", str(config))
    code, _, err = run(capsys, "h.qasm", "--timeout", "0", "--backend", "LocalExecutor")
    assert code == EXIT_TIMEOUT, err
    assert "result() again later" in err


def test_observable_syntax():
    from qfleet.jobs import Pauli

    assert parse_observable("Z0 + 2*Z1") == Pauli.Z(0) + 2 * Pauli.Z(1)
    assert parse_observable("-0.5 * X0 X1 + 1e-3 Y2") == (
        -0.5 * Pauli.X(0) * Pauli.X(1) + 1e-3 * Pauli.Y(2))
    assert parse_observable("I - Z0@Z1") == Pauli.I(0) - Pauli.Z(0) * Pauli.Z(1)


def test_command_line_exit_code_from_a_shell(programs):
    """What a script sees: the process's exit status and one line on stderr."""
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run([QFLEET, "run", "missing.qasm"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=programs)
    assert done.returncode == EXIT_PROGRAM
    assert done.stderr == "error: no file missing.qasm; give an OpenQASM 2/3 file or " \
                          "file.py:qnode_name\n"
