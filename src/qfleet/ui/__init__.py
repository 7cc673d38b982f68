"""``qfleet ui``: a local web dashboard over the durable job store and the configured fleet.

Server-rendered pages (Starlette + Jinja2, served by uvicorn; no JavaScript build step):
jobs (``/``), a job's detail (``/jobs/<id>``), the fleet (``/fleet``) and Prometheus
metrics (``/metrics``, when enabled). Safe by default: it binds 127.0.0.1, any other address
needs a token, every user string is escaped, state changes are POST forms with a CSRF token,
and no secret is rendered. Needs the ``ui`` extra.
"""

import importlib
from typing import Any

# Loaded on first use, so ``qfleet --help`` works without the ui extra installed.
_WHERE = {
    "create_app": "qfleet.ui.app",
    "UnsafeBindError": "qfleet.ui.security",
    "check_bind": "qfleet.ui.security",
    "serve": "qfleet.ui.server",
    "serve_in_background": "qfleet.ui.server",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'qfleet.ui' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


__all__ = ["UnsafeBindError", "check_bind", "create_app", "serve", "serve_in_background"]
