"""The dashboard's ASGI application (Starlette): routes and rendering."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from qfleet.ui import views
from qfleet.ui.security import CSRF_FIELD, Guard, csrf_ok, csrf_token, remember_csrf

HERE = Path(__file__).parent
PER_PAGE = 25
STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
#: Seconds between refreshes of a page that shows running jobs.
LIVE_SECONDS = 2


def _environment() -> jinja2.Environment:
    # autoescape=True for every template: each user string (job names, programs, errors)
    # is escaped unless a template says otherwise (none does).
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["percent"] = lambda p: f"{100 * p:.1f}%"
    return env


def configured_clusters() -> list[Any]:
    """The fleet of the config file (``[qfleet] executors``) as one cluster."""
    from qfleet.cluster import QuantumCluster
    from qfleet.config import executor_classes, load_config

    config = load_config()
    classes = executor_classes()
    members = [classes[name]() for name in config.qfleet.executors if name in classes]
    if not members:
        return []
    return [QuantumCluster(executors=members, selector=config.qfleet.selector,
                           name="configured fleet")]


def create_app(clusters: list[Any] | None = None, *, token: str | None = None,
               loopback_only: bool = True) -> Starlette:
    """The dashboard app. ``clusters``: the clusters (or executors) the fleet page shows
    (default: the configured fleet); ``token``: required from every browser when given;
    ``loopback_only``: refuse Host headers other than loopback ones (DNS rebinding).

    Example:
        >>> from starlette.testclient import TestClient
        >>> client = TestClient(create_app(clusters=[]), base_url="http://127.0.0.1")
        >>> client.get("/").status_code
        200
    """
    env = _environment()
    fleet: list[Any] | None = None if clusters is None else _as_clusters(clusters)

    def render(request: Request, template: str, status_code: int = 200, **context: Any
               ) -> Response:
        context.setdefault("live", False)
        context.update(request=request, csrf=csrf_token(request), csrf_field=CSRF_FIELD,
                       live_seconds=LIVE_SECONDS)
        html = env.get_template(template).render(**context)
        return remember_csrf(request, HTMLResponse(html, status_code=status_code))

    def jobs_page(request: Request) -> Response:
        q = request.query_params
        filters = views.Filters(
            status=q.get("status", "") if q.get("status", "") in STATUSES else "",
            backend=q.get("backend", "")[:200], name=q.get("name", "")[:200],
            id=q.get("id", "")[:64],
        )
        page = _page(q.get("page"))
        jobs, more = views.list_jobs(filters, page, PER_PAGE)
        if filters.id and len(jobs) == 1 and jobs[0].id == filters.id.strip():
            return RedirectResponse(f"/jobs/{jobs[0].id}", status_code=303)
        rows = [views.job_row(job) for job in jobs]
        base = {k: v for k, v in vars(filters).items() if v}
        return render(
            request, "jobs.html", rows=rows, filters=filters, statuses=STATUSES, page=page,
            prev_url=f"/?{urlencode({**base, 'page': page - 1})}" if page > 0 else None,
            next_url=f"/?{urlencode({**base, 'page': page + 1})}" if more else None,
            live=any(r["active"] for r in rows),
        )

    def job_page(request: Request) -> Response:
        from qfleet.jobs import ExecutionJob, JobNotFoundError

        try:
            job = ExecutionJob.from_id(request.path_params["job_id"])
        except JobNotFoundError:
            return render(request, "missing.html", status_code=404,
                          job_id=request.path_params["job_id"])
        with _import_lock:  # the circuit drawing imports PennyLane
            _import_backends()
        detail = views.job_detail(job)
        message = request.query_params.get("message", "")[:300]
        return render(request, "job.html", job=detail, live=detail["active"], message=message)

    async def job_action(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        form = await request.form()
        if not csrf_ok(request, _text(form.get(CSRF_FIELD))):
            return Response("CSRF check failed: reload the page and try again", status_code=403,
                            media_type="text/plain")
        job_id = request.path_params["job_id"]
        action = request.path_params["action"]
        name = _text(form.get("name"))
        message = await run_in_threadpool(_act, job_id, action, name)
        target = f"/jobs/{job_id}" + (f"?{urlencode({'message': message})}" if message else "")
        return RedirectResponse(target, status_code=303)

    def fleet_page(request: Request) -> Response:
        nonlocal fleet
        with _import_lock:
            _import_backends()
            if fleet is None:
                fleet = configured_clusters()
        cards = views.fleet_cards(fleet, _completed_jobs())
        spends = [_spend(c) for c in fleet]
        return render(request, "fleet.html", cards=cards, clusters=fleet, spends=spends,
                      live=True)

    def metrics(request: Request) -> Response:
        import qfleet.telemetry as telemetry

        text = telemetry.metrics_exposition()
        if text is None:
            return Response(
                "metrics are off: set metrics = true in the [qfleet] config section, or "
                "call qfleet.telemetry.enable(metrics=True), and install qfleet[telemetry]\n",
                status_code=404, media_type="text/plain")
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [
        Route("/", jobs_page),
        Route("/jobs/{job_id}", job_page),
        Route("/jobs/{job_id}/{action:str}", job_action, methods=["POST"]),
        Route("/fleet", fleet_page),
        Route("/metrics", metrics),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    guard = Guard(token, loopback_only=loopback_only and not token)
    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])


#: Requests are served from a thread pool; two threads importing PennyLane at once can see
#: it half initialized (a circular-import error), so the pages that need it import it here,
#: one at a time, on first use (the jobs pages don't need it: the server starts fast).
_import_lock = threading.Lock()


def _import_backends() -> None:
    import qfleet.cluster
    import qfleet.executors  # noqa: F401


#: Seconds a cancel may take before the page answers (telling the backend goes on after).
CANCEL_WAIT = 1.0


def _act(job_id: str, action: str, name: str | None) -> str:
    """Cancel or rename a job (worker thread); the message the page shows."""
    from qfleet.jobs import ExecutionJob, JobError

    try:
        job = ExecutionJob.from_id(job_id)
        if action == "cancel":
            # The job store marks the job cancelled at once; telling its backend (through
            # the process that owns it, or by backend job id) can take seconds: the page
            # does not wait for that.
            done = threading.Event()
            failure: list[BaseException] = []

            def cancel() -> None:
                try:
                    with _import_lock:  # it may rebuild the job's executor (imports)
                        job.cancel()
                except BaseException as exc:
                    failure.append(exc)
                finally:
                    done.set()

            threading.Thread(target=cancel, name=f"qfleet-ui-cancel-{job_id[:8]}",
                             daemon=True).start()
            if done.wait(CANCEL_WAIT) and failure:
                raise failure[0]
            return "cancelled"
        if action == "rename":
            job.rename(name or "")
            return "renamed"
        return f"unknown action {action!r}"
    except (JobError, ValueError) as exc:
        return str(exc)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _page(text: str | None) -> int:
    try:
        value = int(text or 0)
    except ValueError:
        return 0
    return min(max(value, 0), 10**6)


def _as_clusters(items: list[Any]) -> list[Any]:
    from qfleet.cluster import QuantumCluster

    return [i if isinstance(i, QuantumCluster) else QuantumCluster(executors=[i]) for i in items]


def _completed_jobs() -> dict[str, int] | None:
    """Completed jobs per executor in the job store; None when the store cannot be read (the
    jobs page says why)."""
    from qfleet.jobs import JobStore
    from qfleet.jobs.store import JobStoreError

    try:
        return JobStore.default().completed_by_executor()
    except JobStoreError:
        return None


def _spend(cluster: Any) -> str:
    """The cluster's spend against its budget, where it keeps one."""
    if not hasattr(cluster, "spend"):
        return ""
    value = cluster.spend() if callable(cluster.spend) else cluster.spend
    return "" if value is None else str(value)


__all__ = ["create_app"]
