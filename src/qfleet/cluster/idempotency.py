"""Idempotent submission: a batch a backend accepted is never submitted to it again.

Every cluster batch carries a key: ``batch``, the call's nonce (fresh per call, so two
deliberate identical calls both run; or the caller's own, :func:`idempotent`) and the
chunk's place in the call, and ``key``, a digest of ``batch`` with the member and the
batch's canonical circuits after its sampling plan, shots and seed (:func:`batch_key`, the
result cache's content address). The moment a member whose backend keeps its jobs
(``executor.reattachable``: Azure Quantum, IBM Runtime, Amazon Braket, Quantum Inspire,
Classiq) accepts the batch,
``batch -> (key, member, job ids)`` goes into the fleet ledger (SQLite, one transaction,
shared by processes), before any waiting. A retry
after a lost reply or a failed wait, a failover, or a restarted process repeating the call
under the same key finds the record and re-attaches to those job ids instead of submitting.

What is and is not guaranteed:

- Between the backend accepting and the record being written, only the backend's own
  handle helps: executors whose protocol takes a client-chosen handle derive it from
  ``key`` (:func:`~qfleet.executors.idempotency.backend_job_id`; Azure Quantum job ids,
  Braket's ``clientToken``), so a resubmission names the job the backend already has and
  gets it back, not a second one.
- Members that are not ``reattachable`` (simulators, the 2300, and executors that have not
  declared it yet) are not recorded: a retry there runs the batch again, as before. The
  2300's REQ/REP client resends a request when no reply came in time; within one session
  qfleet's emulator answers a resent ``execute`` (same job id) from its stored reply, which
  is what the client counts on (what a real 2300 does is not documented). A batch resubmitted
  in a new session runs again (its ``attach`` runs the batch again too). Backends without a
  client-chosen handle (IBM Runtime's ``POST /jobs``; Quantum Inspire, Classiq) are
  covered from the moment the ids are recorded: a reply lost before that can mean a second
  job.
- Under a key, a transient failure no longer cancels the jobs a member created (their retry
  takes them over); when the cluster gives up on the batch, they run to their end.
- The key names the call and its chunks in order: a ``spread=True`` batch split differently
  in a restarted process is not recognised as the same work. Durable jobs run under the key
  ``job:<id>``, so the job store's re-run of a job re-attaches.

Example:
    >>> tape = qml.tape.QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))])
    >>> ex = qfleet.executor.LocalExecutor()
    >>> prepared = ex.prepare([tape])
    >>> key = submission_key(ex, "LocalExecutor", prepared, "call-1/0")
    >>> key == submission_key(ex, "LocalExecutor", prepared, "call-1/0"), len(key)
    (True, 64)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
import warnings

from qfleet.cluster.cache import batch_key
from qfleet.cluster.ledger import Ledger, Submission
from qfleet.errors import ExecutorError, ExecutorTimeoutError, QFleetError
from qfleet.executors.base import BatchResult, Prepared, QuantumExecutor
from qfleet.executors.faults import chain
from qfleet.executors.idempotency import (
    IdempotencyKeyError,
    caller_key,
    idempotent,
    submitting,
)

__all__ = ["IdempotencyKeyError", "call_nonce", "idempotent", "run_once", "submission_key"]


def call_nonce() -> str:
    """The caller's key (:func:`idempotent`), else a fresh one for this call."""
    return caller_key() or uuid.uuid4().hex


def submission_key(member: QuantumExecutor, label: str, prepared: Prepared, batch: str) -> str:
    """The digest of ``batch`` as ``member`` runs it: its circuits after the plan, the
    backend, shots and seed (a circuit without a canonical form counts by ``batch`` alone)."""
    circuits = prepared.plan.circuits if prepared.plan is not None else prepared.tapes
    content = batch_key(
        circuits,
        backend=f"{type(member).__name__}:{member.backend_description}",
        shots=member.shots,
        seed=getattr(member, "seed", None),
    )
    text = f"{batch}\x00{label}\x00{content or ''}"
    return hashlib.sha256(text.encode()).hexdigest()


async def run_once(
    member: QuantumExecutor,
    label: str,
    prepared: Prepared,
    batch: str,
    key: str,
    ledger: Ledger,
    record: Submission | None = None,
    sent: asyncio.Event | None = None,
) -> BatchResult:
    """Run ``prepared`` on ``member``, or re-attach to the jobs ``record`` (``member``
    accepted ``batch`` before) names; record the jobs as soon as the backend accepts them.
    ``sent`` is set once the backend holds (or may hold) the batch."""
    sent = sent or asyncio.Event()
    if record is not None and record.key != key:
        raise IdempotencyKeyError(
            f"idempotency key {batch.rsplit('/', 1)[0]!r} was used before for a different "
            f"batch (other circuits, shots or member than this call's); give each distinct "
            f"call its own key (qf.idempotent(...)) or none"
        )
    with submitting(key):  # the member's submit and collect know the batch's key
        return await _run_once(member, label, prepared, batch, key, ledger, record, sent)


async def _run_once(
    member: QuantumExecutor,
    label: str,
    prepared: Prepared,
    batch: str,
    key: str,
    ledger: Ledger,
    record: Submission | None,
    sent: asyncio.Event,
) -> BatchResult:
    if record is not None and record.job_ids:
        sent.set()
        handle = member.runner.attach(prepared, record.job_ids, record.accepted)
    else:
        try:
            handle = await member.runner.submit(prepared)
            sent.set()
        except Exception as exc:
            if maybe_delivered(exc):
                sent.set()  # a budget keeps its charge: the backend may run it
            if member.resubmits_idempotently and maybe_delivered(exc):
                # The backend may hold the jobs (a lost reply): pending, so the retry comes
                # back here under this key, where the backend's handle finds them.
                await asyncio.to_thread(ledger.record_submission, batch, key, label, ())
            raise
        if handle.job_ids:
            try:
                record = await asyncio.to_thread(
                    ledger.record_submission, batch, key, label, handle.job_ids
                )
            except QFleetError as exc:  # the jobs run anyway: wait for them, unrecorded
                warnings.warn(f"batch {batch} not recorded for re-attaching: {exc}", stacklevel=2)
            else:
                if record.job_ids != tuple(handle.job_ids) and record.member == label:
                    # Another process submitted the same call first: keep its jobs only.
                    ours = asyncio.ensure_future(_discard(member, handle))
                    _background.add(ours)
                    ours.add_done_callback(_background.discard)
                    handle = member.runner.attach(prepared, record.job_ids, record.accepted)
    try:
        return await member.runner.collect(handle)
    except (asyncio.CancelledError, ExecutorTimeoutError):
        # The jobs were cancelled (a timeout cancels them too): a later call under this key
        # must submit again.
        await asyncio.shield(asyncio.to_thread(ledger.forget_submission, batch))
        raise


def maybe_delivered(exc: BaseException) -> bool:
    """Whether a failed submission may have reached the backend (not refused outright)."""
    if not (isinstance(exc, ExecutorError) and exc.transient):
        return False  # a rejected batch or credentials: the backend created nothing
    return not any(isinstance(e, ConnectionRefusedError) for e in chain(exc))


#: Second copies being cancelled (kept referenced until done).
_background: set[asyncio.Future] = set()


async def _discard(member: QuantumExecutor, handle) -> None:
    await member.cancel(handle.job)
    with contextlib.suppress(Exception):  # cancelled: its error is expected
        await member.runner.collect(handle)  # releases the member's concurrency slot
