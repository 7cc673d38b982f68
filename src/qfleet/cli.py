"""The ``qfleet`` command: ``qfleet demo``, ``qfleet config show``, ``qfleet config path``,
``qfleet serve-2300``, ``qfleet jobs ...``, ``qfleet run``, ``qfleet ui``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from qfleet.errors import QFleetError


def _demo(args: argparse.Namespace, console: Console) -> int:
    import pennylane as qml
    from pennylane import numpy as pnp

    import qfleet as qf

    cluster = [
        qf.executor.LocalExecutor(name="default.qubit", seed=args.seed),
        qf.executor.LocalExecutor(name="lightning.qubit", device="lightning.qubit", seed=args.seed),
    ]
    console.print("[bold]qfleet demo[/]: one QNode on a cluster of two local simulators\n")

    @qf.qelectron(executors=cluster)  # selector="cyclic"
    @qml.qnode(qml.device("default.qubit", wires=2), shots=1024)
    def circuit(x):
        qml.IQPEmbedding(features=x, wires=[0, 1])
        qml.Hadamard(wires=1)
        return qml.probs(wires=range(2))

    x = [0.6, -1.57]
    exact = qml.set_shots(qml.QNode(circuit.func, qml.device("default.qubit", wires=2)), None)(x)
    table = Table(title="probs(IQPEmbedding([0.6, -1.57])), 1024 shots")
    table.add_column("call")
    table.add_column("executor")
    for i in range(4):
        table.add_column(f"p({i:02b})", justify="right")
    for call in range(3):
        probs = circuit(x)
        metadata = circuit.last_metadata
        assert metadata is not None  # set by the call above
        table.add_row(str(call + 1), metadata.executor, *(f"{p:.3f}" for p in probs))
    table.add_row("exact", "default.qubit, shots=None", *(f"{p:.3f}" for p in exact))
    console.print(table)

    # run_later: 8 concurrent calls on executors that add 0.25 s of latency per batch
    latency = 0.25
    slow = [
        qf.executor.LocalExecutor(name="remote-like-1", latency=latency),
        qf.executor.LocalExecutor(name="remote-like-2", latency=latency),
    ]
    slow_circuit = qf.qelectron(circuit, executors=slow)
    started = time.perf_counter()
    futures = [slow_circuit.run_later(x) for _ in range(8)]
    results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    console.print(
        f"\nrun_later: 8 calls with {latency:.2f} s latency each finished in "
        f"[bold]{elapsed:.2f} s[/] ({elapsed / latency:.1f} x latency; serial would be 8 x); "
        f"executors used: {sorted({f.metadata.executor for f in futures})}; "
        f"max |p - exact| = {max(abs(r - exact).max() for r in results):.3f}"
    )

    @qf.qelectron(executors=cluster)
    @qml.qnode(qml.device("default.qubit", wires=2))
    def energy(params):
        qml.RX(params[0], wires=0)
        qml.RY(params[1], wires=1)
        qml.CNOT(wires=[0, 1])
        return qml.expval(qml.PauliZ(0) @ qml.PauliZ(1))

    params = pnp.array([0.3, 0.4], requires_grad=True)
    grad = qml.grad(energy)(params)
    metadata = energy.last_metadata
    assert metadata is not None  # set by the gradient's batch
    reference = qml.grad(qml.QNode(energy.func, qml.device("default.qubit", wires=2)))(params)
    console.print(
        f"\ngradient (parameter-shift, {metadata.num_circuits} tapes in one batch "
        f"on {metadata.executor}): {grad}  default.qubit backprop: {reference}"
    )

    # One lightning executor computes the derivative itself: adjoint, as the plain QNode does.
    lightning = qf.executor.LocalExecutor(name="lightning", device="lightning.qubit")
    native = qf.qelectron(
        qml.QNode(energy.func, qml.device("lightning.qubit", wires=2)), executors=lightning
    )
    grad = qml.grad(native)(params)
    metadata = native.last_metadata
    assert metadata is not None
    method = qml.workflow.get_best_diff_method(native)(params)
    console.print(
        f"gradient (diff_method 'best' is {method!r}, {metadata.num_circuits} tape in one batch "
        f"on {metadata.executor}): {grad}"
    )
    return 0


def _config_show(args: argparse.Namespace, console: Console) -> int:
    from qfleet.config import load_config, masked

    console.print_json(json.dumps(masked(load_config(args.file)), default=str))
    return 0


def _config_path(args: argparse.Namespace, console: Console) -> int:
    from qfleet.config import config_path
    from qfleet.runtime.terminal import printable

    path = config_path()
    absent = "" if path.is_file() else "  (not present: built-in defaults apply)"
    print(f"{printable(path)}{absent}")
    return 0


def _serve_2300(args: argparse.Namespace, console: Console) -> int:
    from qfleet.protocols.p2300.emulator import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qfleet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a QNode on a cluster of local simulators")
    demo.add_argument("--seed", type=int, default=None, help="simulator seed (shot noise)")
    demo.set_defaults(run=_demo)
    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="the effective config, secrets masked")
    show.add_argument("--file", default=None, help="a config file instead of the default")
    show.set_defaults(run=_config_show)
    config_commands.add_parser("path", help="where the config file is read from").set_defaults(
        run=_config_path
    )
    from qfleet.protocols.p2300.emulator import add_arguments as add_serve_2300_arguments

    serve_2300 = commands.add_parser(
        "serve-2300", help="run a local QuTech 2300 emulator (ZeroMQ; libqasm + qxelarator)"
    )
    add_serve_2300_arguments(serve_2300)
    serve_2300.set_defaults(run=_serve_2300)
    from qfleet.jobs.cli import add_arguments as add_jobs_arguments

    add_jobs_arguments(commands.add_parser("jobs", help="list, show, cancel, rename jobs; results"))
    from qfleet.run_cli import add_arguments as add_run_arguments

    add_run_arguments(commands.add_parser("run", help="run an OpenQASM file or file.py:qnode"))
    from qfleet.ui.cli import add_arguments as add_ui_arguments

    add_ui_arguments(commands.add_parser("ui", help="the jobs and fleet dashboard (web)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return args.run(args, console)
    except QFleetError as exc:
        from qfleet.runtime.terminal import markup_safe

        console.print(f"[red]error:[/] {markup_safe(exc)}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
