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
    traces: bool = False
    """OpenTelemetry spans for every batch (``qfleet.telemetry``; the ``telemetry`` extra)."""
    metrics: bool = False
    """Prometheus metrics for every batch, served at ``qfleet ui``'s /metrics."""
    ui_token: SecretStr | None = None
    """Token ``qfleet ui`` asks browsers for; required to listen beyond 127.0.0.1."""


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
    return _default_path()


def _read_file(path: Path, *, required: bool) -> dict[str, Any]:
    """The file's tables; {} for an absent file at $QFLEET_CONFIG or the default location.
    A file passed explicitly that is absent, or any path that is a directory, unreadable,
    not UTF-8, not TOML or nested too deeply is a ConfigError naming it: never silently the
    defaults."""
    if path.is_dir():
        raise ConfigError(
            f"config path {path} is a directory; point {_source(required)} at a TOML file "
            f"(e.g. {path / 'config.toml'})"
        )
    if not path.exists():
        if required:
            raise ConfigError(
                f"config file {path} does not exist (named by {_source(required)}); create it, "
                f"fix the path, or unset it to use {_default_path()}"
            )
        return {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {data[exc.start]:#04x} at line "
            f"{line}); save it as UTF-8"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError(f"malformed TOML in config file {path}: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(
            f"config file {path} nests tables or arrays too deeply to read; qfleet's config "
            f"needs at most a few levels ([executors.<Class>.<field>])"
        ) from exc


def _default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "qfleet" / "config.toml"


def _source(required: bool) -> str:
    if required:
        return "the path argument"
    return "QFLEET_CONFIG" if os.environ.get("QFLEET_CONFIG") else "XDG_CONFIG_HOME"


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
                _sources[(name, field)] = f"environment variable {key}"
    return config.model_copy(update={"executors": executors})


#: (executor class, field) -> where its configured value came from (for error messages).
_sources: dict[tuple[str, str], str] = {}


def value_source(cls: type, field: str) -> str | None:
    """Where the configured value of ``cls.field`` came from: "environment variable
    QFLEET_..." or "config file PATH", or None if it is not configured."""
    config = load_config()
    if field not in config.executors.get(cls.__name__, {}):
        return None
    return _sources.get((cls.__name__, field)) or f"config file {config.path}"


def configured_value_error(cls: type, exc: Exception, explicit: Any) -> ConfigError | None:
    """A ConfigError naming the environment variable or config file whose value for ``cls``
    failed validation (``exc``, a pydantic ValidationError), or None when every failing
    field was given explicitly (``explicit``: the argument names)."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return None
    lines = []
    for error in errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        if field in explicit:
            continue
        source = value_source(cls, field)
        if source is None:
            continue
        lines.append(f"{field} = {error.get('input')!r} from {source}: {error.get('msg')}")
    if not lines:
        return None
    return ConfigError(
        f"invalid configured value for {cls.__name__}: " + "; ".join(lines)
        + "; fix or unset it"
    )


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
    # An explicit path must exist; $QFLEET_CONFIG / the default location may be absent
    # (built-in defaults then apply, as `qfleet config path` says).
    required = path is not None
    try:
        stamp = file.stat().st_mtime_ns
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        stamp = None
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    key = (str(file), stamp, env)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    with _cache_lock:
        _sources.clear()
        config = _apply_env(
            _validate(_read_file(file, required=required), file if stamp is not None else None)
        )
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
    """The config as plain data with every secret shown as '**********' (the one rule of
    :mod:`qfleet.config.secrets`: SecretStr fields, and credential-named keys at any depth)."""
    from qfleet.config.secrets import redact

    classes = executor_classes()
    out: dict[str, Any] = {"path": str(config.path) if config.path else None}
    out["qfleet"] = redact(config.qfleet)
    out["executors"] = {}
    for name, values in config.executors.items():
        fields = classes[name].model_fields if name in classes else {}
        out["executors"][name] = {
            field: redact(value, fields[field].annotation if field in fields else None, field)
            for field, value in values.items()
        }
    return out
