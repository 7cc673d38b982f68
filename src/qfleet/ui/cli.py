"""``qfleet ui [--host 127.0.0.1] [--port 8300] [--token TOKEN]``."""

from __future__ import annotations

import argparse

from rich.console import Console

from qfleet.errors import QFleetError


class UIUnavailableError(QFleetError, ImportError):
    """The dashboard's web libraries are not installed."""


def _ui(args: argparse.Namespace, console: Console) -> int:
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UIUnavailableError(
            f"qfleet ui needs the ui extra ({exc.name} is missing): pip install 'qfleet[ui]'"
        ) from exc
    from qfleet.ui.security import check_bind
    from qfleet.ui.server import configured_token, serve

    token = args.token or configured_token()
    check_bind(args.host, token)  # before printing an address nobody may use
    shown = f"[{args.host}]" if ":" in args.host else args.host
    hint = "  (open it with ?token=<your token>)" if token else ""
    print(f"qfleet ui: http://{shown}:{args.port}/{hint}", flush=True)
    serve(args.host, args.port, token=token, log_level=args.log_level)
    return 0


def add_arguments(ui: argparse.ArgumentParser) -> None:
    """The ``ui`` subcommand's arguments."""
    from qfleet.ui.server import DEFAULT_HOST, DEFAULT_PORT

    ui.add_argument("--host", default=DEFAULT_HOST,
                    help="address to listen on (default 127.0.0.1; any other needs a token)")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT)
    ui.add_argument("--token", default=None,
                    help="access token browsers must give (default: [qfleet] ui_token or "
                         "QFLEET_UI_TOKEN)")
    ui.add_argument("--log-level", default="warning",
                    choices=["critical", "error", "warning", "info", "debug"])
    ui.set_defaults(run=_ui)
