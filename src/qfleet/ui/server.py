"""Serving the dashboard with uvicorn: ``qfleet ui`` and :func:`serve` from a program."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8300


def configured_token() -> str | None:
    """The dashboard token of the config file (``[qfleet] ui_token``) or ``QFLEET_UI_TOKEN``."""
    from qfleet.config import config_path, load_config

    env = os.environ.get("QFLEET_UI_TOKEN")
    if env:
        return env
    if not config_path().is_file():  # no file: no token (and no need to load every backend)
        return None
    secret = load_config().qfleet.ui_token
    return secret.get_secret_value() if secret is not None else None


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, token: str | None = None,
          clusters: list[Any] | None = None, log_level: str = "warning") -> None:
    """Serve the dashboard until interrupted. Raises UnsafeBindError for a non-loopback
    ``host`` without a token (before anything listens)."""
    import uvicorn

    from qfleet.ui.app import create_app
    from qfleet.ui.security import check_bind, is_loopback

    token = token or configured_token()
    check_bind(host, token)
    app = create_app(clusters, token=token, loopback_only=is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                server_header=False)


class Background:
    """A dashboard served from a thread of this process (see :func:`serve_in_background`)."""

    def __init__(self, server: Any, thread: threading.Thread, url: str):
        self.server = server
        self.thread = thread
        self.url = url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def serve_in_background(host: str = DEFAULT_HOST, port: int = 0, *, token: str | None = None,
                        clusters: list[Any] | None = None, timeout: float = 30.0) -> Background:
    """Serve the dashboard from a thread of this process, so the fleet page shows this
    program's own clusters (their live in-flight counts, latencies, breakers). ``port=0``:
    any free port (``.url`` says which). Returns once it listens; ``.stop()`` (or leaving a
    ``with`` block) stops it.

    Example:
        >>> import urllib.request
        >>> with serve_in_background(clusters=[]) as ui:
        ...     urllib.request.urlopen(ui.url + "fleet").status
        200
    """
    import uvicorn

    from qfleet.ui.app import create_app
    from qfleet.ui.security import check_bind, is_loopback

    token = token or configured_token()
    check_bind(host, token)
    app = create_app(clusters, token=token, loopback_only=is_loopback(host))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="qfleet-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the dashboard did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return Background(server, thread, f"http://{shown}:{bound[1]}/")
