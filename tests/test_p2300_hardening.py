"""Executor2300 and serve-2300 under bad input and faults: typed errors, no hang, no silent
wrong answer, no job lost to a dead client's lock, no I/O on the caller's thread."""

from __future__ import annotations

import json
import threading
import time
import uuid

import numpy as np
import pennylane as qml
import pytest
import zmq
from pennylane.tape import QuantumScript

from qfleet.cluster import QuantumCluster
from qfleet.errors import ConfigError, ExecutorError, ExecutorTimeoutError
from qfleet.executors import Executor2300, LocalExecutor
from qfleet.protocols.p2300 import messages as m
from qfleet.protocols.p2300.client import NoStateWarning, RequestTooLarge, request_sync
from qfleet.protocols.p2300.session import MAX_REQUEST_BYTES, ControlSession

from p2300_support import raw_request, wait_until  # noqa: E402

pytest_plugins = ["p2300_support"]

X_TAPE = QuantumScript([qml.X(0)], [qml.probs(wires=[0, 1])], shots=100)


# -- a misbehaving 2300: a real peer (ROUTER socket, ControlSession) with crafted results --


class BadPeer:
    """Answers everything as a 2300 does, except ``execute``: ``results`` instead."""

    def __init__(self, results: dict, raw_data=None):
        self.results, self.raw_data = results, raw_data
        self.session = ControlSession(m.StaticData(nqubits=2, name="bad", pgs=[], starttime=0))
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            *envelope, body = self.sock.recv_multipart()
            request = json.loads(body)
            if request["command"] == "execute":
                payload = {"job_id": request["payload"]["job_id"], "results": self.results}
                if self.raw_data is not None:
                    payload["raw_data"] = self.raw_data
                reply = m.success(request["session_id"], payload)
            else:
                reply = self.session.receive(body)
            self.sock.send_multipart([*envelope, reply])

    def executor(self):
        return Executor2300(address=f"tcp://127.0.0.1:{self.port}", subscribe_address=None,
                            timeout=2, retries=0, shots=100)  # fmt: skip

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close(linger=0)


@pytest.mark.parametrize(
    "results, raw, error",
    [
        ({"00": 150, "01": -50}, None, "negative counts"),
        ({"00": 60, "01": 30}, None, "counts sum to 90, not the 100"),
        ({"000": 100}, None, "not 2-bit strings"),
        ({"0x": 100}, None, "not 2-bit strings"),
        ({"00": 100}, ["00"] * 99, "raw_data holds 99 shots"),
        ({"00": 100}, ["0"] * 100, "not 2-bit bitstrings"),
    ],
)
def test_replies_are_validated(results, raw, error):
    peer = BadPeer(results, raw)
    try:
        with pytest.raises(ExecutorError, match=error):
            peer.executor().execute([X_TAPE])
    finally:
        peer.close()


def test_emulator_refuses_a_gate_naming_one_qubit_twice(emulator):
    session = str(uuid.uuid4())
    assert emulator.request("initialize", session_id=session)["status"] == "success"
    try:
        for gate in ("CNOT q[0], q[0]", "CZ q[1], q[1]", "CNOT q[0:1], q[0:1]"):
            circuit = f"version 3.0\nqubit[3] q\nbit[3] b\n{gate}\nb = measure q\n"
            reply = emulator.request("execute", {"job_id": 1, "circuit": circuit, "number_of_shots": 5},
                                     session_id=session)  # fmt: skip
            assert reply["status"] == "failure", (gate, reply)
            assert "more than once" in reply["payload"]["error_msg"]
    finally:
        emulator.request("terminate", session_id=session)


@pytest.mark.parametrize("address", ["not a url", "tcp://127.0.0.1", "tcp://:4203", "http://x:1", "tcp://h:port"])
def test_bad_address_is_a_config_error(address):
    with pytest.raises(ConfigError, match="not a ZeroMQ endpoint"):
        Executor2300(address=address)
    with pytest.raises(ConfigError, match="subscribe_address"):
        Executor2300(subscribe_address=address)


def test_defaults_know_a_dead_2300_within_seconds_and_report_capacity():
    ex = Executor2300()
    assert ex.timeout * (ex.retries + 1) <= 10  # 5 s x 2 tries: seconds, not 90 s
    assert ex.max_concurrent == 1  # one session at a time: selectors see it
    closed = zmq.Context.instance().socket(zmq.ROUTER)
    port = closed.bind_to_random_port("tcp://127.0.0.1")
    closed.close(linger=0)  # nothing listens there now
    ex = Executor2300(address=f"tcp://127.0.0.1:{port}", subscribe_address=None, timeout=0.3, shots=10)
    with pytest.raises(ExecutorTimeoutError, match=r"no reply .* after 2 attempt") as info:
        ex.execute([X_TAPE])
    assert info.value.transient
    status = ex.status()  # what cluster health shows for it
    assert not status.available and "no reply" in status.reason


def test_oversized_requests_are_refused_with_the_limit_named(emulator):
    huge = {"job_id": 1, "circuit": "x" * (70 * 1024 * 1024), "number_of_shots": 1}
    with pytest.raises(RequestTooLarge, match=f"larger than the {MAX_REQUEST_BYTES} bytes"):
        request_sync(emulator.rep, "execute", "s", huge, timeout=1, retries=0)
    # a client that sends one anyway gets a reply naming the limit, not silence
    reply = raw_request(emulator.rep, {"session_id": "s", "command": "execute", "payload": huge}, timeout=30)
    assert reply["status"] == "failure" and str(MAX_REQUEST_BYTES) in reply["payload"]["error_msg"]


def test_prepare_does_no_io_and_a_dead_2300_trips_the_cluster_breaker():
    silent = zmq.Context.instance().socket(zmq.ROUTER)  # takes requests, never answers
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        dead = Executor2300(address=f"tcp://127.0.0.1:{port}", subscribe_address=None,
                            timeout=0.2, retries=0, shots=200, name="dead-2300")  # fmt: skip
        prepared = dead.prepare([X_TAPE])  # returns at once: no get_static on this thread
        assert prepared.payload.programs is None
        cluster = QuantumCluster(executors=[dead, LocalExecutor(shots=200)], breaker_threshold=1,
                                 breaker_cooldown=60, retries=2)  # fmt: skip
        for _ in range(4):
            result = cluster.execute([X_TAPE])
            assert np.allclose(result[0], [0, 0, 1, 0])
        health = cluster.health()["dead-2300"]
        assert health.state == "open" and health.failed >= 1
    finally:
        silent.close(linger=0)


def test_long_job_is_not_timed_out_while_2300_publishes_executing(emulators):
    slow = emulators["slow"]  # 0.25 s per execute: longer than the reply timeout below
    ex = slow.executor(timeout=0.15, retries=0, shots=50)
    result = ex.execute([QuantumScript([qml.X(0)], [qml.probs(wires=[0])]) for _ in range(3)])
    assert all(np.allclose(r, [0, 1]) for r in result)


def test_subscribe_address_without_states_is_a_warning(emulator):
    pub = zmq.Context.instance().socket(zmq.PUB)  # bound, never publishes
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        ex = Executor2300(address=emulator.rep, subscribe_address=f"tcp://127.0.0.1:{port}", shots=20)
        with pytest.warns(NoStateWarning, match="no 2300 state arrived"):
            ex.execute([X_TAPE])
        assert "no state ever arrived" in (ex.status().reason or "")
    finally:
        pub.close(linger=0)


def test_a_dead_clients_lock_is_waited_out(emulators):
    emu = emulators["hw_line"]  # releases an idle lock after 3 s
    dead = str(uuid.uuid4())
    assert emu.request("initialize", session_id=dead)["status"] == "success"  # ... and dies
    ex = emu.executor(timeout=1, retries=0, lock_wait=20, shots=100)
    result = ex.execute([QuantumScript([qml.X(1)], [qml.probs(wires=[1])])])
    assert np.allclose(result[0], [0, 1])
    assert emu.dynamic()["lock_expired"] >= 1


def test_attach_unlocks_the_dead_session_and_runs_again(emulators):
    emu = emulators["hw_line"]
    dead = str(uuid.uuid4())
    assert emu.request("initialize", session_id=dead)["status"] == "success"
    expired = emu.dynamic()["lock_expired"]
    ex = emu.executor(timeout=1, retries=0, lock_wait=0, shots=100)  # no waiting allowed
    tape = QuantumScript([qml.X(0)], [qml.probs(wires=[0])])
    result = ex.results_of([tape], [f"{dead}/1"])  # the job ids the dead process stored
    assert np.allclose(result[0], [0, 1])
    assert emu.dynamic()["lock_expired"] == expired  # terminated, not waited out
    assert not wait_until(lambda: emu.dynamic()["locked"], timeout=0.2)
