"""2300 emulators for the tests: real ``qfleet serve-2300`` processes on free loopback ports.

All emulators a test session needs start together (in parallel: each start imports
PennyLane, a few seconds) the first time a test asks for one, and stop at the end.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("zmq")
pytest.importorskip("cqasm.v3x")
pytest.importorskip("qxelarator")

import zmq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: A default_compiler_config as a 2300 reports it: OpenSquirrel passes by stage.
HW_CONFIG = {
    "mapping": [{"path": "opensquirrel.passes.mapper.MIPMapper", "method": "map"}],
    "routing": [{"path": "opensquirrel.passes.router.AStarRouter", "method": "route",
                 "arguments": {"distance_metric": "manhattan"}}],
    "decomposition": [
        {"path": "opensquirrel.passes.decomposer.SWAP2CZDecomposer", "method": "decompose"},
        {"path": "opensquirrel.passes.decomposer.CNOT2CZDecomposer", "method": "decompose"},
    ],
    "optimization": [
        {"path": "opensquirrel.passes.merger.SingleQubitGatesMerger", "method": "merge"}
    ],
}

#: name -> serve-2300 options. Few processes: each start imports PennyLane (seconds).
EMULATORS: dict[str, list[str]] = {
    # most tests: seeded, a shot cap low enough to provoke a failure reply
    "default": ["--seed", "2300", "--max-shots", "100000"],
    # a hardware-like target: 3 qubits in a line, a native gate set, and it calibrates
    # for 1.5 s every 4 s
    "restricted": [
        "--seed", "7", "--qubits", "3", "--topology", "line",
        "--gates", "X90,MX90,Y90,MY90,RZ,CZ", "--calibrating", "1.5",
        "--calibration-interval", "4",
    ],
    # slow executes: to cancel a batch midway, to watch the heartbeat; killed and
    # restarted by the restart tests
    "slow": ["--seed", "11", "--latency", "0.25"],
    # loses 30% of its replies
    "lossy": ["--seed", "23", "--drop-rate", "0.3"],
    # configured like QuTech hardware: native gates, sparse topologies; the line one lets
    # a dead client's lock go after 3 s, the star one names its own compiler passes
    "hw_line": [
        "--seed", "5", "--qubits", "5", "--topology", "line",
        "--gates", "X90,MX90,Y90,MY90,RZ,CZ", "--lock-timeout", "3",
    ],
    "hw_star": [
        "--seed", "17", "--qubits", "7", "--topology", "star",
        "--gates", "X90,MX90,Y90,MY90,RZ,CZ", "--compiler-config", json.dumps(HW_CONFIG),
    ],
}  # fmt: skip


class Emulator:
    """One ``qfleet serve-2300`` process."""

    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.args = args
        self.rep = self.pub = ""
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"serve-2300-{name}-", suffix=".log", delete=False)
        self._lines: queue.Queue = queue.Queue()

    def launch(self, bind: str = "tcp://127.0.0.1:0", publish: str = "tcp://127.0.0.1:0") -> None:
        cmd = [
            sys.executable, "-m", "qfleet.cli", "serve-2300",
            "--bind", bind, "--publish", publish, "--log-level", "info", *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self._lines), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def wait_ready(self, timeout: float = 120.0) -> Emulator:
        if self.rep:
            return self
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if not line or "ready" not in line:
            raise RuntimeError(f"serve-2300 {self.name} did not start: {line!r}\n{self.stderr()}")
        words = line.split()
        self.rep = words[words.index("REP") + 1]
        self.pub = words[words.index("PUB") + 1]
        return self

    def stderr(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Crash it (SIGKILL): no goodbye, sockets just vanish."""
        if self.alive:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self) -> None:
        """Start again on the same ports (after ``kill``); does not wait for it."""
        rep, pub = self.rep, self.pub
        self.rep = self.pub = ""
        self.launch(rep, pub)

    def executor(self, **kwargs):
        from qfleet.executors import Executor2300

        kwargs.setdefault("timeout", 10.0)
        return Executor2300(address=self.rep, subscribe_address=self.pub, **kwargs)

    def request(self, command: str, payload=None, session_id: str | None = None, timeout: float = 10):
        """One raw request (own REQ socket); returns the decoded reply dict."""
        message = {"session_id": session_id or str(uuid.uuid4()), "command": command}
        if payload is not None:
            message["payload"] = payload
        return raw_request(self.rep, message, timeout)

    def dynamic(self) -> dict:
        reply = self.request("get_dynamic")
        assert reply["status"] == "success", reply
        return reply["payload"]

    def dynamic_through_drops(self, attempts: int) -> dict:
        """``get_dynamic`` from an emulator that drops replies on purpose: ask until one
        comes (at most ``attempts`` times)."""
        for _ in range(attempts):
            try:
                reply = self.request("get_dynamic", timeout=0.5)
            except AssertionError:  # that reply was dropped
                continue
            assert reply["status"] == "success", reply
            return reply["payload"]
        raise AssertionError(f"{self.name}: no get_dynamic reply in {attempts} attempts")


def raw_request(address: str, message, timeout: float = 10.0, frames: list[bytes] | None = None) -> dict:
    """Send ``message`` (a dict, or bytes as they are) on a fresh REQ socket; the reply as a
    dict. Fails the test when no reply comes."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        if frames is not None:
            sock.send_multipart(frames)
        else:
            data = message if isinstance(message, bytes) else json.dumps(message).encode()
            sock.send(data)
        if not sock.poll(int(timeout * 1000)):
            raise AssertionError(f"no reply to {str(message)[:80]!r} within {timeout} s")
        return json.loads(sock.recv())
    finally:
        sock.close(linger=0)


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc); [] where /proc is missing."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


class EmulatorFleet:
    def __init__(self) -> None:
        self.emulators = {name: Emulator(name, args) for name, args in EMULATORS.items()}
        for emulator in self.emulators.values():
            emulator.launch()

    def __getitem__(self, name: str) -> Emulator:
        emulator = self.emulators[name]
        if emulator.rep and not emulator.alive:  # a test killed it: start it again
            emulator.restart()
        return emulator.wait_ready()

    def close(self) -> None:
        for emulator in self.emulators.values():  # all at once: exiting takes a second
            if emulator.alive:
                emulator.proc.send_signal(signal.SIGTERM)
        for emulator in self.emulators.values():
            emulator.stop()


@pytest.fixture(scope="session")
def emulators():
    fleet = EmulatorFleet()
    yield fleet
    fleet.close()


@pytest.fixture
def emulator(emulators) -> Emulator:
    """The default emulator; the test fails if it died."""
    emu = emulators["default"]
    yield emu
    assert emu.alive, f"serve-2300 died:\n{emu.stderr()}"
