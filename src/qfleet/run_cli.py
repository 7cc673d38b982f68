"""``qfleet run PROGRAM``: run an OpenQASM file or a PennyLane QNode from the command line.

PROGRAM is an OpenQASM 2/3 file or ``file.py:name`` (a QNode or quantum function in a
Python file). It runs as a durable job (``qfleet jobs ...`` and ``qfleet ui`` see it) on
``--backend`` or the configured fleet (``[qfleet] executors``), and prints a counts /
probabilities table, an estimate (``--estimate "Z0 + 2*Z1"``) or JSON (``--json``).

Exit codes, for scripts (also in ``qfleet run --help``):

====  ==========================================================================
0     success (with ``--submit``: the job was submitted)
2     bad command line (argparse)
3     the program cannot be read: missing file, not OpenQASM, no such QNode
4     bad parameters or observable: unknown/missing ``--param``, bad ``--estimate``
5     the backend failed or cannot be reached; the job failed or was cancelled
6     no result within ``--timeout`` (the job goes on: ``qfleet jobs result ID``)
7     any other qfleet error (configuration, ...)
====  ==========================================================================

Errors are one line on stderr: ``error: <what is wrong and how to fix it>``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from qfleet.errors import ConfigError, ExecutorError, QFleetError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PROGRAM = 3
EXIT_PARAMETERS = 4
EXIT_BACKEND = 5
EXIT_TIMEOUT = 6
EXIT_OTHER = 7


class ProgramFileError(QFleetError, ValueError):
    """PROGRAM names no readable OpenQASM file or no QNode in a Python file."""


class ParameterSyntaxError(QFleetError, ValueError):
    """A ``--param`` is not ``name=value``."""


# -- reading the command line -------------------------------------------------------------


def read_program(spec: str) -> tuple[Any, str]:
    """(program, label) from ``file.qasm`` or ``file.py:name``.

    Example:
        >>> read_program("missing.qasm")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        qfleet.run_cli.ProgramFileError: no file missing.qasm; give an OpenQASM 2/3 file or ...
    """
    head, sep, tail = spec.rpartition(":")
    path_text, name = (head, tail) if sep and head.endswith(".py") else (spec, "")
    path = Path(path_text)
    if not path.is_file():
        raise ProgramFileError(
            f"no file {path_text}; give an OpenQASM 2/3 file or file.py:qnode_name"
        )
    if path.suffix == ".py":
        if not name:
            raise ProgramFileError(
                f"{path_text} is a Python file; name the QNode in it: {path_text}:qnode_name"
            )
        return _python_object(path, name), spec
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramFileError(f"cannot read {path_text}: {exc}") from exc
    if not re.match(r"\s*(//[^\n]*\n\s*)*OPENQASM\s+[23]", text):
        raise ProgramFileError(
            f"{path_text} is not OpenQASM: it must start with 'OPENQASM 2.0;' or "
            f"'OPENQASM 3.0;' (or give file.py:qnode_name for a PennyLane QNode)"
        )
    return text.lstrip(), spec


def _python_object(path: Path, name: str) -> Any:
    module_name = f"_qfleet_run_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ProgramFileError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # its own imports of sibling modules
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ProgramFileError(
            f"importing {path} raised {type(exc).__name__}: {_one_line(str(exc))}"
        ) from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    if not hasattr(module, name):
        found = sorted(
            n for n, v in vars(module).items()
            if type(v).__name__ == "QNode" and not n.startswith("_")
        )
        raise ProgramFileError(
            f"{path} has no {name!r}; its QNodes: {', '.join(found) or 'none'}"
        )
    obj = getattr(module, name)
    if not callable(obj):
        raise ProgramFileError(
            f"{path}:{name} is a {type(obj).__name__}, not a QNode or quantum function"
        )
    return obj


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["t=0.5", "x=[1, 2]"]`` -> ``{"t": 0.5, "x": [1, 2]}`` (values are JSON numbers
    or lists).

    Example:
        >>> parse_params(["t=0.5", "x=[1, 2]", "n=3"])
        {'t': 0.5, 'x': [1, 2], 'n': 3}
    """
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ParameterSyntaxError(
                f"--param {item!r}: write name=value, e.g. --param t=0.5"
            )
        text = text.strip()
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = float(text)  # nan, inf, 1e-3 written loosely
            except ValueError:
                raise ParameterSyntaxError(
                    f"--param {name}={text}: the value must be a number or a JSON list of "
                    f"numbers, e.g. --param {name}=0.5"
                ) from None
        values[name] = value
    return values


_FACTOR = re.compile(r"([IXYZ])\s*(\d+)?", re.IGNORECASE)
_NUMBER = re.compile(r"\s*(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*\*?\s*")


def parse_observable(text: str) -> Any:
    """A Pauli sum from text: terms joined by ``+``/``-``, each an optional coefficient and
    Pauli factors (letter and qubit index, ``*``, ``@`` or space between them).

    Example:
        >>> from qfleet.jobs import Pauli
        >>> parse_observable("Z0 + 2*Z1 - 0.5 * X0 X1") == (
        ...     Pauli.Z(0) + 2 * Pauli.Z(1) - 0.5 * Pauli.X(0) * Pauli.X(1))
        True
    """
    from qfleet.jobs.pauli import ObservableError, PauliSum

    # the sign of an exponent (1e-3) does not start a term: hide it while splitting
    protected = re.sub(r"(\d[eE])([+-])",
                       lambda m: m.group(1) + ("\x01" if m.group(2) == "+" else "\x02"),
                       text.strip())
    tokens = re.split(r"([+-])", protected)
    total = PauliSum()
    sign = 1.0
    for i, token in enumerate(tokens):
        if i % 2:
            sign = -1.0 if token == "-" else 1.0
            continue
        body = token.strip().replace("\x01", "+").replace("\x02", "-")
        if not body:
            if i == 0 and len(tokens) > 1:
                continue  # a leading sign
            raise ObservableError(
                f"cannot read --estimate {text!r}; write a Pauli sum such as \"Z0 + 2*Z1\""
            )
        total = total + sign * _term(body, text)
    return total


def _term(body: str, text: str) -> Any:
    from qfleet.jobs.pauli import ObservableError, Pauli, PauliSum

    coefficient = 1.0
    number = _NUMBER.match(body)
    if number:
        coefficient = float(number.group(1))
        body = body[number.end():]
    term = PauliSum({(): coefficient})
    for word in re.sub(r"[\s*@]+", " ", body).split():
        found = list(_FACTOR.finditer(word))
        if "".join(f.group(0) for f in found) != word:
            raise ObservableError(
                f"cannot read {word!r} in --estimate {text!r}; write Pauli factors as a "
                f"letter I/X/Y/Z and a qubit index, e.g. \"Z0 + 2*Z1\" or \"0.5*X0 X1\""
            )
        for factor in found:
            letter, index = factor.group(1).upper(), factor.group(2)
            if index is None and letter != "I":
                raise ObservableError(
                    f"{letter} in --estimate {text!r} needs a qubit index, e.g. {letter}0"
                )
            term = term * getattr(Pauli, letter)(int(index or 0))
    return term


# -- running ------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _backend(name: str | None) -> Any:
    """``--backend`` as ExecutionPreferences takes it; default: the configured fleet."""
    if name is not None:
        return name
    from qfleet.config import executor_classes, load_config

    config = load_config()
    names = config.qfleet.executors
    if len(names) == 1:
        return names[0]
    classes = executor_classes()
    missing = [n for n in names if n not in classes]
    if missing:
        raise ConfigError(f"[qfleet] executors names unknown executor(s) {missing}")
    from qfleet.cluster import QuantumCluster

    return QuantumCluster(
        executors=[classes[n]() for n in names], selector=config.qfleet.selector
    )


def _submit(args: argparse.Namespace) -> Any:
    program, label = read_program(args.program)
    params = parse_params(args.param)
    observable = parse_observable(args.estimate) if args.estimate is not None else None
    # imported after the checks above: a typo in the command line fails in a second, not
    # after PennyLane's import
    from qfleet.jobs import ExecutionPreferences, ExecutionSession

    preferences = ExecutionPreferences(
        num_shots=args.shots,
        backend=_backend(args.backend),
        job_name=args.name or label,
        random_seed=args.seed,
    )
    with ExecutionSession(program, preferences) as session:
        session.program.check_parameters(params)  # before the job: a one-line error
        if observable is not None:
            return session.submit_estimate(observable, params)
        return session.submit_sample(params)


def _wait(job: Any, args: argparse.Namespace, console: Console) -> Any:
    quiet = args.json or not console.is_terminal
    if quiet:
        return job.result(timeout_sec=args.timeout)[0].value
    with console.status(f"running job {job.id} on {job.backend} ..."):
        return job.result(timeout_sec=args.timeout)[0].value


def result_document(job: Any, value: Any) -> dict[str, Any]:
    """What ``--json`` prints: the job and its result as plain data."""
    document: dict[str, Any] = {
        "job_id": job.id,
        "name": job.name,
        "status": job.status.value,
        "backend": job.backend,
        "kind": job.kind,
        "parameters": value.parameters,
        "shots": value.num_shots,
    }
    if job.kind == "sample":
        document["counts"] = dict(value.counts)
        document["probabilities"] = {b: c / value.num_shots for b, c in value.counts.items()}
    else:
        document["value"] = value.value
    return document


def _print_table(job: Any, value: Any, console: Console) -> None:
    shots = "exact" if value.num_shots is None else f"{value.num_shots} shots"
    params = json.dumps(value.parameters)
    if not console.is_terminal:  # piped (scripts, grep): don't squeeze it into 80 columns
        console.width = max(console.width, 150)
    if job.kind == "sample":
        table = Table(title=f"job {job.id} on {job.backend}: {params} ({shots})")
        for column in ("bitstring", "counts", "probability"):
            table.add_column(column, justify="right")
        for bitstring, count in value.counts.items():
            table.add_row(bitstring, str(count), f"{count / value.num_shots:.4f}")
        console.print(table)
    else:
        console.print(
            f"job {job.id} on {job.backend}: {params} estimate = {value.value:.10g} ({shots})",
            markup=False, highlight=False,
        )


def plot_histogram(job: Any, value: Any, path: str) -> None:
    """Write a bar chart of the sample counts (probabilities) to ``path`` (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ProgramFileError(
            "--plot needs matplotlib (pip install matplotlib); or leave out --plot"
        ) from exc
    folder = Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise ProgramFileError(f"--plot {path}: no folder {folder}; create it first")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(value.counts) + 2), 3.5))
    if job.kind == "sample":
        bitstrings = sorted(value.counts)
        ax.bar(bitstrings, [value.counts[b] / value.num_shots for b in bitstrings])
        ax.set_xlabel("bitstring")
        ax.set_ylabel("probability")
    else:
        ax.bar(["estimate"], [value.value])
        ax.set_ylabel("expectation value")
    ax.set_title(f"{job.name or job.id}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _exit_code(exc: BaseException) -> int:
    # our own errors first: a typo in the command line must not wait for PennyLane's import
    if isinstance(exc, ProgramFileError):
        return EXIT_PROGRAM
    if isinstance(exc, ParameterSyntaxError):
        return EXIT_PARAMETERS
    from qfleet.circuits.programs import ParameterError, ProgramError
    from qfleet.jobs import (
        JobCancelledError,
        JobFailedError,
        JobNotFinishedError,
        ObservableError,
    )

    if isinstance(exc, JobNotFinishedError):
        return EXIT_TIMEOUT
    if isinstance(exc, (ParameterError, ParameterSyntaxError, ObservableError)):
        return EXIT_PARAMETERS
    if isinstance(exc, (ProgramFileError, ProgramError)):
        return EXIT_PROGRAM
    if isinstance(exc, (ExecutorError, JobFailedError, JobCancelledError, TimeoutError,
                        ConnectionError)):
        return EXIT_BACKEND
    return EXIT_OTHER


def run_command(args: argparse.Namespace, console: Console) -> int:
    """``qfleet run``: the exit code (see the module docstring)."""
    try:
        job = _submit(args)
        if args.submit:
            if args.json:
                print(json.dumps({"job_id": job.id, "status": job.status.value}))
            else:
                print(job.id)
            return EXIT_OK
        value = _wait(job, args, console)
        if isinstance(value, list):  # one parameter set: one value
            value = value[0]
        if args.json:
            print(json.dumps(result_document(job, value)))
        else:
            _print_table(job, value, console)
        if args.plot:
            plot_histogram(job, value, args.plot)
            if not args.json:
                console.print(f"histogram written to {args.plot}", markup=False)
        return EXIT_OK
    except (QFleetError, TimeoutError, ConnectionError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _timeout(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def add_arguments(run: argparse.ArgumentParser) -> None:
    """The ``run`` subcommand's arguments."""
    run.formatter_class = argparse.RawDescriptionHelpFormatter
    run.description = "Run an OpenQASM 2/3 file or file.py:qnode_name as a durable job."
    run.epilog = (
        "exit codes: 0 ok, 2 bad command line, 3 unreadable program, 4 bad parameters or "
        "observable, 5 backend failed or unreachable (or job failed/cancelled), 6 timed out, "
        "7 other qfleet error"
    )
    run.add_argument("program", help="an OpenQASM 2/3 file, or file.py:qnode_name")
    run.add_argument("--backend", default=None,
                     help="an executor class configured in the config file (default: the "
                          "configured fleet, [qfleet] executors)")
    run.add_argument("--shots", type=_positive_int, default=None, help="shots (default 2048)")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a program parameter, e.g. --param t=0.5 (repeatable)")
    run.add_argument("--estimate", default=None, metavar="PAULI_SUM",
                     help='estimate an observable instead of sampling, e.g. "Z0 + 2*Z1"')
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--plot", default=None, metavar="OUT.png", help="write a histogram")
    run.add_argument("--submit", action="store_true",
                     help="print the job id at once and exit (the job goes on)")
    run.add_argument("--name", default=None, help="the job's name (default: PROGRAM)")
    run.add_argument("--seed", type=int, default=None, help="simulator seed (shot noise)")
    run.add_argument("--timeout", type=_timeout, default=None,
                     help="seconds to wait for the result (default: until it finishes)")
    run.set_defaults(run=run_command)
