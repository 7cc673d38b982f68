"""HTTP plumbing the stand-ins share (test infrastructure, not product).

- :class:`JSONHandler`: a quiet HTTP/1.1 ``BaseHTTPRequestHandler`` whose ``do_GET/POST/PUT/
  PATCH/DELETE`` all go to ``_dispatch``, with the raw body reader and the reply writer.
- :class:`FaultState` and :class:`FaultHandler`: the state every fault-injecting stand-in keeps
  (requests seen, failing jobs, injected HTTP errors, held and delayed jobs) and the
  ``/__standin__/`` control channel (``GET stats``, ``POST reset``, ``POST faults``) in front of
  the service's own routes.
- :func:`make_server` / :func:`serve`: a threading server on 127.0.0.1 that prints
  ``PORT <n>`` once listening.

The wire format of each service (error bodies, headers, status codes) stays in its stand-in;
this module calls hooks for it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

CONTROL = "/__standin__/"


class JSONHandler(BaseHTTPRequestHandler):
    """Every method goes to ``_dispatch``; logging only with ``STANDIN_VERBOSE``."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle's algorithm on, each keep-alive
    # reply would wait for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        if os.environ.get("STANDIN_VERBOSE"):
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        raise NotImplementedError

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _write(self, status: int, data: bytes, content_type: str = "application/json",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if data:
            self.wfile.write(data)


class FaultState:
    """What a fault-injecting stand-in remembers; one condition lock guards it. Subclasses add
    their own fields in :meth:`clear` (called under the lock by :meth:`reset`)."""

    def __init__(self, workers: int) -> None:
        self.lock = threading.Condition()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="standin-job")

    def reset(self) -> None:
        with self.lock:
            self.requests: list[tuple[str, str, int]] = []
            self.fail_jobs: list[Any] = []
            self.http_errors: list[dict] = []
            self.hold_jobs = False
            self.job_delay = 0.0
            self.drop: dict[str, Any] | None = None  # the drop_replies fault's rule
            self.drop_rng = random.Random(0)
            self.dropped = 0
            self.clear()
            self.lock.notify_all()

    def clear(self) -> None:
        """The service's own fields, back to their start (the lock is held)."""

    def wait_while_held(self, job_id: str, queued: str) -> None:
        """Block while ``hold_jobs`` is set and the job is still ``queued`` (lock held)."""
        while self.hold_jobs and self.jobs.get(job_id, {}).get("status") == queued:
            self.lock.wait(0.05)

    def linger(self, job: dict, running: str, seconds: float) -> bool:
        """Keep a ``running`` job so for ``seconds`` (``job_delay``) unless it is cancelled
        meanwhile (lock held). True: it is still running."""
        deadline = time.monotonic() + max(seconds, 0)
        while job["status"] == running and time.monotonic() < deadline:
            self.lock.wait(deadline - time.monotonic())
        return job["status"] == running


class FaultHandler(JSONHandler):
    """The ``/__standin__/`` control channel and injected HTTP errors in front of ``_route``.

    Hooks: ``_route(path, query, body)``, ``_not_found(message)``, ``_crashed(exc)``,
    ``_injected(status, retry_after)``, ``_stats()``, ``_more_faults(faults)``; and
    ``fault_path_match`` (``re.fullmatch`` or ``re.search``) for a rule's ``path``.
    """

    state: FaultState
    fault_path_match: Callable[..., Any] = staticmethod(re.fullmatch)

    def _dispatch(self) -> None:
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        body = self._body()
        try:
            if path.startswith(CONTROL):
                return self._control(path[len(CONTROL):], body)
            if self._injected_error(path):
                return None
            return self._route(path, query, body)
        except Exception as exc:
            traceback.print_exc()
            self._crashed(exc)

    def _injected_error(self, path: str) -> bool:
        with self.state.lock:
            for rule in self.state.http_errors:
                if rule.get("method", self.command) != self.command:
                    continue
                if not self.fault_path_match(rule.get("path", ".*"), path):
                    continue
                if rule["codes"]:
                    status = rule["codes"].pop(0)
                    retry_after = rule.get("retry_after")
                    break
            else:
                return False
        self._injected(status, retry_after)
        return True

    def _control(self, what: str, body: bytes) -> None:
        state = self.state
        if what == "stats" and self.command == "GET":
            with state.lock:
                return self._send(200, self._stats())
        if what == "reset" and self.command == "POST":
            state.reset()
            return self._send(200, {"ok": True})
        if what == "faults" and self.command == "POST":
            faults = json.loads(body or b"{}")
            with state.lock:
                state.fail_jobs.extend(faults.get("fail_jobs", []))
                state.http_errors.extend(faults.get("http_errors", []))
                if "hold_jobs" in faults:
                    state.hold_jobs = bool(faults["hold_jobs"])
                if "job_delay" in faults:
                    state.job_delay = float(faults["job_delay"])
                if "drop_replies" in faults:
                    state.drop = faults["drop_replies"] or None
                    state.drop_rng = random.Random((state.drop or {}).get("seed", 0))
                self._more_faults(faults)
                state.lock.notify_all()
            return self._send(200, {"ok": True})
        return self._not_found(f"no control {what}")

    def _more_faults(self, faults: dict) -> None:
        """The service's own fault switches (the lock is held)."""

    def _reply_lost(self, status: int, path: str) -> bool:
        """Whether this 2xx reply to ``path`` is to be lost (the ``drop_replies`` fault:
        ``{"method", "path" (regex), "rate", "seed", "skip", "count"}``); a lost reply is
        recorded with status 0."""
        with self.state.lock:
            rule = self.state.drop
            if (rule is None or not 200 <= status < 300 or path.startswith(CONTROL)
                    or rule.get("method", self.command) != self.command
                    or not re.search(rule.get("path", ".*"), path)
                    or self.state.drop_rng.random() >= float(rule.get("rate", 1.0))):
                return False
            rule["seen"] = rule.get("seen", 0) + 1
            if rule["seen"] <= rule.get("skip", 0) or rule.get("count", 1e9) <= 0:
                return False
            rule["count"] = rule.get("count", 1e9) - 1
            self.state.dropped += 1
            self.state.requests.append((self.command, path, 0))  # 0: reply dropped
            return True


def bind(handler: type, state: Any) -> type:
    """``handler`` with ``state`` as a class attribute (one server, one state)."""
    return type("BoundHandler", (handler,), {"state": state})


def make_server(handler: type, port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def serve(server: ThreadingHTTPServer, *, poll_interval: float = 0.1, sigterm: bool = False,
          cleanup: Callable[[], None] | None = None) -> None:
    """Print ``PORT <n>`` and serve until interrupted (or SIGTERM, with ``sigterm``)."""
    print(f"PORT {server.server_address[1]}", flush=True)
    if sigterm:
        signal.signal(signal.SIGTERM,
                      lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=poll_interval)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if cleanup is not None:
            cleanup()
        sys.stdout.flush()
