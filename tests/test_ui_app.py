"""The dashboard app without a browser (Starlette's TestClient): guards (Host header,
headers, CSRF, token), paging, the job page of a missing job, fleet cards, no secrets."""

from __future__ import annotations

import re
import threading

import pennylane as qml
import pytest
from pydantic import SecretStr

pytest.importorskip("starlette")
from conftest import FlakyExecutor
from starlette.testclient import TestClient

import qfleet as qf
import qfleet.ui.app as ui_app
from qfleet.cluster import QuantumCluster
from qfleet.cluster.cluster import latency_percentiles
from qfleet.executors import LocalExecutor
from qfleet.jobs import ExecutionPreferences, ExecutionSession
from qfleet.ui import create_app
from qfleet.ui.views import seconds

BELL = ('OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; '
        'measure q -> c;')


class Unreachable(FlakyExecutor):
    token: SecretStr | None = None

    def status(self):
        raise ConnectionError("connection refused by the backend")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "home"))


def client(**kwargs) -> TestClient:
    return TestClient(create_app(**kwargs), base_url="http://127.0.0.1")


def test_guards(store):
    c = client(clusters=[])
    page = c.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "qfleet_csrf" in page.cookies
    # DNS rebinding: a loopback server answers only loopback Host names
    assert c.get("/", headers={"host": "attacker.example:8300"}).status_code == 400
    assert c.get("/", headers={"host": "localhost:8300"}).status_code == 200
    # POST needs the CSRF token of the cookie, and a same-origin Origin when one is sent
    csrf = page.cookies["qfleet_csrf"]
    assert c.post("/jobs/x/rename", data={"name": "n"}).status_code == 403
    forged = c.post("/jobs/x/rename", data={"name": "n", "csrf": csrf},
                    headers={"origin": "http://attacker.example"})
    assert forged.status_code == 403
    ok = c.post("/jobs/x/rename", data={"name": "n", "csrf": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and "no+job" in ok.headers["location"]


def test_missing_job_and_escaping(store):
    page = client(clusters=[]).get("/jobs/<img src=x onerror=alert(1)>")
    assert page.status_code == 404
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text and "<img" not in page.text


def test_paging_newest_first_and_filters(store, monkeypatch):
    monkeypatch.setattr(ui_app, "PER_PAGE", 2)
    ids = []
    for i in range(5):
        prefs = ExecutionPreferences(num_shots=10, job_name=f"job-{i}", random_seed=i)
        with ExecutionSession(BELL, prefs) as es:
            ids.append(es.submit_sample().id)
    c = client(clusters=[])
    pages = []
    for n in range(3):
        html = c.get(f"/?page={n}").text
        pages.append(re.findall(r'<tr class="job" data-id="([^"]+)"', html))
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1]]
    assert "older &rarr;" in c.get("/?page=0").text
    assert "older &rarr;" not in c.get("/?page=2").text
    html = c.get("/?name=job-3").text
    assert re.findall(r'data-id="([^"]+)"', html) == [ids[3]]
    html = c.get(f"/?id={ids[1][:8]}").text  # an id prefix lists; a whole id opens the job
    assert re.findall(r'data-id="([^"]+)"', html) == [ids[1]]
    assert c.get(f"/?id={ids[1]}", follow_redirects=False).headers["location"] == f"/jobs/{ids[1]}"


def test_fleet_cards_and_no_secret(store):
    tape = qml.tape.QuantumScript([qml.RX(0.2, 0)], [qml.expval(qml.PauliZ(0))])
    cluster = QuantumCluster(executors=[LocalExecutor(name="fast"), Unreachable(
        name="down", token=SecretStr("s3cr3t-t0ken"))], name="lab")
    for _ in range(4):
        cluster.execute([tape])
    cluster.member_status(refresh=True)  # what the background refresh does every status_ttl
    healths = cluster.health()
    html = client(clusters=[cluster]).get("/fleet").text
    cards = dict(re.findall(r"<h3>([^<]+)</h3>(.*?)</article>", html, re.S))
    assert set(cards) == {"fast", "down"}
    assert re.search(r"<dt>done</dt><dd>2</dd>", cards["fast"])
    assert re.search(r"<dt>available</dt><dd>yes", cards["fast"])
    # latency percentiles of the batches each ran, as health() computed them
    for label, h in healths.items():
        assert h.done >= 1 and h.p50_latency <= h.p90_latency <= h.p99_latency
        shown = re.search(r'<dd class="latency">([^<]*)</dd>', cards[label]).group(1)
        assert shown == " / ".join(seconds(v) for v in (h.p50_latency, h.p90_latency,
                                                         h.p99_latency))
    assert "status check failed: connection refused by the backend" in cards["down"]
    assert re.search(r"<dt>available</dt><dd>no", cards["down"])
    assert "s3cr3t-t0ken" not in html
    # No durable job ran yet: the job store's count is 0 beside this process's batches.
    assert re.search(r'<dd class="stored">0</dd>', cards["fast"])


def test_fleet_cards_count_the_job_stores_completed_jobs_per_member(store):
    cluster = QuantumCluster(executors=[LocalExecutor(name="fast")], name="lab")
    with ExecutionSession(BELL, ExecutionPreferences(num_shots=50, backend=cluster)) as es:
        for _ in range(3):
            es.submit_sample().result(timeout_sec=60)
    # Another process (the dashboard) sees the jobs the store holds, not its own counters.
    elsewhere = QuantumCluster(executors=[LocalExecutor(name="fast")], name="lab")
    html = client(clusters=[elsewhere]).get("/fleet").text
    card = dict(re.findall(r"<h3>([^<]+)</h3>(.*?)</article>", html, re.S))["fast"]
    assert re.search(r"<dt>done</dt><dd>0</dd>", card)
    assert re.search(r'<dd class="stored">3</dd>', card)


def test_served_from_a_program_shows_its_live_cluster(store):
    import urllib.request

    from qfleet.ui import serve_in_background

    tape = qml.tape.QuantumScript([qml.RX(0.2, 0)], [qml.expval(qml.PauliZ(0))])
    cluster = QuantumCluster(executors=[LocalExecutor(name="one"), LocalExecutor(name="two")])
    with serve_in_background(clusters=[cluster]) as ui:
        assert ui.url.startswith("http://127.0.0.1:")
        for _ in range(3):
            cluster.execute([tape])
        with urllib.request.urlopen(ui.url + "fleet", timeout=10) as response:
            html = response.read().decode()
    cards = dict(re.findall(r"<h3>([^<]+)</h3>(.*?)</article>", html, re.S))
    assert re.search(r"<dt>done</dt><dd>2</dd>", cards["one"])  # cyclic: one, two, one
    assert re.search(r"<dt>done</dt><dd>1</dd>", cards["two"])
    assert not ui.thread.is_alive()


def test_latency_percentiles_interpolate_between_ranks():
    assert latency_percentiles([]) == (None, None, None)
    assert latency_percentiles([0.5]) == (0.5, 0.5, 0.5)
    assert latency_percentiles([0.1, 0.2, 0.3, 0.4, 1.0]) == (0.3, 0.76, 0.976)
    assert latency_percentiles([float(i) for i in range(1, 101)]) == (50.5, 90.1, 99.01)


class Hung(LocalExecutor):
    """A backend whose status check never answers (until the test lets it)."""

    def status(self):
        RELEASE.wait(30)
        return super().status()


RELEASE = threading.Event()


def test_fleet_page_does_no_backend_io(store):
    # The page reads health() only: a status check that hangs does not hang the page; the
    # card says the status is not known yet.
    RELEASE.clear()
    cluster = QuantumCluster(executors=[Hung(name="hung")], name="lab")
    try:
        html = client(clusters=[cluster]).get("/fleet").text
    finally:
        RELEASE.set()
    card = re.search(r"<h3>hung</h3>(.*?)</article>", html, re.S).group(1)
    assert re.search(r"<dt>available</dt><dd>- <small>\(status not known yet\)</small>", card)
    assert re.search(r"<dt>queue</dt><dd>-</dd>", card)


def test_job_detail_shows_route_cost_cache_hit_and_circuit(store):
    cluster = QuantumCluster(
        executors=[LocalExecutor(name="cheap", price=qf.Price(per_task=1.0, per_shot=0.001)),
                   LocalExecutor(name="dear", price=qf.Price(per_task=2.0))],
        selector=qf.Policy(cost=1.0), budget=qf.Budget(total=100, account="ui"), cache=True)
    prefs = ExecutionPreferences(num_shots=100, random_seed=1)
    jobs = []
    for _ in range(2):  # the second run of the same circuit is a cache hit
        with ExecutionSession(BELL, prefs, executor=cluster) as es:
            jobs.append(es.submit_sample())
            jobs[-1].result(timeout_sec=60)
    c = client(clusters=[])
    first, second = (c.get(f"/jobs/{job.id}").text for job in jobs)

    def field(html: str, name: str) -> str:
        return re.search(rf"<dt>{name}</dt><dd[^>]*>(.*?)</dd>", html, re.S).group(1)

    assert field(first, "route") == "cheap"
    assert field(first, "cost") == "1.1 USD"  # 1 per circuit + 100 shots at 0.001
    assert field(first, "charged") == "1.1"
    assert field(first, "cache hit") == "no"
    assert re.search(r'<pre class="route-explanation">(.*?)</pre>', first, re.S).group(1) == (
        "policy cost: chose cheap (score 1.1, cost 1.1)\n"
        "  cheap: score 1.1, cost 1.1\n"
        "  dear: score 2, cost 2")
    assert field(second, "cache hit") == "yes"
    assert field(second, "charged") == "0"  # nothing ran, nothing was charged
    drawing = re.search(r'<pre class="drawing">(.*?)</pre>', first, re.S).group(1)
    assert drawing == qml.drawer.tape_text(jobs[0].tapes[0], decimals=3, max_length=120)
    assert drawing.splitlines()[0].startswith("0: ──H─╭●─┤")
