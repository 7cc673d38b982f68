"""OpenTelemetry traces and Prometheus metrics of batches (qfleet.telemetry): the span
tree of one batch, its attributes, error spans on failover and on failure, /metrics."""

from __future__ import annotations

import pennylane as qml
import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("prometheus_client")

from conftest import FAIL_MARK, FlakyExecutor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

import qfleet.telemetry as telemetry
from qfleet.cluster import QuantumCluster
from qfleet.errors import ExecutorError
from qfleet.executors import LocalExecutor

PHASES = ["route", "prepare", "queue", "submit", "run", "collect", "finish"]


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(traces=True, metrics=True, tracer_provider=provider)
    yield exporter
    telemetry.reset()


def tape(x=0.3, shots=100):
    return qml.tape.QuantumScript([qml.RX(x, 0)], [qml.expval(qml.PauliZ(0))], shots=shots)


def samples():
    """name{labels} -> value of every sample in the metrics exposition."""
    text = telemetry.metrics_exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def by_trace(finished):
    traces = {}
    for span in finished:
        traces.setdefault(span.context.trace_id, []).append(span)
    return traces


def test_one_trace_per_batch_with_every_phase(spans):
    cluster = QuantumCluster(executors=[FlakyExecutor(name="flaky-a"), LocalExecutor()],
                             name="fleet")
    cluster.execute([tape(), tape(0.5)])
    (trace,) = by_trace(spans.get_finished_spans()).values()
    root = next(s for s in trace if s.name == "qfleet.batch")
    children = sorted((s for s in trace if s is not root), key=lambda s: s.start_time)
    assert [s.name for s in children] == PHASES
    assert all(s.parent.span_id == root.context.span_id for s in children)
    assert root.parent is None
    assert dict(root.attributes) == {
        "qfleet.executor": "flaky-a", "qfleet.backend": "flaky", "qfleet.cluster": "fleet",
        "qfleet.tapes": 2, "qfleet.circuits": 2, "qfleet.shots": (100, 100),
        "qfleet.job_ids": ("job-1",), "qfleet.outcome": "ok",
    }
    named = {s.name: s for s in children}
    assert named["route"].attributes["qfleet.executor"] == "fleet"
    assert named["submit"].attributes["qfleet.job_ids"] == ("job-1",)
    assert all(named[p].attributes["qfleet.executor"] == "flaky-a" for p in PHASES[1:])
    assert root.status.status_code is StatusCode.UNSET
    # spans nest in time: the root covers every phase
    assert root.start_time <= children[0].start_time
    assert children[-1].end_time <= root.end_time


def test_failover_records_the_error_on_the_failed_run(spans):
    flaky = FlakyExecutor(name="flaky-b", where="collect")
    cluster = QuantumCluster(executors=[flaky, LocalExecutor(name="steady")], backoff=0)
    result = cluster.execute([tape(FAIL_MARK, shots=None)])
    assert result[0] == pytest.approx(float(qml.numpy.cos(FAIL_MARK)))
    (trace,) = by_trace(spans.get_finished_spans()).values()
    root = next(s for s in trace if s.name == "qfleet.batch")
    failed = [s for s in trace if s.status.status_code is StatusCode.ERROR]
    assert [(s.name, s.attributes["qfleet.executor"]) for s in failed] == [("run", "flaky-b")]
    (event,) = failed[0].events
    assert event.name == "exception"
    assert "lost the backend while waiting" in event.attributes["exception.message"]
    assert failed[0].attributes["qfleet.failure"] == "transient"
    # the batch went on: route again, prepared for the other member, finished there
    names = [s.name for s in sorted(trace, key=lambda s: s.start_time) if s is not root]
    assert names[names.index("run") + 1:] == ["route", "prepare", "queue", "submit", "run",
                                             "collect", "finish"]
    assert root.attributes["qfleet.executor"] == "steady"
    assert root.attributes["qfleet.outcome"] == "ok"
    metrics = samples()
    assert metrics[("qfleet_failures_total", (("executor", "flaky-b"), ("kind", "transient")))] == 1
    assert metrics[("qfleet_batches_total", (("executor", "steady"), ("outcome", "ok")))] == 1


def test_a_failed_batch_ends_its_trace_with_the_error(spans):
    with pytest.raises(ExecutorError, match="backend rejected the job"):
        FlakyExecutor(name="flaky-c").execute([tape(FAIL_MARK)])
    (trace,) = by_trace(spans.get_finished_spans()).values()
    root = next(s for s in trace if s.name == "qfleet.batch")
    assert root.status.status_code is StatusCode.ERROR
    assert "backend rejected the job" in root.status.description
    assert root.attributes["qfleet.outcome"] == "permanent"
    submit = next(s for s in trace if s.name == "submit")
    assert submit.status.status_code is StatusCode.ERROR
    assert {s.name for s in trace} == {"qfleet.batch", "prepare", "queue", "submit"}
    metrics = samples()
    c = ("executor", "flaky-c")
    assert metrics[("qfleet_batches_total", (c, ("outcome", "permanent")))] == 1
    assert metrics[("qfleet_failures_total", (c, ("kind", "permanent")))] == 1
    assert metrics[("qfleet_in_flight", (("executor", "flaky-c"),))] == 0


def test_metrics_endpoint(spans):
    from starlette.testclient import TestClient

    from qfleet.ui import create_app

    executor = FlakyExecutor(name="flaky-d")
    for x in (0.1, 0.2, 0.3):
        executor.execute([tape(x), tape(x)])
    client = TestClient(create_app(clusters=[]), base_url="http://127.0.0.1")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text) for s in family.samples
    }
    d = (("executor", "flaky-d"),)
    assert got[("qfleet_batches_total", (*d, ("outcome", "ok")))] == 3
    assert got[("qfleet_tapes_total", d)] == 6
    assert got[("qfleet_batch_seconds_count", d)] == 3
    assert got[("qfleet_phase_seconds_count", (*d, ("phase", "run")))] == 3
    assert got[("qfleet_in_flight", d)] == 0


def test_off_by_default_and_on_from_the_config(isolated_config):
    from starlette.testclient import TestClient

    from qfleet.ui import create_app

    telemetry.reset()
    client = TestClient(create_app(clusters=[]), base_url="http://127.0.0.1")
    try:
        FlakyExecutor().execute([tape()])
        assert client.get("/metrics").status_code == 404
        assert telemetry.batch(FlakyExecutor(), []) is telemetry.NOOP
        isolated_config.write_text("[qfleet]\nmetrics = true\n")
        telemetry.reset()
        FlakyExecutor(name="from-config").execute([tape()])
        text = client.get("/metrics").text
        assert 'qfleet_batches_total{executor="from-config",outcome="ok"} 1.0' in text
    finally:
        telemetry.reset()
