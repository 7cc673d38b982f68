"""The cloud executors' stand-ins for PennyLane's device suite: each :class:`Stack` starts a
stand-in (and what it needs) as its own process on 127.0.0.1 and gives the qfleet config file
(``config_toml``) and the environment (``env``: endpoints, certificates) that make
``qml.device("qfleet.local")`` run through the real SDK against it.

Used by tests/test_pl_suite_cloud.py (a CI subset) and bench/pl_device_suite_cloud.py (the
whole suite).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from standins.process import ControlChannel, start_port, stop

STANDINS = Path(__file__).parent / "standins"
#: short polls: the stand-ins finish a job in milliseconds (the executors' 1 s default is for
#: real services)
POLL = 0.05


def _toml(executor: str, fields: dict[str, Any]) -> str:
    """A config file whose default executor is ``executor`` with ``fields`` (one level of
    nested tables, e.g. Azure's ``credentials``)."""
    head = ["[qfleet]", f'executors = ["{executor}"]', f"[executors.{executor}]"]
    tables: list[str] = []
    for key, value in fields.items():
        if isinstance(value, dict):
            tables.append(f"[executors.{executor}.{key}]")
            tables += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
        else:
            head.append(f"{key} = {json.dumps(value)}")
    return "\n".join(head + tables) + "\n"


class Stack:
    """One executor on its stand-in: ``executor``/``fields`` make the config, ``env`` the
    environment its SDK needs; ``start``/``stop`` run the stand-in's processes. Stacks of one
    kind running at the same time share one stand-in (``services``): e.g. the Azure SDK trusts
    one certificate per process (``REQUESTS_CA_BUNDLE``)."""

    executor = ""
    #: the shots values of the whole suite; "None" only for an executor that declares analytic
    shots: tuple[str, ...] = ("10000",)
    _running: ClassVar[dict[type, list[Any]]] = {}  # kind -> [services, users]

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.fields: dict[str, Any] = {}

    def config_toml(self) -> str:
        return _toml(self.executor, self.fields)

    def start_services(self) -> Any:
        """Start the stand-in (and what it needs); returns what ``configure`` reads."""
        raise NotImplementedError

    def configure(self, services: Any) -> None:
        """Set ``env`` and ``fields`` for ``services``."""
        raise NotImplementedError

    def stop_services(self, services: Any) -> None:
        stop(*services.processes)

    def start(self) -> Stack:
        entry = self._running.get(type(self))
        if entry is None:
            entry = self._running[type(self)] = [self.start_services(), 0]
        entry[1] += 1
        self.services = entry[0]
        self.configure(self.services)
        return self

    def stop(self) -> None:
        entry = self._running[type(self)]
        entry[1] -= 1
        if not entry[1]:
            del self._running[type(self)]
            self.stop_services(entry[0])


class _Processes(ControlChannel):
    """A stand-in process on ``base`` (``control``: its test controls)."""

    def __init__(self, command: list[str], what: str) -> None:
        process, self.port = start_port(command, what)
        self.processes = [process]
        self.base = f"http://127.0.0.1:{self.port}"


class IBMStack(Stack):
    """QiskitExecutor (Runtime V2 sampler or estimator) on the IBM Runtime stand-in."""

    executor = "QiskitExecutor"
    API_KEY = "standin-api-key-for-qfleet-tests"
    #: 16 qubits: the suite's widest circuit (QuantumMonteCarlo) has 6 wires, Manila 5
    BACKEND = "ibm_guadalupe"

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device

    def start_services(self) -> _Processes:
        return _Processes([sys.executable, str(STANDINS / "ibm_runtime.py"), "--port", "0",
                           "--api-key", self.API_KEY], "the IBM stand-in")

    def configure(self, services: _Processes) -> None:
        base = services.base
        self.env = {"IAM_URL": base, "GLOBAL_SEARCH_URL": base,
                    "GLOBAL_CATALOG_URL": f"{base}/catalog"}
        self.fields = {"device": self.device, "backend": self.BACKEND, "token": self.API_KEY,
                       "url": f"{base}/api/v1", "poll_interval": POLL}


class AzureStack(Stack):
    """AzureExecutor on the Azure Quantum stand-in and Azurite (IonQ or Quantinuum target)."""

    executor = "AzureExecutor"

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def start_services(self) -> Any:
        from standins.azure_quantum import AzureStack as Services

        folder = tempfile.TemporaryDirectory(prefix="qfleet-azure-")
        services = Services(Path(folder.name)).start()
        services.folder_handle = folder
        return services

    def configure(self, s: Any) -> None:
        self.env = dict(s.env)
        self.fields = {
            "backend_name": self.target, "location": s.LOCATION, "arm_endpoint": s.base,
            "authority": s.base, "poll_interval": POLL,
            "credentials": {"tenant_id": s.TENANT, "client_id": s.CLIENT_ID,
                            "client_secret": s.CLIENT_SECRET, "resource_id": s.resource_id},
        }

    def stop_services(self, services: Any) -> None:
        services.stop()
        services.folder_handle.cleanup()


class ClassiqStack(Stack):
    """ClassiqExecutor on the Classiq stand-in (its simulator: exact results too)."""

    executor = "ClassiqExecutor"
    shots = ("10000", "None")
    TOKEN = "classiq-test-token-8c1f"

    def start_services(self) -> Any:
        from standins.classiq_server import Running

        server = Running(token=self.TOKEN, delay=0.0)
        server.processes = [server.process]
        return server

    def configure(self, server: Any) -> None:
        self.env = {"CLASSIQ_HOST": server.url, "CLASSIQ_SKIP_CHECK_HOST": "1",
                    "CLASSIQ_TELEMETRY_MODE": "disabled"}
        self.fields = {"host": server.url, "token": self.TOKEN, "poll_interval": POLL}


class QuantumInspireStack(Stack):
    """QuantumInspireExecutor on the Quantum Inspire stand-in (the QX emulator)."""

    executor = "QuantumInspireExecutor"

    def start_services(self) -> _Processes:
        return _Processes([sys.executable, str(STANDINS / "quantum_inspire.py"), "--port", "0"],
                          "the Quantum Inspire stand-in")

    def configure(self, services: _Processes) -> None:
        from standins.quantum_inspire import TOKEN

        self.fields = {"host": services.base, "token": TOKEN, "backend_type": "QX emulator",
                       "poll_interval": POLL}


#: name -> a fresh stack
STACKS: dict[str, Any] = {
    "ibm-sampler": lambda: IBMStack("sampler"),
    "ibm-estimator": lambda: IBMStack("estimator"),
    "azure-ionq": lambda: AzureStack("ionq.simulator"),
    "azure-quantinuum": lambda: AzureStack("quantinuum.sim.h2-1e"),
    "classiq": ClassiqStack,
    "quantum-inspire": QuantumInspireStack,
}


@contextmanager
def running(name: str) -> Iterator[Stack]:
    """The stack ``name`` started, its environment set in this process (the suite's
    subprocess inherits it), stopped and restored afterwards."""
    stack = STACKS[name]().start()
    saved = {key: os.environ.get(key) for key in stack.env}
    os.environ.update(stack.env)
    try:
        yield stack
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stack.stop()
