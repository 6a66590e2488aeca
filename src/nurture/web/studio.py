"""nurture studio: a local page where marketing sees every email as subscribers will.

Every email of every sequence in order (delay, subject, preheader, key), the newsletter issues and
the system emails; the selected one rendered for a sample subscriber at desktop (600 px) and phone
(375 px) widths, its plain text, its MIME source and its validation problems; a "send test" form;
a journey view of the dates one subscriber would receive each step in their time zone.

It reloads by itself: a watchfiles task notices a saved template and wakes the ``/events``
Server-Sent-Events streams the open pages listen to. The templates' *stamp* (names, sizes and
mtimes of the ``*.j2`` files) is what changes; each stream also re-reads it every few seconds, so
a folder where file events do not arrive (some network and container mounts) still reloads.

A local tool: bound to 127.0.0.1, no login, no external resources. Requests must name a loopback
host (a web page cannot reach it through DNS rebinding) and a POST from another origin is refused.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from jinja2 import Environment, FileSystemLoader, select_autoescape

from nurture.clock import utcnow
from nurture.config import Settings
from nurture.journey import Window, earliest_send
from nurture.compose import compose, preview_draft, preview_stream
from nurture.rendering import TEMPLATE_CONTEXT, RenderError, Rendered, Renderer
from nurture.sequences import EMAIL_SUFFIX, KEY_PATTERN, NOT_SEQUENCES, Sequence, Step, TemplateFormatError, describe_email, scan_templates
from nurture.template_checks import Problem, check_templates
from nurture.transports import NoReply, Transport, Unreachable
from nurture.validation import InvalidInput, normalise_email

__all__ = ["create_studio_app", "run_studio", "templates_stamp"]

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "testserver"})  # testserver: Starlette's TestClient
POLL_SECONDS = 2.0  # how often an /events stream re-reads the stamp when no file event came
COMMON_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles",
                "America/Anchorage", "Pacific/Honolulu", "Europe/London", "UTC")
_PAGE_CSP = ("default-src 'self'; img-src 'self' data:; frame-src 'self'; object-src 'none'; base-uri 'none'; "
             "form-action 'self'; frame-ancestors 'none'")
# Email previews: no scripts at all; images from anywhere (the email's own), styles inline only.
_PREVIEW_CSP = "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; frame-ancestors 'self'"


# --------------------------------------------------------------------------- what is on disk

def _is_template(name: str) -> bool:
    # Editors' swap and backup files (.x.swp, x~, #x#) are not templates: saving them reloads nothing.
    return name.endswith(".j2") and not name.startswith((".", "#"))


def templates_stamp(directory: Path) -> str:
    """A short digest of the ``*.j2`` files' names, sizes, mtimes and inodes: changes when one is saved."""
    digest = hashlib.blake2b(digest_size=8)
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not _is_template(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            digest.update(f"{path}\0{st.st_mtime_ns}\0{st.st_size}\0{st.st_ino}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One email file as the studio lists it; ``step`` is None when its front matter is broken."""

    template: str  # path relative to the templates directory: the studio's name for the email
    group: str  # sequence name, "newsletter" or "system"
    step: Step | None
    error: str | None = None
    number: int | None = None  # 1-based position in a sequence
    total: int = 1

    @property
    def label(self) -> str:
        return self.step.subject if self.step else Path(self.template).name


@dataclass(frozen=True)
class Group:
    name: str
    kind: str  # "sequence", "newsletter" or "system"
    entries: tuple[Entry, ...]
    sequence: Sequence | None = None

    @property
    def title(self) -> str:
        return {"newsletter": "Newsletter issues", "system": "System emails"}.get(self.kind, f"Sequence “{self.name}”")


def _email_files(directory: Path) -> list[Path]:
    """Email files in sequence order: by the number prefix, then name (as sequences.py orders them)."""
    def order(path: Path) -> tuple[int, str]:
        prefix = path.name.split("-", 1)[0]
        return (int(prefix) if prefix.isdigit() else -1, path.name)

    return sorted((p for p in directory.iterdir() if p.is_file() and p.name.endswith(EMAIL_SUFFIX)
                   and not p.name.startswith(".")), key=order)


def catalogue(templates_dir: Path, first_sequence: str) -> list[Group]:
    """Every email file, grouped: sequences (the configured one first), newsletter, system.
    A file whose front matter is broken is listed too, with its error, so it can be found and fixed."""
    if not templates_dir.is_dir():
        return []
    sequences, newsletters, errors = scan_templates(templates_dir)
    steps = {s.template: s for seq in sequences.values() for s in seq.steps} | {s.template: s for s in newsletters.values()}
    problems: dict[str, str] = {}
    for error in errors:
        problems.setdefault(_relative(templates_dir, error.path), _where(templates_dir, error.path, error.line, error.message))
    names = sorted((p.name for p in templates_dir.iterdir() if p.is_dir() and KEY_PATTERN.fullmatch(p.name)),
                   key=lambda n: (n in NOT_SEQUENCES, n != first_sequence, n == "system", n))
    groups = []
    for name in names:
        kind = name if name in NOT_SEQUENCES else "sequence"
        sequence = sequences.get(name)
        total = len(sequence.steps) if sequence else 0
        entries = []
        files = _email_files(templates_dir / name)
        if kind == "sequence":
            # Numbered by file, not by the steps that loaded: one file with a broken front matter must
            # not renumber the emails after it (they are still the emails marketing wrote, in order).
            total = len(files)
        for index, path in enumerate(files):
            rel = path.relative_to(templates_dir).as_posix()
            step, error = steps.get(rel), None
            if kind == "system":
                try:
                    step = describe_email(templates_dir, rel)[0]
                except TemplateFormatError as exc:
                    error = _where(templates_dir, exc.path, exc.line, exc.message)
            elif step is None:
                error = problems.get(rel, f"{rel}: not part of the {name} sequence")
            number = index + 1 if kind == "sequence" else None
            entries.append(Entry(rel, name, step, error, number, total if kind == "sequence" else 1))
        if entries:
            groups.append(Group(name, kind, tuple(entries), sequence))
    return groups


def _relative(templates_dir: Path, path: Path | str) -> str:
    path = Path(path)
    for base in (templates_dir, templates_dir.resolve()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    try:
        return path.resolve().relative_to(templates_dir.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def _where(templates_dir: Path, path: Path | str, line: int, message: str) -> str:
    """``file:line: message`` with the file relative to the templates directory (no line when unknown)."""
    rel = _relative(templates_dir, path)
    return f"{rel}:{line}: {message}" if line else f"{rel}: {message}"


def _shown_problem(templates_dir: Path, problem: Problem) -> dict[str, object]:
    rel = _relative(templates_dir, problem.path)
    line, message = _helpful(problem.path, problem.line, problem.message)
    return {"file": rel, "line": line, "where": f"{rel}:{line}" if line else rel,
            "message": message, "severity": problem.severity}


# Jinja's own words for the two mistakes people make most, which the studio makes more helpful.
_UNDEFINED = re.compile(r"'(\w+)' is undefined")
_UNCLOSED = re.compile(r"Unexpected end of template\. Jinja was looking for the following tags: '(end\w+)'")
_TAG = re.compile(r"{%-?\s*(end)?(block|if|for|macro|call|filter|with|raw|set|autoescape)\b(.*?)-?%}", re.S)
# What a template may name at the top level: the context's first parts (clinic, step...) and filters' inputs.
_KNOWN_NAMES = sorted({v.name.split(".")[0] for v in TEMPLATE_CONTEXT})


def _helpful(path: Path | str, line: int, message: str) -> tuple[int, str]:
    """(line, message) as a person needs them: an unclosed block at the line that opened it, not
    at the end of the file where Jinja noticed; an unknown name with the nearest known one."""
    unclosed = _UNCLOSED.search(message)
    if unclosed:
        opened = _unclosed_opening(Path(path), unclosed.group(1)[3:])
        if opened is not None:
            at, tag = opened
            return at, f"{tag} is never closed: add {{% {unclosed.group(1)} %}} where it should end"
    unknown = _UNDEFINED.search(message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), _KNOWN_NAMES, n=1, cutoff=0.6)
        if close:
            return line, f"{message[:unknown.end()]}: did you mean {close[0]}?{message[unknown.end():]}"
    return line, message


def _unclosed_opening(path: Path, kind: str) -> tuple[int, str] | None:
    """The line and text of the innermost ``{% kind %}`` left open in the file, if it can be read."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    stack: list[tuple[int, str, str]] = []
    for match in _TAG.finditer(source):
        end, name = match.group(1), match.group(2)
        if name == "set" and "=" in match.group(3):
            continue  # {% set x = ... %} has no end tag; only the block form {% set x %} does
        if end:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][1] == name:
                    del stack[i:]
                    break
        else:
            stack.append((source.count("\n", 0, match.start()) + 1, name, " ".join(match.group(0).split())))
    for at, name, text in reversed(stack):
        if name == kind:
            return at, text
    return None


class _Checks:
    """check_templates once per templates stamp (it takes a few hundred milliseconds)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp: str | None = None
        self._problems: list[Problem] = []

    def problems(self, stamp: str) -> list[Problem]:
        with self._lock:
            if stamp != self._stamp:
                s = self.settings
                try:
                    self._problems = check_templates(s.templates_dir, base_url=s.base_url, dev=s.is_dev, clinic=s.clinic)
                except Exception as exc:  # noqa: BLE001 - the validator failing is itself a message to show
                    log.exception("template checks failed")
                    self._problems = [Problem(Path(s.templates_dir), 0, f"the validator stopped: {type(exc).__name__}: {exc}")]
                self._stamp = stamp
            return self._problems


# --------------------------------------------------------------------------- live reload

class TemplateWatcher:
    """Holds the templates' current stamp and wakes waiting /events streams when it changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.stamp = templates_stamp(self.directory)
        self.changed: list[str] = []
        self.closed = False  # the server is stopping: streams end so it need not cut them off
        self._event = asyncio.Event()

    def refresh(self, changed: Iterable[str] = ()) -> bool:
        stamp = templates_stamp(self.directory)
        if stamp == self.stamp:
            return False
        self.stamp, self.changed = stamp, sorted(set(changed))
        self.wake()
        return True

    def wake(self) -> None:
        """Wake every waiting stream (to see a new stamp, or that the server is stopping)."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self.wake()

    async def wait(self, stamp: str, timeout: float) -> None:
        """Return when the stamp differs from ``stamp`` or the watcher is closed, or after ``timeout``
        (having re-read the stamp)."""
        if stamp != self.stamp or self.closed:
            return
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            self.refresh()

    async def run(self, stop: asyncio.Event) -> None:
        from watchfiles import awatch

        try:
            async for changes in awatch(self.directory, stop_event=stop, step=50, debounce=400,
                                        watch_filter=lambda _change, path: _is_template(os.path.basename(path))):
                self.refresh(_relative(self.directory, path) for _, path in changes)
        except Exception:  # noqa: BLE001 - no file events: the streams' own polling still reloads pages
            log.warning("watching %s failed; pages reload every %s s instead", self.directory, POLL_SECONDS, exc_info=True)


# --------------------------------------------------------------------------- the journey

@dataclass(frozen=True)
class JourneyRow:
    step: Step
    at: datetime  # local, in the subscriber's zone
    day: int  # local days after the confirmation day
    immediate: bool  # goes at confirmation
    pushed: bool  # later than its delay says: one marketing email a day
    clocks_changed: str | None = None  # "EST → EDT" on the first row after a daylight-saving change


def plan_journey(sequence: Sequence, *, confirmed_at: datetime, zone: ZoneInfo, window: Window) -> list[JourneyRow]:
    """When one subscriber who confirms at ``confirmed_at`` receives each step, by the sender's rules
    (earliest_send, each step chained on the one before, the window's next opening)."""
    rows: list[JourneyRow] = []
    last: datetime | None = None
    before = confirmed_at.astimezone(zone)
    first_day = before.date()
    for step in sequence.steps:
        at = earliest_send(step, confirmed_at=confirmed_at, zone=zone, last_marketing_at=last, window=window)
        immediate = step.delay_days == 0 and last is None
        if not immediate:
            at = window.next_open(at, zone)
        local = at.astimezone(zone)
        changed = f"{before.tzname()} → {local.tzname()}" if local.utcoffset() != before.utcoffset() else None
        rows.append(JourneyRow(step, local, (local.date() - first_day).days, immediate,
                               local.date() > first_day + timedelta(days=step.delay_days), changed))
        last, before = at, local
    return rows


# --------------------------------------------------------------------------- the app

@dataclass
class _Studio:
    settings: Settings
    transport: Transport | None
    clock: Callable[[], datetime]
    renderer: Renderer = field(init=False)
    checks: _Checks = field(init=False)
    watcher: TemplateWatcher = field(init=False)
    last_good: dict[str, Rendered] = field(default_factory=dict)
    own_transport: bool = False
    loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.templates_dir = Path(s.templates_dir)
        self.renderer = Renderer(self.templates_dir, clinic=s.clinic, base_url=s.base_url,
                                 consultation_url=s.consultation_url, recheck_seconds=0)
        self.checks = _Checks(s)
        self.watcher = TemplateWatcher(self.templates_dir)
        self._transport_lock = threading.Lock()

    def close_streams(self) -> None:
        """End the /events streams; callable from any thread (uvicorn's signal handler, a test)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.watcher.close)  # in the loop: no stream misses it
        else:
            self.watcher.closed = True

    def get_transport(self) -> Transport:
        with self._transport_lock:
            if self.transport is None:  # built on first use: opening the studio connects to nothing
                from nurture.runtime import Runtime

                self.transport, self.own_transport = Runtime(self.settings).transport, True
            return self.transport

    def render(self, template: str, *, nameless: bool = False) -> tuple[Rendered | None, str | None]:
        """The email for the sample subscriber (``nameless``: one who gave no first name, as many
        do), or the error as ``file:line: message``."""
        recipient = self.renderer.sample_recipient() | ({"first_name": ""} if nameless else {})
        try:
            rendered = self.renderer.render(template, recipient)
        except RenderError as exc:
            return None, _where(self.templates_dir, exc.path, *_helpful(exc.path, exc.line, exc.message))
        except TemplateFormatError as exc:
            return None, _where(self.templates_dir, exc.path, exc.line, exc.message)
        except Exception as exc:  # noqa: BLE001 - e.g. {{ 1 / 0 }}: a message with its line, never a 500
            path, line = _template_frame(exc, self.templates_dir) or (self.templates_dir / template, 0)
            return None, _where(self.templates_dir, path, line, f"{type(exc).__name__}: {exc}")
        if not nameless:
            self.last_good[template] = rendered
        return rendered, None

    def message(self, entry: Entry, rendered: Rendered, to: str, *, test: bool = False) -> bytes:
        """The message ``rendered`` (this entry for the sample subscriber) as it would be sent to ``to``."""
        s, now = self.settings, self.clock()
        draft = preview_draft(entry.template, to=to, sample=self.renderer.sample_recipient(), origin="studio",
                              label=entry.step.key if entry.step else "email", now=now, from_header=s.mail_from,
                              nonce=secrets.token_hex(4), test=test)
        return compose(draft, renderer=self.renderer, stream=preview_stream(s.mail_from), now=now, rendered=rendered)


def _template_frame(exc: BaseException, templates_dir: Path) -> tuple[Path, int] | None:
    """The innermost template line in a traceback (Jinja maps its frames to template lines)."""
    found, tb = None, exc.__traceback__
    roots = (str(templates_dir), str(templates_dir.resolve()))
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(roots):
            found = (Path(tb.tb_frame.f_code.co_filename), tb.tb_lineno)
        tb = tb.tb_next
    return found


def create_studio_app(settings: Settings, *, transport: Transport | None = None, watch: bool = True,
                      clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The studio's ASGI app. ``transport`` receives test sends (default: settings' Maildir outbox or
    SMTP, built on the first send); ``watch`` runs the file watcher while the app is served."""
    studio = _Studio(settings, transport, clock)
    templates_dir = studio.templates_dir
    pages = Environment(loader=FileSystemLoader(HERE / "studio_templates"), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True)
    pages.globals.update(clinic_name=settings.clinic_name, from_name=parseaddr(settings.mail_from)[0] or settings.clinic_name,
                         templates_dir=str(templates_dir))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        studio.loop, studio.watcher.closed = asyncio.get_running_loop(), False
        stop = asyncio.Event()
        task = asyncio.create_task(studio.watcher.run(stop)) if watch else None
        yield
        stop.set()
        if task is not None:
            try:
                await asyncio.wait_for(task, 6)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
        if studio.own_transport and studio.transport is not None:
            studio.transport.close()

    app = FastAPI(title="nurture studio", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    app.state.close_streams = studio.close_streams
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    app.add_middleware(_LocalOnly)

    def state() -> dict[str, object]:
        """What every page shows: the list, the problem counts, the stamp the page was made from."""
        stamp = templates_stamp(templates_dir)
        problems = studio.checks.problems(stamp)
        groups = catalogue(templates_dir, settings.sequence)
        by_file: dict[str, list[Problem]] = {}
        for problem in problems:
            by_file.setdefault(_relative(templates_dir, problem.path), []).append(problem)
        return {
            "stamp": stamp, "groups": groups, "problems": [_shown_problem(templates_dir, p) for p in problems],
            "errors": sum(p.severity == "error" for p in problems),
            "warnings": sum(p.severity == "warning" for p in problems),
            "file_errors": {f: sum(p.severity == "error" for p in ps) for f, ps in by_file.items()},
        }

    def page(name: str, status: int = 200, **context: object) -> HTMLResponse:
        html = pages.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": _PAGE_CSP})

    def find(groups: list[Group], template: str) -> Entry | None:
        return next((e for g in groups for e in g.entries if e.template == template), None)

    def email_page(template: str, *, notice: dict[str, str] | None = None, status: int = 200, to: str = "",
                   nameless: bool = False) -> HTMLResponse:
        ctx = state()
        entry = find(ctx["groups"], template)  # type: ignore[arg-type]
        if entry is None:
            return page("missing.html", 404, current=None, view="emails", template=template, **ctx)
        rendered, error = studio.render(template, nameless=nameless)
        shared = {p["file"] for p in ctx["problems"] if "/" not in str(p["file"])}  # layout, macros: every email's
        mine = [p for p in ctx["problems"] if p["file"] == template or p["file"] in shared]  # type: ignore[index]
        raw = studio.message(entry, rendered, "test@example.com").decode("ascii", "replace") if rendered else None
        error_where, _, error_message = (error or "").partition(": ")
        # The validator usually reports the same line; list it once.
        error_listed = any(p["where"] == error_where for p in mine)
        return page("email.html", status, current=entry, view="emails", rendered=rendered, error=error,
                    error_where=error_where, error_message=error_message, error_listed=error_listed,
                    last_good=studio.last_good.get(template) if error else None, file_problems=mine,
                    raw=raw, notice=notice, to=to, nameless=nameless, **ctx)

    @app.get("/healthz", include_in_schema=False)
    def healthz():
        return PlainTextResponse("ok")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return RedirectResponse("/static/studio-icon.svg", status_code=301)

    @app.get("/", response_class=HTMLResponse)
    def overview():
        ctx = state()
        return page("overview.html", current=None, view="emails", variables=TEMPLATE_CONTEXT, **ctx)

    @app.get("/email/{template:path}", response_class=HTMLResponse)
    def email(template: str, name: str = ""):
        return email_page(template, nameless=name == "none")

    @app.get("/render/{template:path}")
    def render_html(template: str, last_good: bool = False, name: str = ""):
        if find(catalogue(templates_dir, settings.sequence), template) is None:
            return PlainTextResponse(f"no email at {template}", status_code=404)
        rendered, error = studio.render(template, nameless=name == "none")
        if rendered is None and last_good:
            rendered = studio.last_good.get(template)
        if rendered is None:
            html = pages.get_template("render_error.html").render(error=error)
            return HTMLResponse(html, status_code=422, headers={"Content-Security-Policy": _PREVIEW_CSP})
        return HTMLResponse(_links_open_outside(rendered.html), headers={"Content-Security-Policy": _PREVIEW_CSP})

    @app.get("/text/{template:path}")
    def render_text(template: str):
        if find(catalogue(templates_dir, settings.sequence), template) is None:
            return PlainTextResponse(f"no email at {template}", status_code=404)
        rendered, error = studio.render(template)
        return PlainTextResponse(rendered.text if rendered else str(error), status_code=200 if rendered else 422)

    @app.get("/raw/{template:path}")
    def render_raw(template: str):
        entry = find(catalogue(templates_dir, settings.sequence), template)
        if entry is None:
            return PlainTextResponse(f"no email at {template}", status_code=404)
        rendered, error = studio.render(template)
        if rendered is None:
            return PlainTextResponse(str(error), status_code=422)
        filename = (entry.step.key if entry.step else "email") + ".eml"
        return Response(studio.message(entry, rendered, "test@example.com"), media_type="message/rfc822",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/send-test/{template:path}", include_in_schema=False)
    def send_test_get(template: str):
        return RedirectResponse(f"/email/{template}", status_code=303)

    @app.post("/send-test/{template:path}")
    async def send_test(template: str, request: Request):
        form = await request.form()
        raw_to = form.get("to")
        wants_json = "application/json" in request.headers.get("accept", "")
        status, notice = await asyncio.to_thread(_send_test, template, raw_to if isinstance(raw_to, str) else "")
        if wants_json:
            return JSONResponse({"ok": status == 200, "message": notice["text"]}, status_code=status)
        return await asyncio.to_thread(email_page, template, notice=notice, status=status,
                                       to=raw_to if isinstance(raw_to, str) else "")

    def _send_test(template: str, raw_to: str) -> tuple[int, dict[str, str]]:
        def fail(status: int, text: str) -> tuple[int, dict[str, str]]:
            return status, {"kind": "error", "text": text}

        entry = find(catalogue(templates_dir, settings.sequence), template)
        if entry is None:
            return fail(404, f"There is no email at {template} any more (renamed or removed?).")
        try:
            to = normalise_email(raw_to)
        except InvalidInput as exc:
            return fail(400, exc.message)
        rendered, error = studio.render(template)
        if rendered is None:
            return fail(422, f"Not sent: this email does not render. Fix {error}")
        try:
            data = studio.message(entry, rendered, to, test=True)
            transport = studio.get_transport()
            reply = transport.send(parseaddr(settings.mail_from)[1], to, data)
        except (Unreachable, NoReply) as exc:
            return fail(502, f"Not sent: the mail server did not take it ({exc}).")
        except Exception as exc:  # noqa: BLE001 - a broken outbox folder, a header problem: say so, no 500
            log.exception("studio test send failed")
            return fail(502, f"Not sent: {type(exc).__name__}: {exc}")
        if not 200 <= reply.code < 300:
            return fail(502, f"Not sent: the mail server refused it ({reply}).")
        if settings.smtp_url:
            where = f"through the mail server {urlsplit(settings.smtp_url).hostname}"
        else:
            where = f"into the local outbox folder {settings.outbox_dir} (no mail server is set up, so nothing left this computer)"
        return 200, {"kind": "ok", "text": f"Test sent to {to} {where}."}

    @app.get("/journey", response_class=HTMLResponse)
    def journey(request: Request):
        q = request.query_params
        ctx = state()
        sequences = [g.sequence for g in ctx["groups"] if g.sequence is not None]  # type: ignore[union-attr]
        chosen = q.get("sequence") or settings.sequence
        sequence = next((s for s in sequences if s.name == chosen), sequences[0] if sequences else None)
        zone_name = (q.get("zone") or settings.timezone).strip()
        problems: list[str] = []
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"“{zone_name}” is not a time zone; showing {settings.timezone}.")
            zone_name, zone = settings.timezone, ZoneInfo(settings.timezone)
        now_local = studio.clock().astimezone(zone)
        day = _parse(q.get("date"), date.fromisoformat, now_local.date(), "date", problems)
        at = _parse(q.get("time"), time.fromisoformat, now_local.time().replace(second=0, microsecond=0), "time", problems)
        confirmed_at = datetime.combine(day, at, tzinfo=zone).astimezone(timezone.utc)
        window = Window(*settings.send_window_hours)
        rows = plan_journey(sequence, confirmed_at=confirmed_at, zone=zone, window=window) if sequence else []
        last_day = max((r.day for r in rows), default=0)
        calendar = [(day + timedelta(days=n), [r for r in rows if r.day == n]) for n in range(last_day + 1)]
        zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/", "posix/", "right/")))
        return page("journey.html", 400 if problems else 200, current=None, view="journey", rows=rows,
                    sequence=sequence, sequences=sequences, zone=zone_name, zones=zones, common_zones=COMMON_ZONES,
                    day=day, at=at, confirmed_local=confirmed_at.astimezone(zone), calendar=calendar,
                    window=window, interval=settings.send_interval, input_problems=problems, **ctx)

    @app.get("/events")
    async def events(request: Request):
        watcher = studio.watcher

        async def stream():
            watcher.refresh()
            stamp = watcher.stamp
            yield f"retry: 1000\nevent: hello\ndata: {stamp}\n\n"
            quiet = 0.0
            while not watcher.closed and not await request.is_disconnected():
                await watcher.wait(stamp, POLL_SECONDS)
                if watcher.stamp != stamp:
                    stamp, quiet = watcher.stamp, 0.0
                    yield f"event: change\ndata: {json.dumps({'stamp': stamp, 'files': watcher.changed})}\n\n"
                else:
                    quiet += POLL_SECONDS
                    if quiet >= 20:  # a comment now and then, so proxies and the browser keep the stream open
                        quiet = 0.0
                        yield ": ping\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})

    return app


class _LocalOnly:
    """Refuse a request that does not name a loopback host (DNS rebinding) and a POST from another
    origin (a web page posting a send-test form); no caching of anything the studio serves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host_header = headers.get("host", "")
        refusal = None
        if host_header.rsplit(":", 1)[0].strip("[]").lower() not in LOOPBACK:
            refusal = "nurture studio answers on 127.0.0.1 only"
        elif scope["method"] == "POST" and headers.get("origin") and urlsplit(headers["origin"]).netloc != host_header:
            refusal = "a page on another site cannot post to the studio"
        if refusal:
            await PlainTextResponse(refusal, status_code=403)(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.setdefault("Cache-Control", "no-store")
                out.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_no_store)


def _parse(raw: str | None, parse: Callable[[str], object], default, name: str, problems: list[str]):
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        problems.append(f"“{raw}” is not a {name}; showing {default}.")
        return default


def _links_open_outside(html: str) -> str:
    """Clicking a link in a preview opens a new tab instead of navigating the small frame."""
    base = '<base target="_blank">'
    lower = html[:2000].lower()
    at = lower.find("<head")
    if at >= 0:
        end = html.find(">", at) + 1
        return html[:end] + base + html[end:]
    return base + html


def run_studio(settings: Settings, *, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Serve the studio until Ctrl-C. Loopback only: it has no login and can send test emails."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the studio has no login: it listens on 127.0.0.1 only, not {host}")
    app = create_studio_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # Ctrl-C: end the open pages' /events streams first
            app.state.close_streams()
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)).run()
