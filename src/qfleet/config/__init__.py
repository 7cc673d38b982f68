"""Config-file loader: defaults and tokens for executors.

Precedence: explicit argument > environment variable > config file > built-in default.
"""

from qfleet.config.loader import (
    QFleetConfig,
    config_path,
    executor_defaults,
    load_config,
    masked,
)
from qfleet.config.registry import executor_classes, register_executor

__all__ = [
    "QFleetConfig",
    "config_path",
    "executor_classes",
    "executor_defaults",
    "load_config",
    "masked",
    "register_executor",
]
