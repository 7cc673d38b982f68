"""What a job-store row may hold: every row read from the store is validated here first.

The store is a file any process of the user (or anything else) can write; a row that does
not fit these models (a wrong type, a status qfleet never writes, a JSON column that is not
JSON, negative counts, a tapes column that is not qfleet's tape document) is reported as a
:class:`~qfleet.jobs.store.JobStoreRowError` naming the file, the job and the column, instead
of being used.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, field_validator

Status = Literal["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


class _Row(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    seq: int | None = None
    id: str = Field(min_length=1)
    name: str | None = None
    kind: Literal["sample", "estimate", "probs", "minimize"]
    status: Status
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    backend: str | None = None
    num_shots: NonNegativeInt | None = None
    batch: Literal[0, 1] = 0
    error: str | None = None
    backend_job_ids: str = "[]"
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_started: str | None = None
    heartbeat: float | None = None
    session_id: str | None = None
    program_id: str | None = None
    parent_id: str | None = None

    @field_validator("backend_job_ids")
    @classmethod
    def _job_ids(cls, value: str) -> str:
        ids = json.loads(value)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("must be a JSON list of job id strings")
        return value


class ListedRow(_Row):
    """The columns ``JobStore.list`` reads."""


class _Item(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    parameters: dict[str, Any]
    num_shots: NonNegativeInt | None = None
    counts: dict[str, NonNegativeInt] | None = None
    value: float | None = None
    probabilities: dict[str, float] | None = None  # "probs" jobs
    cost: float | None = None  # "minimize" jobs: one item per cost evaluation


class _Results(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    kind: Literal["sample", "estimate", "probs", "minimize"]
    items: list[_Item]
    message: str | None = None  # "minimize" jobs: the optimizer's


class FullRow(_Row):
    """A whole row (``JobStore.get``)."""

    executor: str
    runner: str | None = None
    program_kind: str | None = None
    program: str | None = None
    parameters: str
    preferences: str
    observable: str | None = None
    layout: str | None = None
    tapes: str
    attempts: NonNegativeInt = 1
    cancel_requested: Literal[0, 1] = 0
    run_metadata: str | None = None
    results: str | None = None
    checkpoint: str | None = None  # "minimize" jobs: see qfleet.jobs.minimize
    raw_output: str | None = None  # the backend's output until results are finished from it

    @field_validator("executor", "runner", "preferences", "layout", "run_metadata", "checkpoint")
    @classmethod
    def _json(cls, value: str | None) -> str | None:
        if value is not None:
            json.loads(value)
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: str) -> str:
        sets = json.loads(value)
        if not isinstance(sets, list) or not all(isinstance(s, dict) for s in sets):
            raise ValueError("must be a JSON list of parameter dicts")
        return value

    @field_validator("tapes")
    @classmethod
    def _tapes(cls, value: str) -> str:
        document = json.loads(value)
        if not isinstance(document, dict) or document.get("format") != "qfleet.tapes":
            raise ValueError("is not qfleet's tape document (JSON with format 'qfleet.tapes')")
        return value

    @field_validator("raw_output")
    @classmethod
    def _raw_output(cls, value: str | None) -> str | None:
        # Only the envelope here (every read validates); the data is decoded when finished.
        if value is not None:
            from qfleet.jobs.raw_json import FORMAT

            document = json.loads(value)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ValueError(f"is not qfleet's raw-output document (format {FORMAT!r})")
        return value

    @field_validator("results")
    @classmethod
    def _results(cls, value: str | None) -> str | None:
        if value is not None:
            _Results.model_validate(json.loads(value))
        return value


def validate_row(model: type[_Row], row: dict[str, Any]) -> str | None:
    """None if ``row`` fits ``model``, else a one-line description of what does not."""
    try:
        model.model_validate(row)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "row"
        extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"column {where}: {first['msg']}{extra}"
    except (ValueError, RecursionError) as exc:  # json.loads inside a validator
        return f"a JSON column is not valid JSON: {exc}"
    return None
