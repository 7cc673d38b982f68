"""The dashboard app without a browser (Starlette's TestClient): guards (Host header,
headers, CSRF, token), paging, the job page of a missing job, fleet cards, no secrets."""

from __future__ import annotations

import re

import pennylane as qml
import pytest
from pydantic import SecretStr

pytest.importorskip("starlette")
from conftest import FlakyExecutor
from starlette.testclient import TestClient

import qfleet.ui.app as ui_app
from qfleet.cluster import QuantumCluster
from qfleet.executors import LocalExecutor
from qfleet.jobs import ExecutionPreferences, ExecutionSession
from qfleet.ui import create_app

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
    html = client(clusters=[cluster]).get("/fleet").text
    cards = dict(re.findall(r"<h3>([^<]+)</h3>(.*?)</article>", html, re.S))
    assert set(cards) == {"fast", "down"}
    assert re.search(r"<dt>done</dt><dd>2</dd>", cards["fast"])
    assert re.search(r"<dt>available</dt><dd>yes", cards["fast"])
    assert "connection refused by the backend" in cards["down"]
    assert re.search(r"<dt>available</dt><dd>no", cards["down"])
    assert "s3cr3t-t0ken" not in html


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
