"""Bad input, tampering and faults, as a hostile user would try them: each case asserts its
typed error (a qfleet.errors subclass naming what is wrong) or its correct result, within a
per-case time limit (pytest-timeout), so a hang fails the case.

Groups: programs, config files, environment variables, the command line (in-process through
``qfleet.cli.main``; two cases as real processes), job-store tampering (rows and files),
resource limits, custom selectors, terminal text. Outcomes are counted per kind (clear
error / correct result); any other outcome fails its case. Run with ``-s`` to see the
counts.
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pennylane as qml
import pytest

import qfleet as qf
from qfleet.cli import main as cli
from qfleet.config import load_config, masked
from qfleet.errors import ConfigError, QFleetError
from qfleet.jobs.store import JobStore, JobStoreError
from qfleet.runtime.terminal import markup_safe, printable
from qfleet.sampling.resources import SimulationTooLargeError, check_memory

pytestmark = pytest.mark.timeout(30)

OUTCOMES: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def outcome_counts():
    yield
    total = sum(OUTCOMES.values())
    print(f"\nfuzz outcomes: {dict(OUTCOMES)} (total {total})")


def clear_error(exc_type: type[BaseException], match: str | None = None):
    """Expect a typed qfleet error (``exc_type``, a QFleetError) whose message matches."""
    assert issubclass(exc_type, QFleetError), exc_type
    OUTCOMES["clear error"] += 1
    return pytest.raises(exc_type, match=match)


def correct() -> None:
    OUTCOMES["correct"] += 1


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    return tmp_path / "qfleet-home"


# -- programs -------------------------------------------------------------------------------

Q3 = 'OPENQASM 3.0; include "stdgates.inc"; '
Q2 = 'OPENQASM 2.0; include "qelib1.inc"; '
BAD_PROGRAMS = {
    "empty": ("", "must be OpenQASM 2 or 3"),
    "whitespace": ("   \n\t", "must be OpenQASM 2 or 3"),
    "python": ("import os; os.system('id')", "must be OpenQASM 2 or 3"),
    "binary": ("\x00\x01\x02\xff", "must be OpenQASM 2 or 3"),
    "escape_header": ("\x1b[2JOPENQASM 3.0;", "must be OpenQASM 2 or 3"),
    "no_qreg2": (Q2 + "creg c[1];", "declares no qubits"),
    "no_qreg3": (Q3 + "bit[1] c;", "declares no qubits"),
    "zero_qubits": (Q3 + "qubit[0] q;", "declares no qubits"),
    "header_only": ("OPENQASM 3.0;", "declares no qubits"),
    "unknown_gate": (Q3 + "qubit[1] q; foo q[0];", "'foo' is not defined"),
    "arity": (Q3 + "qubit[2] q; cx q[0];", "does not match"),
    "out_of_range": (Q3 + "qubit[1] q; h q[5];", "out of range"),
    "same_qubit_twice": (Q3 + "qubit[2] q; cx q[0], q[0];", "duplicate"),
    "same_qubit_twice2": (Q2 + "qreg q[2]; cx q[1],q[1];", "duplicate|same|twice"),
    "negative_size": (Q3 + "qubit[-1] q;", "non-negative"),
    "unterminated": (Q3 + "qubit[1] q; h q[0]", "invalid OpenQASM 3"),
    "unbalanced": (Q3 + "input float t; qubit[1] q; rx((t) q[0];", "OpenQASM 3"),
    "lone_surrogate": (Q3 + "qubit[1] q; // \udc80\nh q[0];", "lone surrogate"),
    "deep_expression": (Q3 + "input float t; qubit[1] q; rx(" + "(" * 400 + "t" + ")" * 400
                        + ") q[0];", "OpenQASM 3|recursion|nested"),
    "qasm2_unknown_gate": (Q2 + "qreg q[1]; zz q[0];", "OpenQASM 2|zz"),
    "qasm2_no_semicolon": (Q2 + "qreg q[1] h q[0];", "OpenQASM 2"),
    "undeclared_param": (Q3 + "qubit[1] q; rx(t) q[0];", "OpenQASM 3|t"),
}


@pytest.mark.parametrize("name", sorted(BAD_PROGRAMS))
def test_bad_program_is_a_clear_error(name):
    text, message = BAD_PROGRAMS[name]
    with clear_error(QFleetError, message), qf.ExecutionSession(text) as es:
        es.sample({})


BAD_PARAMETERS = {
    "missing": ({}, "missing value"),
    "extra": ({"t": 0.1, "u": 2}, "u"),
    "string": ({"t": "abc"}, "t"),
    "list": ({"t": [1, 2]}, "t"),
    "none": ({"t": None}, "t"),
    "nested": ({"t": {"x": 1}}, "t"),
    "empty_batch": ([], "empty list"),
    "batch_of_ints": ([1, 2], "list of dicts"),
    "a_string": ("t=0.1", "dict"),
}


@pytest.mark.parametrize("name", sorted(BAD_PARAMETERS))
def test_bad_parameters_are_a_clear_error(name):
    values, message = BAD_PARAMETERS[name]
    program = Q3 + "input float t; qubit[1] q; bit[1] c; rx(t) q[0]; c = measure q;"
    with clear_error(QFleetError, message), qf.ExecutionSession(program) as es:
        es.sample(values)


@pytest.mark.parametrize("t", [0.0, 0.5, math.pi, -2.0, 1e-9, 7 * math.pi])
@pytest.mark.parametrize("header", ["3", "2"])
def test_good_programs_give_correct_counts(t, header):
    if header == "3":
        text = Q3 + "input float t; qubit[1] q; bit[1] c; rx(t) q[0]; c = measure q;"
        prefs = qf.ExecutionPreferences(num_shots=4000, backend=qf.LocalExecutor(seed=9))
        with qf.ExecutionSession(text, prefs) as es:
            result = es.sample({"t": t})
    else:
        text = Q2 + f"qreg q[1]; creg c[1]; rx({t!r}) q[0]; measure q -> c;"
        prefs = qf.ExecutionPreferences(num_shots=4000, backend=qf.LocalExecutor(seed=9))
        with qf.ExecutionSession(text, prefs) as es:
            result = es.sample({})
    p1 = math.sin(t / 2) ** 2
    assert sum(result.counts.values()) == 4000
    assert all(isinstance(v, int) and v >= 0 for v in result.counts.values())
    assert abs(result.probability("1") - p1) <= 5 * math.sqrt(max(p1 * (1 - p1), 1e-4) / 4000)
    correct()


@pytest.mark.parametrize("shots", [0, -5, 1.5, "many", [1, 2]])
def test_bad_num_shots_is_a_clear_error(shots):
    # Constructor arguments are validated by pydantic: a ValidationError naming the field
    # (counted apart from qfleet's own typed errors).
    from pydantic import ValidationError

    OUTCOMES["clear error (pydantic, names the field)"] += 1
    with pytest.raises(ValidationError, match="num_shots"):
        qf.ExecutionPreferences(num_shots=shots)


# -- config files ---------------------------------------------------------------------------

BAD_CONFIGS = {
    "non_utf8": (b'[qfleet]\nselector = "\xff\xfe"\n', "not UTF-8 text.*line 2"),
    "latin1": ('[qfleet]\nselector = "caf\xe9"\n'.encode("latin-1"), "not UTF-8"),
    "malformed": (b"[qfleet\n", "malformed TOML.*line 1"),
    "deep_arrays": (b"x = " + b"[" * 50000 + b"]" * 50000 + b"\n", "too deeply|malformed"),
    "deep_tables": (b"x = " + b"{a = " * 20000 + b"1" + b"}" * 20000 + b"\n",
                    "too deeply|malformed"),
    "unknown_section": (b"[nope]\n", "unknown section"),
    "unknown_executor": (b"[executors.Nope]\n", "unknown section \\[executors.Nope\\]"),
    "unknown_key": (b'[qfleet]\nselectr = "random"\n', "unknown key"),
    "executor_unknown_key": (b"[executors.LocalExecutor]\nnope = 1\n", "unknown key"),
    "qfleet_not_table": (b'qfleet = "x"\n', "must be a table"),
    "executors_not_table": (b"executors = 3\n", "must be a table"),
    "executor_not_table": (b'[executors]\nLocalExecutor = 1\n', "must be a table"),
    "wrong_type": (b"[qfleet]\nexecutors = 5\n", "invalid \\[qfleet\\]"),
    "nul_byte": (b'[qfleet]\nselector = "a\x00b"\n', "malformed TOML"),
    "bom_and_garbage": (b"\xef\xbb\xbf\x00\x00", "malformed|UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_file_is_a_clear_error_naming_the_file(name, tmp_path):
    content, message = BAD_CONFIGS[name]
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with clear_error(ConfigError, message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_path_that_is_a_directory(tmp_path, monkeypatch):
    with clear_error(ConfigError, "is a directory"):
        load_config(tmp_path)
    monkeypatch.setenv("QFLEET_CONFIG", str(tmp_path))
    with clear_error(ConfigError, "is a directory.*QFLEET_CONFIG"):
        load_config()


def test_explicit_missing_config_file(tmp_path):
    with clear_error(ConfigError, "does not exist"):
        load_config(tmp_path / "missing.toml")


SECRET_CONFIGS = {
    "nested_access_token": '[executors.ClassiqExecutor]\nbackend_preferences = {backend_'
                           'service_provider = "IBM Quantum", backend_name = "ibm_x", '
                           'access_token = "SECRET-VALUE-1"}\n',
    "nested_table": '[executors.ClassiqExecutor.backend_preferences]\nbackend_service_provider'
                    ' = "Azure Quantum"\nbackend_name = "ionq"\nclient_secret = "SECRET-VALUE-1"\n',
    "token": '[executors.ClassiqExecutor]\ntoken = "SECRET-VALUE-1"\n',
    "ibm_token": '[executors.QiskitExecutor]\ntoken = "SECRET-VALUE-1"\n',
    "azure_credentials": '[executors.AzureExecutor.credentials]\ntenant_id = "t"\nclient_id = '
                         '"c"\nclient_secret = "SECRET-VALUE-1"\nresource_id = "/subscriptions/'
                         'x/resourceGroups/r/providers/Microsoft.Quantum/Workspaces/w"\n',
    "azure_connection_string": '[executors.AzureExecutor]\nconnection_string = "SubscriptionId'
                               '=x;ApiKey=SECRET-VALUE-1"\n',
    "url_password": '[executors.ClassiqExecutor]\nhost = "https://me:SECRET-VALUE-1@h.example"\n',
}


@pytest.mark.parametrize("name", sorted(SECRET_CONFIGS))
def test_config_show_masks_every_secret(name, tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(SECRET_CONFIGS[name])
    assert "SECRET-VALUE-1" not in json.dumps(masked(load_config(path)), default=str)
    assert cli(["config", "show", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "SECRET-VALUE-1" not in out and "**********" in out
    correct()


@pytest.mark.parametrize("value", [
    '{"backend_service_provider": "IBM Quantum", "backend_name": "x", '
    '"access_token": "SECRET-VALUE-1"}',
    '{"backend_service_provider": "Azure Quantum", "backend_name": "x", '
    '"location": "eastus", "client_secret": "SECRET-VALUE-1"}',
])
def test_config_show_masks_secrets_given_by_environment(value, monkeypatch, capsys):
    monkeypatch.setenv("QFLEET_CLASSIQEXECUTOR_BACKEND_PREFERENCES", value)
    monkeypatch.setenv("QFLEET_QISKITEXECUTOR_TOKEN", "SECRET-VALUE-2")
    assert cli(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "SECRET-VALUE" not in out and "**********" in out
    correct()


# -- environment variables ------------------------------------------------------------------

BAD_ENV = {
    "shots_negative": ("QFLEET_LOCALEXECUTOR_SHOTS", "-5"),
    "shots_zero": ("QFLEET_LOCALEXECUTOR_SHOTS", "0"),
    "shots_text": ("QFLEET_LOCALEXECUTOR_SHOTS", "many"),
    "shots_vector_negative": ("QFLEET_LOCALEXECUTOR_SHOTS", "[100, -1]"),
    "shots_float": ("QFLEET_LOCALEXECUTOR_SHOTS", "1.5"),
    "device_unknown": ("QFLEET_LOCALEXECUTOR_DEVICE", "no.such.device"),
    "device_number": ("QFLEET_LOCALEXECUTOR_DEVICE", "3"),
    "seed_text": ("QFLEET_LOCALEXECUTOR_SEED", "abc"),
    "timeout_negative": ("QFLEET_LOCALEXECUTOR_TIMEOUT", "-1"),
    "workers_zero": ("QFLEET_LOCALEXECUTOR_WORKERS", "0"),
    "parallel_bad": ("QFLEET_LOCALEXECUTOR_PARALLEL", "gpu"),
}


@pytest.mark.parametrize("name", sorted(BAD_ENV))
def test_bad_environment_value_names_the_variable(name, monkeypatch):
    key, value = BAD_ENV[name]
    monkeypatch.setenv(key, value)
    with clear_error(ConfigError, key):
        qf.LocalExecutor()


def test_an_explicit_argument_beats_a_bad_environment_value(monkeypatch):
    monkeypatch.setenv("QFLEET_LOCALEXECUTOR_SHOTS", "-5")
    assert qf.LocalExecutor(shots=10).shots == 10
    correct()


@pytest.mark.parametrize("key", ["QFLEET_LOCALEXECUTOR_NOPE", "QFLEET_LOCALEXECUTOR_NAME"])
def test_unknown_environment_field_is_named(key, monkeypatch):
    monkeypatch.setenv(key, "1")
    with clear_error(ConfigError, key):
        load_config()


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "inf", "-inf", "1e999"])
def test_bad_jobstore_timeout(value, monkeypatch):
    monkeypatch.setenv("QFLEET_JOBSTORE_TIMEOUT", value)
    with clear_error(ConfigError, "QFLEET_JOBSTORE_TIMEOUT"):
        qf.get_execution_jobs()


@pytest.mark.parametrize("value", ["abc", "-1", "0", "10 parsecs", "nan", "GiB"])
def test_bad_memory_limit(value, monkeypatch):
    monkeypatch.setenv("QFLEET_MEMORY_LIMIT", value)
    tape = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.probs()])
    with clear_error(ConfigError, "QFLEET_MEMORY_LIMIT"):
        qf.LocalExecutor().prepare([tape])


@pytest.mark.parametrize("value", ["2.5", "64MiB", "1e9", "1 GB", "512kib"])
def test_good_memory_limits_run(value, monkeypatch):
    monkeypatch.setenv("QFLEET_MEMORY_LIMIT", value)
    tape = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.probs()])
    if value == "2.5":  # 2.5 bytes: nothing fits
        with clear_error(SimulationTooLargeError, "QFLEET_MEMORY_LIMIT 2 B"):
            qf.LocalExecutor().prepare([tape])
        return
    np.testing.assert_allclose(qf.LocalExecutor().run_circuit_sync(tape), [0.5, 0.5])
    correct()


# -- resources ------------------------------------------------------------------------------

@pytest.mark.parametrize("qubits, shots", [(60, None), (34, None), (40, 100), (1, 10**12),
                                           (5, 10**12), (31, None)])
@pytest.mark.parametrize("kind", ["local", "local-thread", "mixed", "dask-remote", "dask-local"])
def test_simulations_that_cannot_fit_are_refused_up_front(qubits, shots, kind, monkeypatch):
    monkeypatch.setenv("QFLEET_MEMORY_LIMIT", "8GiB")
    tape = qml.tape.QuantumScript([qml.Hadamard(i) for i in range(qubits)],
                                  [qml.counts(wires=[0])] if shots else [qml.probs(wires=[0])],
                                  shots=shots)
    if kind.startswith("dask"):
        from qfleet.executors.dask import DaskExecutor

        ex = DaskExecutor(address="tcp://127.0.0.1:9" if kind == "dask-remote" else None)
    elif kind == "mixed":
        ex = qf.LocalExecutor(device="default.mixed")
    else:
        ex = qf.LocalExecutor(parallel="thread" if kind == "local-thread" else None)
    with clear_error(SimulationTooLargeError, r"needs about .* more than the limit of") as info:
        ex.prepare([tape])  # before any simulation, connection or allocation
    assert "QFLEET_MEMORY_LIMIT" in str(info.value)


def test_the_guard_lets_what_fits_through():
    tapes = [qml.tape.QuantumScript([qml.Hadamard(i) for i in range(n)], [qml.probs()])
             for n in (1, 10, 20)]
    check_memory(tapes, executor="x", limit=2**30)
    correct()


# -- selectors ------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [ZeroDivisionError, KeyError, IndexError, TypeError,
                                   RuntimeError, ValueError])
def test_a_selector_that_raises_says_so(error):
    def selector(tapes, executors):
        raise error("boom")

    cluster = qf.QuantumCluster(executors=[qf.LocalExecutor(), qf.LocalExecutor()],
                                selector=selector)
    tape = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.probs()])
    from qfleet.cluster.selectors import SelectorFailedError

    with clear_error(SelectorFailedError, f"selector .*selector raised {error.__name__}"):
        cluster.run_all_circuits_sync([tape])


# -- the command line -----------------------------------------------------------------------

NASTY = ["\x1b]0;owned\x07", "\x1b[2J\x1b[H", "[red]markup[/red]", "\u202eevil", "a\rb",
         "\x00nul", "tab\there", "\x9b31m", "[link=file:///etc/passwd]x[/link]", "\\", "x\u2028y"]


def _job(name: str | None = None) -> qf.ExecutionJob:
    prefs = qf.ExecutionPreferences(num_shots=10, backend=qf.LocalExecutor(seed=1))
    with qf.ExecutionSession(Q3 + "qubit[1] q; bit[1] c; h q[0]; c = measure q;", prefs) as es:
        job = es.submit_sample({})
        job.result(timeout_sec=60)
    if name is not None:
        job.rename(name)
    return job


def _assert_clean_terminal(out: str) -> None:
    for ch in out:
        code = ord(ch)
        assert ch in "\n" or not (code < 0x20 or 0x7F <= code < 0xA0), repr(out)
        assert not (0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069 or code == 0x2028)


@pytest.mark.parametrize("name", NASTY)
def test_jobs_list_and_show_escape_user_text(name, capsys):
    job = _job(name)
    assert cli(["jobs", "list"]) == 0
    assert cli(["jobs", "show", job.id]) == 0
    assert cli(["jobs", "rename", job.id, name]) == 0
    out = capsys.readouterr().out
    _assert_clean_terminal(out)
    if name.startswith("["):
        assert name.split("]")[0] in out  # markup shown literally
    correct()


@pytest.mark.parametrize("text", [*NASTY, "plain", "ünïcödé", "\udc80lone"])
def test_printable_shows_control_characters(text):
    shown = printable(text)
    _assert_clean_terminal(shown)
    assert shown.isprintable() or "\\" in shown
    from rich.console import Console

    console = Console(file=__import__("io").StringIO(), force_terminal=True, width=200)
    console.print(markup_safe(text))
    assert "\x1b]" not in console.file.getvalue() and "\x1b[2J" not in console.file.getvalue()
    correct()


BAD_ARGV = {
    "limit_negative": (["jobs", "list", "--limit", "-1"], "integer >= 0"),
    "limit_text": (["jobs", "list", "--limit", "many"], "integer >= 0"),
    "offset_negative": (["jobs", "list", "--offset", "-5"], "integer >= 0"),
    "timeout_negative": (["jobs", "result", "x", "--timeout", "-1"], "seconds >= 0"),
    "timeout_nan": (["jobs", "result", "x", "--timeout", "nan"], "seconds >= 0"),
    "timeout_text": (["jobs", "result", "x", "--timeout", "soon"], "seconds >= 0"),
    "plot_missing_folder": (["jobs", "result", "x", "--plot", "/no/such/folder/out.png"],
                            "does not exist"),
    "no_command": ([], "required"),
    "jobs_no_command": (["jobs"], "required"),
    "unknown_command": (["explode"], "invalid choice"),
}


@pytest.mark.parametrize("name", sorted(BAD_ARGV))
def test_bad_command_line_is_one_line_and_non_zero(name, capsys):
    argv, message = BAD_ARGV[name]
    OUTCOMES["clear error"] += 1
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


BAD_JOB_COMMANDS = {
    "show_missing": (["jobs", "show", "nope"], "no job 'nope'"),
    "show_surrogate": (["jobs", "show", "x\udc80"], "lone surrogates"),
    "show_escape": (["jobs", "show", "\x1b[2J"], "no job"),
    "cancel_missing": (["jobs", "cancel", "nope"], "no job"),
    "result_missing": (["jobs", "result", "nope", "--timeout", "0"], "no job"),
    "rename_missing": (["jobs", "rename", "nope", "x"], "no job"),
    "config_missing": (["config", "show", "--file", "/no/such/missing.toml"], "does not exist"),
    "config_dir": (["config", "show", "--file", "/"], "is a directory"),
    "restore_without_backup": (["jobs", "restore"], "no backup of the job store"),
}


@pytest.mark.parametrize("name", sorted(BAD_JOB_COMMANDS))
def test_failing_commands_print_a_clean_error_and_exit_2(name, capsys):
    argv, message = BAD_JOB_COMMANDS[name]
    OUTCOMES["clear error"] += 1
    assert cli(argv) == 2
    out = capsys.readouterr().out
    assert message in out and "Traceback" not in out
    _assert_clean_terminal(out)


def test_result_plot_into_a_missing_folder_and_a_good_one(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    job = _job()
    OUTCOMES["clear error"] += 1
    with pytest.raises(SystemExit):
        cli(["jobs", "result", job.id, "--plot", str(tmp_path / "missing" / "x.png")])
    assert cli(["jobs", "result", job.id, "--plot", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 0
    correct()


def test_rename_to_empty_is_refused(capsys):
    job = _job()
    OUTCOMES["clear error"] += 1
    assert cli(["jobs", "rename", job.id, "  "]) == 2
    assert "non-empty" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["jobs", "list"], ["config", "show", "--file", "/no/such/missing.toml"],
])
def test_as_a_real_process_no_traceback(argv, home):
    if argv[0] == "jobs":
        home.mkdir(parents=True)
        (home / "jobs.sqlite3").write_bytes(b"")  # truncated
    proc = subprocess.run([sys.executable, "-m", "qfleet.cli", *argv], capture_output=True,
                          text=True, timeout=60, env=os.environ.copy())
    OUTCOMES["clear error"] += 1
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert ("empty (0 bytes)" if argv[0] == "jobs" else "does not exist") in proc.stdout


# -- job-store tampering --------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_store(tmp_path_factory):
    """A store with one completed sample job and one completed estimate job."""
    folder = tmp_path_factory.mktemp("template-store")
    patch = pytest.MonkeyPatch()
    patch.setenv("QFLEET_HOME", str(folder))
    try:
        prefs = qf.ExecutionPreferences(num_shots=50, backend=qf.LocalExecutor(seed=2))
        program = Q3 + "input float t; qubit[1] q; bit[1] c; rx(t) q[0]; c = measure q;"
        with qf.ExecutionSession(program, prefs) as es:
            sample = es.submit_sample({"t": 0.4})
            estimate = es.submit_estimate(qf.Pauli.Z(0), {"t": 0.4})
            sample.result(timeout_sec=60), estimate.result(timeout_sec=60)
        store = JobStore.default()
        conn = sqlite3.connect(store.path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    finally:
        patch.undo()
    return folder / "jobs.sqlite3", sample.id, estimate.id


def _use(template, home) -> tuple:
    path, sample, estimate = template
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, home / "jobs.sqlite3")
    return home / "jobs.sqlite3", sample, estimate


TAMPERED = [
    ("status", "PWNED"), ("status", 1), ("kind", "exec"), ("kind", ""),
    ("created_at", "yesterday"), ("created_at", b"\x00"), ("num_shots", -1),
    ("num_shots", "many"), ("batch", 7), ("attempts", -3), ("cancel_requested", 9),
    ("parameters", "{not json"), ("parameters", '{"t": 1}'), ("parameters", "[1, 2]"),
    ("preferences", "{"), ("executor", "os.system('id')"), ("runner", "]"),
    ("layout", "nope"), ("backend_job_ids", "[1, 2]"), ("backend_job_ids", "not json"),
    ("results", "{"), ("results", '{"kind": "sample", "items": [{"parameters": {}, '
                                  '"counts": {"0": -4}, "num_shots": 1}]}'),
    ("results", '{"kind": "sample", "items": [{"parameters": {}, "counts": {"0": 1.5}}]}'),
    ("results", '{"kind": "rm -rf", "items": []}'), ("results", '{"kind": "sample"}'),
    ("tapes", b"\x80\x04cos\nsystem\n."), ("tapes", "cos\nsystem\n(S'id'\ntR."),
    ("tapes", '{"format": "other"}'), ("tapes", "[" * 5000), ("tapes", ""),
    ("heartbeat", "soon"), ("owner_pid", "me"), ("error", b"\x01"), ("name", b"\x00"),
    ("started_at", "x"), ("program", b"\xff"), ("observable", b"\x00"),
]


@pytest.mark.parametrize("column, value", TAMPERED, ids=[f"{c}={v!r}"[:40] for c, v in TAMPERED])
def test_a_tampered_row_is_a_clear_error(column, value, template_store, home):
    path, sample, _ = _use(template_store, home)
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, sample))
    conn.commit()
    conn.close()
    with clear_error(JobStoreError, f"{sample}.*not a valid job row"):
        qf.ExecutionJob.from_id(sample)


def _damage(path, how: str, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate-0":
        data = bytearray()
    elif how.startswith("truncate-"):
        data = data[: int(how.split("-")[1])]
    elif how == "header":
        data[:16] = b"NOT SQLITE AT ALL"[:16]
    elif how.startswith("flip-"):
        for _ in range(int(how.split("-")[1])):
            i = rng.randrange(100, len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif how.startswith("zero-page-"):
        page = int(how.split("-")[2])
        data[page * 4096 : (page + 1) * 4096] = b"\x00" * 4096
    elif how == "png":
        data = bytearray(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif how == "json":
        data = bytearray(b'{"jobs": []}')
    path.write_bytes(bytes(data))


DAMAGE = ["truncate-0", "truncate-50", "truncate-100", "truncate-4096", "truncate-8192",
          "header", "png", "json", "zero-page-0", "zero-page-1", "zero-page-2",
          *[f"flip-{n}-{seed}" for n in (1, 8, 64) for seed in range(4)]]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_store_file_is_a_clear_error_or_still_right(how, template_store, home):
    path, sample, estimate = _use(template_store, home)
    reference = json.loads(sqlite3.connect(template_store[0]).execute(
        "SELECT results FROM jobs WHERE id = ?", (sample,)).fetchone()[0])
    rng = random.Random(how)
    _damage(path, how.rsplit("-", 1)[0] if how.startswith("flip-") else how, rng)
    try:
        jobs = qf.get_execution_jobs()
        job = qf.ExecutionJob.from_id(sample)
        counts = job.get_sample_result(timeout_sec=0).counts
        estimate_value = qf.ExecutionJob.from_id(estimate).get_estimate_result(timeout_sec=0).value
    except JobStoreError as exc:  # a typed error naming the file
        assert str(path) in str(exc)
        OUTCOMES["clear error"] += 1
        return
    except QFleetError as exc:  # e.g. a flipped status made the job FAILED: typed, still clear
        OUTCOMES["clear error"] += 1
        assert not isinstance(exc, JobStoreError)
        return
    # the damage missed the data (a free page): the answers are unchanged
    assert {j.id for j in jobs} >= {sample, estimate}
    assert counts == reference["items"][0]["counts"]
    assert estimate_value == pytest.approx(math.cos(0.4))
    correct()
