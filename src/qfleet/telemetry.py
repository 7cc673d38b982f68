"""Opt-in OpenTelemetry traces and Prometheus metrics of every batch.

Off by default (then each hook is one flag check). Turn on with ``traces = true`` /
``metrics = true`` in the config file's ``[qfleet]`` section, or from code:

    >>> from qfleet import telemetry
    >>> telemetry.enable(traces=False, metrics=True)   # doctest: +SKIP

Traces: one trace per batch, a root span ``qfleet.batch`` with children ``route`` (a
cluster's choice of member, again on failover), ``prepare`` (plan and translate, caller's
thread), ``queue`` (waiting for the executor's ``max_concurrent`` slot and ``rate``),
``submit`` (until the backend accepted it), ``run`` (until the backend's raw output
arrived), ``collect`` (checking and packaging that output) and ``finish`` (raw output ->
PennyLane results). Attributes: ``qfleet.executor``, ``qfleet.backend``,
``qfleet.job_ids``, ``qfleet.tapes``, ``qfleet.circuits``, ``qfleet.shots``,
``qfleet.cost`` (where known); errors are recorded on the span where they happened and on
the root when the batch fails. Spans go to the global OpenTelemetry tracer provider (set up
an exporter with ``opentelemetry-sdk``), or to the one given to :func:`enable`.

Metrics (prometheus-client, in this module's own registry; ``qfleet ui`` serves them at
``/metrics``): ``qfleet_batches_total{executor,outcome}``, ``qfleet_tapes_total{executor}``,
``qfleet_failures_total{executor,kind}`` (transient, permanent, timeout, cancelled),
``qfleet_batch_seconds{executor}`` and ``qfleet_phase_seconds{executor,phase}`` histograms,
``qfleet_in_flight{executor}``, ``qfleet_spend_total{executor,currency}``.

The batch path calls :func:`batch` (prepare), :func:`phase` (loop side) and
:func:`finishing` (results); a batch that crosses threads finds its trace by its
``Prepared`` object.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "batch",
    "disable",
    "enable",
    "finishing",
    "metrics_exposition",
    "phase",
    "record_spend",
    "reset",
    "within",
]

_state_lock = threading.Lock()
_configured = False
_traces = False
_metrics = False
_tracer: Any = None
_registry: Any = None
_instruments: dict[str, Any] = {}

#: id(Prepared) -> (trace, leaf); leaf: prepared by a backend (not a delegating cluster).
_by_prepared: dict[int, tuple[_BatchTrace, bool]] = {}
#: The batch being prepared on this thread (a cluster's member preparation joins it).
_current: contextvars.ContextVar[_BatchTrace | None] = contextvars.ContextVar(
    "qfleet_batch_trace", default=None
)


# -- switching on and off -----------------------------------------------------------------


def enable(traces: bool = True, metrics: bool = True, tracer_provider: Any = None) -> None:
    """Turn traces and/or metrics on for this process (overrides the config file).

    ``tracer_provider``: an OpenTelemetry TracerProvider (default: the global one).
    Raises ImportError naming the ``telemetry`` extra when its libraries are missing.
    """
    global _configured, _traces, _metrics, _tracer
    with _state_lock:
        tracer = None
        if traces:
            try:
                from opentelemetry import trace
            except ImportError as exc:
                raise ImportError(
                    "qfleet traces need opentelemetry-api (pip install 'qfleet[telemetry]')"
                ) from exc
            provider = tracer_provider or trace.get_tracer_provider()
            tracer = provider.get_tracer("qfleet")
        if metrics:
            _make_instruments()
        _tracer, _traces, _metrics, _configured = tracer, traces, metrics, True


def disable() -> None:
    """Turn traces and metrics off (batches in flight keep what they started)."""
    global _configured, _traces, _metrics, _tracer
    with _state_lock:
        _traces = _metrics = False
        _tracer = None
        _configured = True


def reset() -> None:
    """Forget :func:`enable`/:func:`disable` and the metrics so far: the config file
    decides again at the next batch."""
    global _configured, _traces, _metrics, _tracer, _registry
    with _state_lock:
        _traces = _metrics = False
        _tracer = _registry = None
        _instruments.clear()
        _configured = False


def _configure_from_config() -> None:
    global _configured
    try:
        from qfleet.config import load_config

        general = load_config().qfleet
        wanted = (general.traces, general.metrics)
    except Exception:  # a bad config file is reported by whoever reads it for real
        wanted = (False, False)
    if any(wanted):
        enable(*wanted)
    else:
        _configured = True


def _on() -> bool:
    if not _configured:
        _configure_from_config()
    return _traces or _metrics


def _make_instruments() -> None:
    global _registry
    if _instruments:
        return
    try:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    except ImportError as exc:
        raise ImportError(
            "qfleet metrics need prometheus-client (pip install 'qfleet[telemetry]')"
        ) from exc
    registry = CollectorRegistry(auto_describe=True)
    buckets = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
    _instruments.update(
        batches=Counter("qfleet_batches", "Batches finished, by outcome",
                        ["executor", "outcome"], registry=registry),
        tapes=Counter("qfleet_tapes", "Tapes in finished batches", ["executor"],
                      registry=registry),
        failures=Counter("qfleet_failures", "Failed backend attempts, by kind",
                         ["executor", "kind"], registry=registry),
        batch_seconds=Histogram("qfleet_batch_seconds", "Seconds per batch, prepare to finish",
                                ["executor"], buckets=buckets, registry=registry),
        phase_seconds=Histogram("qfleet_phase_seconds", "Seconds per batch phase",
                                ["executor", "phase"], buckets=buckets, registry=registry),
        in_flight=Gauge("qfleet_in_flight", "Batches submitted and not yet collected",
                        ["executor"], registry=registry),
        spend=Counter("qfleet_spend", "Money spent on backends", ["executor", "currency"],
                      registry=registry),
    )
    _registry = registry


def metrics_exposition() -> bytes | None:
    """The metrics in Prometheus' text format; None when metrics are off."""
    if not _on() or not _metrics or _registry is None:
        return None
    from prometheus_client import generate_latest

    return generate_latest(_registry)


def record_spend(executor: str, amount: float, currency: str = "USD") -> None:
    """Count money spent on ``executor`` (for budgets that know a batch's price)."""
    if _on() and _metrics and amount:
        _instruments["spend"].labels(executor, currency).inc(amount)


# -- errors -------------------------------------------------------------------------------


def failure_kind(exc: BaseException) -> str:
    """transient, permanent, timeout or cancelled.

    Example:
        >>> failure_kind(TimeoutError()), failure_kind(ValueError())
        ('timeout', 'permanent')
    """
    from qfleet.errors import ExecutorError

    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ExecutorError):
        return "transient" if exc.transient else "permanent"
    return "transient" if isinstance(exc, ConnectionError) else "permanent"


# -- one batch ----------------------------------------------------------------------------


class _Noop:
    """What every hook returns while telemetry is off."""

    __slots__ = ()

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def phase(self, name: str, executor: Any = None) -> _Noop:
        return self

    def bind(self, prepared: Any, leaf: bool = True) -> None:
        return None

    def set(self, **attributes: Any) -> None:
        return None


NOOP = _Noop()


def _shots(tapes: Sequence[Any]) -> list[int]:
    shots = []
    for tape in tapes:
        total = getattr(getattr(tape, "shots", None), "total_shots", None)
        shots.append(int(total) if total else 0)  # 0: exact
    return shots


class _BatchTrace:
    """The root span and running figures of one batch."""

    def __init__(self, executor: Any, tapes: Sequence[Any]):
        self.lock = threading.Lock()
        self.started = time.perf_counter()
        self.executor = executor.label
        self.tapes = len(tapes)
        self.circuits = 0
        self.run_ended: int | None = None
        """time.time_ns() when the backend's output arrived (the collect span starts)."""
        self.ended = False
        self.root = None
        self.context = None
        if _traces and _tracer is not None:
            from opentelemetry import trace

            self.root = _tracer.start_span("qfleet.batch", attributes={
                "qfleet.executor": self.executor,
                "qfleet.backend": executor.backend_description,
                "qfleet.tapes": self.tapes,
                "qfleet.shots": _shots(tapes),
            })
            self.context = trace.set_span_in_context(self.root)
        self.root_key: int | None = None

    def set(self, **attributes: Any) -> None:
        if self.root is not None:
            self.root.set_attributes({f"qfleet.{k}": v for k, v in attributes.items()})
        if "executor" in attributes:
            self.executor = attributes["executor"]

    def bind(self, prepared: Any, leaf: bool = True) -> None:
        key = id(prepared)
        _by_prepared[key] = (self, leaf)
        if self.root_key is None and _current.get() is self and not _nested.get():
            self.root_key = key
        weakref.finalize(prepared, _forget, key, self)
        if leaf:  # the backend that runs (this part of) the batch
            executor = prepared.executor
            self.circuits += prepared.num_outputs
            self.set(executor=executor.label, backend=executor.backend_description,
                     circuits=self.circuits)
        elif self.root is not None:
            self.root.set_attribute("qfleet.cluster", prepared.executor.label)

    def phase(self, name: str, executor: Any = None) -> _Phase:
        return _Phase(self, name, executor)

    def end(self, error: BaseException | None = None) -> None:
        with self.lock:
            if self.ended:
                return
            self.ended = True
        seconds = time.perf_counter() - self.started
        outcome = "ok" if error is None else failure_kind(error)
        if self.root is not None:
            if error is not None:
                _record_error(self.root, error)
            self.root.set_attribute("qfleet.outcome", outcome)
            self.root.end()
        if _metrics and _instruments:
            _instruments["batches"].labels(self.executor, outcome).inc()
            _instruments["tapes"].labels(self.executor).inc(self.tapes)
            _instruments["batch_seconds"].labels(self.executor).observe(seconds)


#: Set while a cluster prepares its members (their preparations are not the batch's root).
_nested: contextvars.ContextVar[bool] = contextvars.ContextVar("qfleet_nested", default=False)


def _record_error(span: Any, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(error)
    span.set_attribute("qfleet.failure", failure_kind(error))
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _forget(key: int, trace: _BatchTrace) -> None:
    _by_prepared.pop(key, None)
    if trace.root_key == key and not trace.ended:
        # Nobody asked for the results (or the batch was dropped): close the trace.
        trace.end(asyncio.CancelledError("the batch was dropped before its results were read"))


class _Phase:
    """A child span of the batch (and a phase_seconds sample)."""

    __slots__ = ("executor", "name", "span", "started", "trace")

    def __init__(self, trace: _BatchTrace, name: str, executor: Any):
        self.trace = trace
        self.name = name
        self.executor = executor.label if executor is not None else trace.executor
        self.span = None
        self.started = 0.0

    def __enter__(self) -> _Phase:
        self.started = time.perf_counter()
        if self.trace.root is not None and _tracer is not None:
            self.span = _tracer.start_span(self.name, context=self.trace.context,
                                           attributes={"qfleet.executor": self.executor})
        if self.name == "submit" and _metrics and _instruments:
            _instruments["in_flight"].labels(self.executor).inc()
        return self

    def set(self, **attributes: Any) -> None:
        if self.span is not None:
            self.span.set_attributes({f"qfleet.{k}": v for k, v in attributes.items()})

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if self.span is not None:
            if error is not None:
                _record_error(self.span, error)
            self.span.end()
        if self.name == "run" and error is None:
            self.trace.run_ended = time.time_ns()
        if _metrics and _instruments:
            _instruments["phase_seconds"].labels(self.executor, self.name).observe(
                time.perf_counter() - self.started)
            if error is not None:
                _instruments["failures"].labels(self.executor, failure_kind(error)).inc()
            if self.name == "run" or (self.name == "submit" and error is not None):
                _instruments["in_flight"].labels(self.executor).dec()


class _Batch:
    """``with batch(executor, tapes) as trace``: see :func:`batch`."""

    __slots__ = ("executor", "nested_token", "owner", "tapes", "token", "trace")

    def __init__(self, executor: Any, tapes: Sequence[Any]):
        self.executor = executor
        self.tapes = tapes

    def __enter__(self) -> _BatchTrace:
        current = _current.get()
        self.owner = current is None
        self.trace: _BatchTrace = _BatchTrace(self.executor, self.tapes) if current is None \
            else current
        self.token = _current.set(self.trace) if self.owner else None
        self.nested_token = None if self.owner else _nested.set(True)
        return self.trace

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if self.nested_token is not None:
            _nested.reset(self.nested_token)
        if self.token is not None:
            _current.reset(self.token)
        if error is not None and self.owner:
            self.trace.end(error)


def batch(executor: Any, tapes: Sequence[Any]) -> Any:
    """``with batch(executor, tapes) as trace:`` around preparing a batch (caller's
    thread): starts the batch's trace, or joins the one being prepared on this thread (a
    cluster's member); ``trace.phase(name)`` times a phase, ``trace.bind(prepared)`` lets
    the loop side find the trace. A failure inside ends the batch with that error."""
    if not _on():
        return NOOP
    return _Batch(executor, tapes)


def phase(prepared: Any, name: str, executor: Any = None) -> Any:
    """``with phase(prepared, "submit"):`` on the loop side of a backend's batch (no-op for
    a cluster's own batch object, whose members record their phases)."""
    if not _traces and not _metrics:
        return NOOP
    found = _by_prepared.get(id(prepared))
    if found is None or not found[1]:
        return NOOP
    return found[0].phase(name, executor)


class _Finishing:
    __slots__ = ("phase", "raw", "trace")

    def __init__(self, trace: _BatchTrace, raw: Any):
        self.trace = trace
        self.raw = raw
        self.phase = trace.phase("finish")

    def __enter__(self) -> _Finishing:
        trace = self.trace
        metadata = getattr(self.raw, "metadata", None)
        cost = getattr(metadata, "cost", None)
        job_ids = getattr(metadata, "job_ids", None)
        if job_ids:
            trace.set(job_ids=list(job_ids))
        if cost is not None:
            trace.set(cost=float(cost))
            record_spend(trace.executor, float(cost))
        if trace.run_ended is not None and trace.root is not None and _tracer is not None:
            # collect: from the backend's output arriving on the loop to this thread
            # picking it up (the hand-off between the loop and the caller's thread)
            span = _tracer.start_span("collect", context=trace.context,
                                      start_time=trace.run_ended,
                                      attributes={"qfleet.executor": trace.executor})
            span.end()
        self.phase.__enter__()
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        self.phase.__exit__(kind, error, tb)
        self.trace.end(error)


def finishing(prepared: Any, raw: Any = None) -> Any:
    """``with finishing(prepared, raw):`` around turning ``raw`` output into results; ends
    the batch's trace when ``prepared`` is the batch itself (not a cluster member's part)."""
    if not _traces and not _metrics:
        return NOOP
    found = _by_prepared.get(id(prepared))
    if found is None or found[0].root_key != id(prepared):
        return NOOP
    return _Finishing(found[0], raw)


def failed(prepared: Any, error: BaseException) -> None:
    """The batch ``prepared`` ended with ``error`` on the loop side (nobody will finish it)."""
    if not _traces and not _metrics:
        return
    found = _by_prepared.get(id(prepared))
    if found is not None and found[0].root_key == id(prepared):
        found[0].end(error)


def within(prepared: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` made to run inside the trace of ``prepared`` (a cluster re-preparing a batch
    for another member on another thread)."""
    if not _traces and not _metrics:
        return fn
    found = _by_prepared.get(id(prepared))
    if found is None:
        return fn
    trace = found[0]

    def run(*args: Any) -> Any:
        token, nested = _current.set(trace), _nested.set(True)
        try:
            return fn(*args)
        finally:
            _nested.reset(nested)
            _current.reset(token)

    return run
