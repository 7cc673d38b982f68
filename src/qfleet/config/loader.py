"""Reads ``$QFLEET_CONFIG`` or ``$XDG_CONFIG_HOME/qfleet/config.toml``. Never writes.

Example file::

    [qfleet]
    executors = ["LocalExecutor"]      # what qml.device("qfleet.local") runs on
    selector = "cyclic"

    [executors.LocalExecutor]
    device = "lightning.qubit"

    [executors.QiskitExecutor]
    token = "..."
    [executors.QiskitExecutor.options]
    default_shots = 2000

Environment variables ``QFLEET_<EXECUTOR>_<FIELD>`` (e.g. ``QFLEET_LOCALEXECUTOR_DEVICE``)
override the file.
"""

from __future__ import annotations

import json
import os
import threading
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from qfleet.config.registry import executor_classes
from qfleet.errors import ConfigError

ENV_PREFIX = "QFLEET_"


class GeneralSection(BaseModel):
    """The ``[qfleet]`` section."""

    model_config = ConfigDict(extra="forbid")

    executors: list[str] = Field(default_factory=lambda: ["LocalExecutor"])
    """Executor classes (configured by their own sections) behind ``qfleet.local``."""
    selector: str = "cyclic"
    progress: bool = True
    """Progress bars for large or slow batches (only ever on a terminal)."""


class QFleetConfig(BaseModel):
    """The effective configuration: file values with environment overrides applied."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    qfleet: GeneralSection = Field(default_factory=GeneralSection)
    executors: dict[str, dict[str, Any]] = Field(default_factory=dict)


def config_path() -> Path:
    """Where the config file is looked for: ``$QFLEET_CONFIG``, else the XDG config dir."""
    explicit = os.environ.get("QFLEET_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "qfleet" / "config.toml"


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError(f"malformed TOML in config file {path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


def _env_value(raw: str) -> Any:
    # Lists and numbers arrive as text: "[100, 1000]", "2048", "true".
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _validate(data: dict[str, Any], path: Path | None) -> QFleetConfig:
    where = f" in {path}" if path else ""
    unknown = set(data) - {"qfleet", "executors"}
    if unknown:
        raise ConfigError(
            f"unknown section(s) {sorted(unknown)}{where}; valid top-level sections are "
            f"[qfleet] and [executors.<ExecutorClass>]"
        )
    general = data.get("qfleet", {})
    if not isinstance(general, dict):
        raise ConfigError(f"[qfleet]{where} must be a table of key = value")
    bad = sorted(set(general) - set(GeneralSection.model_fields))
    if bad:
        raise ConfigError(
            f"unknown key(s) {bad} in [qfleet]{where}; valid keys: "
            + ", ".join(sorted(GeneralSection.model_fields))
        )
    classes = executor_classes()
    executors = data.get("executors", {})
    if not isinstance(executors, dict):
        raise ConfigError(f"[executors]{where} must be a table of [executors.<ExecutorClass>]")
    for section, values in executors.items():
        cls = classes.get(section)
        if cls is None:
            raise ConfigError(
                f"unknown section [executors.{section}]{where}; valid sections: "
                + ", ".join(f"[executors.{name}]" for name in sorted(classes))
            )
        if not isinstance(values, dict):
            raise ConfigError(f"[executors.{section}]{where} must be a table of field = value")
        bad = sorted(set(values) - set(cls.model_fields) - {"name"})
        if bad:
            raise ConfigError(
                f"unknown key(s) {bad} in [executors.{section}]{where}; valid keys: "
                + ", ".join(sorted(set(cls.model_fields) - {"name"}))
            )
    try:
        return QFleetConfig(path=path, **data)
    except ValidationError as exc:
        raise ConfigError(f"invalid [qfleet] section{where}: {exc}") from exc


def _apply_env(config: QFleetConfig) -> QFleetConfig:
    classes = executor_classes()
    executors = {name: dict(values) for name, values in config.executors.items()}
    for key, raw in os.environ.items():
        if not key.startswith(ENV_PREFIX) or key == "QFLEET_CONFIG" or key == "QFLEET_HOME":
            continue
        rest = key[len(ENV_PREFIX) :]
        for name, cls in classes.items():
            prefix = name.upper() + "_"
            if rest.startswith(prefix):
                field = rest[len(prefix) :].lower()
                if field not in cls.model_fields or field == "name":
                    raise ConfigError(
                        f"environment variable {key} names no field of {name}; valid: "
                        + ", ".join(
                            f"{ENV_PREFIX}{prefix}{f.upper()}"
                            for f in sorted(cls.model_fields)
                            if f != "name"
                        )
                    )
                executors.setdefault(name, {})[field] = _env_value(raw)
    return config.model_copy(update={"executors": executors})


_cache: dict[tuple, QFleetConfig] = {}
_cache_lock = threading.Lock()


def load_config(path: str | os.PathLike | None = None) -> QFleetConfig:
    """The effective config: the file (``path``, else :func:`config_path`) plus env overrides.

    Raises ConfigError naming the file and line for malformed TOML, and naming the section or
    key (with the valid ones) for unknown sections or keys. Reading never creates the file.

    Example:
        >>> import pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "config.toml"
        >>> _ = file.write_text('[executors.LocalExecutor]\\ndevice = "lightning.qubit"\\n')
        >>> load_config(file).executors["LocalExecutor"]
        {'device': 'lightning.qubit'}
    """
    file = Path(path).expanduser() if path is not None else config_path()
    try:
        stamp = file.stat().st_mtime_ns
    except OSError:
        stamp = None
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    key = (str(file), stamp, env)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    config = _apply_env(_validate(_read_file(file), file if stamp is not None else None))
    with _cache_lock:
        _cache.clear()
        _cache[key] = config
    return config


def executor_defaults(cls: type) -> dict[str, Any]:
    """Config-file and environment values for executor class ``cls``."""
    if cls.__name__ not in executor_classes():
        return {}
    return load_config().executors.get(cls.__name__, {})


def masked(config: QFleetConfig) -> dict[str, Any]:
    """The config as plain data with secrets shown as '**********'."""
    classes = executor_classes()
    out: dict[str, Any] = {"path": str(config.path) if config.path else None}
    out["qfleet"] = config.qfleet.model_dump()
    out["executors"] = {}
    for name, values in config.executors.items():
        fields = classes[name].model_fields
        shown = {}
        for field, value in values.items():
            annotation = str(fields[field].annotation)
            secret = "SecretStr" in annotation or isinstance(value, SecretStr)
            if isinstance(value, dict) and not secret:
                value = _mask_nested(fields[field].annotation, value)
            shown[field] = "**********" if secret and value else value
        out["executors"][name] = shown
    return out


def _mask_nested(annotation: Any, values: dict[str, Any]) -> dict[str, Any]:
    """A table for a model-typed field (e.g. AzureExecutor's ``credentials``) with that model's
    SecretStr fields masked."""
    import typing

    models = [a for a in (annotation, *typing.get_args(annotation))
              if isinstance(a, type) and issubclass(a, BaseModel)]
    secret = {name for model in models for name, info in model.model_fields.items()
              if "SecretStr" in str(info.annotation)}
    return {k: "**********" if (k in secret or isinstance(v, SecretStr)) and v else v
            for k, v in values.items()}
