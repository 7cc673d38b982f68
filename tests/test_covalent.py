"""QElectrons inside Covalent workflow electrons, on a real Covalent 0.240 server.

The module starts ``covalent start`` itself (its own HOME, config, cache, data and
database under a temporary directory; a free loopback port; 2 dask workers), dispatches
lattices whose electrons call a qelectron-decorated QNode (synchronously, with a
gradient, and through ``run_later``) and compares with default.qubit. It stops the server
afterwards. A server that does not come up fails the module with its log.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pennylane as qml
import pytest

# Not imported here: importing covalent writes its config into the user's home.
if importlib.util.find_spec("covalent") is None:
    pytest.skip("covalent is not installed (extra qfleet[covalent])", allow_module_level=True)
psutil = pytest.importorskip("psutil")

import covalent_driver  # noqa: E402

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
COVALENT = Path(sys.executable).with_name("covalent")
SECRET = "covalent-client-secret-5c1d0e"
WORKER_TOKEN = "worker-side-token-77aa"
START_TIMEOUT = 150
DISPATCH_TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A ``covalent start`` server in an isolated home."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        home = root / "home"
        self.dirs = {
            "HOME": home,
            "COVALENT_CONFIG_DIR": home / "config",
            "COVALENT_CACHE_DIR": home / "cache",
            "COVALENT_DATA_DIR": home / "data",
            "COVALENT_LOGDIR": home / "logs",
            "COVALENT_EXECUTOR_DIR": home / "executors",
            "XDG_CONFIG_HOME": home / "xdg-config",
            "XDG_CACHE_HOME": home / "xdg-cache",
            "XDG_DATA_HOME": home / "xdg-data",
        }
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)  # covalent start needs its cache dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COVALENT_", "QFLEET_"))}
        env.update({k: str(v) for k, v in self.dirs.items()})
        env.update(
            COVALENT_DATABASE=str(home / "data" / "covalent.db"),
            COVALENT_DISPATCHER_ADDR="127.0.0.1",
            COVALENT_SVC_PORT=str(self.port),
            # the workers' qfleet configuration: no config file, a token from the env
            QFLEET_CONFIG=str(home / "qfleet.toml"),
            QFLEET_QISKITEXECUTOR_TOKEN=WORKER_TOKEN,
            QFLEET_TEST_LOOPBACK_DASHBOARD="1",
            PYTHONPATH=str(TESTS / "covalent_site"),
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.log = home / "logs" / "covalent_ui.log"
        self.pids: set[int] = set()

    def covalent(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(COVALENT), *args], env=self.env, cwd=self.root, capture_output=True,
            text=True, timeout=timeout,
        )

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no server log)"
        return f"--- covalent server log ({self.log}) ---\n{text[-chars:]}"

    def processes(self) -> list:
        """The server's processes (uvicorn, dask scheduler, nannies, workers)."""
        found = []
        for proc in psutil.process_iter(["pid", "environ"]):
            try:
                if (proc.info["environ"] or {}).get("HOME") == str(self.dirs["HOME"]):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def start(self) -> None:
        try:
            done = self.covalent(
                "start", "-p", str(self.port), "-n", "2", "-t", "1", timeout=START_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"covalent start did not finish in {START_TIMEOUT} s\n{self.log_tail()}")
        self.pids = {p.pid for p in self.processes()}
        if done.returncode != 0 or not self.ready():
            output = done.stdout[-3000:] + done.stderr[-3000:]
            self.stop()
            pytest.fail(
                f"covalent start failed (rc {done.returncode}):\n{output}\n{self.log_tail()}"
            )

    def ready(self, timeout: float = 60) -> bool:
        """The dispatcher answers and the dask cluster has its workers."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{self.port}/api/v1/dispatches/list", timeout=2)
                config = (self.dirs["COVALENT_CONFIG_DIR"] / "covalent.conf").read_text()
                if "scheduler_address" in config:
                    return True
            except (requests.RequestException, OSError):
                pass
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        try:
            self.covalent("stop", timeout=60)
        except subprocess.TimeoutExpired:
            pass
        # Whatever `covalent stop` left: the processes with this server's HOME (ours).
        leftovers = self.processes()
        for proc in leftovers:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftovers, timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("covalent"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def dispatched(server):
    """Run the driver's lattices once; the tests below check different parts."""
    try:
        done = subprocess.run(
            [sys.executable, str(TESTS / "covalent_driver.py"), SECRET],
            env=server.env, cwd=server.root, capture_output=True, text=True,
            timeout=DISPATCH_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"dispatch did not finish in {DISPATCH_TIMEOUT} s: {exc}\n{server.log_tail()}")
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{server.log_tail()}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name, run in out.items():
        assert run["status"] == "COMPLETED", f"{name}: {run}\n{server.log_tail()}"
    return out


def reference(x):
    qnode = qml.QNode(covalent_driver.ansatz, qml.device("default.qubit", wires=2))
    param = qml.numpy.array(x, requires_grad=True)
    return float(qnode(param)), float(qml.grad(qnode)(param))


def test_server_listens_on_loopback_only(server):
    listening = []
    for proc in server.processes():
        try:
            listening += [c.laddr for c in proc.net_connections("inet") if c.status == "LISTEN"]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert listening, "the server listens nowhere?"
    assert {addr.ip for addr in listening} <= {"127.0.0.1", "::1"}, listening
    assert server.port in {addr.port for addr in listening}


def test_electrons_calling_a_qelectron_give_default_qubit_values(dispatched):
    want = [reference(x)[0] for x in covalent_driver.XS]
    np.testing.assert_allclose(dispatched["sync"]["result"], want, atol=1e-10)


def test_electrons_with_run_later_futures_and_gradients(dispatched):
    later, (value, grad) = dispatched["later"]["result"]
    want = [reference(x)[0] for x in covalent_driver.XS]
    np.testing.assert_allclose(later, want, atol=1e-10)
    want_value, want_grad = reference(covalent_driver.XS[1])
    assert np.isclose(value, want_value, atol=1e-10)
    assert np.isclose(grad, want_grad, atol=1e-8)  # parameter-shift on the worker


def test_tokens_stay_out_of_the_workflow_and_come_from_the_worker(server, dispatched):
    assert dispatched["token"]["result"] == {
        "pickled_token_is_none": True,
        "instance": "my-instance",
        "token_from_worker_env": True,
    }
    # Covalent stored the lattice, its inputs and every electron (cloudpickled) in its
    # data/cache directories and database: the client's token is in none of them.
    secret = SECRET.encode()
    scanned = 0
    for path in server.dirs["HOME"].rglob("*"):
        if path.is_file():
            scanned += 1
            assert secret not in path.read_bytes(), f"the token leaked into {path}"
    assert scanned > 10


def test_example_workflow_runs_against_the_server(server):
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "covalent_workflow.py"), "--json"],
        env=server.env, cwd=server.root, capture_output=True, text=True,
        timeout=DISPATCH_TIMEOUT,
    )
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{server.log_tail()}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["qfleet"], out["default.qubit"], atol=1e-8)
    np.testing.assert_allclose(out["run_later"], out["default.qubit"], atol=1e-8)
