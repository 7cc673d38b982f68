"""Config-file loader: defaults and tokens for executors.

Precedence: explicit argument > environment variable > config file > built-in default.
"""

from qfleet.config.registry import executor_classes, register_executor
from qfleet.config.loader import (
    QFleetConfig,
    config_path,
    executor_defaults,
    load_config,
    masked,
)

__all__ = [
    "QFleetConfig",
    "config_path",
    "executor_classes",
    "executor_defaults",
    "load_config",
    "masked",
    "register_executor",
]
