"""Classiq-style execution sessions and durable jobs on any qfleet executor.

``ExecutionSession`` (sample / estimate, single or batch, blocking or ``submit_*``),
``ExecutionJob`` (result, poll, cancel, rename, from_id — in any process),
``get_execution_jobs`` (newest first), ``Pauli`` sums for ``estimate``, and the SQLite job
store behind them.
"""

from qfleet.jobs.job import (
    EstimationResult,
    ExecutionJob,
    JobAlreadyFinishedError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobNotFinishedError,
    JobNotFoundError,
    JobStatus,
    ResultKindError,
    SampleResult,
    SavedResult,
    get_execution_jobs,
)
from qfleet.jobs.pauli import ObservableError, Pauli, PauliSum
from qfleet.jobs.session import ExecutionPreferences, ExecutionSession, SessionClosedError
from qfleet.jobs.store import JobStore, JobStoreError, JobStoreLockedError

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
