"""The dashboard (``qfleet ui``) in a real headless Chromium (Debian's ``chromium``, driven by
playwright through the system browser; no browser download).

One ``qfleet ui`` server process, one submitter process that owns the jobs (so the jobs
come from another process), a 2300 emulator with latency for the job cancelled from the
page, and one browser for the whole module. Screenshots go to the test run's temporary
directory (printed at the end of the module).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)

from p2300_support import Emulator, wait_until  # noqa: E402

QFLEET = str(Path(sys.executable).with_name("qfleet"))
XSS = "<script>alert(1)</script>"
SLOW_SETS = 60  # parameter sets of the slow job: one 2300 execute (1 s) each

SUBMITTER = r"""
import json, sys
import qfleet as qf
from qfleet.executors import Executor2300

rep, pub = sys.argv[1], sys.argv[2]
bell = ('OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; '
        'measure q -> c;')
with qf.ExecutionSession(bell, qf.ExecutionPreferences(num_shots=1000, random_seed=7,
                                                       job_name="bell pair")) as es:
    bell_job = es.submit_sample()
    bell_job.result(timeout_sec=60)
with qf.ExecutionSession(bell, qf.ExecutionPreferences(num_shots=100, job_name=sys.argv[3])) as es:
    xss_job = es.submit_sample()
    xss_job.result(timeout_sec=60)
rx = ('OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
      'rx(t) q[0]; c = measure q;')
slow = Executor2300(address=rep, subscribe_address=pub, timeout=30)
with qf.ExecutionSession(rx, qf.ExecutionPreferences(num_shots=100, backend=slow,
                                                     job_name="slow on 2300")) as es:
    slow_job = es.submit_sample([{"t": 0.1 * i} for i in range(int(sys.argv[4]))])
print(json.dumps({"bell": bell_job.id, "xss": xss_job.id, "slow": slow_job.id}), flush=True)
sys.stdin.read()  # stay alive, owning the slow job, until the test closes stdin
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_ui(env: dict, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="qfleet-ui-")) / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([QFLEET, "ui", "--port", str(port), *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    proc.log_path = log  # what it printed, for failure messages
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return get(url + "/static/style.css", timeout=1)[0] == 200
        except OSError:
            return False

    if not wait_until(up, timeout=60, interval=0.1):
        proc.kill()
        raise AssertionError(f"qfleet ui did not start: {ui_log(proc)}")
    return proc, url


def ui_log(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text()[-4000:]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The emulator, the submitter (owning three jobs) and the UI server, sharing a store."""
    home = tmp_path_factory.mktemp("ui-home")
    shots = tmp_path_factory.mktemp("ui-screenshots")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLEET_")}
    env.update(QFLEET_HOME=str(home), QFLEET_CONFIG=str(home / "none.toml"), NO_COLOR="1")
    emulator = Emulator("ui-slow", ["--seed", "3", "--latency", "1"])
    rep, pub = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    emulator.launch(rep, pub)
    # all three start together (each imports for seconds); the submitter's 2300 client
    # waits for the emulator
    submitter = subprocess.Popen(
        [sys.executable, "-c", SUBMITTER, rep, pub, XSS, str(SLOW_SETS)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    ui = None
    try:
        ui, url = start_ui(env)
        emulator.wait_ready()
        line = submitter.stdout.readline()
        if not line:
            raise AssertionError(f"the submitter failed: {submitter.stderr.read()[-3000:]}")
        jobs = json.loads(line)
        yield {"url": url, "jobs": jobs, "emulator": emulator, "shots": shots, "env": env,
               "ui": ui}
    finally:
        submitter.stdin.close()
        stop(submitter)
        if ui is not None:
            stop(ui)
        emulator.stop()
        print(f"\nscreenshots of the dashboard: {shots}")


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


def test_jobs_page_lists_jobs_from_another_process(stack, page):
    page.goto(stack["url"] + "/")
    rows = page.locator("tr.job")
    ids = [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]
    jobs = stack["jobs"]
    assert ids == [jobs["slow"], jobs["xss"], jobs["bell"]]  # newest first
    bell = page.locator(f'tr.job[data-id="{jobs["bell"]}"]')
    cells = bell.locator("td").all_inner_texts()
    assert cells[0] == jobs["bell"][:8] and cells[1] == "bell pair"
    assert cells[2] == "COMPLETED" and cells[3].startswith("LocalExecutor") and cells[4] == "1000"
    # filters: by status, by name, and search by id
    page.select_option("select[name=status]", "COMPLETED")
    page.click("form.filters button")
    assert page.locator("tr.job").count() == 2
    page.goto(stack["url"] + "/?name=bell")
    assert page.locator("tr.job").get_attribute("data-id") == jobs["bell"]
    page.goto(stack["url"] + f"/?id={jobs['xss']}")  # a whole id opens the job
    assert page.url.endswith(f"/jobs/{jobs['xss']}")
    page.goto(stack["url"] + "/")
    page.screenshot(path=str(stack["shots"] / "jobs.png"), full_page=True)


def test_detail_page_shows_the_histogram(stack, page):
    page.goto(stack["url"] + f"/jobs/{stack['jobs']['bell']}")
    bars = page.locator("svg.histogram rect.bar")
    assert bars.count() == 2  # a Bell pair: 00 and 11 only
    titles = [bars.nth(i).locator("title").text_content() for i in range(2)]
    counts = {t.split(":")[0]: int(t.split(":")[1].split()[0]) for t in titles}
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 1000
    assert abs(counts["00"] - 500) <= 5 * (1000 * 0.25) ** 0.5  # 5 sigma of shot noise
    table = page.locator("table.counts tbody tr")
    assert {table.nth(i).locator("td").first.inner_text() for i in range(2)} == {"00", "11"}
    assert "h q[0];" in page.locator("pre.program").inner_text()
    page.screenshot(path=str(stack["shots"] / "detail.png"), full_page=True)


def test_a_script_in_a_job_name_is_shown_as_text(stack, page):
    jobs = stack["jobs"]
    page.goto(stack["url"] + "/")
    assert page.locator(f'tr.job[data-id="{jobs["xss"]}"] td.name').inner_text() == XSS
    page.goto(stack["url"] + f"/jobs/{jobs['xss']}")
    assert page.locator("h1 .name").inner_text() == XSS
    # rename from the page (a POST form with its CSRF token) to another attempt
    evil = '<img src=x onerror="alert(2)">'
    page.fill("form.rename input[name=name]", evil)
    page.click("form.rename button")
    page.wait_for_selector("p.message")
    assert page.locator("h1 .name").inner_text() == evil
    assert page.locator("img").count() == 0
    assert page.dialogs == []
    # a POST without the CSRF token is refused
    status = page.evaluate(
        """async (url) => (await fetch(url, {method: "POST", body: new URLSearchParams(
              {name: "x"})})).status""", stack["url"] + f"/jobs/{jobs['xss']}/rename")
    assert status == 403


def test_cancel_from_the_page_cancels_the_backend_job(stack, page, browser):
    jobs, emulator = stack["jobs"], stack["emulator"]
    watcher = browser.new_page()
    watcher.goto(stack["url"] + "/")  # live refresh: this page is never reloaded
    row = watcher.locator(f'tr.job[data-id="{jobs["slow"]}"] .status')
    assert row.inner_text() in ("QUEUED", "RUNNING")
    assert watcher.locator("#live").get_attribute("data-live") == "2"
    page.goto(stack["url"] + f"/jobs/{jobs['slow']}")
    page.click("#cancel")
    page.wait_for_selector("p.message")
    assert page.locator("p.message").inner_text() == "cancelled"
    assert page.locator("h1 .status").inner_text() == "CANCELLED"
    assert page.locator("#cancel").count() == 0
    # the backend: 2300 stops executing the job's circuits and is unlocked (terminate)
    dynamic = wait_until(lambda: (d := emulator.dynamic()) and not d["locked"] and d,
                         timeout=30)
    assert dynamic and not dynamic["locked"], dynamic
    assert dynamic["lock_expired"] == 0
    assert 1 <= dynamic["execute"] < SLOW_SETS, dynamic
    # the watching page refreshed itself
    watcher.wait_for_function(
        f"""() => document.querySelector('tr.job[data-id="{jobs["slow"]}"] .status')
                  .innerText === 'CANCELLED'""", timeout=15000)
    watcher.screenshot(path=str(stack["shots"] / "after-cancel.png"), full_page=True)
    watcher.close()
    # and nothing of the job ran on 2300 afterwards
    later = emulator.dynamic()
    assert later["execute"] == dynamic["execute"] and not later["locked"], (dynamic, later)


def test_phone_sized_viewport(stack, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  device_scale_factor=2)
    phone = context.new_page()
    for path in ("/", f"/jobs/{stack['jobs']['bell']}", "/fleet"):
        response = phone.goto(stack["url"] + path)
        assert response.ok, (path, response.status, response.text(), ui_log(stack["ui"]))
        # nothing wider than the screen: wide tables scroll inside their own box
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390, path
        assert phone.locator("header nav a").first.is_visible()
    phone.goto(stack["url"] + "/")
    assert phone.locator("tr.job").count() == 3
    phone.screenshot(path=str(stack["shots"] / "phone.png"), full_page=True)
    phone.goto(stack["url"] + "/fleet")
    assert phone.locator("article.card h3").first.inner_text() == "LocalExecutor"
    context.close()


def test_a_non_loopback_bind_needs_a_token(stack):
    env = stack["env"]
    refused = subprocess.run([QFLEET, "ui", "--host", "0.0.0.0", "--port", str(free_port())],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in refused.stdout + refused.stderr
    # with a token it starts, and asks every browser for it
    ui, url = start_ui(env, "--host", "0.0.0.0", "--token", "s3cret-token")
    try:
        status, body = get(url + "/")
        assert status == 401 and "s3cret-token" not in body
        # the token in the URL becomes a cookie, and leaves the address bar
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(url + "/?token=s3cret-token", timeout=5) as response:
            assert response.status == 200 and response.url == url + "/"
            assert "s3cret-token" not in response.read().decode()
    finally:
        stop(ui)
