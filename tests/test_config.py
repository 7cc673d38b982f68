"""Config loader: file, environment and argument precedence; errors; never writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pennylane as qml
import pytest
from pydantic import SecretStr

import qfleet as qf
from qfleet.config import config_path, load_config, masked
from qfleet.errors import ConfigError
from qfleet.executors import LocalExecutor


def write(path: Path, text: str) -> Path:
    """Write ``text`` and give the file a fresh mtime (the config cache keys on it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = getattr(write, "stamp", 1_700_000_000) + 10
    write.stamp = stamp
    os.utime(path, (stamp, stamp))
    return path


def test_no_file_means_built_in_defaults_and_nothing_is_created(
    isolated_config, tmp_path, monkeypatch
):
    config = load_config()
    assert config.path is None
    assert config.executors == {}
    assert config.qfleet.executors == ["LocalExecutor"] and config.qfleet.selector == "cyclic"
    ex = LocalExecutor()
    assert (ex.device, ex.shots, ex.seed) == ("default.qubit", None, None)
    dev = qml.device("qfleet.local", wires=1)
    assert isinstance(dev.executor, LocalExecutor)
    # Reading never writes: neither the file nor its folder appeared.
    assert not isolated_config.exists()
    assert list(isolated_config.parent.iterdir()) == []
    # Same for the XDG location.
    monkeypatch.delenv("QFLEET_CONFIG")
    xdg = tmp_path / "xdg-home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert config_path() == xdg / "qfleet" / "config.toml"
    assert load_config().path is None
    LocalExecutor()
    assert not xdg.exists()


def test_file_values_become_executor_defaults(isolated_config):
    write(
        isolated_config,
        '[executors.LocalExecutor]\ndevice = "lightning.qubit"\nseed = 5\nshots = [100, 200]\n',
    )
    config = load_config()
    assert config.path == isolated_config
    assert config.executors["LocalExecutor"] == {
        "device": "lightning.qubit",
        "seed": 5,
        "shots": [100, 200],
    }
    ex = LocalExecutor()
    assert (ex.device, ex.seed, ex.shots) == ("lightning.qubit", 5, [100, 200])
    # An explicit argument beats the file.
    assert LocalExecutor(device="default.qubit", shots=7).device == "default.qubit"
    assert LocalExecutor(shots=7).shots == 7


def test_changed_file_is_reread(isolated_config):
    write(isolated_config, '[executors.LocalExecutor]\ndevice = "lightning.qubit"\n')
    assert LocalExecutor().device == "lightning.qubit"
    write(isolated_config, '[executors.LocalExecutor]\ndevice = "default.mixed"\n')
    assert LocalExecutor().device == "default.mixed"
    isolated_config.unlink()
    assert LocalExecutor().device == "default.qubit"


def test_env_beats_file_and_argument_beats_env(isolated_config, monkeypatch):
    write(isolated_config, '[executors.LocalExecutor]\ndevice = "lightning.qubit"\nseed = 1\n')
    monkeypatch.setenv("QFLEET_LOCALEXECUTOR_DEVICE", "default.mixed")
    monkeypatch.setenv("QFLEET_LOCALEXECUTOR_SHOTS", "[100, 1000]")
    monkeypatch.setenv("QFLEET_LOCALEXECUTOR_LATENCY", "0.25")
    ex = LocalExecutor()
    assert ex.device == "default.mixed"  # env beats file
    assert ex.seed == 1  # file value the env does not touch
    assert ex.shots == [100, 1000] and ex.latency == 0.25  # env text parsed as JSON
    assert load_config().executors["LocalExecutor"]["device"] == "default.mixed"
    explicit = LocalExecutor(device="default.qubit", latency=0.0)
    assert (explicit.device, explicit.latency) == ("default.qubit", 0.0)  # argument beats env


def test_defaults_apply_at_the_front_door_not_in_the_model(isolated_config, monkeypatch):
    write(isolated_config, '[executors.LocalExecutor]\nseed = 7\n')
    monkeypatch.setenv("QFLEET_LOCALEXECUTOR_DEVICE", "lightning.qubit")
    called = LocalExecutor(shots=100)  # the class call: the front door
    assert (called.device, called.seed, called.shots) == ("lightning.qubit", 7, 100)
    # The model takes only what it is given: validating, copying and unpickling read nothing.
    validated = LocalExecutor.model_validate({"shots": 100})
    assert (validated.device, validated.seed) == ("default.qubit", None)
    assert validated.model_copy(update={"shots": 5}).device == "default.qubit"
    import pickle

    assert pickle.loads(pickle.dumps(validated)).device == "default.qubit"
    monkeypatch.setenv("QFLEET_LOCALEXECUTOR_SHOTS", "0")
    with pytest.raises(ConfigError, match="QFLEET_LOCALEXECUTOR_SHOTS"):
        LocalExecutor()
    assert LocalExecutor(shots=3).shots == 3  # an explicit argument replaces the bad value


def test_explicit_path_argument(tmp_path):
    other = write(tmp_path / "elsewhere.toml", '[executors.LocalExecutor]\nseed = 42\n')
    assert load_config(other).executors == {"LocalExecutor": {"seed": 42}}
    assert load_config(other).path == other


def test_qfleet_section_chooses_the_plugin_devices_executors(isolated_config):
    write(
        isolated_config,
        '[qfleet]\nexecutors = ["LocalExecutor", "LocalExecutor"]\nselector = "random"\n'
        '[executors.LocalExecutor]\ndevice = "lightning.qubit"\n',
    )
    dev = qml.device("qfleet.local", wires=2)
    assert isinstance(dev.executor, qf.QuantumCluster)
    assert dev.executor.selector == "random"
    assert [e.device for e in dev.executor.executors] == ["lightning.qubit", "lightning.qubit"]

    @qml.qnode(dev)
    def circuit(x):
        qml.RX(x, 0)
        return qml.expval(qml.Z(0))

    assert np.isclose(circuit(0.3), np.cos(0.3), atol=1e-12, rtol=0)
    assert dev.last_metadata.backend == "lightning.qubit"


def test_qfleet_section_naming_an_unknown_executor_class(isolated_config):
    write(isolated_config, '[qfleet]\nexecutors = ["QuantumComputer9000"]\n')
    with pytest.raises(ConfigError, match=r"class\(es\) \['QuantumComputer9000'\]") as info:
        qml.device("qfleet.local", wires=2)
    assert "LocalExecutor" in str(info.value)


# -- errors -------------------------------------------------------------------------------


def test_unknown_key_names_it_and_lists_valid_keys(isolated_config):
    write(isolated_config, '[executors.LocalExecutor]\ndevcie = "lightning.qubit"\n')
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert "unknown key(s) ['devcie'] in [executors.LocalExecutor]" in message
    assert str(isolated_config) in message
    assert "valid keys: device, device_options, latency" in message
    # Constructing an executor reports the same typed error (not a pydantic ValidationError).
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['devcie'\]"):
        LocalExecutor()


def test_unknown_key_in_qfleet_section(isolated_config):
    write(isolated_config, '[qfleet]\nselectr = "random"\n')
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "unknown key(s) ['selectr'] in [qfleet]" in str(info.value)
    assert "valid keys: executors, " in str(info.value) and "selector" in str(info.value)


def test_unknown_sections(isolated_config):
    write(isolated_config, "[executors.QiskitExecuter]\ntoken = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "unknown section [executors.QiskitExecuter]" in str(info.value)
    assert "[executors.LocalExecutor]" in str(info.value)
    write(isolated_config, "[executor.LocalExecutor]\ndevice = 'lightning.qubit'\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['executor'\]") as info:
        load_config()
    assert "[qfleet] and [executors.<ExecutorClass>]" in str(info.value)


def test_malformed_toml_names_file_and_line(isolated_config):
    write(
        isolated_config,
        '[qfleet]\nselector = "cyclic"\n\n[executors.LocalExecutor]\ndevice = \n',
    )
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert "malformed TOML" in message
    assert str(isolated_config) in message
    assert "line 5" in message
    with pytest.raises(ConfigError, match="malformed TOML"):
        LocalExecutor()


def test_unknown_environment_variable_field(monkeypatch):
    monkeypatch.setenv("QFLEET_LOCALEXECUTOR_DEVISE", "lightning.qubit")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "QFLEET_LOCALEXECUTOR_DEVISE names no field of LocalExecutor" in str(info.value)
    assert "QFLEET_LOCALEXECUTOR_DEVICE" in str(info.value)
    with pytest.raises(ConfigError, match="QFLEET_LOCALEXECUTOR_DEVISE"):
        LocalExecutor()


def test_invalid_value_in_file_is_reported_by_the_executor(isolated_config):
    write(isolated_config, '[executors.LocalExecutor]\nshots = -5\n')
    with pytest.raises(ValueError, match="shots must be None, a positive integer"):
        LocalExecutor()
    assert LocalExecutor(shots=10).shots == 10  # an explicit argument replaces the bad value


# -- secrets ------------------------------------------------------------------------------


class TokenExecutor(LocalExecutor):
    """A LocalExecutor with a token, standing in for the cloud executors."""

    token: SecretStr | None = None


@pytest.fixture
def with_token_executor(monkeypatch):
    from qfleet.config import registry

    registry.executor_classes()  # entry points first, then the test's class
    monkeypatch.setitem(registry._registered, "TokenExecutor", TokenExecutor)


def test_secrets_are_masked(isolated_config, with_token_executor, monkeypatch):
    write(
        isolated_config,
        '[executors.TokenExecutor]\ntoken = "s3cr3t-file"\nseed = 3\n'
        '[executors.LocalExecutor]\ndevice = "lightning.qubit"\n',
    )
    shown = masked(load_config())
    assert shown["executors"]["TokenExecutor"] == {"token": "**********", "seed": 3}
    assert shown["executors"]["LocalExecutor"] == {"device": "lightning.qubit"}
    assert shown["path"] == str(isolated_config)
    ex = TokenExecutor()
    assert ex.token.get_secret_value() == "s3cr3t-file" and ex.seed == 3
    assert "s3cr3t" not in repr(ex) and "s3cr3t" not in str(ex)
    monkeypatch.setenv("QFLEET_TOKENEXECUTOR_TOKEN", "s3cr3t-env")
    assert TokenExecutor().token.get_secret_value() == "s3cr3t-env"
    assert "s3cr3t" not in str(masked(load_config()))
