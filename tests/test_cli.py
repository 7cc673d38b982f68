"""The ``qfleet`` command: demo, config show, config path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pennylane as qml
import pytest
from pydantic import SecretStr

from qfleet.cli import main
from qfleet.executors import LocalExecutor

QFLEET = str(Path(sys.executable).with_name("qfleet"))


def run_cli(*args, env_extra=None, timeout=180):
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env_extra or {})}
    return subprocess.run(
        [QFLEET, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def demo_exact_probs():
    @qml.qnode(qml.device("default.qubit", wires=2))
    def circuit(x):
        qml.IQPEmbedding(features=x, wires=[0, 1])
        qml.Hadamard(wires=1)
        return qml.probs(wires=range(2))

    return circuit([0.6, -1.57])


def test_demo_runs_and_prints_its_table():
    done = run_cli("demo", "--seed", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "probs(IQPEmbedding([0.6, -1.57])), 1024 shots" in out
    exact = demo_exact_probs()
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 6 and re.fullmatch(r"\d|exact", cells[0]):
            rows[cells[0]] = (cells[1], np.array([float(c) for c in cells[2:]]))
    assert set(rows) == {"1", "2", "3", "exact"}, out
    # the cyclic cluster: default.qubit, lightning.qubit, default.qubit
    assert [rows[k][0] for k in "123"] == ["default.qubit", "lightning.qubit", "default.qubit"]
    np.testing.assert_allclose(rows["exact"][1], exact, atol=5e-4)  # printed with 3 decimals
    for k in "123":
        # 1024 shots: 5 standard deviations of a probability are at most 0.08
        np.testing.assert_allclose(rows[k][1], exact, atol=5 * 0.5 / np.sqrt(1024) + 5e-4)
        assert np.isclose(rows[k][1].sum(), 1.0, atol=3e-3)
    assert re.search(r"run_later: 8 calls with 0\.25 s latency each finished in", out)
    assert "['remote-like-1', 'remote-like-2']" in out
    # gradient: parameter-shift through the cluster equals default.qubit's backprop
    match = re.search(r"gradient \(parameter-shift, (\d+) tapes in one batch on (\S+)\): "
                      r"\[([^\]]*)\]\s+default\.qubit backprop: \[([^\]]*)\]", out, re.S)
    assert match, out
    assert int(match.group(1)) == 4
    grad = np.array(match.group(3).split(), dtype=float)
    reference = np.array(match.group(4).split(), dtype=float)
    np.testing.assert_allclose(grad, reference, atol=1e-6)
    assert abs(reference[1]) > 0.1  # a real gradient, not zeros
    # one lightning executor: its own adjoint derivative, one tape, the same gradient
    match = re.search(r"gradient \(diff_method 'best' is 'adjoint', 1 tape in one batch on "
                      r"lightning\): \[([^\]]*)\]", out, re.S)
    assert match, out
    np.testing.assert_allclose(np.array(match.group(1).split(), dtype=float), reference,
                               atol=1e-12)


def test_config_path_honours_qfleet_config(tmp_path, monkeypatch, capsys):
    target = tmp_path / "custom" / "qfleet.toml"
    done = run_cli("config", "path", env_extra={"QFLEET_CONFIG": str(target)})
    assert done.returncode == 0
    assert done.stdout.strip() == f"{target}  (not present: built-in defaults apply)"
    assert not target.parent.exists()  # asking for the path creates nothing
    target.parent.mkdir()
    target.write_text("[executors.LocalExecutor]\nseed = 1\n")
    monkeypatch.setenv("QFLEET_CONFIG", str(target))
    assert main(["config", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(target)


def test_config_path_defaults_to_xdg(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("QFLEET_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["config", "path"]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "qfleet" / "config.toml"))


def test_config_show_prints_the_effective_config(isolated_config, monkeypatch, capsys):
    isolated_config.write_text('[executors.LocalExecutor]\ndevice = "lightning.qubit"\n')
    monkeypatch.setenv("QFLEET_LOCALEXECUTOR_SEED", "9")
    assert main(["config", "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["path"] == str(isolated_config)
    assert shown["executors"] == {"LocalExecutor": {"device": "lightning.qubit", "seed": 9}}
    assert shown["qfleet"]["selector"] == "cyclic"


class TokenExecutor(LocalExecutor):
    token: SecretStr | None = None


def test_config_show_masks_secrets(isolated_config, monkeypatch, capsys):
    from qfleet.config import registry

    registry.executor_classes()  # entry points first, then the test's class
    monkeypatch.setitem(registry._registered, "TokenExecutor", TokenExecutor)
    isolated_config.write_text('[executors.TokenExecutor]\ntoken = "abc-very-secret"\nseed = 2\n')
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "abc-very-secret" not in out
    assert json.loads(out)["executors"]["TokenExecutor"] == {"token": "**********", "seed": 2}


def test_config_show_with_file_option(tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text("[executors.LocalExecutor]\nlatency = 0.5\n")
    assert main(["config", "show", "--file", str(other)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["path"] == str(other) and shown["executors"]["LocalExecutor"] == {"latency": 0.5}


def test_config_errors_exit_2_with_the_message(isolated_config, capsys):
    isolated_config.write_text("[executors.LocalExecutor\n")
    assert main(["config", "show"]) == 2
    out = capsys.readouterr().out
    assert "error:" in out and "malformed TOML" in out and "line 1" in out


def test_unknown_command_is_a_usage_error(capsys):
    for argv in (["frobnicate"], []):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
