"""Classiq-style execution sessions and durable jobs on any qfleet executor.

``ExecutionSession`` (sample / estimate, single or batch, blocking or ``submit_*``),
``ExecutionJob`` (result, poll, cancel, rename, from_id — in any process),
``get_execution_jobs`` (newest first), ``Pauli`` sums for ``estimate``, and the SQLite job
store behind them.
"""

import importlib
from typing import Any

# Loaded on first use, so ``qfleet jobs ...`` parses its arguments without importing
# PennyLane (the job module needs it; the command-line parser does not).
_WHERE = {
    **dict.fromkeys(
        ["EstimationResult", "ExecutionJob", "JobAlreadyFinishedError", "JobCancelledError",
         "JobError", "JobFailedError", "JobNotFinishedError", "JobNotFoundError", "JobStatus",
         "ResultKindError", "SampleResult", "SavedResult", "get_execution_jobs"],
        "qfleet.jobs.job",
    ),
    **dict.fromkeys(["ObservableError", "Pauli", "PauliSum"], "qfleet.jobs.pauli"),
    **dict.fromkeys(
        ["ExecutionPreferences", "ExecutionSession", "MeasuredStateFilterError",
         "SessionClosedError"], "qfleet.jobs.session"
    ),
    **dict.fromkeys(["JobStore", "JobStoreError", "JobStoreLockedError"], "qfleet.jobs.store"),
    **dict.fromkeys(
        ["CostUnknownError", "ExecutionJobFilters", "JobCost", "get_execution_actions",
         "get_execution_actions_async"],
        "qfleet.jobs.actions",
    ),
    **dict.fromkeys(
        ["MinimizationResult", "MinimizeError", "MinimizeResumeError"], "qfleet.jobs.minimize"
    ),
    **dict.fromkeys(["CostFunctionError"], "qfleet.jobs.distributions"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'qfleet.jobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "CostFunctionError",
    "CostUnknownError",
    "EstimationResult",
    "ExecutionJob",
    "ExecutionJobFilters",
    "ExecutionPreferences",
    "ExecutionSession",
    "JobAlreadyFinishedError",
    "JobCancelledError",
    "JobCost",
    "JobError",
    "JobFailedError",
    "JobNotFinishedError",
    "JobNotFoundError",
    "JobStatus",
    "JobStore",
    "JobStoreError",
    "JobStoreLockedError",
    "MeasuredStateFilterError",
    "MinimizationResult",
    "MinimizeError",
    "MinimizeResumeError",
    "ObservableError",
    "Pauli",
    "PauliSum",
    "ResultKindError",
    "SampleResult",
    "SavedResult",
    "SessionClosedError",
    "get_execution_actions",
    "get_execution_actions_async",
    "get_execution_jobs",
]
