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
        ["ExecutionPreferences", "ExecutionSession", "SessionClosedError"], "qfleet.jobs.session"
    ),
    **dict.fromkeys(["JobStore", "JobStoreError", "JobStoreLockedError"], "qfleet.jobs.store"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'qfleet.jobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "EstimationResult",
    "ExecutionJob",
    "ExecutionPreferences",
    "ExecutionSession",
    "JobAlreadyFinishedError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobNotFinishedError",
    "JobNotFoundError",
    "JobStatus",
    "JobStore",
    "JobStoreError",
    "JobStoreLockedError",
    "ObservableError",
    "Pauli",
    "PauliSum",
    "ResultKindError",
    "SampleResult",
    "SavedResult",
    "SessionClosedError",
    "get_execution_jobs",
]
