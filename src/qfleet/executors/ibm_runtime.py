"""IBM Qiskit Runtime plumbing for :class:`qfleet.executors.ibm.QiskitExecutor`.

Services, backends and sessions/batches (one per process, shared by executors with the same
account), the primitive adapter, result extraction and error mapping. Everything here is
blocking SDK code or plain qiskit/numpy: the executor calls it on daemon threads
(``in_daemon_thread``), and nothing here creates PennyLane objects.

Why an adapter: ``SamplerV2``/``EstimatorV2`` (server-side primitives, the REST wire format
``params{pubs, options, version}``) are deprecated since qiskit-ibm-runtime 0.50 in favour of
the client-side ``executor_sampler.Sampler`` / ``executor_estimator.Estimator``. Both are here
behind one small interface; the executor's ``primitives`` field picks one.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from qfleet.errors import ConfigError, ExecutorError

logger = logging.getLogger(__name__)

#: Backends that run in local testing mode (no account): Aer, and qiskit-ibm-runtime's fakes.
AER_BACKEND = "aer_simulator"
#: IBM's cloud simulators, retired in 2024.
RETIRED_SIMULATORS = frozenset(
    {
        "ibmq_qasm_simulator",
        "simulator_statevector",
        "simulator_mps",
        "simulator_extended_stabilizer",
        "simulator_stabilizer",
    }
)
_DIRECT_API = re.compile(r"/api/v\d+/?$")


class IBMAuthenticationError(ExecutorError):
    """IBM Cloud rejected the credentials (API key or instance)."""


class IBMJobError(ExecutorError):
    """A Runtime job failed or was cancelled; the message carries the server's reason."""

    def __init__(
        self,
        message: str,
        *,
        executor: str | None = None,
        transient: bool = False,
        job_id: str | None = None,
    ):
        super().__init__(message, executor=executor, transient=transient)
        self.job_id = job_id


def needs_ibm_extra(exc: ImportError) -> ConfigError:
    return ConfigError(
        f"QiskitExecutor needs the 'ibm' extra (qiskit, qiskit-aer, qiskit-ibm-runtime): "
        f"pip install 'qfleet[ibm]' ({exc})"
    )


def is_local_backend(name: str | None) -> bool:
    """True for backends of local testing mode: ``aer_simulator`` and ``fake_*``."""
    return name is not None and (name == AER_BACKEND or name.startswith("fake_"))


# -- accounts and services --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Account:
    """What identifies one ``QiskitRuntimeService``. The token never shows in repr."""

    channel: str
    token: str | None = dataclasses.field(repr=False)
    instance: str | None
    url: str | None

    def service_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"channel": self.channel}
        if self.token:
            kwargs["token"] = self.token
        if self.instance:
            kwargs["instance"] = self.instance
        if self.url:
            kwargs["url"] = self.url
            if _DIRECT_API.search(self.url):
                # The URL is the Runtime API itself (a private deployment, a local stand-in):
                # skip IBM's resolver, which rewrites it to https://quantum.<host>/api/v1.
                kwargs["url_resolver"] = verbatim_url_resolver
        if not self.instance:
            kwargs["instance"] = "auto"  # pick one, without the SDK's "instance not set" warning
        return kwargs


def verbatim_url_resolver(url: str, instance: Any = None, private_endpoint: Any = False,
                          channel: Any = None) -> str:
    """``url_resolver`` that keeps the URL as given."""
    return url


def fake_backend(name: str):
    """The qiskit-ibm-runtime fake backend called ``name`` (e.g. ``fake_manila``)."""
    import qiskit_ibm_runtime.fake_provider as fake_provider

    known = []
    for attr in dir(fake_provider):
        cls = getattr(fake_provider, attr)
        backend_name = getattr(cls, "backend_name", None)
        if isinstance(cls, type) and isinstance(backend_name, str):
            if backend_name == name:
                return cls()
            known.append(backend_name)
    raise ConfigError(
        f"unknown fake backend {name!r}; local testing mode has {', '.join(sorted(set(known)))} "
        f"and {AER_BACKEND!r}"
    )


# -- per-process registry ---------------------------------------------------------------------


class Registry:
    """Services, backends, pass managers and open sessions/batches of this process.

    Sessions and batches are shared per (account, backend, mode) and closed at interpreter
    exit (:func:`close_sessions` closes them earlier).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.services: dict[Account, Any] = {}
        self.backends: dict[tuple, Any] = {}
        self.modes: dict[tuple, Any] = {}
        self.pass_managers: dict[tuple, Any] = {}

    def service(self, account: Account):
        with self.lock:
            service = self.services.get(account)
            if service is None:
                from qiskit_ibm_runtime import QiskitRuntimeService

                _quiet_sdk_notices()
                service = QiskitRuntimeService(**account.service_kwargs())
                self.services[account] = service
            return service

    def backend(self, account: Account | None, name: str):
        key = (account, name)
        with self.lock:
            backend = self.backends.get(key)
            if backend is None:
                if name == AER_BACKEND:
                    from qiskit_aer import AerSimulator

                    backend = AerSimulator()
                elif name.startswith("fake_"):
                    backend = fake_backend(name)
                else:
                    if account is None:  # only aer_simulator and fake backends run locally
                        raise ConfigError(f"backend {name!r} needs an IBM account (token=...)")
                    backend = self.service(account).backend(name)
                self.backends[key] = backend
            return backend

    def known_backend(self, account: Account | None, name: str) -> Any:
        """The backend if this process has fetched it already, else None (no network call:
        capabilities ask on every batch's path)."""
        with self.lock:
            return self.backends.get((account, name))

    def mode(self, account: Account | None, backend_name: str, mode: str,
             max_time: int | str | None):
        """The Session/Batch to run in (opened on first use), or the backend for job mode."""
        backend = self.backend(account, backend_name)
        if mode == "job":
            return backend
        key = (account, backend_name, mode)
        with self.lock:
            opened = self.modes.get(key)
            if opened is None:
                from qiskit_ibm_runtime import Batch, Session

                cls = Session if mode == "session" else Batch
                opened = cls(backend=backend, max_time=max_time)
                self.modes[key] = opened
                _register_exit_hook()
            return opened

    def forget_mode(self, account: Account | None, backend_name: str, mode: str) -> None:
        """Drop a session the server no longer accepts jobs in (the next use opens one)."""
        with self.lock:
            opened = self.modes.pop((account, backend_name, mode), None)
        if opened is not None:
            _close_quietly(opened)

    def pass_manager(self, account: Account | None, backend_name: str, level: int,
                     seed: int | None = None):
        key = (account, backend_name, level, seed)
        with self.lock:
            pm = self.pass_managers.get(key)
            if pm is None:
                from qiskit.transpiler import generate_preset_pass_manager

                pm = generate_preset_pass_manager(
                    optimization_level=level,
                    backend=self.backend(account, backend_name),
                    seed_transpiler=seed,
                )
                self.pass_managers[key] = pm
            return pm

    def close_sessions(self) -> int:
        """Close every open session/batch; returns how many were open."""
        with self.lock:
            opened, self.modes = list(self.modes.values()), {}
        for session in opened:
            _close_quietly(session)
        return len(opened)


class _DropNotices(logging.Filter):
    """Drops the SDK's notices about choices qfleet makes on purpose (explicit token)."""

    NOTICES = ("Loading account with the given token",)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


_notice_filter = _DropNotices()


def _quiet_sdk_notices() -> None:
    sdk_logger = logging.getLogger("qiskit_ibm_runtime.qiskit_runtime_service")
    if _notice_filter not in sdk_logger.filters:
        sdk_logger.addFilter(_notice_filter)


def _close_quietly(session: Any) -> None:
    try:
        session.close()
    except Exception as exc:  # the server may be gone at exit; nothing left to do
        logger.debug("closing IBM Runtime session %s failed: %s", session, exc)


_registry: Registry | None = None
_registry_lock = threading.Lock()
_exit_hook_registered = False


def registry() -> Registry:
    """This process's registry (a forked child starts with an empty one)."""
    global _registry
    with _registry_lock:
        if _registry is None or _registry.pid != os.getpid():
            _registry = Registry()
        return _registry


def close_sessions() -> int:
    """Close all IBM Runtime sessions and batches this process opened."""
    current = _registry
    if current is None or current.pid != os.getpid():
        return 0
    return current.close_sessions()


#: Seconds a finished script waits for its sessions to close.
EXIT_CLOSE_S = 5.0


def _close_sessions_at_exit() -> None:
    # Bounded, on a daemon thread: closing is a courtesy (IBM closes an idle session after its
    # interactive TTL), and an unreachable service must not keep a finished script alive.
    closer = threading.Thread(target=close_sessions, name="qfleet-ibm-close", daemon=True)
    closer.start()
    closer.join(EXIT_CLOSE_S)


def _register_exit_hook() -> None:
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_close_sessions_at_exit)


# -- the primitive adapter --------------------------------------------------------------------


class PrimitiveAdapter:
    """Builds and runs Sampler/Estimator primitives of one qiskit-ibm-runtime API."""

    name = "v2"

    def options_class(self, kind: str) -> type:
        from qiskit_ibm_runtime.options import EstimatorOptions, SamplerOptions

        return SamplerOptions if kind == "sampler" else EstimatorOptions

    def primitive(self, kind: str, mode: Any, options: dict[str, Any]):
        from qiskit_ibm_runtime import EstimatorV2, SamplerV2

        cls = SamplerV2 if kind == "sampler" else EstimatorV2
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*(SamplerV2|EstimatorV2) class is deprecated"
            )
            return cls(mode=mode, options=options)

    def validate_options(self, kind: str, options: dict[str, Any]) -> None:
        """Raise ValueError naming an unknown or invalid option."""
        from pydantic import ValidationError

        cls = self.options_class(kind)
        try:
            cls(**options)
        except (ValidationError, TypeError, ValueError) as exc:
            raise ValueError(_options_problem(kind, options, exc, cls)) from None

    def run_sampler(self, mode: Any, options: dict, pubs: Sequence[tuple]) -> Any:
        return self.primitive("sampler", mode, options).run(list(pubs))

    def run_estimator(self, mode: Any, options: dict, pubs: Sequence[tuple]) -> Any:
        return self.primitive("estimator", mode, options).run(list(pubs))


class ExecutorPrimitiveAdapter(PrimitiveAdapter):
    """The client-side primitives of 0.50+ (``executor_sampler`` / ``executor_estimator``)."""

    name = "executor"

    def options_class(self, kind: str) -> type:
        from qiskit_ibm_runtime.options_models import EstimatorOptions, SamplerOptions

        return SamplerOptions if kind == "sampler" else EstimatorOptions

    def primitive(self, kind: str, mode: Any, options: dict[str, Any]):
        if kind == "sampler":
            from qiskit_ibm_runtime.executor_sampler import Sampler as cls
        else:
            from qiskit_ibm_runtime.executor_estimator import Estimator as cls
        return cls(mode=mode, options=options)


ADAPTERS = {"v2": PrimitiveAdapter(), "executor": ExecutorPrimitiveAdapter()}

#: Options Covalent's QiskitExecutor took that today's primitives no longer have.
_MOVED_OPTIONS = {
    "optimization_level": "set QiskitExecutor(optimization_level=...): qfleet transpiles "
    "locally (the Runtime no longer does)",
    "transpilation": "set QiskitExecutor(optimization_level=...): qfleet transpiles locally",
    "resilience_level": "only the Estimator has resilience_level: use device='estimator'",
    "resilience": "only the Estimator has resilience options: use device='estimator'",
    "shots": "set shots on the QNode (qml.set_shots) or QiskitExecutor(shots=...)",
}


def _options_problem(kind: str, options: dict, exc: Exception, cls: type) -> str:
    fields = getattr(cls, "model_fields", None) or getattr(cls, "__dataclass_fields__", {})
    valid = sorted(f for f in fields if not f.startswith("_"))
    unknown = [k for k in options if k not in valid]
    if unknown:
        hints = "; ".join(f"{k!r}: {_MOVED_OPTIONS[k]}" for k in unknown if k in _MOVED_OPTIONS)
        return (
            f"unknown {kind} option(s) {unknown} in options; valid top-level options: "
            f"{', '.join(valid)}" + (f" ({hints})" if hints else "")
        )
    detail = str(exc).splitlines()
    return f"invalid {kind} options {options!r}: " + " ".join(line.strip() for line in detail[:4])


# -- results ----------------------------------------------------------------------------------


def sampler_samples(result: Any, creg: str) -> list[np.ndarray]:
    """Per-pub samples (shots x bits, clbit 0 first) from a Sampler ``PrimitiveResult``."""
    from qfleet.circuits.qiskit import samples_from_bit_array

    out = []
    for pub_result in result:
        data = pub_result.data
        bits = getattr(data, creg, None)
        if bits is None:  # a circuit without our register (no wires): one empty row per shot
            bits = next(iter(data.values()))
        out.append(samples_from_bit_array(bits))
    return out


def estimator_values(result: Any) -> list[np.ndarray]:
    """Per-pub expectation values (one per observable) from an Estimator ``PrimitiveResult``."""
    return [np.asarray(pub_result.data.evs, dtype=float).reshape(-1) for pub_result in result]


def job_id(job: Any) -> str:
    return str(job.job_id())


# -- errors -----------------------------------------------------------------------------------

_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504, 520, 521, 522, 524}


def _status_codes(exc: BaseException) -> list[int]:
    codes, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # ``status_code`` first: ibm_cloud_sdk_core deprecates ApiException.code.
        for attr in ("status_code", "status") if hasattr(current, "status_code") else (
            "code", "status"
        ):
            value = getattr(current, attr, None)
            if isinstance(value, int) and 100 <= value < 600:
                codes.append(value)
        response = getattr(current, "response", None)
        value = getattr(response, "status_code", None)
        if isinstance(value, int):
            codes.append(value)
        found = re.findall(r"\b([45]\d\d)\b(?: Client| Server|:)", str(current))
        codes.extend(int(m) for m in found)
        current = current.__cause__ or current.__context__
    return codes


def scrub(text: str, secrets: Sequence[str | None]) -> str:
    from qfleet.config.secrets import scrub as scrub_secrets  # the one secret rule

    return scrub_secrets(text, secrets)


def _chain_text(exc: BaseException) -> str:
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def to_executor_error(
    exc: BaseException,
    *,
    executor: str,
    secrets: Sequence[str | None] = (),
    token_hint: str = "",
    job: str | None = None,
) -> ExecutorError:
    """An SDK exception as a qfleet error: auth, job failure, transient or not. Secrets are
    removed from the message."""
    from qiskit_ibm_runtime.exceptions import (
        IBMNotAuthorizedError,
        RuntimeInvalidStateError,
        RuntimeJobFailureError,
        RuntimeJobMaxTimeoutError,
    )

    try:
        from qiskit_ibm_runtime.accounts.exceptions import InvalidAccountError
    except ImportError:  # pragma: no cover - moved in some release
        InvalidAccountError = ()

    text = scrub(str(exc), secrets)
    codes = _status_codes(exc)
    chain = scrub(_chain_text(exc), secrets)

    def in_chain(types) -> bool:
        current: BaseException | None = exc
        seen: set[int] = set()
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if types and isinstance(current, types):
                return True
            current = current.__cause__ or current.__context__
        return False

    from qfleet.executors.faults import rejected_status, unreachable

    down = unreachable(exc)
    if down is not None and rejected_status(codes) is None:
        # The SDK may call this "invalid account"; no server answered, so nothing was
        # rejected: transient, and a cluster retries it elsewhere.
        return ExecutorError(
            f"could not reach IBM Cloud ({type(down).__name__}: {scrub(str(down), secrets)}); "
            f"check the network and `url`/`channel`, or retry",
            executor=executor,
            transient=True,
        )
    rejected = in_chain(IBMNotAuthorizedError) or 401 in codes or (
        in_chain(InvalidAccountError) and ("token" in chain.lower() or {400, 403} & set(codes))
    )
    if rejected:
        return IBMAuthenticationError(
            f"IBM Cloud did not accept the credentials ({chain}). {token_hint}",
            executor=executor,
        )
    if isinstance(exc, RuntimeJobMaxTimeoutError):
        return IBMJobError(f"Runtime job {job} ran too long: {text}", executor=executor, job_id=job)
    if isinstance(exc, RuntimeJobFailureError):
        return IBMJobError(f"Runtime job {job} failed: {text}", executor=executor, job_id=job)
    if isinstance(exc, RuntimeInvalidStateError):
        return IBMJobError(f"Runtime job {job}: {text}", executor=executor, job_id=job)
    transient = bool(set(codes) & _TRANSIENT_HTTP) or in_chain((ConnectionError, TimeoutError))
    try:
        import requests

        transient = transient or in_chain(requests.ConnectionError) or in_chain(requests.Timeout)
    except ImportError:  # pragma: no cover
        pass
    return ExecutorError(f"{type(exc).__name__}: {text}", executor=executor, transient=transient)
