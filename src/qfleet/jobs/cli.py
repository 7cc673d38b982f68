"""``qfleet jobs list|show|cancel|rename|result|restore``: the job store from the command line.

Everything shown that came from user data (job names, programs, errors, parameters) goes
through :func:`qfleet.runtime.terminal.markup_safe`: control characters are shown, not sent
to the terminal, and rich markup in them is printed literally.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from qfleet.errors import QFleetError
from qfleet.runtime.terminal import markup_safe


class PlotUnavailableError(QFleetError, RuntimeError):
    """``--plot`` needs matplotlib, which is not installed."""


class PlotPathError(QFleetError, ValueError):
    """``--plot`` names a file that cannot be written (missing folder, no permission)."""


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _plot_path(text: str) -> str:
    from pathlib import Path

    folder = Path(text).expanduser().resolve().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"the folder {markup_safe(folder)} does not exist; create it or plot elsewhere"
        )
    return text


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _list(args: argparse.Namespace, console: Console) -> int:
    from qfleet.jobs import get_execution_jobs

    jobs = get_execution_jobs(offset=args.offset, limit=args.limit)
    table = Table(title=f"jobs {args.offset + 1}-{args.offset + len(jobs)} (newest first)")
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("name", "kind", "status", "created", "backend", "shots"):
        table.add_column(column)
    for job in jobs:
        table.add_row(*(markup_safe(cell) for cell in (
            job.id, job.name or "", job.kind + (" (batch)" if job.is_batch else ""),
            job.status.value, _when(job.start_time), job.backend or "",
            "exact" if job.num_shots is None else str(job.num_shots),
        )))
    if not console.is_terminal:  # piped (scripts, grep): don't squeeze it into 80 columns
        console.width = max(console.width, 150)
    console.print(table)
    return 0


def _show(args: argparse.Namespace, console: Console) -> int:
    from qfleet.jobs import ExecutionJob

    job = ExecutionJob.from_id(args.id)
    row = job._refresh()
    started = datetime.fromtimestamp(row["started_at"]) if row["started_at"] else None
    table = Table(show_header=False, title=f"job {markup_safe(job.id)}")
    table.add_column("field", style="bold")
    table.add_column("value")
    fields: list[tuple[str, Any]] = [
        ("name", job.name or ""),
        ("kind", job.kind + (" (batch)" if job.is_batch else "")),
        ("status", job.status.value),
        ("created", _when(job.start_time)),
        ("started", _when(started)),
        ("ended", _when(job.end_time)),
        ("backend", job.backend or ""),
        ("shots", "exact" if job.num_shots is None else job.num_shots),
        ("backend job ids", ", ".join(job.backend_job_ids) or "-"),
        ("attempts", job.attempts),
        ("owner", f"{row['owner_host']} pid {row['owner_pid']}" if row["owner_pid"] else "-"),
        ("parameters", json.dumps(job.parameters)),
        ("preferences", row["preferences"]),
    ]
    if row["observable"]:
        fields.append(("observable", row["observable"]))
    if job.error:
        fields.append(("error", job.error))
    fields.append((f"program ({row['program_kind']})", row["program"] or ""))
    for key, value in fields:
        table.add_row(markup_safe(key), markup_safe(value, multiline=key.startswith("program")))
    console.print(table)
    return 0


def _cancel(args: argparse.Namespace, console: Console) -> int:
    from qfleet.jobs import ExecutionJob

    job = ExecutionJob.from_id(args.id)
    job.cancel()
    console.print(f"job {markup_safe(job.id)}: {job.status.value}")
    return 0


def _rename(args: argparse.Namespace, console: Console) -> int:
    from qfleet.jobs import ExecutionJob

    job = ExecutionJob.from_id(args.id)
    try:
        job.rename(args.name)
    except ValueError as exc:
        console.print(f"[red]error:[/] {markup_safe(exc)}")
        return 2
    console.print(f"job {markup_safe(job.id)}: renamed to {markup_safe(repr(job.name))}")
    return 0


def _other_result(job: Any, value: Any, args: argparse.Namespace, console: Console) -> int:
    table = Table(title=f"job {markup_safe(job.id)}: {job.kind}")
    if job.kind == "minimize":
        for column in ("evaluation", "cost", "parameters"):
            table.add_column(column, justify="right")
        for i, (cost, params) in enumerate(value):
            table.add_row(str(i), f"{cost:.10g}", markup_safe(json.dumps(params)))
    else:
        for column in ("bitstring", "probability"):
            table.add_column(column, justify="right")
        for probabilities in value if isinstance(value, list) else [value]:
            for bitstring, p in probabilities.items():
                table.add_row(markup_safe(bitstring), f"{p:.6g}")
    console.print(table)
    if args.plot:
        console.print(f"--plot draws sample and estimate jobs, not {job.kind} jobs")
        return 2
    return 0


def _result(args: argparse.Namespace, console: Console) -> int:
    from qfleet.jobs import ExecutionJob

    job = ExecutionJob.from_id(args.id)
    saved = job.result(timeout_sec=args.timeout)[0]
    if job.kind in ("minimize", "probs"):  # a minimization's iterations; exact probabilities
        return _other_result(job, saved.value, args, console)
    values = saved.value if isinstance(saved.value, list) else [saved.value]
    if job.kind == "sample":
        for value in values:
            table = Table(title=markup_safe(
                f"job {job.id}: {json.dumps(value.parameters)} ({value.num_shots} shots)"
            ))
            for column in ("bitstring", "counts", "probability"):
                table.add_column(column, justify="right")
            for bitstring, count in value.counts.items():
                table.add_row(markup_safe(bitstring), str(count), f"{count / value.num_shots:.4f}")
            console.print(table)
    else:
        table = Table(title=f"job {markup_safe(job.id)}: estimate")
        table.add_column("parameters")
        table.add_column("value", justify="right")
        table.add_column("shots", justify="right")
        for value in values:
            table.add_row(markup_safe(json.dumps(value.parameters)), f"{value.value:.10g}",
                          "exact" if value.num_shots is None else str(value.num_shots))
        console.print(table)
    if args.plot:
        _plot(job, values, args.plot)
        console.print(f"plot written to {markup_safe(args.plot)}")
    return 0


def _restore(args: argparse.Namespace, console: Console) -> int:
    from qfleet.jobs.store import JobStore

    store = JobStore.default()
    aside = store.restore_backup()
    store.check()
    console.print(f"restored {markup_safe(store.path)} from {markup_safe(store.backup_path)} "
                  f"({store.count()} jobs); the previous file is at {markup_safe(aside)}")
    return 0


def _plot(job: Any, values: list[Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailableError(
            "--plot needs matplotlib, which is not installed; install it (pip install "
            "matplotlib) or leave out --plot"
        ) from exc
    if job.kind == "sample":
        bitstrings = sorted({b for v in values for b in v.counts})
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(bitstrings) * len(values) + 2), 3.5))
        width = 0.8 / len(values)
        for i, value in enumerate(values):
            xs = [k + i * width for k in range(len(bitstrings))]
            ax.bar(xs, [value.probability(b) for b in bitstrings], width=width,
                   label=json.dumps(value.parameters) if len(values) > 1 else None)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(bitstrings))])
        ax.set_xticklabels(bitstrings, rotation=90 if len(bitstrings) > 16 else 0)
        ax.set_xlabel("bitstring")
        ax.set_ylabel("probability")
        if len(values) > 1:
            ax.legend(fontsize="small")
    else:
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(values) + 2), 3.5))
        ax.bar(range(len(values)), [v.value for v in values])
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([json.dumps(v.parameters) for v in values], rotation=30, ha="right")
        ax.set_ylabel("expectation value")
    ax.set_title(f"job {job.name or job.id}")
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise PlotPathError(f"cannot write the plot to {path!r}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)


def add_arguments(jobs: argparse.ArgumentParser) -> None:
    """The ``jobs`` subcommands, on the ``qfleet jobs`` parser."""
    commands = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = commands.add_parser("list", help="jobs, newest first")
    listing.add_argument("--offset", type=_non_negative_int, default=0)
    listing.add_argument("--limit", type=_non_negative_int, default=50)
    listing.set_defaults(run=_list)
    show = commands.add_parser("show", help="one job's details")
    show.add_argument("id")
    show.set_defaults(run=_show)
    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id")
    cancel.set_defaults(run=_cancel)
    rename = commands.add_parser("rename", help="rename a job")
    rename.add_argument("id")
    rename.add_argument("name")
    rename.set_defaults(run=_rename)
    result = commands.add_parser("result", help="a job's results (waits for them)")
    result.add_argument("id")
    result.add_argument("--timeout", type=_seconds, default=None,
                        help="seconds to wait (0: look once); default: until it finishes")
    result.add_argument("--plot", metavar="OUT.png", type=_plot_path, default=None,
                        help="also write a histogram (needs matplotlib)")
    result.set_defaults(run=_result)
    restore = commands.add_parser(
        "restore", help="put the job store's verified backup in place of a damaged store"
    )
    restore.set_defaults(run=_restore)
