"""The dashboard's guards: who may bind where, the access token, CSRF, response headers."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from qfleet.errors import QFleetError

TOKEN_COOKIE = "qfleet_token"
CSRF_COOKIE = "qfleet_csrf"
CSRF_FIELD = "csrf"

#: Content Security Policy: nothing inline runs, nothing loads from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class UnsafeBindError(QFleetError, ValueError):
    """The dashboard would listen beyond this machine without an access token."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback ``host`` without a ``token`` (UnsafeBindError).

    Example:
        >>> check_bind("0.0.0.0", None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        qfleet.ui.security.UnsafeBindError: refusing to listen on 0.0.0.0 without a token: ...
    """
    if not is_loopback(host) and not token:
        raise UnsafeBindError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            f"read and cancel your jobs; give --token (or [qfleet] ui_token in the config, or "
            f"QFLEET_UI_TOKEN), or bind 127.0.0.1"
        )


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two secrets (False when either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Guard:
    """ASGI-level checks for every request: the token (when one is set), the Host header
    (loopback binds: against DNS rebinding), and security headers on every response."""

    def __init__(self, token: str | None, loopback_only: bool):
        self.token = token
        self.loopback_only = loopback_only

    def host_allowed(self, request: Request) -> bool:
        if not self.loopback_only:
            return True
        host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
        return is_loopback(host)

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not self.host_allowed(request):
            return self._headers(PlainTextResponse("unknown Host header", status_code=400))
        if self.token and not request.url.path.startswith("/static/"):
            given = request.query_params.get("token")
            if given is not None and same(given, self.token):
                # Trade the token in the URL for a cookie, and drop it from the address bar.
                rest = {k: v for k, v in request.query_params.multi_items() if k != "token"}
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response: Response = RedirectResponse(target, status_code=303)
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return self._headers(response)
            header = request.headers.get("authorization", "")
            bearer = header[7:] if header.lower().startswith("bearer ") else None
            if not (same(request.cookies.get(TOKEN_COOKIE), self.token)
                    or same(bearer, self.token)):
                return self._headers(PlainTextResponse(
                    "qfleet ui: this dashboard needs its token; open it as /?token=<token> "
                    "(the token given to `qfleet ui --token`)", status_code=401))
        response = await call_next(request)
        return self._headers(response)

    @staticmethod
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def csrf_token(request: Request) -> str:
    """This browser's CSRF token (the cookie's, or a new one ``remember_csrf`` will set)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = request.state.new_csrf = new_secret()
    return token


def remember_csrf(request: Request, response: Response) -> Response:
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict")
    return response


def csrf_ok(request: Request, form_value: str | None) -> bool:
    """A POST is ours: its form carries the cookie's CSRF token, and Origin (when the
    browser sends one) is this server."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        return False
    return same(form_value, request.cookies.get(CSRF_COOKIE))
