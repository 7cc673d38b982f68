"""A 2300 member's health comes from its last known status, refreshed in the background:
``get_dynamic`` metrics appear in ``cluster.health()``, and a 2300 that stopped answering, never
published a state or whose heartbeat stopped is marked down there, saying why. ``health()``
itself does no I/O (the refresh runs on a daemon thread every ``status_ttl`` seconds)."""

from __future__ import annotations

import socket

import pytest

from qfleet.cluster import QuantumCluster
from qfleet.executors import Executor2300, LocalExecutor

from p2300_support import EMULATORS, Emulator, wait_until  # noqa: E402

pytest_plugins = ["p2300_support"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _member(name: str, rep: str, pub: str) -> Executor2300:
    return Executor2300(name=name, address=rep, subscribe_address=pub, timeout=1.0, retries=0)


@pytest.mark.timeout(60)
def test_get_dynamic_metrics_and_a_silent_state_socket_in_health(emulators):
    """The 2300 answers, but its subscribe address never delivers a state: down, and why."""
    default = emulators["default"]
    silent = f"tcp://127.0.0.1:{_closed_port()}"
    cluster = QuantumCluster(executors=[_member("live", default.rep, default.pub),
                                        _member("silent", default.rep, silent),
                                        LocalExecutor(name="local")], status_ttl=0.3)
    first = cluster.health()  # no I/O: nothing known yet, the refresh starts in the background
    assert {h.available for h in first.values()} == {None}
    assert all(h.status is None for h in first.values())

    health = wait_until(lambda: (h := cluster.health())["silent"].available is False and h,
                        timeout=30)
    assert health, cluster.health()
    assert health["silent"].reason == f"no state ever arrived from {silent}"
    live = health["live"]
    assert live.available is True and live.reason is None and live.state == "healthy"
    metrics = live.status.metrics
    assert metrics["state"] == "IDLE" and metrics["locked"] is False
    assert isinstance(metrics["uptime"], float) and metrics["requests"] >= 1
    assert health["silent"].status.metrics["state"] == "IDLE"  # it answered get_dynamic
    assert health["local"].available is True and health["local"].status.metrics == {}


@pytest.mark.timeout(90)
def test_a_stopped_heartbeat_and_a_dead_2300_are_down_in_health(emulators):
    """Two members follow the state socket of a 2300 that is then killed: one sends its
    requests to another, live, 2300 (only the heartbeat stops), the other to the dead one."""
    default = emulators["default"]
    doomed = Emulator("health-doomed", EMULATORS["default"])
    doomed.launch()
    try:
        doomed.wait_ready()
        cluster = QuantumCluster(executors=[_member("heartbeat", default.rep, doomed.pub),
                                            _member("dead", doomed.rep, doomed.pub)],
                                 status_ttl=0.3)
        cluster.health()
        assert wait_until(lambda: all(h.available for h in cluster.health().values()),
                          timeout=30), cluster.health()
        doomed.kill()
        health = wait_until(lambda: (h := cluster.health()) and not any(
            v.available for v in h.values()) and h, timeout=30)
        assert health, cluster.health()
        assert health["heartbeat"].reason.startswith(f"no heartbeat from {doomed.pub} for ")
        assert health["heartbeat"].status.metrics["state"] == "IDLE"  # its 2300 still answers
        assert health["dead"].reason.startswith("no reply")
        assert health["dead"].status.metrics == {}
    finally:
        doomed.stop()
