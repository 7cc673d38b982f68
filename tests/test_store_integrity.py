"""The job store holds data only and reports damage: no code runs from a crafted pickle
(schema-1 stores are migrated through a restricted unpickler), a truncated, foreign,
corrupt or tampered store is a typed error naming the file and the way back, and the
verified backup brings completed results back after a torn or truncated file."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import time

import pennylane as qml
import pytest

import qfleet as qf
from qfleet.cli import main as cli
from qfleet.errors import ConfigError
from qfleet.jobs import JobFailedError, JobNotFoundError, JobStatus
from qfleet.jobs.job import JobError
from qfleet.jobs.store import (
    JobStore,
    JobStoreCorruptError,
    JobStoreError,
    JobStoreForeignError,
    JobStoreRowError,
)

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    return tmp_path / "qfleet-home"


def completed_job(shots: int = 100) -> qf.ExecutionJob:
    prefs = qf.ExecutionPreferences(num_shots=shots, backend=qf.LocalExecutor(seed=3))
    with qf.ExecutionSession(QASM, prefs) as es:
        job = es.submit_sample({"t": 0.5})
        job.result(timeout_sec=60)
    return job


# -- a schema-1 store with pickled tapes ---------------------------------------------------

V1_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT,
    kind TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL,
    ended_at REAL, backend TEXT, executor TEXT NOT NULL, runner TEXT, program_kind TEXT,
    program TEXT, parameters TEXT NOT NULL, batch INTEGER NOT NULL DEFAULT 0,
    preferences TEXT NOT NULL, observable TEXT, num_shots INTEGER, layout TEXT,
    tapes BLOB NOT NULL, backend_job_ids TEXT NOT NULL DEFAULT '[]', owner_host TEXT,
    owner_pid INTEGER, owner_started TEXT, heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 1, cancel_requested INTEGER NOT NULL DEFAULT 0,
    run_metadata TEXT, results TEXT, error TEXT
);
PRAGMA user_version = 1;
"""


class Exploit:
    """What an attacker writes into a row: unpickling it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def v1_row(job_id: str, tapes: bytes, status: str = "QUEUED", results: str | None = None):
    spec = {"class": "qfleet.executors.local:LocalExecutor", "fields": {"seed": 5}}
    return {
        "id": job_id, "kind": "sample", "status": status, "created_at": time.time(),
        "executor": json.dumps(spec), "runner": json.dumps(spec), "program_kind": "qasm3",
        "program": QASM, "parameters": json.dumps([{"t": 0.5}]), "batch": 0,
        "preferences": "{}", "num_shots": 100,
        "layout": json.dumps([{"num_bits": 1, "positions": [0], "order": "qasm"}]),
        "tapes": tapes, "owner_host": None, "owner_pid": None, "results": results,
        "ended_at": time.time() if results else None,
    }


def write_v1_store(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    for row in rows:
        conn.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))
    conn.commit()
    conn.close()


def test_a_crafted_pickle_row_runs_no_code_and_genuine_rows_are_migrated(home, tmp_path):
    marker = tmp_path / "pwned"
    tape = qml.tape.QuantumScript([qml.RX(0.5, 0)], [qml.counts(wires=[0])], shots=100)
    done = json.dumps({"kind": "sample", "items": [
        {"parameters": {"t": 0.5}, "counts": {"0": 94, "1": 6}, "num_shots": 100}]})
    write_v1_store(home / "jobs.sqlite3", [
        v1_row("evil", pickle.dumps(Exploit(marker))),
        v1_row("evil-done", pickle.dumps((Exploit(marker),)), "COMPLETED", done),
        v1_row("genuine", pickle.dumps((tape,))),
        v1_row("garbled", b"\x80\x04not a pickle"),
    ])
    evil = qf.ExecutionJob.from_id("evil")  # opens (and migrates) the store
    assert not marker.exists()
    assert evil.status is JobStatus.FAILED
    assert "refused" in evil.error and "posix.system" in evil.error
    with pytest.raises(JobFailedError, match="refused"):
        evil.result(timeout_sec=0)
    # a completed job keeps its results; only its (unusable) tapes are gone
    kept = qf.ExecutionJob.from_id("evil-done")
    assert kept.get_sample_result().counts == {"0": 94, "1": 6}
    assert qf.ExecutionJob.from_id("garbled").status is JobStatus.FAILED
    # a genuine schema-1 job is taken over and run from its migrated (JSON) tapes
    genuine = qf.ExecutionJob.from_id("genuine")
    assert genuine.get_sample_result(timeout_sec=60).num_shots == 100
    assert genuine.attempts == 2
    assert not marker.exists()
    # the old file was kept, and the new rows hold JSON text, no pickle
    assert (home / "jobs.sqlite3.v1.bak").stat().st_size > 0
    conn = sqlite3.connect(home / "jobs.sqlite3")
    kinds = {r[0] for r in conn.execute("SELECT typeof(tapes) FROM jobs")}
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert kinds == {"text"} and version == 2


def test_the_store_refuses_bytes(home):
    store = JobStore.default()
    store.check()
    with pytest.raises(JobStoreError, match=r"\['tapes'\].*not text"):
        store.insert({"id": "x", "kind": "sample", "status": "QUEUED", "created_at": 1.0,
                      "executor": "{}", "parameters": "[]", "preferences": "{}",
                      "tapes": pickle.dumps(1)})


# -- truncated, corrupt, foreign files ------------------------------------------------------


def test_a_truncated_store_is_an_error_everywhere_and_the_backup_restores_it(home, capsys):
    job = completed_job()
    counts = job.get_sample_result().counts
    store = JobStore.default()
    store.backup()
    (home / "jobs.sqlite3").write_bytes(b"")  # truncated to 0 bytes
    for suffix in ("-wal", "-shm"):
        (home / f"jobs.sqlite3{suffix}").unlink(missing_ok=True)
    with pytest.raises(JobStoreCorruptError, match=r"jobs\.sqlite3 is empty \(0 bytes\)") as info:
        qf.ExecutionJob.from_id(job.id)
    assert "qfleet jobs restore" in str(info.value)
    with pytest.raises(JobStoreCorruptError, match="empty"):
        qf.get_execution_jobs()
    assert cli(["jobs", "list"]) == 2
    out = capsys.readouterr().out
    assert "empty (0 bytes)" in out and "Traceback" not in out
    # restore the verified backup: the completed result is back
    assert cli(["jobs", "restore"]) == 0
    assert "restored" in capsys.readouterr().out
    assert qf.ExecutionJob.from_id(job.id).get_sample_result().counts == counts
    assert list(home.glob("jobs.sqlite3.damaged-*"))


def test_a_torn_store_file_is_corrupt_and_completed_results_survive_in_the_backup(home):
    job = completed_job()
    JobStore.default().backup()
    path = home / "jobs.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\x00" * 5 + data[105 : len(data) // 2])  # torn, damaged
    JobStore._instances.clear()
    with pytest.raises(JobStoreCorruptError, match=r"corrupt|malformed") as info:
        qf.get_execution_jobs()
    assert str(path) in str(info.value)
    JobStore.default().restore_backup()
    assert qf.ExecutionJob.from_id(job.id).status is JobStatus.COMPLETED


def test_completed_jobs_refresh_the_verified_backup(home):
    completed_job()
    backup = home / "jobs.sqlite3.bak"
    assert backup.is_file()
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'").fetchone()[0] == 1
    conn.close()


def test_a_foreign_database_is_not_taken_over(home):
    home.mkdir(parents=True)
    conn = sqlite3.connect(home / "jobs.sqlite3")
    conn.execute("CREATE TABLE photos (id INTEGER, data BLOB)")
    conn.commit()
    conn.close()
    with pytest.raises(JobStoreForeignError, match=r"not a qfleet job store.*photos"):
        qf.get_execution_jobs()
    conn = sqlite3.connect(home / "jobs.sqlite3")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"photos"}  # nothing was added to it


def test_a_store_from_a_newer_qfleet_and_a_directory_are_refused(home):
    home.mkdir(parents=True)
    conn = sqlite3.connect(home / "jobs.sqlite3")
    conn.execute("CREATE TABLE jobs (id TEXT)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(JobStoreForeignError, match="newer qfleet"):
        qf.get_execution_jobs()
    (home / "jobs.sqlite3").unlink()
    (home / "jobs.sqlite3").mkdir()
    with pytest.raises(JobStoreForeignError, match="is a directory"):
        qf.get_execution_jobs()


# -- tampered rows --------------------------------------------------------------------------


@pytest.mark.parametrize("column, value, message", [
    ("status", "PWNED", "column status"),
    ("kind", "exec", "column kind"),
    ("parameters", "{not json", "column parameters"),
    ("results", json.dumps({"kind": "sample", "items": [
        {"parameters": {}, "counts": {"0": -5}, "num_shots": 1}]}), "column results"),
    ("tapes", "cos\nsystem\n(S'id'\ntR.", "column tapes"),
    ("num_shots", "many", "column num_shots"),
    ("backend_job_ids", '[{"$ne": 1}]', "column backend_job_ids"),
])
def test_a_tampered_row_is_a_typed_error_naming_the_job(column, value, message):
    job = completed_job()
    conn = sqlite3.connect(JobStore.default().path)
    conn.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, job.id))
    conn.commit()
    conn.close()
    with pytest.raises(JobStoreRowError, match=message) as info:
        qf.ExecutionJob.from_id(job.id)
    assert job.id in str(info.value) and "DELETE FROM jobs" in str(info.value)


def test_text_that_is_not_utf8_is_a_store_error_when_listing_too(home):
    job = completed_job()
    conn = sqlite3.connect(JobStore.default().path)
    # A flipped byte: the column's text no longer decodes (sqlite fails in the fetch).
    conn.execute("UPDATE jobs SET name = CAST(X'6A6F62FF31' AS TEXT) WHERE id = ?", (job.id,))
    conn.commit()
    conn.close()
    with pytest.raises(JobStoreError, match="UTF-8") as info:
        qf.get_execution_jobs()
    assert str(JobStore.default().path) in str(info.value)


def test_tampered_tapes_naming_a_foreign_class_are_not_run(home):
    job = completed_job()
    tapes = json.loads(JobStore.default().get(job.id)["tapes"])
    tapes["tapes"][0]["operations"][0].update(type="system", module="os")
    conn = sqlite3.connect(JobStore.default().path)
    conn.execute("UPDATE jobs SET tapes = ?, status = 'QUEUED', results = NULL, owner_pid = NULL, "
                 "owner_host = NULL, owner_started = NULL WHERE id = ?",
                 (json.dumps(tapes), job.id))
    conn.commit()
    conn.close()
    again = qf.ExecutionJob.from_id(job.id)
    assert again.poll(timeout_sec=30) is JobStatus.FAILED
    assert "'system' is not a PennyLane operator" in again.error


def test_a_job_id_with_a_lone_surrogate_is_not_found_cleanly():
    with pytest.raises(JobNotFoundError, match="lone surrogates"):
        qf.ExecutionJob.from_id("abc\udc80")


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "inf"])
def test_a_bad_jobstore_timeout_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("QFLEET_JOBSTORE_TIMEOUT", value)
    with pytest.raises(ConfigError, match="QFLEET_JOBSTORE_TIMEOUT"):
        qf.get_execution_jobs()


def test_store_errors_are_qfleet_errors():
    from qfleet.errors import QFleetError

    for cls in (JobStoreCorruptError, JobStoreForeignError, JobStoreRowError, JobError):
        assert issubclass(cls, QFleetError)
