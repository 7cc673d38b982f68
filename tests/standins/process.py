"""Running a stand-in in its own process, for tests and benchmarks (not product).

- :func:`start` / :func:`read_until`: start a process and wait for the line that says it is
  ready (``PORT <n>`` for the stand-ins), then drain its stdout so it never blocks on a pipe.
- :func:`stop`: terminate processes, killing those that do not exit.
- :class:`ControlChannel`: the ``/__standin__/`` test controls (``stats``, ``reset``,
  ``faults``) of a stand-in built on :mod:`http_base`, and a fresh stand-in per test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from typing import Callable, Iterator

READY = r"^PORT (\d+)"


def read_until(process: subprocess.Popen, pattern: str, timeout: float, what: str) -> re.Match:
    """Read ``process``'s stdout until a line matches; then drain the rest in a thread."""
    lines: list[str] = []
    found: list[re.Match] = []
    done = threading.Event()

    def read() -> None:
        for line in process.stdout:
            if not found:
                lines.append(line)
                match = re.search(pattern, line)
                if match:
                    found.append(match)
                    done.set()
            elif os.environ.get("STANDIN_VERBOSE"):
                sys.stderr.write(f"[{what}] {line}")
        done.set()

    reader = threading.Thread(target=read, daemon=True, name=f"{what}-stdout")
    reader.start()
    process.standin_reader = reader  # type: ignore[attr-defined]
    done.wait(timeout)
    if not found:
        process.kill()
        raise RuntimeError(f"{what} did not start within {timeout} s: {''.join(lines)[-2000:]}")
    return found[0]


def start(command: list[str], what: str, timeout: float = 120,
          pattern: str = READY) -> tuple[subprocess.Popen, re.Match]:
    """Start ``command`` (stdout piped, stderr inherited) and wait for ``pattern``."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=None, text=True)
    return process, read_until(process, pattern, timeout, what)


def start_port(command: list[str], what: str, timeout: float = 120) -> tuple[subprocess.Popen, int]:
    """Start a stand-in that prints ``PORT <n>`` once listening: (process, port)."""
    process, match = start(command, what, timeout)
    return process, int(match[1])


def stop(*processes: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate ``processes`` (last first), kill those still running after ``timeout``."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    for process in reversed(processes):
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
        reader = getattr(process, "standin_reader", None)
        if reader is not None:
            reader.join(timeout)
        if process.stdout and (reader is None or not reader.is_alive()):
            process.stdout.close()


class ControlChannel:
    """The ``/__standin__/`` test controls of the stand-in at ``base``."""

    base: str
    verify: bool | str = True

    def control(self, what: str, body: dict | None = None) -> dict:
        import requests

        url = f"{self.base}/__standin__/{what}"
        if body is None and what == "stats":
            return requests.get(url, timeout=10, verify=self.verify).json()
        return requests.post(url, json=body or {}, timeout=10, verify=self.verify).json()

    def jobs(self) -> list[dict]:
        return self.control("stats")["jobs"]

    def fresh(self, forget: Callable[[], None]) -> Iterator[ControlChannel]:
        """A function fixture's body: ``forget()`` the client's caches, reset the stand-in,
        yield it, then release any held jobs."""
        forget()
        self.control("reset")
        yield self
        self.control("faults", {"hold_jobs": False})
