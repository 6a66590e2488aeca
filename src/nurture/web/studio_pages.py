"""The studio's own pages: their templates, what every page shows (the list of emails, the
problem counts, the templates' stamp) and the page of one email."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from nurture.content.template_checks import Problem
from nurture.web.studio_catalogue import Entry, Group, catalogue, relative, templates_stamp
from nurture.web.studio_checks import shown_problem

if TYPE_CHECKING:
    from nurture.web.studio import _Studio as Studio

HERE = Path(__file__).parent
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; frame-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
# Email previews: no scripts at all; images from anywhere (the email's own), styles inline only.
PREVIEW_CSP = "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; frame-ancestors 'self'"


class StudioPages:
    """The studio's own pages: their templates, and what every page shows."""

    def __init__(self, studio: Studio) -> None:
        settings = studio.settings
        self.studio = studio
        self.env = Environment(loader=FileSystemLoader(HERE / "studio_templates"), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(clinic_name=settings.clinic_name,
                                from_name=parseaddr(settings.mail_from)[0] or settings.clinic_name,
                                templates_dir=str(studio.templates_dir))

    def page(self, name: str, status: int = 200, **context: object) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": PAGE_CSP})

    def state(self) -> dict[str, object]:
        """What every page shows: the list, the problem counts, the stamp the page was made from."""
        templates_dir = self.studio.templates_dir
        stamp = templates_stamp(templates_dir)
        problems = self.studio.checks.problems(stamp)
        groups = catalogue(templates_dir, self.studio.settings.sequence)
        by_file: dict[str, list[Problem]] = {}
        for problem in problems:
            by_file.setdefault(relative(templates_dir, problem.path), []).append(problem)
        return {
            "stamp": stamp, "groups": groups, "problems": [shown_problem(templates_dir, p) for p in problems],
            "errors": sum(p.severity == "error" for p in problems),
            "warnings": sum(p.severity == "warning" for p in problems),
            "file_errors": {f: sum(p.severity == "error" for p in ps) for f, ps in by_file.items()},
        }

    def find(self, template: str, groups: list[Group] | None = None) -> Entry | None:
        """The listed email at ``template`` (read from disk now unless ``groups`` is given)."""
        if groups is None:
            groups = catalogue(self.studio.templates_dir, self.studio.settings.sequence)
        return next((e for g in groups for e in g.entries if e.template == template), None)

    def email_page(self, template: str, *, notice: dict[str, str] | None = None, status: int = 200, to: str = "",
                   nameless: bool = False) -> HTMLResponse:
        studio, ctx = self.studio, self.state()
        entry = self.find(template, ctx["groups"])  # type: ignore[arg-type]
        if entry is None:
            return self.page("missing.html", 404, current=None, view="emails", template=template, **ctx)
        rendered, error = studio.render(template, nameless=nameless)
        shared = {p["file"] for p in ctx["problems"] if "/" not in str(p["file"])}  # layout, macros: every email's
        mine = [p for p in ctx["problems"] if p["file"] == template or p["file"] in shared]  # type: ignore[index]
        raw = studio.message(entry, rendered, "test@example.com").decode("ascii", "replace") if rendered else None
        error_where, _, error_message = (error or "").partition(": ")
        # The validator usually reports the same line; list it once.
        error_listed = any(p["where"] == error_where for p in mine)
        return self.page("email.html", status, current=entry, view="emails", rendered=rendered, error=error,
                         error_where=error_where, error_message=error_message, error_listed=error_listed,
                         last_good=studio.last_good.get(template) if error else None, file_problems=mine,
                         raw=raw, notice=notice, to=to, nameless=nameless, **ctx)
