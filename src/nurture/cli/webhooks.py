"""``nurture webhooks``: the endpoints that hear what happened, their delivery log, a delivery pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Optional, TypeVar

import typer

from nurture.cli.common import Fail, app, console, out, runtime, settings
from nurture.clock import utcnow

webhooks_app = typer.Typer(no_args_is_help=True, help="Webhooks out: tell a CRM or n8n what happened.")
app.add_typer(webhooks_app, name="webhooks")

T = TypeVar("T")
_ID = Annotated[int, typer.Argument(metavar="ID", help="The endpoint's id (`nurture webhooks list`).")]


@contextmanager
def _runtime() -> Iterator:
    rt = runtime(settings())
    try:
        yield rt
    finally:
        rt.close()


def _write(work: Callable[..., T]) -> T:
    """Run ``work(session, now)`` in one transaction; an operator's mistake is one line."""
    from nurture.db import transaction
    from nurture.people.webhook_endpoints import EndpointError
    from nurture.people.webhook_events import UnknownEvent

    with _runtime() as rt:
        try:
            with transaction(rt.sessions) as session:
                return work(session, utcnow())
        except (EndpointError, UnknownEvent) as exc:
            raise Fail(str(exc)) from None


@webhooks_app.command("add")
def add(
    url: Annotated[str, typer.Argument(metavar="URL", help="Where to POST (https; http only in development).")],
    events: Annotated[str, typer.Option(help="Comma-separated: subscribed, confirmed, unsubscribed, bounced, "
                                             "complained, clicked, goal.")] = "",
) -> None:
    """Register an endpoint; prints its signing secret, once."""
    from nurture.people import webhook_endpoints
    from nurture.people.webhook_events import EVENT_KINDS

    production = not settings().is_dev
    endpoint = _write(lambda session, now: webhook_endpoints.add(
        session, url, events or ",".join(EVENT_KINDS), now=now, production=production))
    out.print(f"webhook {endpoint.id}: {endpoint.url}\n  events: {endpoint.events.replace(',', ', ')}\n"
              f"  signing secret (shown once; keep it with the receiver): {endpoint.secret}", highlight=False)


@webhooks_app.command("list")
def list_() -> None:
    """Every endpoint: state, last success, last failure and its reason, delivered and waiting."""
    from rich.table import Table
    from rich.text import Text

    from nurture.people.webhook_endpoints import statuses

    with _runtime() as rt, rt.sessions() as session:
        found = statuses(session)
    if not found:
        out.print("no webhook endpoints yet (`nurture webhooks add URL --events ...`)")
        return
    table = Table("id", "url", "events", "state", "last success (UTC)", "last failure", "delivered", "waiting")
    for e in found:
        failure = f"{e.last_failure_at:%Y-%m-%d %H:%M} {e.last_failure_reason}" if e.last_failure_at else "-"
        table.add_row(str(e.id), Text(e.url), ", ".join(e.events), e.state + (" (resume to send)" if e.paused_at else ""),
                      _when(e.last_success_at), Text(failure), str(e.delivered), str(e.pending))
    out.print(table)


@webhooks_app.command("remove")
def remove(endpoint_id: _ID) -> None:
    """Remove an endpoint, with what it has not yet received and its log."""
    from nurture.people.webhook_endpoints import remove as remove_endpoint

    url = _write(lambda session, _now: remove_endpoint(session, endpoint_id))
    out.print(f"removed webhook {endpoint_id}: {url}", highlight=False)


@webhooks_app.command("resume")
def resume(endpoint_id: _ID) -> None:
    """Unpause an endpoint; what waited for it is sent at the next delivery pass."""
    from nurture.people.webhook_endpoints import resume as resume_endpoint

    waiting = _write(lambda session, now: resume_endpoint(session, endpoint_id, now=now))
    out.print(f"webhook {endpoint_id} resumed: {waiting} waiting deliveries are due now "
              "(the scheduler sends them within a minute, or `nurture webhooks deliver`)", highlight=False)


@webhooks_app.command("secret")
def secret(
    endpoint_id: _ID,
    rotate: Annotated[bool, typer.Option("--rotate", help="Make a new secret; the old one stops at once.")] = False,
) -> None:
    """Rotate an endpoint's signing secret (it is never shown again otherwise)."""
    from nurture.people.webhook_endpoints import rotate_secret

    if not rotate:
        raise Fail("the signing secret is shown only when made: `nurture webhooks secret ID --rotate` makes a new one")
    value = _write(lambda session, _now: rotate_secret(session, endpoint_id))
    out.print(f"webhook {endpoint_id}: new signing secret (shown once): {value}", highlight=False)


@webhooks_app.command("log")
def log(
    endpoint_id: Annotated[Optional[int], typer.Argument(metavar="[ID]", help="Only this endpoint.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many attempts, newest first.")] = 20,
) -> None:
    """The delivery log: every POST with its HTTP status and reason, newest first."""
    from rich.table import Table
    from rich.text import Text

    from nurture.people.webhook_endpoints import recent_attempts

    with _runtime() as rt, rt.sessions() as session:
        attempts = recent_attempts(session, endpoint_id=endpoint_id, limit=limit)
    if not attempts:
        out.print("no webhook deliveries yet" + (f" for endpoint {endpoint_id}" if endpoint_id is not None else ""))
        return
    table = Table("when (UTC)", "endpoint", "event", "kind", "status", "result")
    for a in attempts:
        table.add_row(f"{a.at:%Y-%m-%d %H:%M:%S}", str(a.endpoint_id), a.event_id, a.kind,
                      str(a.status) if a.status is not None else "-", Text(("delivered" if a.ok else "failed: ")
                                                                          + ("" if a.ok else a.reason)))
    out.print(table)


@webhooks_app.command("deliver")
def deliver() -> None:
    """One delivery pass now: post every due webhook (the scheduler does this every minute)."""
    with _runtime() as rt:
        report = rt.webhook_deliverer().run()
    out.print(report.line(), highlight=False)
    for url, reason in report.reasons.items():
        console.print(f"  {url}: {reason}", highlight=False)


def _when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"
