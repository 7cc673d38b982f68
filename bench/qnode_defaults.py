"""qelectron vs the plain QNode as a user writes it: default settings (diff_method="best":
backprop on default.qubit, adjoint on lightning.qubit), interleaved in one run.

Figures (issue 13's targets in brackets): per side the best of ``--rounds`` interleaved
rounds (the medians' ratio beside it):

- forward, 2 wires default.qubit, the seed IQP circuit        [<= 1.10]
- forward, 20 wires lightning.qubit                           [<= 1.02]
- qml.grad, StronglyEntanglingLayers 12 wires (72 params), lightning adjoint [<= 1.25]
- qml.grad, 20 wires lightning adjoint                        (reported)
- 100-step VQE, 8 wires, Adam: qelectron on a two-member local cluster / plain  [<= 1.2]
- jax.jit of a qelectron on LocalExecutor (forward and jax.grad), default.qubit
- for reference, parameter-shift on both sides (the plain QNode set to parameter-shift too)
- gradient values: max |qelectron - plain|                    [<= 1e-10]

The baseline is the QNode as written; it is never slowed down to match.

    .venv/bin/python bench/qnode_defaults.py [--rounds 5] [--quick] [--clock cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import pennylane as qml
from pennylane import numpy as pnp

import qfleet as qf
from qfleet.executors import LocalExecutor

RESULTS: list[tuple[str, float, float]] = []
WORST_GRADIENT_ERROR = [0.0]
#: time.perf_counter (wall) or time.process_time (this process's CPU: steadier on a
#: machine other work loads; lightning's own threads count in it on both sides alike).
CLOCK = [time.perf_counter]


def interleaved(
    label: str, plain: Callable[[], object], electron: Callable[[], object], calls: int,
    rounds: int,
) -> float:
    """Seconds per call of each side, best of ``rounds`` alternating rounds; prints the
    ratio qelectron / plain."""
    plain(), electron()  # warm caches on both sides
    times: dict[str, list[float]] = {"plain": [], "qelectron": []}
    for _ in range(rounds):  # alternate, so drift of the machine's load hits both sides
        for side, fn in (("plain", plain), ("qelectron", electron)):
            clock = CLOCK[0]
            started = clock()
            for _ in range(calls):
                fn()
            times[side].append((clock() - started) / calls)
    # The best round of each side (least disturbed by other work on the machine), and
    # the medians' ratio beside it.
    a, b = min(times["plain"]), min(times["qelectron"])
    median = statistics.median(times["qelectron"]) / statistics.median(times["plain"])
    print(
        f"{label:58s} plain {_ms(a)}   qelectron {_ms(b)}   ratio {b / a:5.2f} "
        f"(medians {median:5.2f})", flush=True,
    )
    RESULTS.append((label, a, b))
    return b / a


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def check_gradients(got, want) -> None:
    error = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    WORST_GRADIENT_ERROR[0] = max(WORST_GRADIENT_ERROR[0], error)


def qnodes(func, device: str, wires: int, executors=None, **kwargs):
    plain = qml.QNode(func, qml.device(device, wires=wires), **kwargs)
    electron = qf.qelectron(
        qml.QNode(func, qml.device(device, wires=wires), **kwargs),
        executors=executors if executors is not None else LocalExecutor(device=device),
    )
    return plain, electron


def iqp(x):
    qml.IQPEmbedding(features=x, wires=[0, 1])
    qml.Hadamard(wires=1)
    return qml.probs(wires=range(2))


def layers_circuit(wires: int):
    def circuit(params):
        qml.StronglyEntanglingLayers(params, wires=range(wires))
        return qml.expval(qml.Z(0))

    return circuit


def forward_iqp(rounds: int, diff_method: str = "best") -> None:
    plain, electron = qnodes(iqp, "default.qubit", 2, diff_method=diff_method)
    x = pnp.array([0.6, -1.57])
    interleaved(
        f"forward  2w default.qubit IQP ({diff_method})",
        lambda: plain(x), lambda: electron(x), 300, rounds,
    )


def forward_layers(device: str, wires: int, rounds: int, calls: int, diff_method="best") -> None:
    plain, electron = qnodes(layers_circuit(wires), device, wires, diff_method=diff_method)
    params = pnp.random.default_rng(0).random(
        qml.StronglyEntanglingLayers.shape(2, wires), requires_grad=False
    )
    interleaved(
        f"forward {wires:2d}w {device} layers ({diff_method})",
        lambda: plain(params), lambda: electron(params), calls, rounds,
    )


def gradient(device: str, wires: int, rounds: int, calls: int, diff_method="best") -> None:
    plain, electron = qnodes(layers_circuit(wires), device, wires, diff_method=diff_method)
    params = pnp.random.default_rng(0).random(
        qml.StronglyEntanglingLayers.shape(2, wires), requires_grad=True
    )
    check_gradients(qml.grad(electron)(params), qml.grad(plain)(params))
    interleaved(
        f"qml.grad {wires:2d}w {device} {params.size} params ({diff_method})",
        lambda: qml.grad(plain)(params), lambda: qml.grad(electron)(params), calls, rounds,
    )


def vqe(steps: int, rounds: int, device: str = "lightning.qubit") -> None:
    wires = 8
    hamiltonian = qml.Hamiltonian(
        [1.0] * (wires - 1) + [0.5] * wires,
        [qml.Z(i) @ qml.Z(i + 1) for i in range(wires - 1)] + [qml.X(i) for i in range(wires)],
    )

    def circuit(params):
        qml.StronglyEntanglingLayers(params, wires=range(wires))
        return qml.expval(hamiltonian)

    cluster = qf.QuantumCluster(
        executors=[LocalExecutor(device=device, name="a"), LocalExecutor(device=device, name="b")]
    )
    plain, electron = qnodes(circuit, device, wires, executors=cluster)
    start = pnp.random.default_rng(1).random(
        qml.StronglyEntanglingLayers.shape(3, wires), requires_grad=True
    )

    def train(qnode):
        opt, params = qml.AdamOptimizer(0.05), start
        for _ in range(steps):
            params, energy = opt.step_and_cost(qnode, params)
        return params, energy

    (p1, e1), (p2, e2) = train(plain), train(electron)
    check_gradients(p2, p1)  # the same trajectory: every step's gradient equal
    interleaved(
        f"VQE {steps} Adam steps 8w {device}, 2-member cluster",
        lambda: train(plain), lambda: train(electron), 1, rounds,
    )
    print(f"    final energy plain {e1:.10f}, qelectron {e2:.10f}; "
          f"members used {sorted(h.executor for h in cluster.health().values() if h.done)}")


def jax_jit(rounds: int, device: str = "default.qubit", wires: int = 4) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    plain, electron = qnodes(layers_circuit(wires), device, wires, interface="jax")
    params = jax.numpy.array(
        np.random.default_rng(0).random(qml.StronglyEntanglingLayers.shape(2, wires))
    )
    f_plain, f_electron = jax.jit(plain), jax.jit(electron)
    g_plain, g_electron = jax.jit(jax.grad(plain)), jax.jit(jax.grad(electron))
    check_gradients(g_electron(params), g_plain(params))
    interleaved(
        f"jax.jit forward {wires}w {device}",
        lambda: f_plain(params).block_until_ready(),
        lambda: f_electron(params).block_until_ready(), 200, rounds,
    )
    interleaved(
        f"jax.jit(jax.grad) {wires}w {device}",
        lambda: g_plain(params).block_until_ready(),
        lambda: g_electron(params).block_until_ready(), 200, rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the 20-wire and VQE rows")
    parser.add_argument("--vqe-steps", type=int, default=100)
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="cpu: this process's CPU time (for a machine other work loads)",
    )
    args = parser.parse_args()
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    warnings.simplefilter("ignore")
    r = args.rounds
    print(f"pennylane {qml.version()}, qfleet {qf.__version__}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}, {args.clock} clock", flush=True)
    print("-- the QNode as written (diff_method='best')")
    forward_iqp(r)
    forward_layers("default.qubit", 2, r, 200)
    if not args.quick:
        forward_layers("lightning.qubit", 20, r, 3)
    gradient("lightning.qubit", 12, r, 10)
    if not args.quick:
        gradient("lightning.qubit", 20, r, 1)
    gradient("default.qubit", 4, r, 20)
    try:
        jax_jit(r)
    except Exception as exc:  # a jax release this PennyLane does not support
        print(f"jax.jit rows skipped: {type(exc).__name__}: {exc}")
    if not args.quick:
        vqe(args.vqe_steps, max(3, r // 2))
    print("-- for reference: parameter-shift on both sides")
    forward_iqp(r, "parameter-shift")
    gradient("lightning.qubit", 12, r, 1, "parameter-shift")
    gradient("default.qubit", 4, r, 5, "parameter-shift")
    print(f"-- gradient values: max |qelectron - plain| = {WORST_GRADIENT_ERROR[0]:.1e} "
          f"(target <= 1e-10)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
