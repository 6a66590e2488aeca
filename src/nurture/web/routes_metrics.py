"""``/metrics``: the Prometheus text format, read from the database at each scrape
(:mod:`nurture.feedback.metrics`).

Its door: a bearer token (``NURTURE_METRICS_TOKEN``, for a scraper that should not hold the
admin password) or the admin's HTTP basic credentials. With neither set it is off and answers 404,
as /admin does. Both comparisons run in constant time, and wrong credentials are throttled per
client address like the dashboard's.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nurture.feedback.metrics import registry
from nurture.runtime import Runtime
from nurture.web.admin_auth import Failures, basic_credentials

USER = "admin"
_FAILURES_PER_MINUTE = 10
_NO_STORE = {"Cache-Control": "no-store"}


def metrics_router(runtime: Runtime, *, clock: Callable[[], datetime]) -> APIRouter:
    settings = runtime.settings
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    password = settings.admin_password.get_secret_value() if settings.admin_password else ""
    own_registry = registry(runtime.sessions, clock)
    failures = Failures(runtime.sessions, _FAILURES_PER_MINUTE, 60.0)  # the admin login's own throttle, shared by every web process
    router = APIRouter(include_in_schema=False)
    challenges = ", ".join((['Bearer realm="nurture metrics"'] if token else [])
                           + (['Basic realm="nurture admin", charset="UTF-8"'] if password else []))

    def allowed(header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() == "bearer" and token:
            return hmac.compare_digest(value.strip().encode(), token.encode())
        given = basic_credentials(header)
        if given is None or not password:
            return False
        # Both comparisons always run, so timing says nothing about which part was wrong.
        user_ok = hmac.compare_digest(given[0].encode(), USER.encode())
        password_ok = hmac.compare_digest(given[1].encode(), password.encode())
        return bool(user_ok & password_ok)

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        """Prometheus text format. A plain function: the queries run in the thread pool, off the loop."""
        if not token and not password:
            return PlainTextResponse("/metrics is off: set NURTURE_METRICS_TOKEN (or NURTURE_ADMIN_PASSWORD)\n",
                                     status_code=404)
        header = request.headers.get("authorization")
        client = request.client.host if request.client else "?"
        if header:
            # Checked before the credentials, or guessing would go on at full speed.
            wait = failures.wait(client)
            if wait:
                return PlainTextResponse("too many wrong credentials; try again later\n", status_code=429,
                                         headers={"Retry-After": str(int(wait) + 1)})
            if allowed(header):
                return Response(generate_latest(own_registry), media_type=CONTENT_TYPE_LATEST, headers=_NO_STORE)
            failures.add(client)
        return PlainTextResponse("credentials required\n", status_code=401, headers={"WWW-Authenticate": challenges})

    return router
