"""Commands for what is sent: checking and previewing templates, the studio, newsletter broadcasts."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated, Optional

import typer

from nurture.cli.common import Fail, app, broken_templates, console, out, parse_now, runtime, settings
from nurture.clock import utcnow

templates_app = typer.Typer(no_args_is_help=True, help="Check and preview the email templates marketing edits.")
app.add_typer(templates_app, name="templates")
broadcast_app = typer.Typer(no_args_is_help=True, help="Newsletter issues sent once to an audience.")
app.add_typer(broadcast_app, name="broadcast")


@templates_app.command("validate")
def templates_validate(
    strict: Annotated[bool, typer.Option("--strict", help="Wording warnings (health words in subjects, "
                                         "counts, claims) are errors too; `make test` uses this.")] = False,
) -> None:
    """Check every email template; prints file:line messages and exits 1 on any error."""
    from zoneinfo import ZoneInfo

    from nurture.content.template_checks import check_templates

    s = settings()
    s.require_templates()
    today = utcnow().astimezone(ZoneInfo(s.timezone)).date()  # the clinic's date: a date in the text may have passed
    problems = check_templates(s.templates_dir, base_url=s.base_url, dev=s.is_dev, clinic=s.clinic, strict=strict,
                               today=today)
    for problem in problems:
        colour = "red" if problem.severity == "error" else "yellow"
        console.print(f"[{colour}]{problem.severity}[/] ", end="")
        console.print(str(problem), markup=False, highlight=False)
    errors = sum(p.severity == "error" for p in problems)
    if errors:
        raise Fail(f"{errors} problem(s) in {s.templates_dir}: fix them before anyone gets an email")
    console.print(f"templates OK: {s.templates_dir}" + (f" ({len(problems)} warning(s))" if problems else ""))

@templates_app.command("preview")
def templates_preview(
    key: Annotated[str, typer.Argument(help="The email's key (front matter), e.g. welcome-history, or 'confirm'.")],
    format: Annotated[str, typer.Option("--format", help="html, text or eml")] = "html",
    to: Annotated[Optional[str], typer.Option(help="Send a test copy to this address instead of printing.")] = None,
) -> None:
    """Print an email rendered with sample data, or send a test copy to one address."""
    from nurture.content.rendering import RenderError
    from nurture.content.sequences import find_email
    from nurture.people.validation import InvalidInput, normalise_email
    from nurture.sending.compose import TEST_SUBJECT_MARKER, compose, preview_draft, preview_stream, render

    if format not in ("html", "text", "eml"):
        raise Fail("--format must be html, text or eml")
    s = settings()
    rt = runtime(s, database=False)
    try:
        step = find_email(s.templates_dir, key)
        if step is None:
            raise Fail(f"no email with the key {key!r} in {s.templates_dir}{_did_you_mean(s.templates_dir, key)} "
                       "(`nurture studio` lists them all)")
        now = utcnow()
        draft = preview_draft(step.template, to="test@example.com", sample=rt.renderer.sample_recipient(),
                              origin="preview", label=step.key, now=now, from_header=s.mail_from)
        try:
            rendered = render(draft, rt.renderer)
        except RenderError as exc:
            raise Fail(str(exc)) from None
        if to is not None:  # a test copy: to that mailbox, its subject marked
            try:
                draft = replace(draft, to=normalise_email(to), subject_prefix=TEST_SUBJECT_MARKER)
            except InvalidInput as exc:
                raise Fail(f"--to: {exc.message}") from None
        data = compose(draft, renderer=rt.renderer, stream=preview_stream(s.mail_from), now=now, rendered=rendered)
        if to is None:
            body = {"html": rendered.html, "text": rendered.text, "eml": data.decode("ascii", "replace")}[format]
            sys.stdout.write(body if body.endswith("\n") else body + "\n")
            return
        from email.utils import parseaddr

        from nurture.sending.transports import NoReply, Unreachable

        try:
            reply = rt.transport.send(parseaddr(s.mail_from)[1], draft.to, data)
        except (Unreachable, NoReply) as exc:
            raise Fail(f"test copy not sent: {exc}") from None
        if not 200 <= reply.code < 300:
            raise Fail(f"test copy refused by the server: {reply}")
        console.print(f"test copy of {step.key} sent to {draft.to}: {reply}", highlight=False)
    finally:
        rt.close()

@templates_app.command("impact")
def templates_impact(
    now: Annotated[Optional[str], typer.Option(help="As of this instant (ISO-8601 or \"+2 days\").")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What the templates on disk will change for people already in the sequence, against the
    versions last sent: per step, who gets the new version and when. Reads, never writes."""
    import json
    from zoneinfo import ZoneInfo

    from nurture.content.sequences import TemplateFormatError
    from nurture.feedback.impact import preview_impact
    from nurture.feedback.impact_words import headline, sentence
    from nurture.sending.journey import Planner

    s = settings()
    instant = parse_now(now, zone=s.timezone)
    rt = runtime(s)
    try:
        with rt.sessions() as session:
            impact = preview_impact(session, renderer=rt.renderer, planner=Planner.from_settings(s), now=instant)
    except TemplateFormatError as exc:
        raise Fail(f"the sequence cannot be read: {exc}") from None
    finally:
        rt.close()
    zone = ZoneInfo(s.timezone)
    if as_json:
        steps = [{**{k: v for k, v in vars(step).items() if k not in ("first", "last")},
                  "parts": list(step.parts),
                  "first": step.first.isoformat() if step.first else None,
                  "last": step.last.isoformat() if step.last else None,
                  "sentence": sentence(step, impact, zone)} for step in impact.steps]
        sys.stdout.write(json.dumps({"sequence": impact.sequence, "now": instant.isoformat(),
                                     "headline": headline(impact), "steps": steps}, indent=2) + "\n")
        return
    out.print(headline(impact), highlight=False, markup=False)
    for step in impact.steps:
        out.print("- " + sentence(step, impact, zone), highlight=False, markup=False)

def _did_you_mean(templates_dir, key: str) -> str:
    """`: did you mean welcome-history?` for `welcome`: a key that starts the same, or a close one."""
    import difflib

    from nurture.content.sequences import TemplateFormatError, load_newsletters, load_sequences

    try:
        keys = [st.key for seq in load_sequences(templates_dir).values() for st in seq.steps]
        keys += list(load_newsletters(templates_dir))
    except (TemplateFormatError, OSError):
        return ""
    close = [k for k in keys if k.startswith(key) or key in k] or difflib.get_close_matches(key, keys, n=3)
    return f": did you mean {' or '.join(close[:3])}?" if close else ""

@app.command()
def studio(
    host: Annotated[Optional[str], typer.Option(
        "--host", metavar="ADDRESS", show_default=False,
        help="127.0.0.1 (the default), localhost or ::1: the studio has no login, so never another address.")] = None,
    port: Annotated[Optional[str], typer.Option("--port", metavar="PORT", show_default=False,
                                                help="Listen on this port (default 8001).")] = None,
) -> None:
    """A local page for marketing: every email in order, rendered at desktop and phone widths,
    its text and source, validation messages, a journey view; reloads when a file is saved."""
    from nurture.cli.listen import bind, host_option, port_option, require_loopback, url_for
    from nurture.web.studio import run_studio

    # Not NURTURE_HOST/NURTURE_PORT: those are the public server's, and the studio runs beside it.
    host, port = host_option(host, "127.0.0.1"), port_option(port, 8001)
    require_loopback(host)
    s = settings()
    s.require_templates()
    sockets = bind(host, port)
    console.print(f"studio on {url_for(host, port)} · templates {s.templates_dir} · Ctrl-C to stop", highlight=False)
    try:
        run_studio(s, host=host, port=port, sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()

@broadcast_app.command("create")
def broadcast_create(
    template: Annotated[str, typer.Argument(help="The newsletter's key (front matter), e.g. 2026-12-winter.")],
    audience: Annotated[str, typer.Option(help="all, finished (the sequence), or tag:NAME.")] = "all",
    at: Annotated[Optional[str], typer.Option(help="When it goes (ISO-8601); default: now, via the scheduler.")] = None,
    track_opens: Annotated[bool, typer.Option("--track-opens", help="Add the open pixel (off by default).")] = False,
    now: Annotated[Optional[str], typer.Option(help="Pretend it is this instant (ISO-8601).")] = None,
) -> None:
    """Create a broadcast: the audience is fixed now; it goes at --at through the scheduler."""
    from nurture.content.sequences import TemplateFormatError, load_newsletters
    from nurture.db import transaction
    from nurture.sending import broadcasts
    from nurture.sending.journey import Planner

    s = settings()
    instant = parse_now(now, zone=s.timezone)
    send_at = parse_now(at, "--at", zone=s.timezone) if at else instant
    rt = runtime(s)
    planner = Planner.from_settings(s)
    try:
        newsletters = load_newsletters(s.templates_dir)
        if template not in newsletters:
            known = ", ".join(sorted(newsletters)) or "none"
            raise Fail(f"no newsletter with the key {template!r} (known: {known})")
        with transaction(rt.sessions) as session:
            broadcast = broadcasts.create(session, newsletter=newsletters[template], audience=audience,
                                          send_at=send_at, now=instant, sequence=planner.sequence(),
                                          window=planner.window, track_opens=track_opens)
    except (broadcasts.BroadcastError, TemplateFormatError) as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    out.print(f"broadcast {broadcast.id}: {template} to {broadcast.recipients} people ({audience}), "
              f"from {send_at:%Y-%m-%d %H:%M} UTC")

@broadcast_app.command("list")
def broadcast_list() -> None:
    """Every broadcast with its state and how many copies are sent, queued or failed."""
    from rich.table import Table

    from nurture.sending import broadcasts

    rt = runtime()
    try:
        with rt.sessions() as session:
            rows = broadcasts.list_broadcasts(session)
    finally:
        rt.close()
    if not rows:
        out.print("no broadcasts yet (`nurture broadcast create KEY` makes one)")
        return
    table = Table("id", "template", "audience", "goes at (UTC)", "state", "recipients", "sent", "queued", "failed")
    for row in rows:
        b, c = row.broadcast, row.counts
        table.add_row(str(b.id), b.template, b.audience, f"{b.send_at:%Y-%m-%d %H:%M}", row.state,
                      str(b.recipients), str(c.get("sent", 0)),
                      str(sum(c.get(k, 0) for k in ("queued", "retry", "sending", "unknown"))), str(c.get("failed", 0)))
    out.print(table)

@broadcast_app.command("send")
def broadcast_send(
    broadcast_id: Annotated[int, typer.Argument(metavar="ID")],
    include_new: Annotated[bool, typer.Option("--include-new", help="Also people who subscribed since it was created.")] = False,
    now: Annotated[Optional[str], typer.Option(help="Pretend it is this instant (ISO-8601).")] = None,
) -> None:
    """Send a broadcast now (what is already sent is never sent again)."""
    from nurture.db import transaction
    from nurture.message_key import MessageKey
    from nurture.sending import broadcasts
    from nurture.sending.journey import Planner
    from nurture.sending.pass_summary import PassStopped

    s = settings()
    instant = parse_now(now, zone=s.timezone)
    rt = runtime(s)
    planner = Planner.from_settings(s)
    try:
        with transaction(rt.sessions) as session:
            added = broadcasts.include_new(session, broadcast_id, now=instant, sequence=planner.sequence(),
                                           window=planner.window) if include_new else 0
            broadcasts.send_now(session, broadcast_id, now=instant, window=planner.window)
            held = broadcasts.deferred(session, broadcast_id, now=instant)
        summary = rt.sender().run_pass(instant, key_prefix=str(MessageKey.broadcast(broadcast_id)))
    except (broadcasts.BroadcastError, PassStopped) as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    opens = f"{planner.window.start // 60:02d}:{planner.window.start % 60:02d}"
    later = (f"; {held} deferred to tomorrow {opens} their local time: they had a sequence email today"
             if held else "")
    out.print(f"broadcast {broadcast_id}: {summary.line()}" + (f"; {added} new people added" if added else "") + later,
              highlight=False)
    if summary.broken:
        raise Fail(broken_templates(summary.broken, s.templates_dir))

@broadcast_app.command("cancel")
def broadcast_cancel(broadcast_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop a broadcast: copies not yet sent are cancelled."""
    from nurture.db import transaction
    from nurture.sending import broadcasts

    rt = runtime()
    try:
        with transaction(rt.sessions) as session:
            stopped = broadcasts.cancel(session, broadcast_id)
    except broadcasts.BroadcastError as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    out.print(f"broadcast {broadcast_id} cancelled: {stopped} copies will not be sent")
