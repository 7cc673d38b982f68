"""The members' live status, refreshed in the background, read without waiting.

Asking a backend for its status is I/O (an HTTP call, a ZeroMQ request). Routing a batch
must not wait for it, so a daemon thread per cluster and process asks every ``ttl`` seconds
and the policies read the last answer. Until the first answer a member counts as available,
with its configured price and no published queue or calibration.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from qfleet.executors.base import QuantumExecutor
from qfleet.executors.status import ExecutorStatus

log = logging.getLogger("qfleet.cluster.status")


def assumed_status(member: QuantumExecutor) -> ExecutorStatus:
    """What a member is taken to be before it answered: the contract's default (no I/O)."""
    return QuantumExecutor.status(member)


def ask(member: QuantumExecutor, label: str) -> ExecutorStatus:
    """``member.status()``; a member whose status check fails counts as offline."""
    try:
        status = member.status()
    except Exception as exc:  # any failure to answer means: do not route there now
        return assumed_status(member).model_copy(
            update={"available": False, "reason": f"status check failed: {exc}"}
        )
    return status.model_copy(update={"executor": label})


def _ask_all(members: Sequence[QuantumExecutor], labels: Sequence[str]) -> list[ExecutorStatus]:
    # One daemon thread per member, not a thread pool: interpreter exit joins a pool's
    # workers, so a status check waiting out its timeout would keep a finished script alive.
    statuses: list[ExecutorStatus | None] = [None] * len(members)

    def one(i: int) -> None:
        statuses[i] = ask(members[i], labels[i])

    threads = [threading.Thread(target=one, args=(i,), name="qfleet-status-ask", daemon=True)
               for i in range(len(members))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [  # None: a thread died of a BaseException; the member keeps its assumed status
        s if s is not None else assumed_status(m).model_copy(update={"executor": lb})
        for s, m, lb in zip(statuses, members, labels, strict=True)
    ]


class StatusBoard:
    """Last known status per member; ``refresh()`` asks them all now (blocking)."""

    def __init__(
        self, members: Sequence[QuantumExecutor], labels: Sequence[str], ttl: float, fleet: Any
    ) -> None:
        self.members = list(members)
        self.labels = list(labels)
        self.ttl = ttl
        self.fleet = fleet
        """The FleetState that routing reads (updated and published after each round)."""
        self.statuses = [
            assumed_status(m).model_copy(update={"executor": lb})
            for m, lb in zip(self.members, self.labels, strict=True)
        ]
        self.refreshed_at: float | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def refresh(self) -> list[ExecutorStatus]:
        """Ask every member now (in parallel) and publish the answers to routing."""
        statuses = _ask_all(self.members, self.labels)
        with self._lock:
            self.statuses = statuses
            self.refreshed_at = time.monotonic()
            for i, status in enumerate(statuses):
                self.fleet.update(i, status)
            self.fleet.publish()
        return statuses

    def last_known(self) -> list[ExecutorStatus | None]:
        """Each member's last answer; None for all before the first refresh finished."""
        with self._lock:
            if self.refreshed_at is None:
                return [None] * len(self.members)
            return list(self.statuses)

    def start(self) -> None:
        """Refresh in a daemon thread every ``ttl`` seconds (once per board)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_refresh_loop, args=(weakref.ref(self), self.ttl),
                    name="qfleet-status", daemon=True,
                )  # fmt: skip
                self._thread.start()


def _refresh_loop(board_ref: weakref.ref, ttl: float) -> None:
    # Holds the board weakly: a cluster that is gone stops its refresher.
    while True:
        board = board_ref()
        if board is None:
            return
        try:
            board.refresh()
        except Exception:  # keep refreshing: the last statuses stay in use meanwhile
            log.exception("status refresh failed")
        del board
        time.sleep(ttl)
